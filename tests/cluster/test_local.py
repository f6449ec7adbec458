"""Tests of the embedded cluster against the real thing: up, workloads, down.

The tests of the last part stop and restart the cluster, so they come last.
"""

import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from harness.cluster import components, local, networking, processes
from harness.errors import PrerequisiteError
from tests.cluster.conftest import RunningCluster, wait_for

pytestmark = pytest.mark.cluster

IMAGE = "localhost/kube-harness/catalog:0.1.0"
PORT = 8080


@dataclass(frozen=True)
class Catalog:
    """A two-replica catalog Deployment and its Service in a fresh namespace."""

    namespace: str
    cluster_ip: str


def _pod_names(core: Any, namespace: str, *, ready_only: bool = True) -> set[str]:
    pods = core.list_namespaced_pod(namespace, label_selector="app=catalog").items
    names = set()
    for pod in pods:
        if pod.metadata.deletion_timestamp is not None:
            continue
        conditions = pod.status.conditions or []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        if ready or not ready_only:
            names.add(pod.metadata.name)
    return names


def _deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [
                        {
                            "name": name,
                            "image": IMAGE,
                            "imagePullPolicy": "Never",
                            "env": [{"name": "PORT", "value": str(PORT)}],
                            "ports": [{"name": "http", "containerPort": PORT}],
                            "readinessProbe": {
                                "httpGet": {"path": "/health/ready", "port": "http"},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


@pytest.fixture(scope="class")
def catalog(cluster: RunningCluster) -> Iterator[Catalog]:
    """Deploy two catalog replicas in a fresh namespace; delete it afterwards."""
    namespace = f"test-{secrets.token_hex(4)}"
    with local.api_client(cluster.settings) as api:
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        core.create_namespace({"metadata": {"name": namespace}})
        try:
            apps.create_namespaced_deployment(namespace, _deployment("catalog"))
            service = core.create_namespaced_service(
                namespace,
                {
                    "metadata": {"name": "catalog"},
                    "spec": {
                        "selector": {"app": "catalog"},
                        "ports": [{"port": PORT, "targetPort": "http"}],
                    },
                },
            )
            yield Catalog(namespace=namespace, cluster_ip=service.spec.cluster_ip)
        finally:
            core.delete_namespace(namespace)
            wait_for(
                lambda: (
                    namespace
                    not in {n.metadata.name for n in core.list_namespace().items}
                ),
                timeout=90,
                what=f"deletion of namespace {namespace}",
            )


def _served_by_over_fresh_connections(address: str, *, attempts: int) -> set[str]:
    seen = set()
    for _ in range(attempts):
        connection = http.client.HTTPConnection(address, PORT, timeout=5)
        try:
            connection.request("GET", "/health/ready")
            answer = connection.getresponse()
            answer.read()
            seen.add(answer.getheader("X-Served-By", ""))
        finally:
            connection.close()
    return seen


def _two_ready_pods(cluster: RunningCluster, catalog: Catalog) -> set[str]:
    """Return the two catalog pods once both are Ready (a probe may lag)."""
    with local.api_client(cluster.settings) as api:
        core = k8s.CoreV1Api(api)
        wait_for(
            lambda: len(_pod_names(core, catalog.namespace)) == 2,
            timeout=60,
            what="two Ready catalog pods",
        )
        return _pod_names(core, catalog.namespace)


def _exec_python(cluster: RunningCluster, namespace: str, pod: str, script: str) -> str:
    return cluster.kubectl_run(
        "exec", "-n", namespace, pod, "--", "python3", "-c", script, timeout=60
    )


def test_up_from_nothing_makes_every_component_healthy(cluster: RunningCluster) -> None:
    current = local.status(cluster.settings)
    assert current.healthy, [c for c in current.components if not c.healthy]
    names = {c.name for c in current.components}
    assert names == {processes.HOLDER, *components.ORDER}
    with local.api_client(cluster.settings) as api:
        nodes = k8s.CoreV1Api(api).list_node().items
    assert [n.metadata.name for n in nodes] == [cluster.settings.node_name]
    ready = [c.status for c in nodes[0].status.conditions if c.type == "Ready"]
    assert ready == ["True"]


def test_a_second_up_on_a_healthy_cluster_restarts_nothing(
    cluster: RunningCluster,
) -> None:
    before = {c.name: c.pid for c in local.status(cluster.settings).components}
    local.up(cluster.settings)
    after = {c.name: c.pid for c in local.status(cluster.settings).components}
    assert after == before


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param("10.96.0.1", "dev kh-svc0", id="service-range"),
        pytest.param("10.244.0.7", "dev kh-pod0", id="node-pod-range"),
        pytest.param("198.51.100.99", "dev kh-node0", id="node-range"),
    ],
)
def test_cluster_addresses_are_routed_to_our_bridges(
    cluster: RunningCluster, address: str, expected: str
) -> None:
    route = networking.run(["ip", "route", "get", address]).stdout
    assert expected in route


def test_the_rest_of_the_pod_range_is_unreachable(cluster: RunningCluster) -> None:
    result = networking.run(["ip", "route", "get", "10.244.99.1"], check=False)
    assert result.returncode != 0
    assert "unreachable" in result.stderr.lower() or "no route" in result.stderr.lower()


def test_the_cluster_dns_answers_the_host_for_the_kubernetes_service(
    cluster: RunningCluster,
) -> None:
    answer = local.dns_answer(cluster.settings, "kubernetes.default.svc.cluster.local")
    assert answer == [cluster.settings.kubernetes_service_ip]


def test_the_cluster_dns_refuses_outside_names(cluster: RunningCluster) -> None:
    assert local.dns_answer(cluster.settings, "example.com") == []


#: An "outside" of our own making: a network namespace behind a veth pair whose
#: names are not the cluster's, so a packet that wrongly left the cluster
#: would reach only this namespace, never a real network.
OUTSIDE_HOST_SIDE, OUTSIDE_ADDRESS = "100.64.77.1", "100.64.77.2"
LISTENER = """
import select, socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], 8080))
server.listen(16)
print("listening", flush=True)
while select.select([server], [], [], 60)[0]:
    connection, peer = server.accept()
    print("accepted", peer[0], flush=True)
    connection.close()
"""


@dataclass(frozen=True)
class Outside:
    """The stand-in for the world beyond the machine, and who reached it."""

    address: str
    listener: subprocess.Popen[str]


@pytest.fixture
def outside() -> Iterator[Outside]:
    """Give a namespace that answers TCP 8080 behind a non-cluster interface."""
    tag = secrets.token_hex(2)
    namespace, host_if, peer_if = f"khtest-{tag}", f"xout{tag}", f"xin{tag}"
    run = networking.run
    run(["ip", "netns", "add", namespace])
    try:
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if])
        run(["ip", "link", "set", peer_if, "netns", namespace])
        run(["ip", "addr", "add", f"{OUTSIDE_HOST_SIDE}/30", "dev", host_if])
        run(["ip", "link", "set", host_if, "up"])
        inside = ["ip", "-n", namespace]
        run([*inside, "addr", "add", f"{OUTSIDE_ADDRESS}/30", "dev", peer_if])
        run([*inside, "link", "set", peer_if, "up"])
        run([*inside, "link", "set", "lo", "up"])
        listener = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                namespace,
                sys.executable,
                "-c",
                LISTENER,
                OUTSIDE_ADDRESS,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert listener.stdout is not None
            assert listener.stdout.readline().strip() == "listening"
            yield Outside(address=OUTSIDE_ADDRESS, listener=listener)
        finally:
            if listener.poll() is None:
                os.kill(listener.pid, signal.SIGTERM)
                listener.wait(timeout=10)
    finally:
        run(["ip", "link", "del", host_if], check=False)
        run(["ip", "netns", "del", namespace], check=False)


