"""Serving a service with Hypercorn, and stopping it without dropping requests.

Kubernetes stops a pod with SIGTERM, and for a while after that the pod's
endpoint is still in some kube-proxy rules. So on SIGTERM (or SIGINT) the
readiness probe fails at once, the service keeps serving for
``DRAIN_SECONDS`` while the endpoint goes away, then stops accepting
connections and gives in-flight requests ``GRACEFUL_TIMEOUT_SECONDS`` to
finish before the process exits 0.
"""

import asyncio
import ipaddress
import logging
import signal
import sys
from collections.abc import Callable, Mapping

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from services.kit.app import ServiceApp
from services.kit.settings import Settings, SettingsError

logger = logging.getLogger(__name__)

#: The exit status when the environment holds a value the service cannot use.
EXIT_BAD_SETTINGS = 2


def hypercorn_config(settings: Settings) -> Config:
    """Return the Hypercorn configuration for ``settings``."""
    config = Config()
    host = settings.bind_host
    if ipaddress.ip_address(host).version == 6:
        host = f"[{host}]"
    config.bind = [f"{host}:{settings.port}"]
    config.graceful_timeout = settings.graceful_timeout_seconds
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def serve(app: ServiceApp) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then drain and stop gracefully."""
    settings = app.settings
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            logger.info("%s again: ignored, shutdown is under way", name)
            return
        logger.info("%s received by %s", name, app.service_name)
        app.health.begin_shutdown()
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    async def drained() -> None:
        await stop.wait()
        if settings.drain_seconds > 0:
            logger.info(
                "%s keeps serving for %.1f s while its endpoint is removed",
                app.service_name,
                settings.drain_seconds,
            )
            await asyncio.sleep(settings.drain_seconds)
        logger.info(
            "%s stops accepting; in-flight requests get %.1f s",
            app.service_name,
            settings.graceful_timeout_seconds,
        )

    try:
        await hypercorn_serve(app, hypercorn_config(settings), shutdown_trigger=drained)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    logger.info("%s stopped", app.service_name)


def run(
    create_app: Callable[[Settings], ServiceApp],
    *,
    service_name: str,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Read the settings, serve the app until told to stop; return the exit status."""
    try:
        settings = Settings.from_environ(environ)
    except SettingsError as e:
        print(f"{service_name}: {e}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    logging.basicConfig(
        level=settings.log_level_number,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    app = create_app(settings)
    logger.info(
        "%s starts on %s:%d as pod %s",
        service_name,
        settings.bind_host,
        settings.port,
        settings.pod_name,
    )
    asyncio.run(serve(app))
    return 0
