"""Putting the shop into a namespace and changing it while the experiments run.

The manifests under ``k8s/`` are read in the order ``k8s/Kustomization``
lists them, placed into one namespace and applied server-side, so that
applying them twice changes nothing. Every wait that follows (a rollout, a
scale, the endpoints of a Service) watches the API instead of sleeping, and
gives up early when a pod shows it will never become Ready: an image the
node does not have, a container that crashes, a deadline the Deployment
controller gave up on. The error then names the pod and quotes its events,
so that a broken deployment ends a run in seconds, not at a timeout.

Objects are handled as the plain JSON the API server sends (``raw``
dictionaries), which is what the watch streams carry and what the tests
record from a real cluster.
"""

import copy
import errno
import hashlib
import http.client
import json
import logging
import queue
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

import yaml

from harness.errors import HarnessError, UsageError
from harness.paths import PROJECT_ROOT, cache_dir

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

logger = logging.getLogger(__name__)

MANIFESTS_DIR = PROJECT_ROOT / "k8s"
KUSTOMIZATION = "Kustomization"
#: The label every object of the shop carries with its component's name.
NAME_LABEL = "app.kubernetes.io/name"
#: The label an EndpointSlice carries with the name of its Service.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: Who owns the fields the harness applies, in the API's managed fields.
FIELD_MANAGER = "kube-harness"
#: The annotation ``kubectl rollout restart`` sets; a new value restarts pods.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

#: Seconds one API call may take.
API_TIMEOUT_S = 15.0
#: Seconds a rollout may take before the wait gives up.
ROLLOUT_TIMEOUT_S = 180.0
#: Seconds one watch request lasts before it is renewed.
WATCH_SEGMENT_S = 60
#: Lines of a pod's log quoted in a diagnosis.
LOG_LINES = 20

#: Reasons a container waits for that it will not get over by itself.
FATAL_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImageNeverPull",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "RunContainerError",
    }
)
#: Of those, the reasons a container may still get over: the kubelet reports
#: CreateContainerConfigError while its cache of a brand-new namespace's
#: ConfigMaps fills, and a pull or a start can fail once. They end a wait
#: only once they have lasted ``PERSISTENT_PROBLEM_S``.
PASSING_WAITING_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "RunContainerError",
    }
)
PERSISTENT_PROBLEM_S = 20.0

Raw = dict[str, Any]


class DeployError(HarnessError):
    """The shop could not be applied, or did not become ready in time."""


class ObjectMeta(TypedDict):
    name: str
    namespace: NotRequired[str]
    labels: NotRequired[dict[str, str]]
    annotations: NotRequired[dict[str, str]]


class Manifest(TypedDict):
    """One Kubernetes object as a manifest file has it."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: NotRequired[dict[str, Any]]
    data: NotRequired[dict[str, str]]


# --- manifests --------------------------------------------------------------


def read_manifests(folder: Path = MANIFESTS_DIR) -> list[Manifest]:
    """Read the objects of the files ``folder/Kustomization`` lists, in its order."""
    kustomization = folder / KUSTOMIZATION
    try:
        listed = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(
            f"{kustomization} cannot be read ({e}); it lists the manifest files"
        ) from e
    resources = listed.get("resources") if isinstance(listed, dict) else None
    if not isinstance(resources, list) or not resources:
        raise UsageError(f"{kustomization} lists no resources; add the manifest files")

    manifests: list[Manifest] = []
    for resource in resources:
        path = folder / str(resource)
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"manifest {path} cannot be read: {e}") from e
        for index, document in enumerate(documents):
            if document is None:
                continue
            manifests.append(_checked(document, where=f"{path} document {index + 1}"))
    return manifests


def _checked(document: object, *, where: str) -> Manifest:
    if not isinstance(document, dict):
        raise UsageError(f"{where} is not a mapping; write one object per document")
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not document.get("apiVersion") or not document.get("kind") or not name:
        raise UsageError(
            f"{where} lacks apiVersion, kind or metadata.name; "
            "every object needs all three"
        )
    return cast(Manifest, document)


def in_namespace(manifests: Iterable[Manifest], *, namespace: str) -> list[Manifest]:
    """Return copies of ``manifests`` placed in ``namespace``."""
    placed = []
    for manifest in manifests:
        given = manifest["metadata"].get("namespace")
        if given is not None and given != namespace:
            raise UsageError(
                f"{manifest['kind']} {manifest['metadata']['name']} names namespace "
                f"{given}; leave the namespace out so the harness can choose it"
            )
        copied = copy.deepcopy(manifest)
        copied["metadata"]["namespace"] = namespace
        placed.append(copied)
    return placed


def images_of(manifests: Iterable[Manifest]) -> list[str]:
    """Return every container image the pod templates of ``manifests`` name."""
    images = set()
    for manifest in manifests:
        template = manifest.get("spec", {}).get("template", {}).get("spec", {})
        for key in ("initContainers", "containers"):
            for container in template.get(key, ()):
                images.add(str(container["image"]))
    return sorted(images)


def selector(app: str) -> str:
    """Return the label selector of the pods of component ``app``."""
    return f"{NAME_LABEL}={app}"


def apply(api: "ApiClient", manifests: Sequence[Manifest], *, namespace: str) -> None:
    """Apply ``manifests`` into ``namespace`` server-side, as the harness's manager."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

    dynamic = DynamicClient(  # type: ignore[no-untyped-call]
        api, cache_file=str(_discovery_cache(api))
    )
    for manifest in in_namespace(manifests, namespace=namespace):
        what = f"{manifest['kind']} {namespace}/{manifest['metadata']['name']}"
        try:
            resource = dynamic.resources.get(
                api_version=manifest["apiVersion"], kind=manifest["kind"]
            )
            resource.server_side_apply(
                body=manifest,
                namespace=namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                _request_timeout=API_TIMEOUT_S,
            )
        except ResourceNotFoundError as e:
            raise DeployError(
                f"{what}: the cluster serves no {manifest['apiVersion']} "
                f"{manifest['kind']}; use a cluster of Kubernetes 1.21 or later"
            ) from e
        except (ApiException, DynamicApiError) as e:
            raise DeployError(f"applying {what} failed: {_api_reason(e)}") from e
        logger.debug("applied %s", what)


