"""Bring the embedded single-node cluster up, report on it, take it down.

``up`` checks every prerequisite before it changes anything, then puts the
network safety net in place, issues certificates, and starts the components
in the cluster's mount namespace in three waves (etcd and containerd; the
API server; everything that talks to the API server), waiting for each
wave's health endpoints. It returns once the node is Ready, the cluster DNS
answers for ``kubernetes.default`` and the ``default`` service account
exists. A second ``up`` on a healthy cluster changes nothing; one after a
component died restarts what is missing; one after the namespace holder died
(a crash, a reboot) removes the remains and starts afresh.

``down`` stops every process by recorded PID or as a member of the cluster's
mount namespace, removes the network objects and chains, restores sysctls,
removes the cgroups the kubelet made, and optionally the state directory.
"""

import contextlib
import http.client
import json
import logging
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import commands
from harness.cluster import (
    certificates,
    components,
    kubeconfig,
    networking,
    prerequisites,
    processes,
)
from harness.cluster.components import Executables, Spec
from harness.cluster.processes import HOLDER, ProcessRecord
from harness.cluster.settings import ClusterSettings
from harness.errors import CommandError, HarnessError, PrerequisiteError
from harness.paths import cache_dir
from harness.progress import Progress

logger = logging.getLogger(__name__)

#: Seconds ``up`` may take from its first component to a usable cluster.
UP_TIMEOUT = 120.0

#: Seconds each stage of ``down`` gives its components to exit on SIGTERM
#: before SIGKILL.
STOP_TIMEOUT = 2.0

#: Seconds one health probe may take.
PROBE_TIMEOUT = 2.0

#: Lines of a failed component's log quoted in the error.
LOG_LINES = 20

#: The waves ``up`` starts components in; each waits for the one before.
WAVES = (
    ("etcd", "containerd"),
    ("kube-apiserver",),
    ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "coredns"),
)

#: Host paths the components write to whatever their flags say; inside the
#: cluster's mount namespace each is covered by a folder of the state dir.
SHADOWED = {
    Path("/var/lib/kubelet"): "kubelet",
    Path("/var/lib/cni"): "cni",
    Path("/var/log"): "var-log",
}

#: cgroup controllers whose ``kubepods`` hierarchy ``down`` removes.
CGROUP_ROOT = Path("/sys/fs/cgroup")


class ComponentError(HarnessError):
    """A component exited or did not become healthy; names it and quotes its log."""

    def __init__(self, component: str, reason: str, log: Path) -> None:
        tail = processes.log_tail(log, lines=LOG_LINES)
        super().__init__(
            f"{component} {reason}; its log is {log}"
            + (f"\n--- last lines of {log.name} ---\n{tail}" if tail else "")
        )
        self.component = component


@dataclass(frozen=True)
class ComponentStatus:
    """One component as ``status`` found it."""

    name: str
    pid: int | None
    running: bool
    healthy: bool
    version: str
    detail: str = ""


@dataclass(frozen=True)
class ClusterStatus:
    """Every component of one cluster as ``status`` found them."""

    name: str
    kubeconfig: Path
    components: tuple[ComponentStatus, ...]

    @property
    def healthy(self) -> bool:
        """Tell whether every component runs and answers its health endpoint."""
        return bool(self.components) and all(c.healthy for c in self.components)

    @property
    def running(self) -> bool:
        """Tell whether any component of the cluster runs."""
        return any(c.running for c in self.components)


# --- specs and probes -------------------------------------------------------


def executables() -> Executables:
    """Return the binaries the cluster runs, from the binaries cache and PATH."""
    from harness import binaries

    found = binaries.find()
    if found is None:
        raise PrerequisiteError(
            "the Kubernetes binaries are not built: run `python -m harness.binaries` "
            "or `harness cluster up`, which builds them"
        )
    return _executables(found)


