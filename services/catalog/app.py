"""Build the catalog app: the kit plus the item routes and a seeded store."""

from services.catalog.items import seed
from services.catalog.routes import STORE_KEY, catalog
from services.kit import MemoryStore, ServiceApp, Settings
from services.kit import create_app as create_service_app


def create_app(settings: Settings | None = None) -> ServiceApp:
    """Return a catalog app; settings come from the environment if not given."""
    app = create_service_app(
        "catalog", settings=settings if settings else Settings.from_environ()
    )
    app.extensions[STORE_KEY] = MemoryStore(seed())
    app.register_blueprint(catalog)
    return app
