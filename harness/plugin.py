"""The pytest plugin of kube-harness, registered through the ``pytest11`` entry point.

It adds the ``harness`` option group that says which cluster the experiments
run on and how hard they push it, and the ``harness_options`` fixture that
hands the validated settings to them.

The plugin is loaded into every pytest run of an environment where kube-harness
is installed, the project's own ``pytest tests`` included. So it imports
nothing heavy, and it validates only when the user set one of its options:
a run that never mentions them is never refused because of them.
"""

import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import pytest

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
