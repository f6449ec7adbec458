"""Serving a service with Hypercorn, and stopping it without dropping requests.

Kubernetes stops a pod with SIGTERM, and for a while after that the pod's
endpoint is still in some kube-proxy rules. So on SIGTERM (or SIGINT) the
readiness probe fails at once, the service keeps serving for
``DRAIN_SECONDS`` while the endpoint goes away, then stops accepting
connections and gives in-flight requests ``GRACEFUL_TIMEOUT_SECONDS`` to
finish before the process exits 0.

A pod may also be deleted while it starts. A stop signal that comes before
the service serves abandons the startup and the process exits 0 without
ever listening: never half-started, never killed by the signal.
"""

import asyncio
import ipaddress
import logging
import signal
import sys
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from services.kit.app import ServiceApp
from services.kit.settings import Settings, SettingsError

logger = logging.getLogger(__name__)

#: The exit status when the environment holds a value the service cannot use.
EXIT_BAD_SETTINGS = 2

#: The signals that stop a service.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: What ``signal.signal`` takes and returns as a handler.
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class StartupAbandoned(BaseException):
    """A stop signal came while the service was starting.

    A ``BaseException``, so that no ``except Exception`` in startup code
    swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class EarlySignals:
    """Catch the stop signals from the start of :func:`run` until the loop does.

    While ``starting``, the first stop signal raises
    :class:`StartupAbandoned` in the main thread, so that even a slow
    startup step ends at once; after that, a signal is only noted, for
    :func:`serve` to see before it binds.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.starting = True
        self._previous: dict[int, _Handler] = {}

    def install(self) -> None:
        """Handle the stop signals here (main thread only)."""
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self._on_signal)
            self._previous.setdefault(signum, previous)

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if first and self.starting:
            raise StartupAbandoned(signum)


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


async def serve(app: ServiceApp, *, early: EarlySignals | None = None) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then drain and stop gracefully.

    ``early`` holds a stop signal that came before the event loop could
    handle it; the app is then not served at all.
    """
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

    for signum in STOP_SIGNALS:
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
        # Checked once the loop's handlers are in place: a signal comes
        # either before (noted here) or after (handled by on_signal).
        if early is not None and early.received is not None:
            _log_abandoned(app.service_name, early.received)
            app.health.begin_shutdown()
        else:
            config = hypercorn_config(settings)
            await hypercorn_serve(app, config, shutdown_trigger=drained)
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        if early is not None:
            # A signal during the last steps of the exit is only noted.
            early.install()
    logger.info("%s stopped", app.service_name)


def _log_abandoned(service_name: str, signum: int) -> None:
    logger.info(
        "%s received while %s was starting; it exits without serving",
        signal.Signals(signum).name,
        service_name,
    )


def run(
    create_app: Callable[[Settings], ServiceApp],
    *,
    service_name: str,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Read the settings, serve the app until told to stop; return the exit status.

    The stop signals are caught from the first line on: one that comes while
    the app is created ends the process with status 0, and it never serves.
    """
    early = EarlySignals()
    # TODO: a signal during the imports that come before this call (Quart's
    # take about 0.3 s) still meets the signal's default action: the process
    # is killed (status 143) or, as a container's PID 1, ignores it until the
    # grace period ends. services/<name>/__init__.py imports the app, so
    # covering that needs the package to import it lazily and __main__ to
    # install EarlySignals before any other import.
    early.install()
    try:
        try:
            app: ServiceApp | None = _start(create_app, environ=environ, early=early)
        except SettingsError as e:
            print(f"{service_name}: {e}", file=sys.stderr)
            return EXIT_BAD_SETTINGS
        except StartupAbandoned as abandoned:
            _log_abandoned(service_name, abandoned.signum)
            app = None
        if app is not None:
            logger.info(
                "%s starts on %s:%d as pod %s",
                service_name,
                app.settings.bind_host,
                app.settings.port,
                app.settings.pod_name,
            )
            asyncio.run(serve(app, early=early))
    finally:
        early.restore()
    return 0


def _start(
    create_app: Callable[[Settings], ServiceApp],
    *,
    environ: Mapping[str, str] | None,
    early: EarlySignals,
) -> ServiceApp:
    """Read the settings and create the app, abandoned by a stop signal."""
    try:
        settings = Settings.from_environ(environ)
        logging.basicConfig(
            level=settings.log_level_number,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        return create_app(settings)
    finally:
        # From here on a signal is only noted, for serve to look at.
        early.starting = False