def _discovery_cache(api: "ApiClient") -> Path:
    """Return where the dynamic client keeps what it discovered of one server."""
    host = str(api.configuration.host)
    folder = cache_dir() / "discovery"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{hashlib.sha256(host.encode()).hexdigest()[:16]}.json"


def _api_reason(error: Exception) -> str:
    """Return the message the API server gave with an error, on one line."""
    status = getattr(error, "status", None)
    body = getattr(error, "body", None)
    message = None
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError, TypeError):
            message = None
    reason = message or getattr(error, "reason", None) or str(error)
    text = f"HTTP {status}: {reason}" if status else str(reason)
    return " ".join(text.split())


# --- raw objects ------------------------------------------------------------


def raw_list(list_call: Callable[..., Any], **arguments: Any) -> Raw:
    """Call a ``list_*`` method and return the JSON the API server answered."""
    response = list_call(
        _preload_content=False, _request_timeout=API_TIMEOUT_S, **arguments
    )
    return cast(Raw, json.loads(cast(Any, response).data))


def parse_time(text: str | None) -> float | None:
    """Return an API timestamp (``2026-12-03T11:05:12Z``) as Unix seconds."""
    if not text:
        return None
    return (
        datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()
    )


def name_of(raw: Mapping[str, Any]) -> str:
    """Return the name of a raw object."""
    return str(raw.get("metadata", {}).get("name", ""))


def is_terminating(pod: Mapping[str, Any]) -> bool:
    """Tell whether a pod is being deleted."""
    return pod.get("metadata", {}).get("deletionTimestamp") is not None


def is_ready(pod: Mapping[str, Any]) -> bool:
    """Tell whether a pod's Ready condition is True."""
    return any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in pod.get("status", {}).get("conditions") or ()
    )


def is_serving(pod: Mapping[str, Any]) -> bool:
    """Tell whether a pod runs, is Ready and is not being deleted."""
    return (
        pod.get("status", {}).get("phase") == "Running"
        and is_ready(pod)
        and not is_terminating(pod)
    )


def matches(labels: Mapping[str, str], match_labels: Mapping[str, str]) -> bool:
    """Tell whether ``labels`` carry every label of ``match_labels``."""
    return all(labels.get(key) == value for key, value in match_labels.items())


@dataclass(frozen=True)
class PodProblem:
    """Why a pod does not become Ready."""

    reason: str
    #: One line naming the pod and saying what is wrong.
    message: str

    @property
    def passing(self) -> bool:
        """Tell whether the pod may still get over it by itself."""
        return self.reason in PASSING_WAITING_REASONS


def pod_problem(pod: Mapping[str, Any]) -> PodProblem | None:
    """Return why a pod does not become Ready by itself, or None if it may."""
    status = pod.get("status", {})
    name = name_of(pod)
    if status.get("phase") == "Failed":
        reason = str(status.get("reason") or "Failed")
        detail = status.get("message") or reason
        return PodProblem(reason, f"pod {name} failed: {detail}")
    for condition in status.get("conditions") or ():
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return PodProblem(
                "Unschedulable",
                f"pod {name} cannot be scheduled: {condition.get('message')}",
            )
    containers = [
        *(status.get("initContainerStatuses") or ()),
        *(status.get("containerStatuses") or ()),
    ]
    for container in containers:
        waiting = (container.get("state") or {}).get("waiting") or {}
        waiting_for = str(waiting.get("reason") or "")
        if waiting_for in FATAL_WAITING_REASONS:
            message = " ".join(str(waiting.get("message") or "").split())
            text = f"pod {name} container {container.get('name')} is in {waiting_for}"
            return PodProblem(waiting_for, text + (f": {message}" if message else ""))
    return None


