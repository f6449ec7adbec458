"""Build the catalog app: the kit serving the items from a seeded store."""

from services.catalog.items import seed
from services.catalog.routes import ITEMS, catalog
from services.kit import ServiceApp, Settings, create_resource_app


def create_app(settings: Settings | None = None) -> ServiceApp:
    """Return a catalog app; settings come from the environment if not given."""
    return create_resource_app(catalog, ITEMS, seed(), settings=settings)
