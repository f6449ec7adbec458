"""Reading each pod's own request counters, and what they rose by.

The experiments judge load balancing by what every pod says it served, not by
what the client believes. Each service counts its answers in the Prometheus
counter ``http_requests_total`` with the labels ``route`` (the URL rule, such as
``/catalog/<int:item_id>``), ``method`` and ``status``. This module parses that
text, keeps one snapshot per pod, and computes the rise between two snapshots.

A pod is known by its uid, not its name: a pod that replaced another under the
same name (a StatefulSet) or a new pod is a new series whose baseline is zero.
A counter that went down under the same uid means the container restarted; the
later value is then the whole rise, and the rise says so.

Snapshots are read through the API server's pod proxy, so the harness needs no
route into the pod network.
"""

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from prometheus_client.parser import text_string_to_metric_families

from harness.errors import HarnessError

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api, V1Pod

logger = logging.getLogger(__name__)

#: The counter family every service exposes (samples end in ``_total``).
REQUESTS_FAMILY = "http_requests"
#: The gauge the Prometheus client's process collector sets at start.
START_TIME_SAMPLE = "process_start_time_seconds"


class ScrapeError(HarnessError):
    """A pod's metrics could not be read or parsed."""


class RequestKey(NamedTuple):
    """The labels of one ``http_requests_total`` series."""

    route: str
    method: str
    status: int


Counters = Mapping[RequestKey, int]


class _Filtered:
    """The filtered totals of a ``counters`` mapping: of a snapshot, or a rise."""

    counters: Counters

    def total(
        self,
        *,
        route: str | None = None,
        route_prefix: str | None = None,
        method: str | None = None,
        status: int | None = None,
    ) -> int:
        """Return the requests in ``counters`` that match every filter given."""
        return total(
            self.counters,
            route=route,
            route_prefix=route_prefix,
            method=method,
            status=status,
        )


@dataclass(frozen=True)
class PodCounters(_Filtered):
    """The request counters of one pod at one moment."""

    pod: str
    uid: str
    taken_at: datetime
    counters: Counters
    #: When the pod's process started (Unix seconds), if it exposes that.
    started_at: float | None = None


@dataclass(frozen=True)
class Rise(_Filtered):
    """What one pod's counters rose by between two snapshots."""

    pod: str
    uid: str
    counters: Counters
    #: The earlier snapshot was of another pod (or absent): the baseline is 0.
    new_pod: bool = False
    #: The same pod's counters went down: its container restarted in between,
    #: so requests served before the restart and after the earlier snapshot
    #: are not in ``counters``.
    restarted: bool = False
    seconds: float | None = field(default=None, compare=False)


def parse_metrics(text: str) -> tuple[dict[RequestKey, int], float | None]:
    """Parse Prometheus text into request counts and the process start time."""
    counters: dict[RequestKey, int] = {}
    started_at: float | None = None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == START_TIME_SAMPLE:
                    started_at = float(sample.value)
                elif sample.name == f"{REQUESTS_FAMILY}_total":
                    counters[_key(sample.labels)] = int(sample.value)
    except ValueError as e:
        raise ScrapeError(f"metrics text does not parse: {e}") from e
    return counters, started_at


def _key(labels: Mapping[str, str]) -> RequestKey:
    try:
        return RequestKey(labels["route"], labels["method"], int(labels["status"]))
    except (KeyError, ValueError):
        raise ValueError(
            f"{REQUESTS_FAMILY}_total series {dict(labels)} lacks a route, "
            "a method or a numeric status label"
        ) from None


def snapshot(
    text: str, *, pod: str, uid: str, taken_at: datetime | None = None
) -> PodCounters:
    """Make a snapshot of ``pod`` from the metrics text it answered."""
    try:
        counters, started_at = parse_metrics(text)
    except ScrapeError as e:
        raise ScrapeError(f"pod {pod}: {e}") from e
    return PodCounters(
        pod=pod,
        uid=uid,
        taken_at=taken_at or datetime.now(UTC),
        counters=counters,
        started_at=started_at,
    )


def rise(before: PodCounters | None, after: PodCounters) -> Rise:
    """Return what ``after``'s counters rose by since ``before``.

    ``before`` of another uid, or None, is a baseline of zero. Under the same
    uid, a counter that went down or a new process start time is a restart.
    """
    seconds = (
        None if before is None else (after.taken_at - before.taken_at).total_seconds()
    )
    if before is None or before.uid != after.uid:
        return Rise(
            after.pod, after.uid, dict(after.counters), new_pod=True, seconds=seconds
        )

    went_down = [
        key
        for key, value in before.counters.items()
        if after.counters.get(key, 0) < value
    ]
    new_process = (
        before.started_at is not None
        and after.started_at is not None
        and after.started_at != before.started_at
    )
    if went_down or new_process:
        logger.warning(
            "pod %s restarted between %s and %s; counting from the restart",
            after.pod,
            before.taken_at.isoformat(),
            after.taken_at.isoformat(),
        )
        return Rise(
            after.pod, after.uid, dict(after.counters), restarted=True, seconds=seconds
        )

    delta = {
        key: value - before.counters.get(key, 0)
        for key, value in after.counters.items()
    }
    return Rise(
        after.pod,
        after.uid,
        {key: value for key, value in delta.items() if value},
        seconds=seconds,
    )