def _executables(found: Any) -> Executables:
    containerd = shutil.which("containerd")
    if containerd is None:
        raise PrerequisiteError(
            "containerd not found: install the Debian package containerd"
        )
    return Executables(
        paths={
            "etcd": found.etcd,
            "containerd": Path(containerd),
            "kube-apiserver": found.kube_apiserver,
            "kube-controller-manager": found.kube_controller_manager,
            "kube-scheduler": found.kube_scheduler,
            "kubelet": found.kubelet,
            "kube-proxy": found.kube_proxy,
            "kubectl": found.kubectl,
            "coredns": found.coredns,
        }
    )


def specs(settings: ClusterSettings, exe: Executables) -> dict[str, Spec]:
    """Return the spec of every component, by name, in start order."""
    return {
        name: components.RENDERERS[name](settings, exe) for name in components.ORDER
    }


def component_ports(
    settings: ClusterSettings,
) -> dict[str, tuple[tuple[str, int], ...]]:
    """Return the (address, port) pairs each component binds."""
    node, lo = settings.node_ip, "127.0.0.1"
    return {
        "etcd": ((lo, 2379), (lo, 2380)),
        "containerd": (),
        "kube-apiserver": ((node, 6443),),
        "kube-controller-manager": ((lo, 10257),),
        "kube-scheduler": ((lo, 10259),),
        "kubelet": ((node, 10250), (lo, 10248)),
        "kube-proxy": ((lo, 10249), (lo, 10256), (node, 30080)),
        "coredns": ((node, 53), (lo, 8180), (lo, 8181), (lo, 9153)),
    }


def probe(url: str, *, ca: Path | None = None, timeout: float = PROBE_TIMEOUT) -> str:
    """Return why a health endpoint is unhealthy, or "" when it answers 200.

    ``unix://`` URLs name containerd's socket, asked through ``ctr version``.
    HTTPS endpoints are verified against ``ca`` when given; the controller
    manager and the scheduler serve self-signed certificates on loopback.
    """
    if url.startswith("unix://"):
        socket_path = url.removeprefix("unix://")
        try:
            done = commands.run(
                ["ctr", "--address", socket_path, "version"],
                timeout=timeout,
                check=False,
            )
        except CommandError as e:
            return str(e).splitlines()[0]
        return "" if done.returncode == 0 else (done.stderr.strip() or "ctr failed")
    try:
        with _direct_opener(url, ca=ca).open(url, timeout=timeout) as answer:
            return "" if answer.status == 200 else f"HTTP {answer.status}"
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except PermissionError as e:
        return f"cannot read {e.filename}: run as root"
    except (OSError, ValueError, http.client.HTTPException) as e:
        return str(getattr(e, "reason", e))