def rollout_complete(deployment: Mapping[str, Any]) -> bool:
    """Tell whether a Deployment's rollout is complete.

    As ``kubectl rollout status`` judges it, and also not while a scale-down
    still has pods to remove.
    """
    spec = deployment.get("spec", {})
    status = deployment.get("status", {})
    wanted = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    return (
        int(deployment.get("metadata", {}).get("generation", 0))
        <= int(status.get("observedGeneration", 0))
        and updated >= wanted
        and int(status.get("replicas", 0)) <= min(updated, wanted)
        and int(status.get("availableReplicas", 0)) >= updated
    )


def rollout_problem(deployment: Mapping[str, Any]) -> str | None:
    """Return why a Deployment's rollout will not complete, or None if it may."""
    for condition in deployment.get("status", {}).get("conditions") or ():
        if (
            condition.get("type") == "Progressing"
            and condition.get("status") == "False"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return (
                f"deployment {name_of(deployment)} exceeded its progress deadline: "
                f"{condition.get('message')}"
            )
    return None


def ready_endpoints(slices: Iterable[Mapping[str, Any]]) -> set[str]:
    """Return the pods the EndpointSlices list as ready to get traffic."""
    names = set()
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or ():
            target = endpoint.get("targetRef") or {}
            ready = (endpoint.get("conditions") or {}).get("ready")
            # An absent ready condition means ready, by the API's definition.
            if target.get("name") and ready is not False:
                names.add(str(target["name"]))
    return names


def describe_event(event: Mapping[str, Any]) -> str:
    """Return one line saying what a core Event reports."""
    involved = event.get("involvedObject") or {}
    count = event.get("count") or (event.get("series") or {}).get("count")
    times = f" (x{count})" if count and int(count) > 1 else ""
    message = " ".join(str(event.get("message") or "").split())
    return (
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name')} "
        f"{event.get('type')} {event.get('reason')}: {message}{times}"
    )


def _event_time(event: Mapping[str, Any]) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("metadata", {}).get("creationTimestamp")
        or ""
    )


# --- watching ---------------------------------------------------------------


@dataclass(frozen=True)
class WatchEvent:
    """One change of one object, as a watch delivered it."""

    #: What was watched, as the watcher was named: ``pods``, ``deployments``.
    source: str
    #: ADDED, MODIFIED, DELETED; LISTED for an object a (re)list found; SYNCED
    #: once a list is complete; ERROR when the API refused the watch.
    type: str
    object: Raw
    #: When the event reached this process, Unix seconds.
    arrived_at: float


