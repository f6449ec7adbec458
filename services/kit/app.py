"""The app factory every service starts from.

A service is its domain (records, validation, routes, templates) on top of
what all three share and the harness relies on: health probes that follow
the life cycle, Prometheus metrics of the traffic, an ``X-Served-By`` header
on every answer, errors as one sentence, and one base layout for the pages.
"""

import logging
import time
from typing import cast

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Quart, Response, current_app, jsonify
from quart.ctx import RequestContext
from quart.globals import request_ctx
from quart.typing import ResponseTypes

from services.kit.errors import install_error_handlers
from services.kit.health import Health
from services.kit.metrics import RequestMetrics, new_registry
from services.kit.settings import Settings

logger = logging.getLogger(__name__)

#: The largest request body a service reads; larger ones get a 413.
MAX_CONTENT_LENGTH = 64 * 1024
#: The header that names the pod which answered.
SERVED_BY = "X-Served-By"


class ServiceApp(Quart):
    """A Quart app that knows its service name, settings, health and metrics."""

    def __init__(self, service_name: str, *, settings: Settings) -> None:
        super().__init__(
            f"services.{service_name}", static_folder=None, template_folder=None
        )
        self.service_name = service_name
        self.settings = settings
        self.health = Health(name=f"{service_name} ({settings.pod_name})")
        self.registry = new_registry()
        self.request_metrics = (
            RequestMetrics(self.registry) if settings.metrics_enabled else None
        )

    async def full_dispatch_request(
        self, request_context: RequestContext | None = None
    ) -> ResponseTypes:
        """Answer a request and count it in the request metrics."""
        if self.request_metrics is None:
            return await super().full_dispatch_request(request_context)
        started = time.perf_counter()
        incoming = (request_context or request_ctx).request
        try:
            response = await super().full_dispatch_request(request_context)
        except Exception:
            # What escapes here becomes a 500 in Quart's last-resort handler.
            seconds = time.perf_counter() - started
            self.request_metrics.record(incoming, status=500, seconds=seconds)
            raise
        seconds = time.perf_counter() - started
        self.request_metrics.record(
            incoming, status=response.status_code, seconds=seconds
        )
        return response

    async def startup(self) -> None:
        """Run the startup hooks, then start passing the readiness probe."""
        await super().startup()
        self.health.mark_ready()

    async def shutdown(self) -> None:
        """Fail the readiness probe, then run the shutdown hooks."""
        self.health.begin_shutdown()
        await super().shutdown()


def current_service() -> ServiceApp:
    """Return the app of the request being handled."""
    return cast(ServiceApp, current_app)


_probes = Blueprint("kit", __name__, template_folder="templates")


@_probes.get("/health/live")
async def live() -> Response:
    """Answer 200 for as long as the process runs."""
    return jsonify({"status": "alive", "pod": current_service().settings.pod_name})


@_probes.get("/health/ready")
async def ready() -> Response:
    """Answer 200 once startup finished and until shutdown begins, else 503."""
    app = current_service()
    response = jsonify({"status": app.health.phase.value, "pod": app.settings.pod_name})
    response.status_code = 200 if app.health.ready else 503
    return response


@_probes.get("/metrics")
async def metrics() -> Response:
    """Expose the app's registry in the Prometheus text format."""
    body = generate_latest(current_service().registry)
    return Response(body, status=200, content_type=CONTENT_TYPE_LATEST)


def create_app(service_name: str, *, settings: Settings) -> ServiceApp:
    """Return an app with the probes, metrics, errors and layout of a service."""
    app = ServiceApp(service_name, settings=settings)
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    # Apache forwards /catalog/ as it came, so /catalog and /catalog/ are one URL.
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.register_blueprint(_probes)
    install_error_handlers(app)

    @app.after_request
    async def add_served_by(response: Response) -> Response:
        response.headers[SERVED_BY] = settings.pod_name
        return response

    @app.context_processor
    async def layout_context() -> dict[str, str]:
        return {"service_name": service_name, "pod_name": settings.pod_name}

    logger.debug("created the %s app for pod %s", service_name, settings.pod_name)
    return app