def _direct_opener(url: str, *, ca: Path | None) -> urllib.request.OpenerDirector:
    """Return an opener that ignores proxy variables: every probe stays local."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if url.startswith("https://"):
        if ca is not None:
            context = ssl.create_default_context(cafile=str(ca))
        else:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def _ca_for(settings: ClusterSettings, spec: Spec) -> Path | None:
    if spec.health_url.startswith(settings.server):
        return settings.layout.pki / "ca.crt"
    return None


def _version(spec: Spec) -> str:
    from harness import binaries

    binary = Path(spec.argv[0])
    if spec.name == "containerd":
        try:
            done = commands.run([str(binary), "--version"], timeout=10.0, check=False)
        except CommandError:
            return ""
        words = done.stdout.split()
        return words[2] if len(words) > 2 else done.stdout.strip()
    return binaries.read_version(binary) or ""


# --- status -----------------------------------------------------------------


def status(settings: ClusterSettings) -> ClusterStatus:
    """Report each component: whether it runs, its PID, health and version."""
    layout = settings.layout
    found = []
    holder = processes.read_record(layout.run, HOLDER)
    if holder is not None:
        alive = processes.is_running(holder)
        found.append(
            ComponentStatus(
                name=HOLDER,
                pid=holder.pid,
                running=alive,
                healthy=alive,
                version="",
                detail="" if alive else "mount namespace holder is gone",
            )
        )
    try:
        all_specs = specs(settings, executables())
    except PrerequisiteError:
        all_specs = {}
    for name in components.ORDER:
        record = processes.read_record(layout.run, name)
        if record is None:
            found.append(ComponentStatus(name, None, False, False, "", "not started"))
            continue
        alive = processes.is_running(record)
        problem = "not running"
        if alive and name in all_specs:
            problem = probe(
                all_specs[name].health_url, ca=_ca_for(settings, all_specs[name])
            )
        found.append(
            ComponentStatus(
                name=name,
                pid=record.pid,
                running=alive,
                healthy=alive and not problem,
                version=record.version,
                detail=problem,
            )
        )
    return ClusterStatus(settings.name, layout.admin_kubeconfig, tuple(found))


# --- up ---------------------------------------------------------------------


def _check_prerequisites(
    settings: ClusterSettings, ports: Sequence[tuple[str, int]]
) -> None:
    prerequisites.check_root()
    prerequisites.check_cgroups()
    prerequisites.check_tools()
    prerequisites.check_binaries_available()
    prerequisites.check_ports(ports)


def _write_files(settings: ClusterSettings, all_specs: dict[str, Spec]) -> None:
    layout = settings.layout
    for folder in (
        layout.config,
        layout.logs,
        layout.run,
        layout.data,
        layout.cni_conf_dir,
    ):
        folder.mkdir(parents=True, exist_ok=True)
    for sub in SHADOWED.values():
        (layout.data / sub).mkdir(parents=True, exist_ok=True)
    _write_if_changed(layout.resolv_conf, components.resolv_conf())

    certificates.ensure(settings)
    pki = layout.pki
    for stem, user in (
        ("controller-manager", "system:kube-controller-manager"),
        ("scheduler", "system:kube-scheduler"),
        ("kubelet", f"system:node:{settings.node_name}"),
        ("kube-proxy", "system:kube-proxy"),
        ("coredns", certificates.COREDNS_USER),
    ):
        cert_stem = "kubelet-client" if stem == "kubelet" else stem
        kubeconfig.write(
            layout.config / f"{stem}.kubeconfig",
            server=settings.server,
            pki=pki,
            stem=cert_stem,
            user=user,
        )
    kubeconfig.write(
        layout.admin_kubeconfig,
        server=settings.server,
        pki=pki,
        stem="admin",
        user="admin",
    )
    for spec in all_specs.values():
        for path, content in spec.files:
            _write_if_changed(path, content)


def _write_if_changed(path: Path, content: str) -> None:
    """Write a file only if its content differs: kube-proxy exits on any write."""
    try:
        if path.read_text() == content:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def _created_paths_record(settings: ClusterSettings) -> Path:
    return settings.layout.run / "created-paths.json"


def _start_namespace(settings: ClusterSettings) -> ProcessRecord:
    layout = settings.layout
    created = []
    for target in SHADOWED:
        if not target.exists():
            target.mkdir(parents=True)
            created.append(str(target))
    record_path = _created_paths_record(settings)
    if created:
        earlier = json.loads(record_path.read_text()) if record_path.exists() else []
        record_path.write_text(json.dumps(sorted({*earlier, *created})) + "\n")
    binds = [(layout.data / sub, target) for target, sub in SHADOWED.items()]
    binds.append((layout.resolv_conf, Path("/etc/resolv.conf")))
    return processes.start_namespace(
        run_dir=layout.run, log_path=layout.log(HOLDER), binds=binds
    )


def _wait_healthy(
    settings: ClusterSettings,
    started: dict[str, ProcessRecord],
    all_specs: dict[str, Spec],
    names: Sequence[str],
    *,
    deadline: float,
) -> None:
    pending = list(names)
    problems: dict[str, str] = {}
    while pending:
        for name in list(pending):
            record = started[name]
            if not processes.is_running(record):
                raise ComponentError(name, "exited", Path(record.log))
            problems[name] = probe(
                all_specs[name].health_url, ca=_ca_for(settings, all_specs[name])
            )
            if not problems[name]:
                pending.remove(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            name = pending[0]
            raise ComponentError(
                name,
                f"was not healthy in time ({problems[name]})",
                Path(started[name].log),
            )
        time.sleep(0.2)


def _import_sandbox_image(settings: ClusterSettings) -> None:
    """Import the pause image into containerd unless it is there already."""
    from harness import imaging

    socket_path = str(settings.layout.containerd_socket)
    listed = commands.run(
        ["ctr", "--address", socket_path, "-n", "k8s.io", "images", "ls", "-q"],
        timeout=30.0,
    )
    if components.SANDBOX_IMAGE in listed.stdout.split():
        return
    built = {image.name: image for image in imaging.list_built()}
    if "pause" not in built:
        raise PrerequisiteError(
            "the pause image is not built: run `harness images build pause`"
        )
    import_archive(settings, Path(built["pause"].archive))


def import_archive(settings: ClusterSettings, archive: Path) -> None:
    """Import one OCI archive into the cluster's containerd, namespace k8s.io."""
    commands.run(
        [
            "ctr",
            "--address",
            str(settings.layout.containerd_socket),
            "-n",
            "k8s.io",
            "images",
            "import",
            "--all-platforms",
            str(archive),
        ],
        timeout=300.0,
    )


