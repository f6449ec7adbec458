"""Build the order app: the kit, the order routes and the upstream client."""

from services.kit import MemoryStore, ServiceApp, Settings
from services.kit import create_app as create_service_app
from services.order.orders import Order
from services.order.routes import ORDERS, UPSTREAMS_KEY, order
from services.order.upstreams import Upstream, Upstreams


def create_app(settings: Settings | None = None) -> ServiceApp:
    """Return an order app; settings come from the environment if not given.

    The upstream client opens when the app starts serving, so tests drive the
    app inside ``app.test_app()``.
    """
    app = create_service_app(
        "order", settings=settings if settings else Settings.from_environ()
    )
    config = app.settings
    upstreams = Upstreams(
        catalog=Upstream(name="catalog", base_url=config.catalog_url),
        customer=Upstream(name="customer", base_url=config.customer_url),
        timeout_seconds=config.upstream_timeout_seconds,
        keepalive=config.upstream_keepalive,
    )
    ORDERS.install(app, MemoryStore[Order]())
    app.extensions[UPSTREAMS_KEY] = upstreams
    app.before_serving(upstreams.start)
    app.after_serving(upstreams.close)
    app.register_blueprint(order)
    return app
