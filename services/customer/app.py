"""Build the customer app: the kit serving the customers from a seeded store."""

from services.customer.customers import seed
from services.customer.routes import CUSTOMERS, customer
from services.kit import ServiceApp, Settings, create_resource_app


def create_app(settings: Settings | None = None) -> ServiceApp:
    """Return a customer app; settings come from the environment if not given."""
    return create_resource_app(customer, CUSTOMERS, seed(), settings=settings)