def load_images(settings: ClusterSettings, *, names: Sequence[str] = ()) -> list[str]:
    """Import the built images (all, or those named) into the cluster; return them."""
    from harness import imaging

    if probe(f"unix://{settings.layout.containerd_socket}"):
        raise PrerequisiteError(
            f"containerd of cluster {settings.name} is not running: "
            "run `harness cluster up` first"
        )
    built = imaging.list_built()
    if names:
        unknown = sorted(set(names) - {image.name for image in built})
        if unknown:
            raise PrerequisiteError(
                f"image(s) {', '.join(unknown)} not built: run "
                f"`harness images build {' '.join(unknown)}`"
            )
        built = [image for image in built if image.name in names]
    loaded = []
    for image in built:
        import_archive(settings, Path(image.archive))
        loaded.append(str(image.reference))
    return loaded


def _api(settings: ClusterSettings) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(settings.layout.admin_kubeconfig),
        client_configuration=configuration,
    )
    # The API server is on this machine: never go through a proxy variable's
    # proxy, which would carry cluster traffic off it.
    configuration.no_proxy = "*"
    return client.ApiClient(configuration)


@contextlib.contextmanager
def api_client(settings: ClusterSettings) -> Iterator[Any]:
    """Yield a ``kubernetes`` ApiClient authenticated as the cluster's admin."""
    client = _api(settings)
    try:
        yield client
    finally:
        client.close()


def _ensure(read: Callable[[], Any], create: Callable[[], Any], *, what: str) -> None:
    """Create an object unless reading it shows that it exists.

    Reading first matters: creating a Service whose ClusterIP is taken (by
    itself) fails validation before the name conflict is noticed.
    """
    from kubernetes.client.exceptions import ApiException

    try:
        read()
        return
    except ApiException as e:
        if e.status != 404:
            raise HarnessError(f"reading {what} failed with HTTP {e.status}") from e
    try:
        create()
    except ApiException as e:
        if e.status != 409:
            raise HarnessError(
                f"creating {what} failed with HTTP {e.status}: {e.body or e.reason}"
            ) from e