def _connects(address: str, port: int, *, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def test_a_service_whose_endpoint_lies_outside_is_dropped_at_the_edge(
    cluster: RunningCluster, outside: Outside
) -> None:
    # The path to the stand-in outside works for traffic that is not the
    # cluster's, so a failed connect below is the safety net's doing.
    assert _connects(outside.address, 8080, timeout=5)
    assert outside.listener.stdout is not None
    assert outside.listener.stdout.readline().split()[0] == "accepted"

    namespace = f"test-{secrets.token_hex(4)}"
    with local.api_client(cluster.settings) as api:
        core, discovery = k8s.CoreV1Api(api), k8s.DiscoveryV1Api(api)
        core.create_namespace({"metadata": {"name": namespace}})
        try:
            service = core.create_namespaced_service(
                namespace,
                {
                    "metadata": {"name": "beyond"},
                    "spec": {"ports": [{"port": 8080, "targetPort": 8080}]},
                },
            )
            discovery.create_namespaced_endpoint_slice(
                namespace,
                {
                    "metadata": {
                        "name": "beyond-1",
                        "labels": {"kubernetes.io/service-name": "beyond"},
                    },
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [outside.address]}],
                    "ports": [{"port": 8080, "protocol": "TCP"}],
                },
            )
            wait_for(
                lambda: (
                    f"{outside.address}:8080"
                    in networking.run(["iptables-save", "-t", "nat"]).stdout
                ),
                timeout=30,
                what="kube-proxy's rules for the outside endpoint",
            )
            assert not _connects(service.spec.cluster_ip, 8080, timeout=3)
        finally:
            core.delete_namespace(namespace)
    # Nothing more reached the outside than the direct connect above.
    os.kill(outside.listener.pid, signal.SIGTERM)
    rest, _ = outside.listener.communicate(timeout=10)
    assert "accepted" not in rest


