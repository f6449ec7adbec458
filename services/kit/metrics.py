"""Prometheus metrics of the requests a service answers.

The harness proves load balancing by reading ``http_requests_total`` of every
pod, so the names and labels here are a contract. Each app gets a registry of
its own, so that many apps in one process (as in tests) count apart. The
route label is the URL rule, not the path, which keeps the number of series
bounded whatever clients send.
"""

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from quart import Request

#: The route label of a request that matched no URL rule.
UNMATCHED_ROUTE = "<unmatched>"
#: The method label of a request whose method is not a standard one.
OTHER_METHOD = "OTHER"

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def new_registry() -> CollectorRegistry:
    """Return a registry with the process, platform and GC collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class RequestMetrics:
    """The request counter and duration histogram of one app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by URL rule, method and status.",
            labelnames=("route", "method", "status"),
            registry=registry,
        )
        self.durations = Histogram(
            "http_request_duration_seconds",
            "Time to produce the response, by URL rule and method.",
            labelnames=("route", "method"),
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, *, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and record how long it took."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            # Label lookups cost more than the update itself; do each only once.
            children = (
                self.requests.labels(route, method, str(status)),
                self.durations.labels(route, method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def record(self, request: Request, *, status: int, seconds: float) -> None:
        """Count ``request`` unless it is a probe or a scrape."""
        if not is_traffic(request.path):
            return
        rule = request.url_rule
        method = request.method if request.method in _METHODS else OTHER_METHOD
        self.observe(
            route=rule.rule if rule is not None else UNMATCHED_ROUTE,
            method=method,
            status=status,
            seconds=seconds,
        )


def is_traffic(path: str) -> bool:
    """Tell whether a request to ``path`` counts as traffic."""
    # The probes and the scraper call these; strict slashes are off, hence rstrip.
    trimmed = path.rstrip("/")
    return not (trimmed in ("/metrics", "/health") or path.startswith("/health/"))
