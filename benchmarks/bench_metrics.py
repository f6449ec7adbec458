"""What the request metrics cost: catalog throughput with and without them.

Starts one catalog process with ``METRICS_ENABLED=true`` and one with
``false`` on loopback, loads ``GET /catalog/1`` with ``wrk`` in alternating
rounds (so that drift in the machine's load hits both alike), and reports
the median requests per second of each and their ratio. The figures go to
``benchmarks/results/metrics.json``.

Run: ``.venv/bin/python benchmarks/bench_metrics.py [--rounds 3] [--seconds 10]``
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "metrics.json"
#: The ratio instrumented/bare the metrics must keep.
TARGET_RATIO = 0.95
READY_TIMEOUT_SECONDS = 30.0
EXIT_TIMEOUT_SECONDS = 20.0

_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_ERRORS = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)|Socket errors:.*")


@dataclass(frozen=True)
class Figures:
    """The outcome of one benchmark run."""

    rounds: int
    seconds_per_round: float
    connections: int
    instrumented_rps: list[float]
    bare_rps: list[float]
    instrumented_median_rps: float
    bare_median_rps: float
    ratio: float
    target_ratio: float
    meets_target: bool
    cpus: int
    load_average_before: list[float]
    load_average_after: list[float]
    python: str


def free_port() -> int:
    """Return a loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_catalog(*, metrics: bool) -> tuple[subprocess.Popen[bytes], int]:
    """Start a catalog process on a free loopback port; wait until it is ready."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "BIND_HOST": "127.0.0.1",
        "PORT": str(port),
        "POD_NAME": f"bench-{'metrics' if metrics else 'bare'}",
        "METRICS_ENABLED": "true" if metrics else "false",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.catalog"],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bench: the catalog exited with {process.returncode}")
        if _ready(port):
            return process, port
        time.sleep(0.1)
    stop(process)
    raise SystemExit(f"bench: the catalog on port {port} was not ready in time")


def _ready(port: int) -> bool:
    request = b"GET /health/ready HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(request)
            return conn.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process this script started, by its PID."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=EXIT_TIMEOUT_SECONDS)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(timeout=EXIT_TIMEOUT_SECONDS)


def load(port: int, *, seconds: float, connections: int) -> float:
    """Run wrk against ``GET /catalog/1`` and return its requests per second."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "5s",
        f"http://127.0.0.1:{port}/catalog/1",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30, check=True
    )
    rate = _RATE.search(result.stdout)
    if rate is None:
        raise SystemExit(f"bench: no Requests/sec in wrk's output:\n{result.stdout}")
    problem = _ERRORS.search(result.stdout)
    if problem:
        print(f"bench: wrk reported: {problem.group(0)}", file=sys.stderr)
    return float(rate.group(1))


def measure(*, rounds: int, seconds: float, connections: int) -> Figures:
    """Alternate loaded rounds of both catalogs and collect the rates."""
    load_before = [round(value, 2) for value in os.getloadavg()]
    rates: dict[bool, list[float]] = {True: [], False: []}
    processes = [start_catalog(metrics=True), start_catalog(metrics=False)]
    ports = {True: processes[0][1], False: processes[1][1]}
    try:
        for metrics in (True, False):  # warm-up, not counted
            load(ports[metrics], seconds=2, connections=connections)
        for number in range(1, rounds + 1):
            # Swap the order every round so neither side always goes first.
            order = (True, False) if number % 2 else (False, True)
            for metrics in order:
                rate = load(ports[metrics], seconds=seconds, connections=connections)
                rates[metrics].append(rate)
                side = "instrumented" if metrics else "bare"
                print(f"round {number} {side:>12}: {rate:9.1f} req/s", file=sys.stderr)
    finally:
        for process, _ in processes:
            stop(process)
    with_metrics = statistics.median(rates[True])
    bare = statistics.median(rates[False])
    ratio = with_metrics / bare
    return Figures(
        rounds=rounds,
        seconds_per_round=seconds,
        connections=connections,
        instrumented_rps=rates[True],
        bare_rps=rates[False],
        instrumented_median_rps=with_metrics,
        bare_median_rps=bare,
        ratio=round(ratio, 4),
        target_ratio=TARGET_RATIO,
        meets_target=ratio >= TARGET_RATIO,
        cpus=os.cpu_count() or 0,
        load_average_before=load_before,
        load_average_after=[round(value, 2) for value in os.getloadavg()],
        python=platform.python_version(),
    )


def main() -> int:
    """Run the benchmark, print the table and write the JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 11))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if not 1 <= args.seconds <= 60:
        parser.error(f"--seconds {args.seconds:g} is out of range; give 1 to 60")
    if shutil.which("wrk") is None:
        print("bench: wrk not found; install it (apt-get install wrk)", file=sys.stderr)
        return 1

    figures = measure(
        rounds=args.rounds, seconds=args.seconds, connections=args.connections
    )

    print(f"{'catalog GET /catalog/1':<26}{'median req/s':>14}")
    print(f"{'METRICS_ENABLED=true':<26}{figures.instrumented_median_rps:>14.1f}")
    print(f"{'METRICS_ENABLED=false':<26}{figures.bare_median_rps:>14.1f}")
    verdict = "meets" if figures.meets_target else "misses"
    print(f"ratio {figures.ratio:.3f} ({verdict} the target {TARGET_RATIO})")
    print(
        f"load average {figures.load_average_before} before, "
        f"{figures.load_average_after} after, on {figures.cpus} CPUs"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    print(f"figures written to {RESULTS.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
