"""How hard the load driver pushes the shop through its front door, beside wrk.

Deploys the shop into a namespace of its own on the embedded cluster
``local`` (which must be up), scales the catalog to three pods, and loads
``GET /catalog/1`` through the front door's NodePort in alternating rounds:
locust as the experiments drive it (a new connection per request, and kept
alive), and ``wrk -t2 -c8`` (kept-alive connections). The median requests
per second of each go to ``benchmarks/results/experiments.json``; the
namespace is deleted at the end.

Run: ``.venv/bin/python benchmarks/bench_experiments.py [--rounds 2] [--seconds 10]``
"""

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
from dataclasses import asdict, dataclass

from harness import clusters, deploying
from harness.cluster import local
from harness.cluster.settings import ClusterSettings
from harness.paths import PROJECT_ROOT
from harness.traffic import Connections, Load, run_locust

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "experiments.json"
PATH = "/catalog/1"
USERS = 8
REPLICAS = 3

_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")


@dataclass(frozen=True)
class Figures:
    """The outcome of one benchmark run."""

    rounds: int
    seconds_per_round: float
    url: str
    catalog_replicas: int
    locust_users: int
    locust_new_rps: list[float]
    locust_keepalive_rps: list[float]
    wrk_rps: list[float]
    locust_new_median_rps: float
    locust_keepalive_median_rps: float
    wrk_median_rps: float
    locust_failures: int
    wrk_non_2xx: int
    cpus: int
    load_average_before: list[float]
    load_average_after: list[float]
    python: str


def locust_rate(
    url: str, *, seconds: float, connections: Connections
) -> tuple[float, int]:
    """Run locust the way the experiments do; return requests/s and failures."""
    result = run_locust(
        Load(
            users=USERS,
            spawn_rate=USERS,
            run_time_s=seconds,
            scenario="catalog-item",
            connections=connections,
            max_failure_ratio=1.0,
        ),
        host=url,
    )
    return round(result.requests_per_second, 1), result.failures


def wrk_rate(url: str, *, seconds: float) -> tuple[float, int]:
    """Run ``wrk -t2 -c8`` against the front door; return requests/s and non-2xx."""
    done = subprocess.run(
        ["wrk", "-t2", "-c8", f"-d{seconds:g}s", f"{url}{PATH}"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    )
    rate = _RATE.search(done.stdout)
    if rate is None:
        raise SystemExit(f"bench: wrk printed no rate:\n{done.stdout}")
    non_2xx = _NON_2XX.search(done.stdout)
    return float(rate.group(1)), int(non_2xx.group(1)) if non_2xx else 0


def main() -> int:
    """Deploy, measure in alternating rounds, write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk not found; install the Debian package wrk")
    settings = ClusterSettings()
    if not local.status(settings).healthy:
        raise SystemExit("bench: cluster local is not up; run `harness cluster up`")

    target = clusters.Target(
        kind="local", kubeconfig=settings.layout.admin_kubeconfig, started=False
    )
    api = clusters.api_client(target)
    shop = deploying.Shop(api, namespace=f"harness-bench-{secrets.token_hex(2)}")
    manifests = deploying.read_manifests()
    url = (
        f"http://{settings.node_ip}:{deploying.node_port(manifests, service='apache')}"
    )
    new: list[float] = []
    kept: list[float] = []
    wrk: list[float] = []
    failures = non_2xx = 0
    before = list(os.getloadavg())
    try:
        shop.create_namespace()
        shop.apply(manifests)
        names = [m["metadata"]["name"] for m in manifests if m["kind"] == "Deployment"]
        shop.wait_for_rollouts(names)
        pods = shop.scale(name="catalog", replicas=REPLICAS)
        deploying.wait_until_served(f"{url}{PATH}", pods=pods)
        for round_number in range(args.rounds):
            rate, failed = locust_rate(url, seconds=args.seconds, connections="new")
            new.append(rate)
            failures += failed
            rate, failed = locust_rate(
                url, seconds=args.seconds, connections="keepalive"
            )
            kept.append(rate)
            failures += failed
            rate, bad = wrk_rate(url, seconds=args.seconds)
            wrk.append(rate)
            non_2xx += bad
            print(
                f"round {round_number + 1}: locust new {new[-1]}/s, "
                f"keepalive {kept[-1]}/s, wrk {wrk[-1]}/s",
                flush=True,
            )
    finally:
        shop.delete_namespace()
        api.close()  # type: ignore[no-untyped-call]

    figures = Figures(
        rounds=args.rounds,
        seconds_per_round=args.seconds,
        url=f"{url}{PATH}",
        catalog_replicas=REPLICAS,
        locust_users=USERS,
        locust_new_rps=new,
        locust_keepalive_rps=kept,
        wrk_rps=wrk,
        locust_new_median_rps=statistics.median(new),
        locust_keepalive_median_rps=statistics.median(kept),
        wrk_median_rps=statistics.median(wrk),
        locust_failures=failures,
        wrk_non_2xx=non_2xx,
        cpus=os.cpu_count() or 0,
        load_average_before=before,
        load_average_after=list(os.getloadavg()),
        python=platform.python_version(),
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    print(json.dumps(asdict(figures), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