def bootstrap(settings: ClusterSettings, client: Any, *, deadline: float) -> None:
    """Create what the API server does not: CoreDNS's access and its Service."""
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(client)
    rbac = k8s.RbacAuthorizationV1Api(client)
    discovery = k8s.DiscoveryV1Api(client)

    # The API server creates kube-system shortly after it reports ready.
    while True:
        try:
            core.read_namespace("kube-system")
            break
        except k8s.exceptions.ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise HarnessError(
                    f"namespace kube-system did not appear: {e.reason}"
                ) from e
            time.sleep(0.1)

    role = "kube-harness:coredns"
    role_body: Any = {
        "metadata": {"name": role},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["list", "watch"],
            },
        ],
    }
    binding_body: Any = {
        "metadata": {"name": role},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role,
        },
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "User",
                "name": certificates.COREDNS_USER,
            }
        ],
    }
    dns_ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
    service_body: Any = {
        "metadata": {
            "name": "kube-dns",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
        },
        "spec": {
            "clusterIP": settings.dns_ip,
            "ports": [
                {"name": name, "port": 53, "protocol": protocol, "targetPort": 53}
                for name, protocol in dns_ports
            ],
        },
    }
    slice_body: Any = {
        "metadata": {
            "name": "kube-dns-node",
            "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": "kube-harness",
            },
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [settings.node_ip],
                "conditions": {"ready": True},
                "nodeName": settings.node_name,
            }
        ],
        "ports": [
            {"name": name, "port": 53, "protocol": protocol}
            for name, protocol in dns_ports
        ],
    }
    system = "kube-system"
    _ensure(
        lambda: rbac.read_cluster_role(role),
        lambda: rbac.create_cluster_role(role_body),
        what=f"ClusterRole {role}",
    )
    _ensure(
        lambda: rbac.read_cluster_role_binding(role),
        lambda: rbac.create_cluster_role_binding(binding_body),
        what=f"ClusterRoleBinding {role}",
    )
    _ensure(
        lambda: core.read_namespaced_service("kube-dns", system),
        lambda: core.create_namespaced_service(system, service_body),
        what="Service kube-system/kube-dns",
    )
    _ensure(
        lambda: discovery.read_namespaced_endpoint_slice("kube-dns-node", system),
        lambda: discovery.create_namespaced_endpoint_slice(system, slice_body),
        what="EndpointSlice kube-system/kube-dns-node",
    )


def _watch_until(
    list_call: Callable[..., Any],
    done: Callable[[Any], bool],
    *,
    what: str,
    deadline: float,
    **selectors: Any,
) -> None:
    """List, then watch, until an object satisfies ``done`` or time runs out."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HarnessError(f"{what} did not happen within the time allowed")
        try:
            listing = list_call(**selectors)
            if any(done(item) for item in listing.items):
                return
            watcher = watch.Watch()  # type: ignore[no-untyped-call]
            stream = watcher.stream(  # type: ignore[no-untyped-call]
                list_call,
                resource_version=listing.metadata.resource_version,
                timeout_seconds=max(1, int(remaining)),
                _request_timeout=remaining + 5,
                **selectors,
            )
            with contextlib.closing(stream):
                for event in stream:
                    if event["type"] != "DELETED" and done(event["object"]):
                        watcher.stop()  # type: ignore[no-untyped-call]
                        return
        except ApiException as e:
            if e.status not in (410, 500, 503, 504):
                raise HarnessError(
                    f"waiting for {what}: HTTP {e.status} {e.reason}"
                ) from e
        except OSError as e:
            logger.debug("watch for %s broke: %s", what, e)
        time.sleep(0.1)


def _node_ready(node: Any) -> bool:
    conditions = node.status.conditions if node.status else None
    return any(c.type == "Ready" and c.status == "True" for c in conditions or ())


def dns_answer(
    settings: ClusterSettings, name: str, *, timeout: float = 1.0
) -> list[str]:
    """Ask the cluster DNS, from this host, for the A records of a name."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rdatatype

    query = dns.message.make_query(name, dns.rdatatype.A)
    try:
        reply = dns.query.udp(query, settings.dns_ip, timeout=timeout)
    except (dns.exception.DNSException, OSError) as e:
        logger.debug("DNS query for %s failed: %s", name, e)
        return []
    return [
        item.to_text()
        for rrset in reply.answer
        for item in rrset
        if rrset.rdtype == dns.rdatatype.A
    ]


def _wait_dns(settings: ClusterSettings, *, deadline: float) -> None:
    name = f"kubernetes.default.svc.{settings.cluster_domain}"
    while settings.kubernetes_service_ip not in dns_answer(settings, name):
        if time.monotonic() > deadline:
            raise HarnessError(
                f"the cluster DNS at {settings.dns_ip} did not answer for {name}: "
                f"see {settings.layout.log('coredns')} and "
                f"{settings.layout.log('kube-proxy')}"
            )
        time.sleep(0.2)