class Watcher(threading.Thread):
    """List, then watch, one collection, handing every event to ``deliver``.

    Each watch request lasts at most ``WATCH_SEGMENT_S`` and is renewed from
    the last resource version seen; an expired version (HTTP 410) lists
    afresh. ``stop`` shuts the watch's socket, so the thread ends at once
    even while it waits for the next event.
    """

    def __init__(
        self,
        list_call: Callable[..., Any],
        *,
        source: str,
        deliver: Callable[[WatchEvent], None],
        **selectors: Any,
    ) -> None:
        super().__init__(name=f"watch-{source}", daemon=True)
        self._list_call = list_call
        self._source = source
        self._deliver = deliver
        self._selectors = selectors
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._response: Any = None

    def stop(self) -> None:
        """Ask the thread to end, breaking the watch request it waits in."""
        with self._lock:
            self._stopping.set()
            if self._response is not None:
                _shut(self._response)

    def run(self) -> None:
        """List and watch until stopped."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._follow(version)
            except _ExpiredError:
                version = None
            except ApiException as e:
                self._emit("ERROR", {"status": e.status, "reason": e.reason})
                self._stopping.wait(0.5)
            except (HTTPError, OSError, ValueError) as e:
                if not self._stopping.is_set():
                    logger.debug("watch of %s broke (%s); renewing", self._source, e)
                self._stopping.wait(0.2)

    def _emit(self, kind: str, raw: Raw) -> None:
        self._deliver(WatchEvent(self._source, kind, raw, time.time()))

    def _list(self) -> str:
        listing = raw_list(self._list_call, **self._selectors)
        for item in listing.get("items") or ():
            self._emit("LISTED", item)
        self._emit("SYNCED", {})
        return str(listing["metadata"]["resourceVersion"])

    def _follow(self, version: str) -> str:
        """Watch from ``version`` for one segment; return the last version seen."""
        from kubernetes.watch.watch import iter_resp_lines

        response = self._list_call(
            watch=True,
            resource_version=version,
            timeout_seconds=WATCH_SEGMENT_S,
            allow_watch_bookmarks=True,
            _preload_content=False,
            _request_timeout=(API_TIMEOUT_S, WATCH_SEGMENT_S + API_TIMEOUT_S),
            **self._selectors,
        )
        with self._lock:
            self._response = response
            stopping = self._stopping.is_set()
        try:
            if stopping:
                return version
            if response.status != 200:
                if response.status == 410:
                    raise _ExpiredError()
                self._emit("ERROR", {"status": response.status})
                self._stopping.wait(0.5)
                return version
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if not line:
                    continue
                event = json.loads(line)
                raw = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if raw.get("code") == 410:
                        raise _ExpiredError()
                    self._emit("ERROR", raw)
                    continue
                version = str(raw.get("metadata", {}).get("resourceVersion") or version)
                if event.get("type") != "BOOKMARK":
                    self._emit(str(event.get("type")), raw)
                if self._stopping.is_set():
                    break
            return version
        finally:
            with self._lock:
                self._response = None
                stopped = self._stopping.is_set()
            if stopped and response.connection is not None:
                # Its socket was shut for reading: the pool must not reuse it.
                response.connection.close()
            response.release_conn()


class _ExpiredError(Exception):
    """The resource version a watch started from is too old: list afresh."""


def _shut(response: Any) -> None:
    """Shut the socket of a streaming response, unblocking its reader."""
    try:
        response.shutdown()
    except (AttributeError, OSError, RuntimeError, ValueError) as e:
        logger.debug("could not shut a watch's socket: %s", e)


class Watches:
    """Several watches at once, their events merged into one queue."""

    def __init__(self) -> None:
        self._events: queue.Queue[WatchEvent] = queue.Queue()
        self._watchers: list[Watcher] = []

    def watch(
        self, source: str, list_call: Callable[..., Any], **selectors: Any
    ) -> None:
        """Start watching the collection ``list_call`` lists, as ``source``."""
        watcher = Watcher(
            list_call, source=source, deliver=self._events.put, **selectors
        )
        self._watchers.append(watcher)
        watcher.start()

    def get(self, *, timeout: float) -> WatchEvent | None:
        """Return the next event, or None if none came within ``timeout`` seconds."""
        try:
            return self._events.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop every watch and wait a moment for its thread to end."""
        for watcher in self._watchers:
            watcher.stop()
        for watcher in self._watchers:
            watcher.join(timeout=5.0)
            if watcher.is_alive():
                logger.debug("%s did not end in time; it is a daemon", watcher.name)

    def __enter__(self) -> "Watches":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- the shop in its namespace ----------------------------------------------


