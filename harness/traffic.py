"""Driving load with locust, headless, and reading back what every request met.

The experiments need traffic they can account for request by request. This
module runs ``experiments/load.py`` in a locust subprocess (locust patches the
standard library with gevent, which must not happen inside pytest), bounded by
a request count, a run time and a hard timeout, and returns what locust's
record file says: every request's route, status, latency and the pod that
answered it.
"""

import json
import logging
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from harness.errors import HarnessError, UsageError
from harness.paths import PROJECT_ROOT

logger = logging.getLogger(__name__)

LOCUSTFILE = PROJECT_ROOT / "experiments" / "load.py"
Scenario = Literal["shop", "catalog", "catalog-item"]
Connections = Literal["new", "keepalive"]

#: Time locust gets at the end of a run to let the requests on their way finish.
STOP_TIMEOUT_S = 30.0
#: Time to start Python, import locust and load the locustfile, generously.
STARTUP_ALLOWANCE_S = 60.0
#: How much of locust's output a result keeps.
OUTPUT_TAIL_CHARS = 4000


class TrafficError(HarnessError):
    """Locust did not run, or did not finish in time."""


@dataclass(frozen=True)
class Request:
    """One request locust sent, as its record file has it."""

    #: When it was sent, Unix seconds.
    t: float
    #: The URL rule it hit, as the service's counters name it.
    route: str
    method: str
    #: The HTTP status; 0 when no answer came.
    status: int
    latency_ms: float
    #: The pod that answered, from ``X-Served-By``.
    served_by: str | None
    error: str | None


@dataclass(frozen=True)
class TrafficResult:
    """What one locust run sent and who answered."""

    exit_code: int
    records: tuple[Request, ...]
    #: Requests answered, by the pod named in ``X-Served-By``.
    per_pod: Mapping[str, int]
    #: Requests sent, by ``"<method> <route>"``.
    per_route: Mapping[str, int]
    #: Requests whose answer carried no ``X-Served-By``.
    unattributed: int
    #: Requests locust counted as failed: no answer, or a status of 400 or more.
    failures: int
    #: Requests over the time from the first sent to the last answered.
    requests_per_second: float
    #: The end of locust's output, for a failure message.
    output_tail: str

    @property
    def requests(self) -> int:
        """Return how many requests were sent."""
        return len(self.records)


@dataclass(frozen=True)
class Load:
    """How hard and how long to push, and with what traffic."""

    users: int = 10
    spawn_rate: float = 10.0
    run_time_s: float = 60.0
    scenario: Scenario = "shop"
    connections: Connections = "new"
    #: Stop after this many requests; None: only the run time bounds the run.
    max_requests: int | None = None
    max_failure_ratio: float = 0.01
    wait_s: float = 0.0
    item_id: int = 1

    def __post_init__(self) -> None:
        checks = [
            (self.users >= 1, f"users={self.users} must be at least 1"),
            (self.spawn_rate > 0, f"spawn_rate={self.spawn_rate} must be above 0"),
            (self.run_time_s > 0, f"run_time_s={self.run_time_s} must be above 0"),
            (
                self.max_requests is None or self.max_requests >= 1,
                f"max_requests={self.max_requests} must be None or at least 1",
            ),
            (
                0.0 <= self.max_failure_ratio <= 1.0,
                f"max_failure_ratio={self.max_failure_ratio} must be from 0 to 1",
            ),
            (0.0 <= self.wait_s <= 60.0, f"wait_s={self.wait_s} must be 0 to 60"),
            (self.item_id >= 1, f"item_id={self.item_id} must be at least 1"),
        ]
        for passed, message in checks:
            if not passed:
                raise UsageError(f"load: {message}")


