"""Build the customer app: the kit plus the customer routes and a seeded store."""

from services.customer.customers import seed
from services.customer.routes import STORE_KEY, customer
from services.kit import MemoryStore, ServiceApp, Settings
from services.kit import create_app as create_service_app


def create_app(settings: Settings | None = None) -> ServiceApp:
    """Return a customer app; settings come from the environment if not given."""
    app = create_service_app(
        "customer", settings=settings if settings else Settings.from_environ()
    )
    app.extensions[STORE_KEY] = MemoryStore(seed())
    app.register_blueprint(customer)
    return app