def rises(before: Iterable[PodCounters], after: Iterable[PodCounters]) -> list[Rise]:
    """Return the rise of each pod in ``after``, matched to ``before`` by uid.

    Pods only in ``before`` are gone; what they served after their snapshot is
    lost to the count, and logged.
    """
    earlier = {counters.uid: counters for counters in before}
    later = list(after)
    gone = sorted(
        counters.pod
        for uid, counters in earlier.items()
        if uid not in {c.uid for c in later}
    )
    if gone:
        logger.info("pods %s are gone since the first snapshot", ", ".join(gone))
    return [rise(earlier.get(counters.uid), counters) for counters in later]


def _route_matches(route: str, prefix: str) -> bool:
    trimmed = prefix.rstrip("/")
    return route == trimmed or route.startswith(f"{trimmed}/")


def select(
    counters: Counters,
    *,
    route: str | None = None,
    route_prefix: str | None = None,
    method: str | None = None,
    status: int | None = None,
) -> dict[RequestKey, int]:
    """Keep the series that match every filter given.

    ``route_prefix`` matches whole path segments: ``/catalog`` keeps
    ``/catalog`` and ``/catalog/<int:item_id>`` but not ``/catalogue``.
    """
    return {
        key: value
        for key, value in counters.items()
        if (route is None or key.route == route)
        and (route_prefix is None or _route_matches(key.route, route_prefix))
        and (method is None or key.method == method)
        and (status is None or key.status == status)
    }


def total(
    counters: Counters,
    *,
    route: str | None = None,
    route_prefix: str | None = None,
    method: str | None = None,
    status: int | None = None,
) -> int:
    """Sum the series that match every filter given."""
    return sum(
        select(
            counters,
            route=route,
            route_prefix=route_prefix,
            method=method,
            status=status,
        ).values()
    )


def is_serving(pod: "V1Pod") -> bool:
    """Tell whether ``pod`` is Running and Ready, so that it can answer."""
    status = pod.status
    if status is None or status.phase != "Running":
        return False
    return any(
        condition.type == "Ready" and condition.status == "True"
        for condition in status.conditions or ()
    )


def scrape_pods(
    core_v1: "CoreV1Api",
    *,
    namespace: str,
    label_selector: str,
    port: int = 8080,
    timeout: float = 10.0,
) -> list[PodCounters]:
    """Snapshot the counters of every Running and Ready pod the selector matches.

    Each pod is read through the API server's proxy at ``<pod>:<port>/metrics``.
    A pod that does not answer is an error naming it: a count with a pod
    missing would make any spread look wrong.
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        listed = core_v1.list_namespaced_pod(
            namespace=namespace,
            label_selector=label_selector,
            _request_timeout=timeout,
        )
    except (ApiException, HTTPError) as e:
        raise ScrapeError(
            f"cannot list pods {label_selector!r} in namespace {namespace}: {e}; "
            "check that the namespace exists and the cluster answers"
        ) from e
    pods: Sequence[V1Pod] = [pod for pod in listed.items if is_serving(pod)]

    snapshots = []
    for pod in pods:
        metadata = pod.metadata
        if metadata is None or not metadata.name or not metadata.uid:
            raise ScrapeError(
                f"a pod {label_selector!r} in namespace {namespace} has no name "
                "or uid; the API server answered something unexpected"
            )
        name, uid = metadata.name, metadata.uid
        try:
            response = core_v1.connect_get_namespaced_pod_proxy_with_path(
                name=f"{name}:{port}",
                namespace=namespace,
                path="metrics",
                _preload_content=False,
                _request_timeout=timeout,
            )
            # Unread (``_preload_content=False``), the answer is urllib3's
            # response, not the str the signature declares.
            text = cast(Any, response).data.decode("utf-8")
        except ApiException as e:
            raise ScrapeError(
                f"pod {namespace}/{name} did not answer /metrics on port {port}: "
                f"HTTP {e.status} {e.reason}; check its logs and readiness"
            ) from e
        except (HTTPError, UnicodeDecodeError) as e:
            raise ScrapeError(
                f"pod {namespace}/{name} did not answer /metrics on port {port} "
                f"within {timeout:g} s: {e}"
            ) from e
        snapshots.append(snapshot(text, pod=name, uid=uid))
        logger.debug("scraped pod %s/%s", namespace, name)
    return snapshots
