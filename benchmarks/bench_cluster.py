"""How fast the embedded cluster comes up and down, what it holds, how fast it heals.

* ``up``: warm caches (binaries and images built), a purged state directory,
  until the node is Ready and the cluster DNS answers; median of 3.
* ``down``: from a running cluster with two catalog pods, until every
  process is gone and the network is removed; median of 3.
* resident memory: the sum of VmRSS over every process of the cluster (the
  components, the containerd shims, the pause and app containers), idle,
  without and with a two-replica catalog Deployment.
* pod replacement: delete one of the two catalog pods, time until a new pod
  is Ready; median and p95 of 20. Beside it the floor: ``ctr run`` of the
  same image on the cluster's containerd (host network) until its readiness
  endpoint answers.

Writes ``benchmarks/results/cluster.json``.

Run: ``.venv/bin/python benchmarks/bench_cluster.py`` (as root, with the
``local`` cluster down: the benchmark uses a cluster named ``bench``).
"""

import contextlib
import json
import os
import platform
import statistics
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch

from harness import commands
from harness.cluster import local, processes
from harness.cluster.settings import ClusterSettings
from harness.paths import PROJECT_ROOT
from harness.progress import Progress

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "cluster.json"
UP_ROUNDS = 3
REPLACEMENTS = 20
FLOOR_ROUNDS = 5
IDLE_SECONDS = 20.0
IMAGE = "localhost/kube-harness/catalog:0.1.0"
NAMESPACE = "bench"
FLOOR_PORT = 18080
WAIT_TIMEOUT = 120.0


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "median_s": round(statistics.median(values), 3),
        "p95_s": round(_percentile(values, 0.95), 3),
        "min_s": round(min(values), 3),
        "max_s": round(max(values), 3),
        "runs_s": [round(v, 3) for v in values],
    }


def _rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def cluster_pids(settings: ClusterSettings) -> list[int]:
    """Return every process of the cluster: components, shims, containers."""
    recorded = processes.records(settings.layout.run)
    return processes.members(processes.namespaces_of(recorded))


def _ready(pod: Any) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def deploy_catalog(core: Any, apps: Any) -> None:
    """Create the benchmark namespace with two catalog replicas; wait for Ready."""
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    labels = {"app": "catalog"}
    apps.create_namespaced_deployment(
        NAMESPACE,
        {
            "metadata": {"name": "catalog"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 2,
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "containers": [
                            {
                                "name": "catalog",
                                "image": IMAGE,
                                "imagePullPolicy": "Never",
                                "env": [{"name": "PORT", "value": "8080"}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/health/ready", "port": 8080},
                                    "periodSeconds": 1,
                                },
                            }
                        ],
                    },
                },
            },
        },
    )
    deadline = time.monotonic() + WAIT_TIMEOUT
    while len(_ready_pods(core)) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the catalog pods did not become Ready")
        time.sleep(0.2)


def _ready_pods(core: Any) -> set[str]:
    pods = core.list_namespaced_pod(NAMESPACE, label_selector="app=catalog").items
    return {
        p.metadata.name
        for p in pods
        if p.metadata.deletion_timestamp is None and _ready(p)
    }


def replace_one(core: Any) -> float:
    """Delete one catalog pod; return the seconds until a new one is Ready."""
    before = _ready_pods(core)
    listing = core.list_namespaced_pod(NAMESPACE, label_selector="app=catalog")
    victim = sorted(before)[0]
    watcher = watch.Watch()  # type: ignore[no-untyped-call]
    start = time.monotonic()
    core.delete_namespaced_pod(victim, NAMESPACE)
    stream = watcher.stream(  # type: ignore[no-untyped-call]
        core.list_namespaced_pod,
        NAMESPACE,
        label_selector="app=catalog",
        resource_version=listing.metadata.resource_version,
        timeout_seconds=int(WAIT_TIMEOUT),
    )
    try:
        for event in stream:
            pod = event["object"]
            if pod.metadata.name not in before and _ready(pod):
                return time.monotonic() - start
    finally:
        watcher.stop()  # type: ignore[no-untyped-call]
    raise RuntimeError(f"no replacement for pod {victim} became Ready")