class Shop:
    """The shop deployed in one namespace, and what the experiments do to it.

    Methods that act on the cluster are named like the kubectl verbs they
    stand for; each waits, by watching, until the change has taken effect.
    """

    def __init__(self, api: "ApiClient", *, namespace: str) -> None:
        from kubernetes import client

        self.api = api
        self.namespace = namespace
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)

    # Namespace.

    def create_namespace(self, *, timeout: float = ROLLOUT_TIMEOUT_S) -> None:
        """Create the namespace, after an earlier one of its name finished going."""
        from kubernetes.client.exceptions import ApiException

        body: Any = {
            "metadata": {
                "name": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
            }
        }
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.core.create_namespace(body, _request_timeout=API_TIMEOUT_S)
                logger.info("created namespace %s", self.namespace)
                return
            except ApiException as e:
                if e.status != 409:
                    raise DeployError(
                        f"creating namespace {self.namespace} failed: {_api_reason(e)}"
                    ) from e
            phase = self._namespace_phase()
            if phase == "Active":
                logger.info("namespace %s exists; applying into it", self.namespace)
                return
            if time.monotonic() > deadline:
                raise DeployError(
                    f"namespace {self.namespace} is still {phase} after {timeout:g} s; "
                    "wait for it to go or choose another --namespace"
                )
            self._wait_namespace_gone(deadline=deadline)

    def _namespace_phase(self) -> str | None:
        from kubernetes.client.exceptions import ApiException

        try:
            found = raw_list(
                self.core.list_namespace,
                field_selector=f"metadata.name={self.namespace}",
            )
        except ApiException as e:
            raise DeployError(
                f"reading namespace {self.namespace} failed: {_api_reason(e)}"
            ) from e
        items = found.get("items") or []
        return str(items[0].get("status", {}).get("phase")) if items else None

    def _wait_namespace_gone(self, *, deadline: float) -> None:
        with Watches() as watches:
            watches.watch(
                "namespaces",
                self.core.list_namespace,
                field_selector=f"metadata.name={self.namespace}",
            )
            present = True
            while present and time.monotonic() < deadline:
                event = watches.get(timeout=deadline - time.monotonic())
                if event is None:
                    return
                if event.type == "SYNCED":
                    present = self._namespace_phase() is not None
                elif event.type == "DELETED":
                    present = False

    def delete_namespace(self) -> None:
        """Delete the namespace and everything in it; do not wait for it to go.

        The Services go first, one by one, so that their NodePorts are free
        for the next run at once, while the pods still stop in the background.
        """
        from kubernetes.client.exceptions import ApiException

        try:
            services = raw_list(
                self.core.list_namespaced_service, namespace=self.namespace
            )
            for service in services.get("items") or ():
                self.core.delete_namespaced_service(
                    name_of(service), self.namespace, _request_timeout=API_TIMEOUT_S
                )
        except ApiException as e:
            if e.status != 404:
                logger.warning(
                    "could not delete the Services of %s first: %s",
                    self.namespace,
                    _api_reason(e),
                )
        try:
            self.core.delete_namespace(self.namespace, _request_timeout=API_TIMEOUT_S)
            logger.info("deleting namespace %s", self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise DeployError(
                    f"deleting namespace {self.namespace} failed: {_api_reason(e)}"
                ) from e

    # Deployments.

    def apply(self, manifests: Sequence[Manifest]) -> None:
        """Apply ``manifests`` into the namespace."""
        apply(self.api, manifests, namespace=self.namespace)

    def wait_for_rollouts(
        self,
        names: Iterable[str],
        *,
        settled: bool = False,
        timeout: float = ROLLOUT_TIMEOUT_S,
    ) -> None:
        """Wait until the Deployments ``names`` have rolled out.

        ``settled`` also waits until no pod of theirs is being deleted, so that
        only the new pods can answer. A pod that shows it will never become
        Ready ends the wait at once with a ``DeployError`` that quotes its
        events; so does a Deployment past its progress deadline.
        """
        pending = list(names)
        deployments: dict[str, Raw] = {}
        pods: dict[str, Raw] = {}
        synced: set[str] = set()
        seen: dict[tuple[str, str], float] = {}
        deadline = time.monotonic() + timeout
        with Watches() as watches:
            watches.watch(
                "deployments",
                self.apps.list_namespaced_deployment,
                namespace=self.namespace,
            )
            watches.watch(
                "pods", self.core.list_namespaced_pod, namespace=self.namespace
            )
            while True:
                if synced >= {"deployments", "pods"}:
                    pending = [
                        name
                        for name in pending
                        if not self._rolled_out(deployments.get(name), pods, settled)
                    ]
                    if not pending:
                        return
                    self._raise_on_problem(pending, deployments, pods, seen)
                wait = deadline - time.monotonic()
                event = watches.get(timeout=min(wait, 1.0) if seen else wait)
                if event is None and seen and time.monotonic() < deadline:
                    continue
                if event is None:
                    raise DeployError(
                        f"deployments {', '.join(pending)} in {self.namespace} did not "
                        f"roll out within {timeout:g} s; "
                        + self._progress(pending, deployments, pods)
                    )
                _refused(event, namespace=self.namespace)
                if event.source == "deployments":
                    _update(deployments, event, key=name_of)
                else:
                    _update(pods, event)
                if event.type == "SYNCED":
                    synced.add(event.source)

    def _rolled_out(
        self, deployment: Raw | None, pods: Mapping[str, Raw], settled: bool
    ) -> bool:
        if deployment is None or not rollout_complete(deployment):
            return False
        if not settled:
            return True
        own = _pods_of(deployment, pods.values())
        wanted = int(deployment.get("spec", {}).get("replicas", 1))
        return len(own) == wanted and all(is_serving(pod) for pod in own)

    def _raise_on_problem(
        self,
        pending: Sequence[str],
        deployments: Mapping[str, Raw],
        pods: Mapping[str, Raw],
        seen: dict[tuple[str, str], float],
    ) -> None:
        """Raise for a pod that will not be Ready; note those that may still be."""
        now = time.monotonic()
        current = set()
        for name in pending:
            deployment = deployments.get(name)
            if deployment is None:
                continue
            stuck = rollout_problem(deployment)
            if stuck is not None:
                raise DeployError(stuck + self._quoted_events(None))
            for pod in _pods_of(deployment, pods.values()):
                problem = pod_problem(pod)
                if problem is None or is_terminating(pod):
                    continue
                key = (name_of(pod), problem.reason)
                current.add(key)
                since = seen.setdefault(key, now)
                if problem.passing and now - since < PERSISTENT_PROBLEM_S:
                    continue
                lasted = f" for {now - since:.0f} s" if problem.passing else ""
                raise DeployError(
                    f"{problem.message}{lasted}; deployment {name} in "
                    f"{self.namespace} cannot roll out"
                    + self._quoted_events(name_of(pod))
                )
        for key in set(seen) - current:
            del seen[key]

    def _progress(
        self,
        pending: Sequence[str],
        deployments: Mapping[str, Raw],
        pods: Mapping[str, Raw],
    ) -> str:
        parts = []
        for name in pending:
            deployment = deployments.get(name)
            if deployment is None:
                parts.append(f"{name} does not exist")
                continue
            status = deployment.get("status", {})
            parts.append(
                f"{name}: {status.get('updatedReplicas', 0)} updated, "
                f"{status.get('availableReplicas', 0)} available of "
                f"{deployment.get('spec', {}).get('replicas', 1)}"
            )
        return "; ".join(parts) + self._quoted_events(None)

    def _quoted_events(self, pod: str | None) -> str:
        lines = self.events(pod=pod, limit=15)
        return ("\n  " + "\n  ".join(lines)) if lines else ""

    def scale(
        self, *, name: str, replicas: int, timeout: float = ROLLOUT_TIMEOUT_S
    ) -> list[str]:
        """Scale Deployment ``name``; return its pods once all serve and are endpoints.

        The wait ends when exactly ``replicas`` pods run and are Ready, none is
        being deleted, and the Service's EndpointSlices list exactly them.
        """
        from kubernetes.client.exceptions import ApiException

        try:
            self.apps.patch_namespaced_deployment_scale(
                name,
                self.namespace,
                {"spec": {"replicas": replicas}},
                _content_type="application/merge-patch+json",
                _request_timeout=API_TIMEOUT_S,
            )
        except ApiException as e:
            raise DeployError(
                f"scaling deployment {self.namespace}/{name} to {replicas} failed: "
                f"{_api_reason(e)}"
            ) from e
        logger.info("scaling %s/%s to %d", self.namespace, name, replicas)
        deadline = time.monotonic() + timeout
        self.wait_for_rollouts([name], settled=True, timeout=timeout)
        return sorted(
            self.wait_for_endpoints(
                service=name, replicas=replicas, timeout=deadline - time.monotonic()
            )
        )

    def rollout_restart(self, *, name: str, timeout: float = ROLLOUT_TIMEOUT_S) -> None:
        """Replace every pod of Deployment ``name``; wait until only new ones serve."""
        from kubernetes.client.exceptions import ApiException

        moment = datetime.now(UTC).isoformat(timespec="seconds")
        patch = {
            "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: moment}}}}
        }
        try:
            deployment = self.apps.patch_namespaced_deployment(
                name,
                self.namespace,
                patch,
                _content_type="application/merge-patch+json",
                _request_timeout=API_TIMEOUT_S,
            )
        except ApiException as e:
            raise DeployError(
                f"restarting deployment {self.namespace}/{name} failed: "
                f"{_api_reason(e)}"
            ) from e
        replicas = deployment.spec.replicas if deployment.spec else None
        deadline = time.monotonic() + timeout
        self.wait_for_rollouts([name], settled=True, timeout=timeout)
        self.wait_for_endpoints(
            service=name, replicas=replicas, timeout=deadline - time.monotonic()
        )

    def patch_config_map(self, *, name: str, data: Mapping[str, str]) -> None:
        """Set keys of ConfigMap ``name``; pods read them only when they start."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.patch_namespaced_config_map(
                name,
                self.namespace,
                {"data": dict(data)},
                _content_type="application/merge-patch+json",
                _request_timeout=API_TIMEOUT_S,
            )
        except ApiException as e:
            raise DeployError(
                f"patching ConfigMap {self.namespace}/{name} failed: {_api_reason(e)}"
            ) from e

    def config_map_data(self, *, name: str) -> dict[str, str]:
        """Return the data of ConfigMap ``name``."""
        found = raw_list(
            self.core.list_namespaced_config_map,
            namespace=self.namespace,
            field_selector=f"metadata.name={name}",
        )
        items = found.get("items") or []
        if not items:
            raise DeployError(f"ConfigMap {self.namespace}/{name} does not exist")
        return {str(k): str(v) for k, v in (items[0].get("data") or {}).items()}

    # Pods and endpoints.

    def pods(self, app: str) -> list[Raw]:
        """Return every pod of component ``app``, by name."""
        listing = raw_list(
            self.core.list_namespaced_pod,
            namespace=self.namespace,
            label_selector=selector(app),
        )
        return sorted(listing.get("items") or [], key=name_of)

    def serving_pods(self, app: str) -> list[Raw]:
        """Return the pods of ``app`` that run, are Ready and are not being deleted."""
        return [pod for pod in self.pods(app) if is_serving(pod)]

    def delete_pod(self, *, name: str, grace_period_seconds: int | None) -> None:
        """Delete pod ``name``; None keeps the grace period its spec gives."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespaced_pod(
                name,
                self.namespace,
                grace_period_seconds=grace_period_seconds,
                _request_timeout=API_TIMEOUT_S,
            )
        except ApiException as e:
            raise DeployError(
                f"deleting pod {self.namespace}/{name} failed: {_api_reason(e)}"
            ) from e

    def wait_for_endpoints(
        self,
        *,
        service: str,
        replicas: int | None = None,
        timeout: float = ROLLOUT_TIMEOUT_S,
    ) -> set[str]:
        """Wait until the ready endpoints of ``service`` are exactly its serving pods.

        The pods are those of the component of the same name; with
        ``replicas``, there must also be that many. Returns their names.
        """
        pods: dict[str, Raw] = {}
        slices: dict[str, Raw] = {}
        synced: set[str] = set()
        deadline = time.monotonic() + timeout
        with Watches() as watches:
            watches.watch(
                "pods",
                self.core.list_namespaced_pod,
                namespace=self.namespace,
                label_selector=selector(service),
            )
            watches.watch(
                "slices",
                self.discovery.list_namespaced_endpoint_slice,
                namespace=self.namespace,
                label_selector=f"{SERVICE_NAME_LABEL}={service}",
            )
            while True:
                serving = {name_of(pod) for pod in pods.values() if is_serving(pod)}
                listed = ready_endpoints(slices.values())
                if synced >= {"pods", "slices"} and (
                    serving == listed
                    and serving
                    and (replicas is None or len(serving) == replicas)
                ):
                    return serving
                event = watches.get(timeout=deadline - time.monotonic())
                if event is None:
                    raise DeployError(
                        f"service {self.namespace}/{service} did not list exactly its "
                        f"serving pods within {timeout:g} s: serving "
                        f"{sorted(serving)}, ready endpoints {sorted(listed)}"
                        + self._quoted_events(None)
                    )
                _refused(event, namespace=self.namespace)
                _update(pods if event.source == "pods" else slices, event)
                if event.type == "SYNCED":
                    synced.add(event.source)

    # Diagnosis.

    def events(self, *, pod: str | None = None, limit: int = 40) -> list[str]:
        """Return the namespace's latest events, or one pod's, one line each."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        selectors = {}
        if pod is not None:
            selectors["field_selector"] = f"involvedObject.name={pod}"
        try:
            listing = raw_list(
                self.core.list_namespaced_event, namespace=self.namespace, **selectors
            )
        except (ApiException, HTTPError, OSError) as e:
            return [f"(events of {self.namespace} cannot be read: {e})"]
        found = sorted(listing.get("items") or [], key=_event_time)
        return [describe_event(event) for event in found[-limit:]]

    def log_tails(self, *, lines: int = LOG_LINES) -> dict[str, str]:
        """Return the end of the log of every pod in the namespace, by pod name."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        tails = {}
        try:
            listing = raw_list(self.core.list_namespaced_pod, namespace=self.namespace)
        except (ApiException, HTTPError, OSError) as e:
            return {"(pods)": f"pods of {self.namespace} cannot be listed: {e}"}
        for pod in sorted(listing.get("items") or [], key=name_of):
            name = name_of(pod)
            try:
                response = self.core.read_namespaced_pod_log(
                    name,
                    self.namespace,
                    tail_lines=lines,
                    _preload_content=False,
                    _request_timeout=API_TIMEOUT_S,
                )
                tails[name] = cast(Any, response).data.decode("utf-8", "replace")
            except (ApiException, HTTPError, OSError) as e:
                tails[name] = f"(log cannot be read: {e})"
        return tails