def _ensure_running(
    settings: ClusterSettings,
    holder: ProcessRecord,
    all_specs: dict[str, Spec],
    names: Sequence[str],
) -> dict[str, ProcessRecord]:
    """Start those of ``names`` that do not run; return every one's record."""
    layout = settings.layout
    started = {}
    for name in names:
        record = processes.read_record(layout.run, name)
        if record is not None and processes.is_running(record):
            started[name] = record
            continue
        spec = all_specs[name]
        started[name] = processes.spawn(
            processes.namespaced(holder, spec.argv),
            name=name,
            log_path=layout.log(name),
            run_dir=layout.run,
            version=_version(spec),
        )
        logger.info("started %s (PID %d)", name, started[name].pid)
    return started


# TODO: two clusters of different names share the bridges, addresses and
# iptables chains, yet nothing stops a second one from coming up beside the
# first, and `down` of either removes the network of both; `up` should refuse
# while another state directory's holder is alive. Concurrent `up`/`down`
# calls are not serialised by a lock either. The API calls made while coming
# up (bootstrap, watches) have no per-request timeout, so an API server that
# accepts connections but never answers holds `up` past its deadline.
def up(
    settings: ClusterSettings,
    *,
    progress: Progress | None = None,
    timeout: float = UP_TIMEOUT,
) -> ClusterStatus:
    """Bring the cluster up, or repair it, and return its status once usable."""
    progress = progress or Progress(f"cluster {settings.name}", total=7)
    layout = settings.layout

    # What is left of an earlier run decides between repair and a fresh start.
    holder = processes.read_record(layout.run, HOLDER)
    repair = holder is not None and processes.is_running(holder)
    running = set()
    if repair:
        running = {
            name
            for name in components.ORDER
            if (r := processes.read_record(layout.run, name)) is not None
            and processes.is_running(r)
        }
    ports = [
        pair
        for name, pairs in component_ports(settings).items()
        if name not in running
        for pair in pairs
    ]
    if not repair and layout.run.exists() and processes.records(layout.run):
        # Remains of a run whose namespace is gone: they do not hold the ports
        # once removed, so check only after removing them.
        prerequisites.check_root()
        with progress.step("removing the remains of an earlier run"):
            _remove_remains(settings)
    _check_prerequisites(settings, ports)
    if repair and running == set(components.ORDER):
        current = status(settings)
        if current.healthy:
            progress.note("already up and healthy")
            return current

    from harness import binaries, imaging

    with progress.step("binaries"):
        exe = _executables(binaries.ensure(progress=progress))
    with progress.step("pause image"):
        imaging.build(names=["pause"])
    all_specs = specs(settings, exe)
    with progress.step("certificates and configuration"):
        _write_files(settings, all_specs)
    with progress.step("network safety net"):
        networking.set_up(settings)
    deadline = time.monotonic() + timeout
    if not repair:
        holder = _start_namespace(settings)
    assert holder is not None

    with progress.step("etcd and containerd"):
        started = _ensure_running(settings, holder, all_specs, WAVES[0])
        _wait_healthy(settings, started, all_specs, WAVES[0], deadline=deadline)
        _import_sandbox_image(settings)
    with progress.step("API server"):
        started.update(_ensure_running(settings, holder, all_specs, WAVES[1]))
        _wait_healthy(settings, started, all_specs, WAVES[1], deadline=deadline)
    with (
        progress.step("controllers, kubelet, kube-proxy, CoreDNS"),
        api_client(settings) as client,
    ):
        bootstrap(settings, client, deadline=deadline)
        started.update(_ensure_running(settings, holder, all_specs, WAVES[2]))
        _wait_healthy(settings, started, all_specs, WAVES[2], deadline=deadline)
        _wait_usable(settings, client, started, deadline=deadline)
    return status(settings)


def _wait_usable(
    settings: ClusterSettings,
    client: Any,
    started: dict[str, ProcessRecord],
    *,
    deadline: float,
) -> None:
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(client)
    try:
        _watch_until(
            core.list_node,
            _node_ready,
            what=f"node {settings.node_name} becoming Ready",
            deadline=deadline,
            field_selector=f"metadata.name={settings.node_name}",
        )
    except HarnessError as e:
        raise ComponentError("kubelet", str(e), Path(started["kubelet"].log)) from e
    try:
        _watch_until(
            core.list_namespaced_service_account,
            lambda account: True,
            what="the default service account",
            deadline=deadline,
            namespace="default",
            field_selector="metadata.name=default",
        )
    except HarnessError as e:
        log = Path(started["kube-controller-manager"].log)
        raise ComponentError("kube-controller-manager", str(e), log) from e
    _wait_dns(settings, deadline=deadline)


