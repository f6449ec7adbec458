"""Killing pods and timing how their replacements come back.

A self-healing experiment deletes a pod and measures, for the pod the
ReplicaSet creates in its place, how long until it existed, was scheduled,
ran, was Ready and answered its first request. The times come from a watch
on the pods: the moment each event reached the harness, which is a little
late but never early. The API's own timestamps (creation, the Ready
condition) have a resolution of one second, so they only cross-check the
watch: an event can never arrive before the second the API says its change
happened.

``PodHistory`` keeps every pod event of a selector in the background; the
functions below turn such a history into timelines. They work on the plain
JSON of the pods, so they are tested on histories recorded from a cluster.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.deploying import (
    Raw,
    Watcher,
    WatchEvent,
    is_ready,
    is_serving,
    is_terminating,
    name_of,
    parse_time,
    selector,
)
from harness.errors import HarnessError
from harness.results import Kill

if TYPE_CHECKING:
    from harness.deploying import Shop
    from harness.traffic import Request

logger = logging.getLogger(__name__)


class HealingError(HarnessError):
    """A killed pod was not replaced in time."""


@dataclass(frozen=True)
class Sighting:
    """What one watch event said about one pod."""

    #: When the event reached the harness, Unix seconds.
    arrived_at: float
    #: ADDED, MODIFIED, DELETED or LISTED.
    type: str
    name: str
    uid: str
    #: The pod's creation timestamp (one-second resolution), Unix seconds.
    created_at: float | None
    node_name: str | None
    phase: str | None
    ready: bool
    #: When the Ready condition last changed (one-second resolution).
    ready_changed_at: float | None
    deleting: bool


def sighting(event_type: str, pod: Mapping[str, Any], *, arrived_at: float) -> Sighting:
    """Read what matters for a timeline out of one raw pod."""
    metadata = pod.get("metadata", {})
    status = pod.get("status", {})
    ready_changed = next(
        (
            parse_time(condition.get("lastTransitionTime"))
            for condition in status.get("conditions") or ()
            if condition.get("type") == "Ready"
        ),
        None,
    )
    return Sighting(
        arrived_at=arrived_at,
        type=event_type,
        name=name_of(pod),
        uid=str(metadata.get("uid", "")),
        created_at=parse_time(metadata.get("creationTimestamp")),
        node_name=pod.get("spec", {}).get("nodeName"),
        phase=status.get("phase"),
        ready=is_ready(pod),
        ready_changed_at=ready_changed,
        deleting=is_terminating(pod),
    )


def read_history(path: Path) -> list[Sighting]:
    """Read pod events recorded as JSON lines of ``{arrived_at, type, object}``."""
    sightings = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                raw = json.loads(line)
                sightings.append(
                    sighting(raw["type"], raw["object"], arrived_at=raw["arrived_at"])
                )
    return sightings


@dataclass(frozen=True)
class Replacement:
    """How the pod that replaced a killed one came to serve."""

    killed: str
    killed_uid: str
    killed_at: float
    #: The grace period the deletion allowed, in seconds.
    grace: float | None
    replacement: str | None
    replacement_uid: str | None
    created_s: float | None
    scheduled_s: float | None
    running_s: float | None
    ready_s: float | None
    #: When the killed pod was gone from the API, seconds after the kill.
    gone_s: float | None
    #: The same moments by the API's one-second timestamps, as a cross-check.
    created_by_api_s: float | None
    ready_by_api_s: float | None

    def kill(self, *, first_request_s: float | None) -> Kill:
        """Return the kill as the run record has it."""
        return Kill(
            pod=self.killed,
            killed_at=datetime.fromtimestamp(self.killed_at, UTC),
            created_s=self.created_s,
            scheduled_s=self.scheduled_s,
            running_s=self.running_s,
            ready_s=self.ready_s,
            first_request_s=first_request_s,
            grace=self.grace,
        )


def replacement(
    history: Sequence[Sighting],
    *,
    killed_uid: str,
    killed_at: float,
    grace: float | None,
    known_uids: Iterable[str],
) -> Replacement:
    """Find the pod that replaced ``killed_uid`` and time each of its stages.

    The replacement is the first pod the history shows after the kill whose
    uid is not among ``known_uids`` (the pods there before it). A stage not
    seen in the history is None.
    """
    known = set(known_uids) | {killed_uid}
    killed = next((s for s in history if s.uid == killed_uid), None)
    after = [s for s in history if s.arrived_at >= killed_at]
    new = next((s for s in after if s.uid not in known), None)

    def first(condition: Callable[[Sighting], bool]) -> float | None:
        if new is None:
            return None
        moment = next(
            (s.arrived_at for s in after if s.uid == new.uid and condition(s)), None
        )
        return None if moment is None else moment - killed_at

    gone = next(
        (s.arrived_at for s in after if s.uid == killed_uid and s.type == "DELETED"),
        None,
    )
    of_new = [s for s in after if new is not None and s.uid == new.uid]
    ready_api = next(
        (s.ready_changed_at for s in of_new if s.ready and s.ready_changed_at),
        None,
    )
    created_api = new.created_at if new is not None else None
    return Replacement(
        killed=killed.name if killed is not None else killed_uid,
        killed_uid=killed_uid,
        killed_at=killed_at,
        grace=grace,
        replacement=new.name if new is not None else None,
        replacement_uid=new.uid if new is not None else None,
        created_s=first(lambda s: True),
        scheduled_s=first(lambda s: s.node_name is not None),
        running_s=first(lambda s: s.phase == "Running"),
        ready_s=first(lambda s: s.ready and not s.deleting),
        gone_s=None if gone is None else gone - killed_at,
        created_by_api_s=None if created_api is None else created_api - killed_at,
        ready_by_api_s=None if ready_api is None else ready_api - killed_at,
    )


def first_served(
    records: Iterable["Request"], *, pod: str, after: float = 0.0
) -> float | None:
    """Return when ``pod`` first answered a request sent at or after ``after``."""
    times = [r.t for r in records if r.served_by == pod and r.t >= after]
    return min(times) if times else None


def ready_at(history: Sequence[Sighting], *, uid: str) -> float | None:
    """Return when the history first shows pod ``uid`` Ready, Unix seconds."""
    return next(
        (s.arrived_at for s in history if s.uid == uid and s.ready and not s.deleting),
        None,
    )


class PodHistory:
    """Every event of the pods a selector matches, as it reaches the harness.

    Use as a context manager: the watch runs in a thread between enter and
    exit. ``wait`` blocks until the pods as they stand satisfy a condition.
    """

    def __init__(self, shop: "Shop", *, app: str) -> None:
        self._shop = shop
        self._app = app
        self._events: list[WatchEvent] = []
        self._current: dict[str, Raw] = {}
        self._synced = False
        self._changed = threading.Condition()
        self._watcher: Watcher | None = None

    def __enter__(self) -> "PodHistory":
        self._watcher = Watcher(
            self._shop.core.list_namespaced_pod,
            source="pods",
            deliver=self._take,
            namespace=self._shop.namespace,
            label_selector=selector(self._app),
        )
        self._watcher.start()
        self.wait(lambda pods: True, timeout=30.0, what="the first list of pods")
        return self

    def __exit__(self, *_: object) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.join(timeout=5.0)

    def _take(self, event: WatchEvent) -> None:
        with self._changed:
            if event.type == "SYNCED":
                self._synced = True
            elif event.type != "ERROR":
                self._events.append(event)
                uid = event.object.get("metadata", {}).get("uid")
                if uid and event.type == "DELETED":
                    self._current.pop(uid, None)
                elif uid:
                    self._current[uid] = event.object
            self._changed.notify_all()

    def sightings(self) -> list[Sighting]:
        """Return every event so far, in order of arrival."""
        with self._changed:
            events = list(self._events)
        return [sighting(e.type, e.object, arrived_at=e.arrived_at) for e in events]

    def raw_events(self) -> list[dict[str, Any]]:
        """Return every event so far as ``{arrived_at, type, object}``."""
        with self._changed:
            return [
                {"arrived_at": e.arrived_at, "type": e.type, "object": e.object}
                for e in self._events
            ]

    def pods(self) -> list[Raw]:
        """Return the pods as they stand, by name."""
        with self._changed:
            return sorted(self._current.values(), key=name_of)

    def wait(
        self,
        condition: Callable[[list[Raw]], bool],
        *,
        timeout: float,
        what: str,
    ) -> None:
        """Block until ``condition(pods)`` holds; raise after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (
                self._synced and condition(sorted(self._current.values(), key=name_of))
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = sorted(name_of(pod) for pod in self._current.values())
                    raise HealingError(
                        f"{what} did not happen within {timeout:g} s; pods of "
                        f"{self._app} now: {', '.join(names) or 'none'}"
                    )
                self._changed.wait(timeout=min(remaining, 1.0))


def serving_count(pods: Iterable[Raw]) -> int:
    """Return how many of ``pods`` run, are Ready and are not being deleted."""
    return sum(1 for pod in pods if is_serving(pod))


def kill(
    shop: "Shop",
    history: PodHistory,
    *,
    pod: Raw,
    replicas: int,
    grace_period_seconds: int | None,
    timeout: float = 90.0,
) -> Replacement:
    """Delete ``pod`` and wait until ``replicas`` pods serve and it is gone.

    ``grace_period_seconds`` None keeps the pod's own grace period.
    """
    name = name_of(pod)
    uid = str(pod["metadata"]["uid"])
    known = {p["metadata"]["uid"] for p in history.pods()}
    grace: float | None = (
        float(grace_period_seconds)
        if grace_period_seconds is not None
        else pod.get("spec", {}).get("terminationGracePeriodSeconds")
    )
    killed_at = time.time()
    shop.delete_pod(name=name, grace_period_seconds=grace_period_seconds)
    logger.info(
        "deleted pod %s/%s (grace %s s)",
        shop.namespace,
        name,
        "default" if grace_period_seconds is None else grace_period_seconds,
    )

    def healed(pods: list[Raw]) -> bool:
        gone = all(p["metadata"]["uid"] != uid for p in pods)
        fresh = [p for p in pods if p["metadata"]["uid"] not in known]
        return gone and serving_count(pods) == replicas and serving_count(fresh) >= 1

    history.wait(
        healed,
        timeout=timeout,
        what=f"the replacement of pod {name} serving and {name} gone",
    )
    return replacement(
        history.sightings(),
        killed_uid=uid,
        killed_at=killed_at,
        grace=grace,
        known_uids=known,
    )