def _refused(event: WatchEvent, *, namespace: str) -> None:
    """Raise when the API refused a watch: waiting on would only time out."""
    status = event.object.get("status") if event.type == "ERROR" else None
    if isinstance(status, int) and 400 <= status < 500:
        raise DeployError(
            f"the API refused to list {event.source} in {namespace}: HTTP {status} "
            f"{event.object.get('reason') or ''}; check the kubeconfig's rights"
        )


def _uid(raw: Mapping[str, Any]) -> str:
    return str(raw.get("metadata", {}).get("uid") or "")


def _update(
    objects: dict[str, Raw],
    event: WatchEvent,
    *,
    key: Callable[[Mapping[str, Any]], str] = _uid,
) -> None:
    """Keep ``objects`` (by uid, or ``key``) as the watch events say they are now."""
    found = key(event.object)
    if not found:
        return
    if event.type == "DELETED":
        objects.pop(found, None)
    elif event.type in ("ADDED", "MODIFIED", "LISTED"):
        objects[found] = event.object


def _pods_of(deployment: Mapping[str, Any], pods: Iterable[Raw]) -> list[Raw]:
    wanted = deployment.get("spec", {}).get("selector", {}).get("matchLabels") or {}
    return [
        pod
        for pod in pods
        if wanted and matches(pod.get("metadata", {}).get("labels") or {}, wanted)
    ]


