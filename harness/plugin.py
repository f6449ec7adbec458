"""The pytest plugin of kube-harness, registered through the ``pytest11`` entry point.

It adds the ``harness`` option group that says which cluster the experiments
run on and how hard they push it, the ``harness_options`` fixture that hands
the validated settings to them, and the session fixtures the experiments are
written with: ``cluster`` (reached or started per ``--cluster``), ``images``
(built and put on it), ``deployment`` (the shop in the run's namespace, all
rolled out), ``front_door``, ``traffic``, ``metrics`` and ``record`` (the run's
results file). Each experiment fills in its ``experiment`` draft, which is
written to the record when it ends, with the cluster's events, each pod's log
tail and the counters when it failed; the same go into the failure report.

A run whose cluster, images or deployment are not usable stops at once with
one line naming the cause (and the pod events), exit status 6.

The plugin is loaded into every pytest run of an environment where kube-harness
is installed, the project's own ``pytest tests`` included. So it imports
nothing heavy, and it validates only when the user set one of its options:
a run that never mentions them is never refused because of them.
"""

import logging
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, cast

import pytest

logger = logging.getLogger(__name__)

ClusterKind = Literal["local", "kind", "k3d", "minikube", "existing"]
CLUSTER_KINDS: tuple[ClusterKind, ...] = (
    "local",
    "kind",
    "k3d",
    "minikube",
    "existing",
)

DEFAULT_CATALOG_REPLICAS = 3
DEFAULT_REQUESTS = 3000
MIN_REQUESTS = 100
#: Fewer requests per replica make the spread judgement unreliable: with 100
#: per pod a fair split already strays by about 10 % per pod.
MIN_REQUESTS_PER_REPLICA = 100
#: Namespaces a run must never use: the harness deletes its namespace after it.
SYSTEM_NAMESPACES = frozenset(
    {"default", "kube-system", "kube-public", "kube-node-lease"}
)

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_OPTION_DESTS = (
    "harness_cluster",
    "harness_kubeconfig",
    "harness_keep_cluster",
    "harness_namespace",
    "harness_catalog_replicas",
    "harness_requests",
    "harness_report_dir",
)


@dataclass(frozen=True)
class HarnessOptions:
    """The settings of one experiment run, as given on the command line."""

    cluster: ClusterKind
    #: The kubeconfig of an existing cluster; None when the harness makes one.
    kubeconfig: Path | None
    #: Leave the cluster the harness started running after the session.
    keep_cluster: bool
    namespace: str
    #: True when the user named the namespace, False when it was made up.
    namespace_given: bool
    catalog_replicas: int
    #: Requests per measurement.
    requests: int
    report_dir: Path


def _dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise pytest.UsageError(
            f"--namespace {value!r} is not a DNS-1123 label; use at most 63 "
            "lower-case letters, digits and '-', starting and ending alphanumeric"
        )
    return value