def floor_once(settings: ClusterSettings, index: int) -> float:
    """Time ``ctr run`` of the catalog image until its readiness endpoint answers."""
    address = str(settings.layout.containerd_socket)
    name = f"kh-floor-{index}"
    holder = processes.read_record(settings.layout.run, processes.HOLDER)
    assert holder is not None
    # ctr makes the task's FIFOs under /run, which must be the shim's /run.
    ctr = processes.namespaced(holder, ["ctr", "--address", address, "-n", "k8s.io"])
    url = f"http://127.0.0.1:{FLOOR_PORT}/health/ready"
    start = time.monotonic()
    commands.run(
        [*ctr, "run", "-d", "--net-host", "--cgroup", f"/kh-bench-floor/{name}",
         "--env", f"PORT={FLOOR_PORT}", IMAGE, name],
        timeout=60.0,
    )  # fmt: skip
    try:
        deadline = start + WAIT_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return time.monotonic() - start
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} never answered {url}")
            time.sleep(0.02)
    finally:
        commands.run([*ctr, "task", "kill", "-s", "SIGKILL", name], timeout=30.0,
                     check=False)  # fmt: skip
        for _ in range(50):
            done = commands.run([*ctr, "task", "delete", name], timeout=30.0,
                                check=False)  # fmt: skip
            if done.returncode == 0 or "not found" in done.stderr:
                break
            time.sleep(0.1)
        commands.run([*ctr, "container", "delete", name], timeout=30.0, check=False)
        for controller in Path("/sys/fs/cgroup").iterdir():
            for folder in (
                controller / "kh-bench-floor" / name,
                controller / "kh-bench-floor",
            ):
                with contextlib.suppress(OSError):
                    folder.rmdir()


def main() -> int:
    """Run every measurement and write the results file."""
    settings = ClusterSettings(name="bench")
    progress = Progress("bench cluster", total=5)
    if local.status(ClusterSettings()).running:
        print("cluster local is running: take it down first", file=sys.stderr)
        return 1
    quiet = Progress("up", quiet=True)

    # Warm up: binaries and images cached, one cluster started and stopped.
    with progress.step("warm-up"):
        local.down(settings, purge=True)
        local.up(settings, progress=quiet)
        local.down(settings, purge=True)

    ups, downs = [], []
    with progress.step(f"up and down, {UP_ROUNDS} rounds"):
        for _ in range(UP_ROUNDS):
            start = time.monotonic()
            local.up(settings, progress=quiet)
            ups.append(time.monotonic() - start)
            start = time.monotonic()
            local.down(settings, purge=True)
            downs.append(time.monotonic() - start)

    try:
        measured = _measure_running(settings, quiet, progress)
    finally:
        start = time.monotonic()
        local.down(settings, purge=True)
        down_with_pods = time.monotonic() - start

    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "up_warm_to_ready_and_dns": {**_summary(ups), "target_s": 20.0},
        "down": {**_summary(downs), "target_s": 5.0},
        "down_with_two_pods_s": round(down_with_pods, 3),
        **measured,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


def _measure_running(
    settings: ClusterSettings, quiet: Progress, progress: Progress
) -> dict[str, Any]:
    local.up(settings, progress=quiet)
    local.load_images(settings, names=["catalog"])
    with local.api_client(settings) as api:
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        with progress.step("resident memory, idle"):
            time.sleep(IDLE_SECONDS)
            bare = cluster_pids(settings)
            bare_rss = _rss_bytes(bare)
            deploy_catalog(core, apps)
            time.sleep(IDLE_SECONDS)
            loaded = cluster_pids(settings)
            loaded_rss = _rss_bytes(loaded)
        with progress.step(f"pod replacement, {REPLACEMENTS} rounds"):
            replacements = []
            for _ in range(REPLACEMENTS):
                replacements.append(replace_one(core))
                deadline = time.monotonic() + WAIT_TIMEOUT
                while len(_ready_pods(core)) < 2 and time.monotonic() < deadline:
                    time.sleep(0.1)
    with progress.step(f"ctr run floor, {FLOOR_ROUNDS} rounds"):
        floors = [floor_once(settings, i) for i in range(FLOOR_ROUNDS)]
    return {
        "resident_memory_idle": {
            "components_only_mib": round(bare_rss / 2**20, 1),
            "components_only_processes": len(bare),
            "with_two_catalog_pods_mib": round(loaded_rss / 2**20, 1),
            "with_two_catalog_pods_processes": len(loaded),
            "target_mib": round(1.2e9 / 2**20, 1),
        },
        "pod_replacement_to_ready": _summary(replacements),
        "ctr_run_to_ready_floor": _summary(floors),
    }


if __name__ == "__main__":
    sys.exit(main())