# --- the front door ---------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One HTTP answer of the front door."""

    status: int
    served_by: str | None
    body: bytes

    def json(self) -> Any:
        """Return the body parsed as JSON."""
        return json.loads(self.body)


#: Seconds one request to the front door may take.
REQUEST_TIMEOUT_S = 10.0


# The harness's own requests leave from source ports of a block of their own.
# A connection from this node to a NodePort whose Service has no ready
# endpoint yet is rejected by kube-proxy's rules, and the conntrack entry it
# leaves, un-NATed, waits 120 s in SYN_SENT. Every later connection from the
# same source port matches that entry, so it is not forwarded either: it is
# refused by the node itself, and renews the entry. Probing the front door
# while it comes up would so plant refusals among the ports the load generator
# draws from the kernel's ephemeral range. Probes use ports below that range,
# and a port that was refused is not used again until its entry is gone.
PROBE_PORTS = range(20000, 30000)
#: Seconds a refused source port rests: conntrack's SYN_SENT timeout and more.
PROBE_PORT_REST_S = 130.0
_resting: dict[int, float] = {}
_resting_lock = threading.Lock()


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def _probe_port() -> int | None:
    """Return a free-to-use source port of the probe block, or None if none is."""
    ephemeral = _ephemeral_ports()
    now = time.monotonic()
    with _resting_lock:
        for port, until in list(_resting.items()):
            if until <= now:
                del _resting[port]
        for _ in range(50):
            port = secrets.choice(PROBE_PORTS)
            if port not in ephemeral and port not in _resting:
                return port
    return None