def command(load: Load, *, host: str, record: Path, locustfile: Path) -> list[str]:
    """Return the locust command line that runs ``load`` against ``host``."""
    args = [
        sys.executable,
        "-m",
        "locust",
        "--locustfile",
        str(locustfile),
        "--headless",
        "--only-summary",
        "--host",
        host,
        "--users",
        str(load.users),
        "--spawn-rate",
        f"{load.spawn_rate:g}",
        "--run-time",
        f"{max(1, round(load.run_time_s))}s",
        "--stop-timeout",
        f"{STOP_TIMEOUT_S:g}",
        "--scenario",
        load.scenario,
        "--connections",
        load.connections,
        "--max-failure-ratio",
        f"{load.max_failure_ratio:g}",
        "--wait",
        f"{load.wait_s:g}",
        "--item-id",
        str(load.item_id),
        "--record",
        str(record),
    ]
    if load.max_requests is not None:
        args += ["--max-requests", str(load.max_requests)]
    return args


def read_records(path: Path) -> list[Request]:
    """Read a record file that ``experiments/load.py`` wrote, in order of sending."""
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                raw = json.loads(line)
                records.append(
                    Request(
                        t=float(raw["t"]),
                        route=str(raw["route"]),
                        method=str(raw["method"]),
                        status=int(raw["status"]),
                        latency_ms=float(raw["latency_ms"]),
                        served_by=raw["served_by"],
                        error=raw["error"],
                    )
                )
            except (ValueError, KeyError, TypeError) as e:
                raise TrafficError(
                    f"{path} line {number} is not a request record ({e}); "
                    "it was not written by experiments/load.py"
                ) from e
    records.sort(key=lambda request: request.t)
    return records


def summarise(
    records: list[Request], *, exit_code: int, output_tail: str
) -> TrafficResult:
    """Count the records by pod and route."""
    per_pod = Counter(r.served_by for r in records if r.served_by is not None)
    per_route = Counter(f"{r.method} {r.route}" for r in records)
    if records:
        first = min(r.t for r in records)
        last = max(r.t + r.latency_ms / 1000 for r in records)
        rate = len(records) / (last - first) if last > first else 0.0
    else:
        rate = 0.0
    return TrafficResult(
        exit_code=exit_code,
        records=tuple(records),
        per_pod=dict(per_pod),
        per_route=dict(per_route),
        unattributed=sum(1 for r in records if r.served_by is None),
        failures=sum(1 for r in records if r.error is not None),
        requests_per_second=rate,
        output_tail=output_tail,
    )


# TODO: run_locust drives one locust process; a distributed run (--processes)
# writes one record per worker, <file>.<pid>, which would have to be merged.
def run_locust(
    load: Load,
    *,
    host: str,
    timeout_s: float | None = None,
    locustfile: Path = LOCUSTFILE,
) -> TrafficResult:
    """Run ``load`` against ``host`` in a headless locust and return what it met.

    The run ends at ``load.max_requests`` (once all were answered) or at
    ``load.run_time_s``. Past ``timeout_s`` (by default the run time, locust's
    stop timeout and a start-up allowance) locust is killed and this raises.
    """
    limit = timeout_s or load.run_time_s + STOP_TIMEOUT_S + STARTUP_ALLOWANCE_S
    with tempfile.TemporaryDirectory(prefix="harness-locust-") as scratch:
        folder = Path(scratch)
        record = folder / "requests.jsonl"
        args = command(load, host=host, record=record, locustfile=locustfile)
        logger.info(
            "locust: %d users, %s connections, scenario %s against %s",
            load.users,
            load.connections,
            load.scenario,
            host,
        )
        with (folder / "output.txt").open("w+", encoding="utf-8") as output:
            # In a folder of its own, locust finds no locust.conf to read.
            process = subprocess.Popen(
                args,
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            try:
                exit_code = process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
                raise TrafficError(
                    f"locust against {host} did not finish within {limit:g} s and "
                    f"was killed; output ends:\n{_tail(output)}"
                ) from None
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=30)
            tail = _tail(output)

        if not record.exists():
            raise TrafficError(
                f"locust exited with {exit_code} before it sent anything; "
                f"output ends:\n{tail}"
            )
        result = summarise(read_records(record), exit_code=exit_code, output_tail=tail)
    logger.info(
        "locust: %d requests, %d failed, %.0f/s, exit %d",
        result.requests,
        result.failures,
        result.requests_per_second,
        exit_code,
    )
    return result


def _tail(output: IO[str]) -> str:
    output.seek(0)
    return output.read()[-OUTPUT_TAIL_CHARS:]
