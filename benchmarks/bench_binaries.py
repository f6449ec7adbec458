"""How long the cluster's binaries take to build and check, and what they cost.

The cold build times come from the ``build.json`` each build leaves next to
its binaries, which remembers the first build on the machine. This script
measures the warm path (``ensure`` finding every binary cached and checking
its version) and the disk the caches take: the binaries, the Go module cache
and the Go build cache.

``--cold-etcd`` also builds etcd once more with an empty build cache of its
own (the module cache is shared), for a cold compile time that no earlier
build has warmed.

Writes ``benchmarks/results/binaries.json``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import binaries
from harness.paths import PROJECT_ROOT
from harness.progress import Progress

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "binaries.json"
WARM_ROUNDS = 5
DU_TIMEOUT = 300
SUMMARY_KEYS = ("version", "go_version", "built_at", "packages_compiled", "seconds")


def disk_bytes(path: Path) -> int | None:
    """Return the bytes a folder takes on disk, None if it does not exist."""
    if not path.exists():
        return None
    result = subprocess.run(
        ["du", "-sb", str(path)],
        capture_output=True,
        text=True,
        timeout=DU_TIMEOUT,
        check=True,
    )
    return int(result.stdout.split()[0])


def go_env(name: str) -> Path:
    """Return a folder ``go env`` names, such as GOCACHE."""
    result = subprocess.run(
        [str(binaries.find_go()), "env", name],
        capture_output=True,
        text=True,
        env=binaries.go_environment(),
        timeout=60,
        check=True,
    )
    return Path(result.stdout.strip())


def build_records() -> dict[str, Any]:
    """Return what each cached build recorded about itself."""
    records: dict[str, Any] = {}
    for component in binaries.COMPONENTS:
        path = binaries.component_dir(component) / "build.json"
        records[component.name] = json.loads(path.read_text())
    return records


def first_build(record: dict[str, Any]) -> dict[str, Any]:
    """Return the first build a record remembers: the one from a cold cache."""
    history = record.get("history") or []
    oldest = history[0] if history else record
    return {key: oldest[key] for key in SUMMARY_KEYS}


def warm_ensure_seconds(rounds: int) -> list[float]:
    """Time ``ensure`` when every binary is cached."""
    quiet = Progress("binaries", quiet=True)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        binaries.ensure(progress=quiet)
        times.append(time.perf_counter() - start)
    return times


def cold_etcd_seconds() -> float:
    """Build etcd with a fresh build cache and cache root; return the seconds."""
    saved = {key: os.environ.get(key) for key in ("HARNESS_CACHE", "GOCACHE")}
    with tempfile.TemporaryDirectory(prefix="bench-binaries-") as scratch:
        os.environ["HARNESS_CACHE"] = f"{scratch}/cache"
        os.environ["GOCACHE"] = f"{scratch}/gocache"
        try:
            start = time.perf_counter()
            binaries.build(binaries.ETCD, progress=Progress("cold etcd"))
            return time.perf_counter() - start
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def main() -> int:
    """Measure, print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cold-etcd", action="store_true", help="also time etcd from a cold cache"
    )
    options = parser.parse_args()
    if binaries.find() is None or os.environ.get("HARNESS_BIN_DIR"):
        print("build the binaries first: python -m harness.binaries", file=sys.stderr)
        return 1

    records = build_records()
    warm = warm_ensure_seconds(WARM_ROUNDS)
    first = {name: first_build(record) for name, record in records.items()}
    result: dict[str, Any] = {
        "first_builds": first,
        "first_build_total_seconds": round(
            sum(r["seconds"]["total"] for r in first.values()), 1
        ),
        "latest_builds": {
            name: {key: record[key] for key in SUMMARY_KEYS}
            for name, record in records.items()
        },
        "warm_ensure_seconds": {
            "rounds": WARM_ROUNDS,
            "median": round(statistics.median(warm), 3),
            "min": round(min(warm), 3),
            "max": round(max(warm), 3),
        },
        "disk_bytes": {
            "binaries": disk_bytes(binaries.bin_root()),
            "gomodcache": disk_bytes(go_env("GOMODCACHE")),
            "gocache": disk_bytes(go_env("GOCACHE")),
        },
    }
    if options.cold_etcd:
        result["cold_etcd_seconds"] = round(cold_etcd_seconds(), 1)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