def _rest(port: int | None) -> None:
    if port is not None:
        with _resting_lock:
            _resting[port] = time.monotonic() + PROBE_PORT_REST_S


def request(
    url: str,
    *,
    method: str = "GET",
    body: object = None,
    timeout: float = REQUEST_TIMEOUT_S,
) -> Answer:
    """Send one request on a connection of its own and return the answer.

    ``http.client`` reads no proxy settings, so the request goes straight to
    the address in ``url``. The connection leaves from a port of
    ``PROBE_PORTS``; see there why.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"front door URL {url!r} is not http://HOST:PORT/PATH")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    headers = {"Accept": "application/json", "Connection": "close"}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"

    connection = _connected(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return Answer(
            response.status, response.getheader("X-Served-By"), response.read()
        )
    finally:
        connection.close()


def _connected(host: str, port: int, *, timeout: float) -> http.client.HTTPConnection:
    """Open a connection to ``host:port`` from a port of ``PROBE_PORTS``."""
    attempts = 5
    while True:
        attempts -= 1
        source = _probe_port()
        connection = http.client.HTTPConnection(
            host,
            port,
            timeout=timeout,
            source_address=None if source is None else ("", source),
        )
        try:
            connection.connect()
            return connection
        except OSError as e:
            connection.close()
            _rest(source)
            if e.errno != errno.EADDRINUSE or attempts == 0:
                raise


def wait_until_served(
    url: str,
    *,
    pods: Iterable[str],
    timeout: float = 30.0,
    max_requests: int = 500,
) -> Counter[str]:
    """Send requests to ``url`` until every pod of ``pods`` has answered one.

    A pod that the API lists as an endpoint may not yet be in every node's
    forwarding rules; this proves the data path reaches each one. Returns
    the answers by pod.
    """
    wanted = set(pods)
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    problems: Counter[str] = Counter()
    for _ in range(max_requests):
        if wanted <= set(seen) or time.monotonic() > deadline:
            break
        try:
            answer = request(url, timeout=min(REQUEST_TIMEOUT_S, timeout))
        except OSError as e:
            problems[type(e).__name__] += 1
            time.sleep(0.05)
            continue
        if answer.served_by:
            seen[answer.served_by] += 1
        else:
            problems[f"HTTP {answer.status}"] += 1
    missing = wanted - set(seen)
    if missing:
        raise DeployError(
            f"{url} was not answered by {', '.join(sorted(missing))} after "
            f"{sum(seen.values())} answers from {dict(seen)} and failures "
            f"{dict(problems)}; check the Service's endpoints and kube-proxy"
        )
    return seen


def node_port(manifests: Iterable[Manifest], *, service: str) -> int:
    """Return the NodePort the manifests give Service ``service``."""
    for manifest in manifests:
        if manifest["kind"] == "Service" and manifest["metadata"]["name"] == service:
            for port in manifest.get("spec", {}).get("ports") or ():
                if port.get("nodePort"):
                    return int(port["nodePort"])
    raise UsageError(
        f"no Service {service} with a nodePort in the manifests; "
        "give the front door's Service type NodePort and a nodePort"
    )


def wait_for_answer(url: str, *, timeout: float = 30.0) -> Answer:
    """Send GETs to ``url`` until one is answered 200; return that answer."""
    deadline = time.monotonic() + timeout
    problem = "no answer"
    while True:
        try:
            answer = request(url, timeout=min(REQUEST_TIMEOUT_S, timeout))
            if answer.status == 200:
                return answer
            problem = f"HTTP {answer.status}"
        except OSError as e:
            problem = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise DeployError(
                f"{url} was not answered 200 within {timeout:g} s ({problem}); "
                "check the front door's pods and their Service"
            )
        time.sleep(0.1)