def test_our_edge_rules_come_first_in_the_mangle_hooks(cluster: RunningCluster) -> None:
    saved = networking.run(["iptables-save", "-t", "mangle"]).stdout.splitlines()
    for hook in ("PREROUTING", "POSTROUTING"):
        rules = [r for r in saved if r.startswith(f"-A {hook} ")]
        assert rules[0] == f"-A {hook} -j KH-{hook}"


def test_every_component_sees_a_resolver_file_that_points_nowhere_outside(
    cluster: RunningCluster,
) -> None:
    seen = {}
    for record in processes.records(cluster.settings.layout.run):
        # /proc/PID/root shows the file system as that process sees it.
        seen[record.name] = Path(f"/proc/{record.pid}/root/etc/resolv.conf").read_text()
    assert set(seen) == {processes.HOLDER, *components.ORDER}
    assert set(seen.values()) == {components.resolv_conf()}


class TestWorkloads:
    """A Deployment and a Service of the catalog image, from host and pods."""

    def test_a_two_replica_deployment_becomes_ready(
        self, cluster: RunningCluster, catalog: Catalog
    ) -> None:
        with local.api_client(cluster.settings) as api:
            core = k8s.CoreV1Api(api)
            wait_for(
                lambda: len(_pod_names(core, catalog.namespace)) == 2,
                timeout=60,
                what="two Ready catalog pods",
            )

    def test_the_service_ip_reaches_both_pods_from_the_host(
        self, cluster: RunningCluster, catalog: Catalog
    ) -> None:
        pods = _two_ready_pods(cluster, catalog)
        # kube-proxy programs the Service a moment after the pods turn Ready.
        wait_for(
            lambda: local.host_connectable(catalog.cluster_ip, PORT),
            timeout=30,
            what=f"a connection to {catalog.cluster_ip}:{PORT}",
        )
        # 40 independent picks miss one of two pods with probability 2**-39.
        seen = _served_by_over_fresh_connections(catalog.cluster_ip, attempts=40)
        assert seen == pods

    def test_the_service_name_reaches_both_pods_from_a_pod(
        self, cluster: RunningCluster, catalog: Catalog
    ) -> None:
        pods = _two_ready_pods(cluster, catalog)
        url = (
            f"http://catalog.{catalog.namespace}.svc.cluster.local:{PORT}/health/ready"
        )
        # The first request may wait a moment for the pod's DNS and the
        # Service rules; the 40 counted ones start after it answered.
        script = (
            "import json, time, urllib.request\n"
            "for _ in range(40):\n"
            "    try:\n"
            f"        urllib.request.urlopen({url!r}, timeout=2).close()\n"
            "        break\n"
            "    except OSError:\n"
            "        time.sleep(0.5)\n"
            "seen = set()\n"
            "for _ in range(40):\n"
            f"    with urllib.request.urlopen({url!r}, timeout=5) as r:\n"
            "        seen.add(r.headers['X-Served-By'])\n"
            "print(json.dumps(sorted(seen)))\n"
        )
        output = _exec_python(cluster, catalog.namespace, sorted(pods)[0], script)
        assert set(json.loads(output)) == pods

    def test_a_pod_resolves_cluster_names_and_not_outside_names(
        self, cluster: RunningCluster, catalog: Catalog
    ) -> None:
        with local.api_client(cluster.settings) as api:
            pod = sorted(_pod_names(k8s.CoreV1Api(api), catalog.namespace))[0]
        script = (
            "import json, socket\n"
            "def resolve(name):\n"
            "    try:\n"
            "        return socket.gethostbyname(name)\n"
            "    except socket.gaierror:\n"
            "        return None\n"
            "names = [\n"
            f"    'catalog.{catalog.namespace}.svc.cluster.local',\n"
            "    'kubernetes.default',\n"
            "    'example.com',\n"
            "    'deb.debian.org',\n"
            "]\n"
            "print(json.dumps([resolve(n) for n in names]))\n"
        )
        answers = json.loads(_exec_python(cluster, catalog.namespace, pod, script))
        assert answers == [
            catalog.cluster_ip,
            cluster.settings.kubernetes_service_ip,
            None,
            None,
        ]

    def test_a_deleted_pod_is_replaced_by_a_ready_one(
        self, cluster: RunningCluster, catalog: Catalog
    ) -> None:
        with local.api_client(cluster.settings) as api:
            core = k8s.CoreV1Api(api)
            before = _pod_names(core, catalog.namespace)
            victim = sorted(before)[0]
            core.delete_namespaced_pod(victim, catalog.namespace)

            def replaced() -> bool:
                now = _pod_names(core, catalog.namespace)
                return len(now) == 2 and victim not in now

            wait_for(replaced, timeout=60, what=f"a replacement for pod {victim}")