def _at_least(option: str, minimum: int, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise pytest.UsageError(f"{option} {value!r} is not a whole number") from None
    if number < minimum:
        raise pytest.UsageError(f"{option} {number} is below {minimum}; pass more")
    return number


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the ``harness`` option group."""
    group = parser.getgroup("harness", "kube-harness experiments")
    group.addoption(
        "--cluster",
        dest="harness_cluster",
        choices=CLUSTER_KINDS,
        default=None,
        help="where the experiments run: a cluster the harness starts "
        "(local, kind, k3d, minikube) or an existing one (default: local)",
    )
    group.addoption(
        "--kubeconfig",
        dest="harness_kubeconfig",
        metavar="PATH",
        default=None,
        help="kubeconfig of the cluster to use with --cluster existing",
    )
    group.addoption(
        "--keep-cluster",
        dest="harness_keep_cluster",
        action="store_const",
        const=True,
        default=None,
        help="leave the cluster the harness started running after the session",
    )
    group.addoption(
        "--namespace",
        dest="harness_namespace",
        metavar="NAME",
        default=None,
        help="namespace to deploy into, deleted afterwards "
        "(default: a fresh one per run)",
    )
    group.addoption(
        "--catalog-replicas",
        dest="harness_catalog_replicas",
        metavar="N",
        default=None,
        help=f"replicas of the catalog service (default: {DEFAULT_CATALOG_REPLICAS})",
    )
    group.addoption(
        "--requests",
        dest="harness_requests",
        metavar="N",
        default=None,
        help=f"requests per measurement, at least {MIN_REQUESTS} "
        f"(default: {DEFAULT_REQUESTS})",
    )
    group.addoption(
        "--report-dir",
        dest="harness_report_dir",
        metavar="PATH",
        default=None,
        help="where each run writes its results (default: reports/ in the rootdir)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Refuse bad harness options early, but only when some were given."""
    if any(config.getoption(dest) is not None for dest in _OPTION_DESTS):
        config.stash[_options_key] = build_options(config)


_options_key = pytest.StashKey[HarnessOptions]()


def new_namespace() -> str:
    """Return a fresh namespace for one run, like ``harness-20261203-110512-ab12``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"harness-{stamp}-{secrets.token_hex(2)}"


def build_options(config: pytest.Config) -> HarnessOptions:
    """Build and validate the harness settings from pytest's options."""
    cluster = cast(ClusterKind, config.getoption("harness_cluster") or "local")
    keep_cluster = bool(config.getoption("harness_keep_cluster"))
    invoked_in = config.invocation_params.dir

    kubeconfig: Path | None = None
    raw_kubeconfig = config.getoption("harness_kubeconfig")
    if raw_kubeconfig is not None:
        if cluster != "existing":
            raise pytest.UsageError(
                f"--kubeconfig {raw_kubeconfig} is only read with --cluster existing; "
                f"with --cluster {cluster} the harness makes its own kubeconfig"
            )
        kubeconfig = (invoked_in / Path(raw_kubeconfig).expanduser()).resolve()
        if not kubeconfig.is_file():
            raise pytest.UsageError(
                f"--kubeconfig {raw_kubeconfig}: no such file; "
                "pass the path of a readable kubeconfig"
            )
    elif cluster == "existing":
        raise pytest.UsageError(
            "--cluster existing needs --kubeconfig PATH to know which cluster to use"
        )
    if keep_cluster and cluster == "existing":
        raise pytest.UsageError(
            "--keep-cluster has no effect with --cluster existing: the harness never "
            "deletes a cluster it did not start; leave the option out"
        )

    raw_namespace = config.getoption("harness_namespace")
    if raw_namespace is None:
        namespace, namespace_given = new_namespace(), False
    else:
        namespace, namespace_given = _dns_label(raw_namespace), True
        if namespace in SYSTEM_NAMESPACES:
            raise pytest.UsageError(
                f"--namespace {namespace} is a system namespace and the harness "
                "deletes its namespace after the run; choose another name"
            )

    raw_replicas = config.getoption("harness_catalog_replicas")
    replicas = (
        DEFAULT_CATALOG_REPLICAS
        if raw_replicas is None
        else _at_least("--catalog-replicas", 1, raw_replicas)
    )
    raw_requests = config.getoption("harness_requests")
    requests = (
        DEFAULT_REQUESTS
        if raw_requests is None
        else _at_least("--requests", MIN_REQUESTS, raw_requests)
    )
    if requests < MIN_REQUESTS_PER_REPLICA * replicas:
        raise pytest.UsageError(
            f"--requests {requests} over --catalog-replicas {replicas} leaves "
            f"{requests // replicas} per replica; the spread needs at least "
            f"{MIN_REQUESTS_PER_REPLICA} per replica, so pass --requests "
            f"{MIN_REQUESTS_PER_REPLICA * replicas} or more"
        )

    raw_report_dir = config.getoption("harness_report_dir")
    report_dir = (
        config.rootpath / "reports"
        if raw_report_dir is None
        else (invoked_in / Path(raw_report_dir).expanduser()).resolve()
    )
    if report_dir.exists() and not report_dir.is_dir():
        raise pytest.UsageError(
            f"--report-dir {report_dir} is a file; pass a directory"
        )

    return HarnessOptions(
        cluster=cluster,
        kubeconfig=kubeconfig,
        keep_cluster=keep_cluster,
        namespace=namespace,
        namespace_given=namespace_given,
        catalog_replicas=replicas,
        requests=requests,
        report_dir=report_dir,
    )


@pytest.fixture(scope="session")
def harness_options(pytestconfig: pytest.Config) -> HarnessOptions:
    """Return the validated harness settings of this run."""
    options = pytestconfig.stash.get(_options_key, None)
    if options is None:
        options = build_options(pytestconfig)
        pytestconfig.stash[_options_key] = options
    return options


# --- the cluster, the shop and the run record --------------------------------
#
# Everything below imports the harness's heavier modules inside the fixtures
# and hooks, so that a session that uses none of them does not pay for them.

#: The exit status of a run stopped before its experiments could start: no
#: cluster, a wrong kubeconfig, a missing image, a rollout that cannot finish.
EXIT_NOT_READY = 6
#: Seconds the front door gets to answer once its pods are Ready.
FRONT_DOOR_TIMEOUT_S = 60.0
#: The Service whose NodePort is the way into the shop.
FRONT_DOOR_SERVICE = "apache"
#: Bucket width of the requests-per-second series in the run record.
SERIES_BUCKET_S = 1.0
#: Seconds between two reads of the counters while waiting for them to rise.
METRICS_POLL_S = 0.3

_recorder_key = pytest.StashKey["RunRecorder"]()
_stopped_key = pytest.StashKey[str]()
_reports_key = pytest.StashKey[dict[str, pytest.TestReport]]()
_diagnosis_key = pytest.StashKey["Diagnosis"]()
_current_key = pytest.StashKey[pytest.Item]()
_drafted_key = pytest.StashKey[bool]()

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from harness.clusters import Target
    from harness.deploying import Answer, Shop
    from harness.results import JSON, Experiment, Failure, Kill, PodTally, RunRecorder
    from harness.scraping import PodCounters, Rise
    from harness.traffic import Load, Request, TrafficResult


def _stop_run(config: pytest.Config, message: str) -> NoReturn:
    """End the whole session now with one line naming the cause."""
    config.stash[_stopped_key] = message
    item = config.stash.get(_current_key, None)
    if item is not None:
        _record_error(item, message)
    pytest.exit(f"harness: {message}", returncode=EXIT_NOT_READY)


def _record_error(item: pytest.Item, message: str) -> None:
    """Record an experiment that could not start, unless its draft records it."""
    recorder = item.config.stash.get(_recorder_key, None)
    if recorder is None or "experiment" not in getattr(item, "fixturenames", ()):
        return
    if item.stash.get(_drafted_key, False):
        return
    from harness.results import Experiment, Failure

    now = datetime.now(UTC)
    item.stash[_drafted_key] = True
    recorder.add(
        Experiment(
            name=_experiment_name(item),
            verdict="error",
            started_at=now,
            ended_at=now,
            failure=Failure(message=message),
        )
    )


@dataclass(frozen=True)
class RunningCluster:
    """The cluster of this run, reachable through ``api``."""

    target: "Target"
    api: "ApiClient"
    kubernetes_version: str
    #: Where the nodes' NodePorts answer.
    node_address: str

    @property
    def kind(self) -> str:
        """Return the kind of cluster: local, existing, kind, k3d, minikube."""
        return self.target.kind


@dataclass(frozen=True)
class FrontDoor:
    """The shop's way in: the front door's NodePort on a node."""

    url: str

    def url_of(self, path: str) -> str:
        """Return the URL of ``path`` behind the front door."""
        return f"{self.url}/{path.lstrip('/')}"

    def get(self, path: str) -> "Answer":
        """Send a GET on a connection of its own."""
        from harness.deploying import request

        return request(self.url_of(path))

    def post(self, path: str, body: object) -> "Answer":
        """Send a POST of ``body`` as JSON on a connection of its own."""
        from harness.deploying import request

        return request(self.url_of(path), method="POST", body=body)


class BackgroundLoad:
    """A locust run going on while the experiment acts; stop it, then wait.

    It runs the same command line as ``harness.traffic.run_locust`` and reads
    the same record; SIGTERM ends locust the way it ends a run itself, so the
    record is complete up to that moment.
    """

    def __init__(self, load: "Load", *, host: str) -> None:
        from harness import traffic

        self.load = load
        self.host = host
        self._scratch = tempfile.TemporaryDirectory(prefix="harness-locust-")
        folder = Path(self._scratch.name)
        self._record = folder / "requests.jsonl"
        self._output = (folder / "output.txt").open("w+", encoding="utf-8")
        args = traffic.command(
            load, host=host, record=self._record, locustfile=traffic.LOCUSTFILE
        )
        self.started_at = time.time()
        self._process = subprocess.Popen(
            args,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        self._result: TrafficResult | None = None

    def running(self) -> bool:
        """Tell whether locust still runs."""
        return self._process.poll() is None

    def stop(self) -> None:
        """Ask locust to end the run now."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def wait(self, *, timeout: float | None = None) -> "TrafficResult":
        """Wait for locust to end and return what it met; kill it past ``timeout``."""
        from harness import traffic

        if self._result is not None:
            return self._result
        limit = timeout or (
            self.load.run_time_s + traffic.STOP_TIMEOUT_S + traffic.STARTUP_ALLOWANCE_S
        )
        try:
            exit_code = self._process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.close()
            raise traffic.TrafficError(
                f"locust against {self.host} did not end within {limit:g} s and "
                "was killed"
            ) from None
        self._output.seek(0)
        tail = self._output.read()[-traffic.OUTPUT_TAIL_CHARS :]
        if not self._record.exists():
            self.close()
            raise traffic.TrafficError(
                f"locust exited with {exit_code} before it sent anything; "
                f"output ends:\n{tail}"
            )
        records = traffic.read_records(self._record)
        self._result = traffic.summarise(records, exit_code=exit_code, output_tail=tail)
        self.close()
        return self._result

    def close(self) -> None:
        """Kill locust if it still runs and remove its scratch folder."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=30)
        self._output.close()
        self._scratch.cleanup()

    def __enter__(self) -> "BackgroundLoad":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass(frozen=True)
class Traffic:
    """Load sent with locust through the front door."""

    host: str

    def run(self, load: "Load") -> "TrafficResult":
        """Run ``load`` to its end and return what it met."""
        from harness.traffic import run_locust

        return run_locust(load, host=self.host)

    def start(self, load: "Load") -> BackgroundLoad:
        """Start ``load`` in the background."""
        return BackgroundLoad(load, host=self.host)


@dataclass(frozen=True)
class Metrics:
    """The request counters of the shop's pods, read through the API server."""

    shop: "Shop"

    def scrape(self, app: str) -> list["PodCounters"]:
        """Snapshot the counters of every serving pod of component ``app``."""
        from harness.deploying import selector
        from harness.scraping import scrape_pods

        return scrape_pods(
            self.shop.core, namespace=self.shop.namespace, label_selector=selector(app)
        )

    def totals(self, app: str) -> dict[str, int]:
        """Return the requests each serving pod of ``app`` has answered, by pod."""
        return {snapshot.pod: snapshot.total() for snapshot in self.scrape(app)}

    def wait_for_rise(
        self,
        app: str,
        *,
        pods: Sequence[str] = (),
        at_least: int = 1,
        timeout: float = 60.0,
    ) -> None:
        """Wait until the pods of ``app`` (or each of ``pods``) answered more.

        Without ``pods``, the sum over the pods must rise by ``at_least``; with
        them, each one's count must. This is how an experiment knows that load
        flows, or that a new pod gets its share, while the load still runs.
        """
        from harness.errors import HarnessError
        from harness.scraping import ScrapeError

        deadline = time.monotonic() + timeout
        baseline: dict[str, int] | None = None
        now: dict[str, int] = {}
        while True:
            # A pod that is stopping may still be listed Ready for a moment
            # after it stopped answering; read all of them again then.
            try:
                now = self.totals(app)
            except ScrapeError as e:
                logger.debug("counters of %s not read: %s", app, e)
                now = {}
            if baseline is None:
                baseline = now or None
                rose = False
            elif pods:
                rose = all(
                    now.get(pod, 0) - baseline.get(pod, 0) >= at_least for pod in pods
                )
            else:
                rose = sum(now.values()) - sum(baseline.values()) >= at_least
            if rose and now:
                return
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"the counters of {', '.join(pods) or app} did not rise by "
                    f"{at_least} within {timeout:g} s: {baseline} then {now}"
                )
            time.sleep(METRICS_POLL_S)


def per_second(
    records: Sequence["Request"], *, start: float, bucket_s: float = SERIES_BUCKET_S
) -> dict[str, "JSON"]:
    """Count requests per pod (and failures) in buckets of ``bucket_s`` seconds."""
    if not records:
        return {"bucket_s": bucket_s, "start": start, "pods": {}, "failed": []}
    buckets = int((max(r.t for r in records) - start) // bucket_s) + 1
    pods: dict[str, list[int]] = {}
    failed = [0] * buckets
    for request in records:
        index = max(0, int((request.t - start) // bucket_s))
        if request.error is not None:
            failed[index] += 1
        elif request.served_by is not None:
            pods.setdefault(request.served_by, [0] * buckets)[index] += 1
    return {
        "bucket_s": bucket_s,
        "start": start,
        "pods": {name: list(counts) for name, counts in sorted(pods.items())},
        "failed": list(failed),
    }


@dataclass
class ExperimentDraft:
    """What an experiment found so far; written to the run record at its end.

    The experiment fills it in as it goes, so that a failing one still
    leaves its figures, with the diagnosis of the failure, in the record.
    """

    name: str
    started_at: datetime
    #: Plain values only (numbers, strings, lists, dicts): the record is JSON.
    parameters: dict[str, Any] = field(default_factory=dict)
    pods: list["PodTally"] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    kills: list["Kill"] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)

    def add_series(self, label: str, result: "TrafficResult", *, start: float) -> None:
        """Keep the requests per second per pod of one load run."""
        self.series[label] = per_second(result.records, start=start)

    def tally(
        self,
        rises: Sequence["Rise"],
        *,
        client_counts: Mapping[str, int] | None = None,
        route: str | None = None,
        method: str | None = None,
    ) -> dict[str, int]:
        """Add each pod's counter rise (and the client's count); return the rises."""
        from harness.results import PodTally

        deltas = {}
        for pod_rise in rises:
            delta = pod_rise.total(route=route, method=method)
            deltas[pod_rise.pod] = delta
            self.pods.append(
                PodTally(
                    name=pod_rise.pod,
                    uid=pod_rise.uid,
                    delta=delta,
                    client_count=None
                    if client_counts is None
                    else int(client_counts.get(pod_rise.pod, 0)),
                )
            )
        return deltas

    def finish(self, *, verdict: str, failure: "Failure | None") -> "Experiment":
        """Return the experiment as the run record has it."""
        from harness.results import Experiment

        return Experiment(
            name=self.name,
            verdict=cast(Any, verdict),
            started_at=self.started_at,
            ended_at=datetime.now(UTC),
            parameters=dict(self.parameters),
            pods=tuple(self.pods),
            statistics=dict(self.statistics),
            kills=tuple(self.kills),
            series=dict(self.series),
            failure=failure,
        )


@dataclass(frozen=True)
class Diagnosis:
    """What the cluster said when an experiment failed."""

    events: tuple[str, ...]
    logs: Mapping[str, str]
    #: Each pod's request counters, ``route method status`` to count.
    counters: Mapping[str, Mapping[str, int]]

    def sections(self) -> list[tuple[str, str]]:
        """Return the report sections: events, logs, counters."""
        logs = "\n".join(
            f"--- {pod} ---\n{text.rstrip()}" for pod, text in self.logs.items()
        )
        counters = "\n".join(
            "\n".join(f"{pod} {series} {value}" for series, value in values.items())
            or f"{pod} (no requests counted)"
            for pod, values in self.counters.items()
        )
        return [
            ("pod events", "\n".join(self.events) or "(none)"),
            ("pod logs", logs or "(none)"),
            ("counters", counters or "(none)"),
        ]


#: The components whose counters a diagnosis reads.
SHOP_APPS = ("catalog", "customer", "order")


def diagnose(shop: "Shop") -> Diagnosis:
    """Collect the namespace's events, each pod's log tail and every counter."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from harness.deploying import selector
    from harness.errors import HarnessError
    from harness.scraping import scrape_pods

    counters: dict[str, dict[str, int]] = {}
    for app in SHOP_APPS:
        try:
            snapshots = scrape_pods(
                shop.core, namespace=shop.namespace, label_selector=selector(app)
            )
        except (HarnessError, ApiException, HTTPError, OSError) as e:
            counters[f"({app})"] = {f"cannot be scraped: {e}": 0}
            continue
        for snapshot in snapshots:
            counters[snapshot.pod] = {
                f"{key.route} {key.method} {key.status}": value
                for key, value in sorted(snapshot.counters.items())
            }
    return Diagnosis(
        events=tuple(shop.events(limit=60)),
        logs=shop.log_tails(),
        counters=counters,
    )


@pytest.fixture(scope="session")
def record(
    harness_options: HarnessOptions, pytestconfig: pytest.Config
) -> Iterator["RunRecorder"]:
    """Return the results writer of this run; the run's end is written after it."""
    from harness.results import Cluster, start_run

    recorder = start_run(
        harness_options.report_dir,
        cluster=Cluster(kind=harness_options.cluster, kubernetes_version=None),
    )
    pytestconfig.stash[_recorder_key] = recorder
    try:
        yield recorder
    finally:
        recorder.finish()


@pytest.fixture(scope="session")
def cluster(
    harness_options: HarnessOptions,
    record: "RunRecorder",
    pytestconfig: pytest.Config,
) -> Iterator[RunningCluster]:
    """Reach the cluster ``--cluster`` names, starting it if need be.

    A cluster this session started is stopped at its end unless
    ``--keep-cluster`` is given; one that was up before stays up.
    """
    from harness import clusters
    from harness.errors import HarnessError
    from harness.results import Cluster

    options = harness_options
    try:
        target = clusters.open_cluster(options.cluster, kubeconfig=options.kubeconfig)
    except HarnessError as e:
        _stop_run(pytestconfig, f"cluster {options.cluster} is not usable: {e}")
    try:
        api = clusters.api_client(target)
        version = clusters.kubernetes_version(api)
        address = target.node_address or clusters.node_address(api)
    except HarnessError as e:
        clusters.close_cluster(target, keep=options.keep_cluster)
        _stop_run(pytestconfig, f"cluster {options.cluster} is not usable: {e}")
    record.set_cluster(Cluster(kind=options.cluster, kubernetes_version=version))
    try:
        yield RunningCluster(
            target=target, api=api, kubernetes_version=version, node_address=address
        )
    finally:
        api.close()  # type: ignore[no-untyped-call]
        clusters.close_cluster(target, keep=options.keep_cluster)


@pytest.fixture(scope="session")
def images(cluster: RunningCluster, pytestconfig: pytest.Config) -> list[str]:
    """Build the images the manifests name and load them into the cluster."""
    from harness import clusters, deploying, imaging
    from harness.errors import HarnessError

    try:
        references = deploying.images_of(deploying.read_manifests())
        if cluster.kind == "local":
            imaging.build(names=clusters.image_names(references))
        return clusters.load_images(cluster.target, references)
    except HarnessError as e:
        _stop_run(pytestconfig, f"the images cannot be put on the cluster: {e}")


@pytest.fixture(scope="session")
def deployment(
    cluster: RunningCluster,
    images: list[str],
    harness_options: HarnessOptions,
    pytestconfig: pytest.Config,
) -> Iterator["Shop"]:
    """Deploy the shop into the run's namespace and wait until all of it serves.

    The namespace is deleted at the end, also after Ctrl-C, unless
    ``--keep-cluster`` is given.
    """
    from harness import deploying
    from harness.errors import HarnessError

    shop = deploying.Shop(cluster.api, namespace=harness_options.namespace)

    def remove() -> None:
        if harness_options.keep_cluster:
            logger.info("keeping namespace %s (--keep-cluster)", shop.namespace)
            return
        try:
            shop.delete_namespace()
        except HarnessError as e:
            logger.warning("%s", e)

    try:
        manifests = deploying.read_manifests()
        names = [m["metadata"]["name"] for m in manifests if m["kind"] == "Deployment"]
        shop.create_namespace()
        shop.apply(manifests)
        shop.wait_for_rollouts(names)
        for name in names:
            shop.wait_for_endpoints(service=name)
    except HarnessError as e:
        remove()
        _stop_run(pytestconfig, f"the shop did not deploy: {e}")
    try:
        yield shop
    finally:
        remove()


@pytest.fixture(scope="session")
def front_door(
    cluster: RunningCluster, deployment: "Shop", pytestconfig: pytest.Config
) -> FrontDoor:
    """Return the front door's URL once it answers its health check."""
    from harness import deploying

    port = deploying.node_port(deploying.read_manifests(), service=FRONT_DOOR_SERVICE)
    door = FrontDoor(f"http://{cluster.node_address}:{port}")
    deadline = time.monotonic() + FRONT_DOOR_TIMEOUT_S
    problem = ""
    while time.monotonic() < deadline:
        try:
            answer = deploying.request(door.url_of("/health/ready"), timeout=2.0)
            if answer.status == 200:
                return door
            problem = f"HTTP {answer.status}"
        except OSError as e:
            problem = f"{type(e).__name__}: {e}"
        time.sleep(0.2)
    _stop_run(
        pytestconfig,
        f"the front door {door.url} did not answer /health/ready within "
        f"{FRONT_DOOR_TIMEOUT_S:g} s ({problem}); check kube-proxy and the "
        f"{FRONT_DOOR_SERVICE} Service",
    )


@pytest.fixture(scope="session")
def traffic(front_door: FrontDoor) -> Traffic:
    """Return the load driver, aimed at the front door."""
    return Traffic(front_door.url)


@pytest.fixture(scope="session")
def metrics(deployment: "Shop") -> Metrics:
    """Return the reader of the pods' request counters."""
    return Metrics(deployment)


def _experiment_name(item: pytest.Item) -> str:
    module = Path(str(item.path)).stem.removeprefix("test_")
    return module.replace("_", "-")


@pytest.fixture
def experiment(
    request: pytest.FixtureRequest, record: "RunRecorder"
) -> Iterator[ExperimentDraft]:
    """Return the draft of this experiment's record; it is written at its end."""
    from harness.results import Failure

    draft = ExperimentDraft(
        name=_experiment_name(request.node), started_at=datetime.now(UTC)
    )
    request.node.stash[_drafted_key] = True
    yield draft

    reports = request.node.stash.get(_reports_key, {})
    call = reports.get("call")
    setup = reports.get("setup")
    if call is not None and call.passed:
        verdict, message = "passed", ""
    elif (call is not None and call.skipped) or (setup is not None and setup.skipped):
        verdict, message = "skipped", ""
    elif call is not None and call.failed:
        verdict, message = "failed", _crash_message(call)
    else:
        stopped = request.config.stash.get(_stopped_key, None)
        verdict = "error"
        message = stopped or (
            _crash_message(setup) if setup is not None else "interrupted"
        )
    failure = None
    if verdict in ("failed", "error"):
        diagnosis = request.node.stash.get(_diagnosis_key, None)
        if diagnosis is not None:
            draft.statistics["counters_at_failure"] = cast(
                "JSON",
                {pod: dict(values) for pod, values in diagnosis.counters.items()},
            )
        failure = Failure(
            message=message,
            events=diagnosis.events if diagnosis else (),
            logs=dict(diagnosis.logs) if diagnosis else {},
        )
    record.add(draft.finish(verdict=verdict, failure=failure))


def _crash_message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    text = str(report.longrepr or "").strip()
    return text.splitlines()[-1] if text else report.outcome


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report; attach the cluster's view to a failed experiment."""
    report = yield
    item.stash.setdefault(_reports_key, {})[report.when] = report
    if report.when == "setup" and report.failed:
        _record_error(item, _crash_message(report))
    if report.when != "call" or not report.failed:
        return report
    shop = getattr(item, "funcargs", {}).get("deployment")
    if shop is None or not hasattr(shop, "namespace"):
        return report
    try:
        diagnosis = diagnose(shop)
    except Exception as e:  # a diagnosis must never hide the failure it explains
        logger.warning("could not diagnose %s: %s", item.nodeid, e)
        return report
    item.stash[_diagnosis_key] = diagnosis
    for title, text in diagnosis.sections():
        report.sections.append((f"harness: {title}", text))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say where the run's record is."""
    recorder = config.stash.get(_recorder_key, None)
    if recorder is not None:
        terminalreporter.write_line(f"harness: run recorded in {recorder.path.parent}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Render the report of the run this session recorded, and say where it is.

    This runs after the session's fixtures have written the run's end and
    after pytest has written its JUnit file (``--junitxml``), which is copied
    into the run folder beside the results.
    """
    recorder = config.stash.get(_recorder_key, None)
    if recorder is None:
        return
    run_dir = recorder.path.parent
    junit = getattr(config.option, "xmlpath", None)
    if junit and Path(junit).is_file():
        shutil.copyfile(junit, run_dir / "junit.xml")
    from harness import reporting
    from harness.errors import HarnessError

    try:
        try:
            rendered = reporting.render(run_dir, screenshot=True)
        except HarnessError as e:
            # A machine without the browser still gets the page itself.
            print(f"harness: no screenshot of the report: {e}", file=sys.stderr)
            rendered = reporting.render(run_dir)
    except HarnessError as e:
        print(f"harness: no report for {run_dir}: {e}", file=sys.stderr)
        return
    print(f"harness: report in {rendered.html}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Remember which test is being set up, for a run stopped during its setup."""
    item.config.stash[_current_key] = item
    try:
        return (yield)
    finally:
        del item.config.stash[_current_key]
