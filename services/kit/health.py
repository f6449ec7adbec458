"""The life cycle of a service as its readiness probe reports it.

Kubernetes sends traffic to a pod only while its readiness probe passes, so
the probe must fail until the service can answer, and fail again as soon as
the pod is told to stop: the endpoint is then removed while the service
still finishes the requests it has.
"""

import enum
import logging

logger = logging.getLogger(__name__)


class Phase(enum.Enum):
    """Where a service is in its life."""

    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


class Health:
    """Hold the phase of one service; only moves forward."""

    def __init__(self, *, name: str) -> None:
        self.name = name
        self._phase = Phase.STARTING

    @property
    def phase(self) -> Phase:
        """Return the current phase."""
        return self._phase

    @property
    def ready(self) -> bool:
        """Tell whether the service should get traffic."""
        return self._phase is Phase.READY

    def mark_ready(self) -> None:
        """Report that startup has finished, unless shutdown already began."""
        if self._phase is Phase.STARTING:
            self._phase = Phase.READY
            logger.info("%s is ready", self.name)

    def begin_shutdown(self) -> None:
        """Report that the service is stopping: readiness fails from now on."""
        if self._phase is not Phase.STOPPING:
            self._phase = Phase.STOPPING
            logger.info("%s is stopping; readiness now fails", self.name)