def test_a_killed_component_is_noticed_and_up_restarts_it(
    cluster: RunningCluster,
) -> None:
    layout = cluster.settings.layout
    record = processes.read_record(layout.run, "kube-scheduler")
    assert record is not None
    os.kill(record.pid, signal.SIGKILL)
    wait_for(lambda: not processes.is_running(record), timeout=10, what="the kill")

    current = local.status(cluster.settings)
    assert not current.healthy
    scheduler = next(c for c in current.components if c.name == "kube-scheduler")
    assert (scheduler.running, scheduler.healthy) == (False, False)
    cli = subprocess.run(
        [sys.executable, "-m", "harness.cluster.cli", "cluster", "status",
         "--name", cluster.settings.name],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert cli.returncode == 1
    assert "kube-scheduler" in cli.stdout

    others = {c.name: c.pid for c in current.components if c.name != "kube-scheduler"}
    repaired = local.up(cluster.settings)
    assert repaired.healthy
    pids = {c.name: c.pid for c in repaired.components}
    assert pids["kube-scheduler"] != record.pid
    assert {name: pids[name] for name in others} == others


def test_up_after_a_crash_removes_the_remains_and_starts_afresh(
    cluster: RunningCluster,
) -> None:
    layout = cluster.settings.layout
    pod = _deployment("crash")["spec"]["template"]
    pod["metadata"]["name"] = "crash"
    with local.api_client(cluster.settings) as api:
        core = k8s.CoreV1Api(api)
        core.create_namespaced_pod("default", pod)
        wait_for(
            lambda: (
                core.read_namespaced_pod("crash", "default").status.phase == "Running"
            ),
            timeout=60,
            what="pod crash running",
        )
    crashed = processes.records(layout.run)
    namespaces = processes.namespaces_of(crashed)
    recorded = {r.pid for r in crashed}
    shims = {
        pid: processes.start_ticks(pid)
        for pid in processes.members(namespaces)
        if pid not in recorded
    }
    assert shims

    # A crash: every recorded process dies at once, the pod's processes stay.
    processes.kill(recorded)
    current = local.up(cluster.settings)

    assert current.healthy
    assert not recorded & {c.pid for c in current.components}
    survivors = [pid for pid, t in shims.items() if processes.start_ticks(pid) == t]
    assert survivors == []


def test_down_leaves_no_process_mount_interface_route_or_chain(
    cluster: RunningCluster,
) -> None:
    layout = cluster.settings.layout
    recorded = processes.records(layout.run)
    namespaces = processes.namespaces_of(recorded)
    assert namespaces

    local.down(cluster.settings)

    assert not any(processes.is_running(r) for r in recorded)
    assert processes.members(namespaces) == []
    after = networking.snapshot()
    for aspect in ("links", "addresses", "routes", "chains", "mounts"):
        before_set = getattr(cluster.before, aspect)
        after_set = getattr(after, aspect)
        assert after_set - before_set == frozenset(), aspect
        assert before_set - after_set == frozenset(), aspect


def test_up_with_a_busy_port_starts_nothing(cluster: RunningCluster) -> None:
    layout = cluster.settings.layout
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 10259))
        sock.listen()
        with pytest.raises(
            PrerequisiteError, match=re.escape("port 10259 on 127.0.0.1 is taken")
        ):
            local.up(cluster.settings)
    assert processes.records(layout.run) == []
    assert not networking.link_exists(cluster.settings.node_bridge)