# --- down -------------------------------------------------------------------


def _remove_cgroups() -> None:
    """Remove the ``kubepods`` cgroups the kubelet made, deepest first."""
    if not CGROUP_ROOT.is_dir():
        return
    for controller in sorted(CGROUP_ROOT.iterdir()):
        top = controller / "kubepods"
        if not top.is_dir():
            continue
        folders = sorted(
            (p for p in top.rglob("*") if p.is_dir()),
            key=lambda p: len(p.parts),
            reverse=True,
        )
        for folder in [*folders, top]:
            try:
                folder.rmdir()
            except OSError as e:
                logger.debug("cannot remove cgroup %s: %s", folder, e)


def _stop_processes(settings: ClusterSettings, *, timeout: float) -> None:
    layout = settings.layout
    recorded = [r for r in processes.records(layout.run) if processes.is_running(r)]
    namespaces = processes.namespaces_of(recorded)
    orphaned = processes.recorded_namespace(layout.run, marker=str(layout.root))
    if orphaned is not None:
        namespaces.add(orphaned)
    holder = next((r for r in recorded if r.name == HOLDER), None)
    components_alive = {r.name: r.pid for r in recorded if r.name != HOLDER}

    # Pods are disposable: their shims and containers go at once, and the
    # components get SIGTERM at the same moment, except the API server and
    # etcd: the API server shuts down in about a second while etcd answers
    # it, and etcd at once when no client is left.
    pids = set(components_alive.values())
    others = [
        pid
        for pid in processes.members(namespaces)
        if pid not in pids and (holder is None or pid != holder.pid)
    ]
    processes.kill(others)
    last = ("kube-apiserver", "etcd")
    processes.stop(
        [pid for name, pid in components_alive.items() if name not in last],
        timeout=timeout,
    )
    for name in last:
        if name in components_alive:
            processes.stop([components_alive[name]], timeout=timeout)

    # Anything that joined the namespace meanwhile, then the holder itself.
    leftovers = processes.members(namespaces)
    processes.kill([p for p in leftovers if holder is None or p != holder.pid])
    if holder is not None:
        processes.stop([holder.pid], timeout=timeout)
    for record in processes.records(layout.run):
        processes.forget(layout.run, record.name)
    (layout.run / processes.NAMESPACE_ID).unlink(missing_ok=True)


def _remove_remains(settings: ClusterSettings) -> None:
    """Stop what is left of a run and remove its network objects."""
    _stop_processes(settings, timeout=STOP_TIMEOUT)
    networking.tear_down(settings)
    _remove_cgroups()


def down(
    settings: ClusterSettings,
    *,
    purge: bool = False,
    purge_caches: bool = False,
    timeout: float = STOP_TIMEOUT,
) -> None:
    """Stop every process of the cluster and remove its network; keep its data.

    ``purge`` also deletes the state directory; ``purge_caches`` deletes the
    binaries and image caches as well.
    """
    prerequisites.check_root()
    layout = settings.layout
    _stop_processes(settings, timeout=timeout)
    networking.tear_down(settings)
    _remove_cgroups()

    # Mount points made on the host for the namespace's bind mounts.
    record = _created_paths_record(settings)
    if record.exists():
        for path in json.loads(record.read_text()):
            with contextlib.suppress(OSError):
                Path(path).rmdir()
        record.unlink()

    if purge:
        commands.remove_tree(layout.root)
    if purge_caches:
        for folder in (
            cache_dir() / "bin",
            cache_dir() / "gobuild",
            cache_dir() / "images",
        ):
            commands.remove_tree(folder)
    logger.info("cluster %s is down", settings.name)


def host_connectable(address: str, port: int, *, timeout: float = 1.0) -> bool:
    """Tell whether a TCP connection to ``address:port`` opens from this host."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
