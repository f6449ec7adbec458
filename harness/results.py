"""The record of a run: ``reports/<run-id>/results.json`` and ``reports/latest``.

Every experiment's outcome is written as soon as it is known, with an atomic
replace of the whole file, so a run that is interrupted (a crash, Ctrl-C, a
lost machine) still leaves a valid file holding the experiments that finished.
A run whose ``ended_at`` is null is such a partial run. ``reports/latest``
is a symbolic link to the newest run's folder, also replaced atomically.

The reader checks the file against the schema and names every problem it
finds, so a report generator can trust what it gets back.

Timestamps are ISO-8601 in UTC (``2026-12-03T11:05:12.345Z``). JSON has no
infinity, so non-finite numbers (a max/min ratio when a pod served nothing)
are written as the strings ``"Infinity"``, ``"-Infinity"`` and ``"NaN"``, and
read back as numbers.
"""

import json
import logging
import math
import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict, cast, get_args

from harness import __version__
from harness.errors import HarnessError

logger = logging.getLogger(__name__)

SCHEMA = 1
RESULTS_FILE = "results.json"
LATEST_LINK = "latest"

JSON = str | int | float | bool | None | list["JSON"] | dict[str, "JSON"]
Verdict = Literal["passed", "failed", "error", "skipped"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)


class ResultsError(HarnessError):
    """A results file cannot be written or does not follow the schema."""


@dataclass(frozen=True)
class Cluster:
    """What the run ran on."""

    kind: str
    #: The API server's version, such as ``v1.34.2``; None until it answered.
    kubernetes_version: str | None


@dataclass(frozen=True)
class PodTally:
    """What one pod served during an experiment."""

    name: str
    uid: str
    #: The rise of the pod's own request counter.
    delta: int
    #: The requests the load generator saw answered by this pod, if it counted.
    client_count: int | None


@dataclass(frozen=True)
class Kill:
    """One deleted pod and how long its replacement took, in seconds after the kill.

    A stage that was not reached before the experiment gave up is None.
    """

    pod: str
    killed_at: datetime
    created_s: float | None
    scheduled_s: float | None
    running_s: float | None
    ready_s: float | None
    first_request_s: float | None
    #: The grace period the deletion allowed, in seconds.
    grace: float | None


@dataclass(frozen=True)
class Failure:
    """Why an experiment did not pass, with what the cluster said at the time."""

    message: str
    events: tuple[str, ...] = ()
    #: The end of each relevant pod's log, by pod name.
    logs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """The outcome of one experiment."""

    name: str
    verdict: Verdict
    started_at: datetime
    ended_at: datetime
    parameters: Mapping[str, JSON] = field(default_factory=dict)
    pods: tuple[PodTally, ...] = ()
    statistics: Mapping[str, JSON] = field(default_factory=dict)
    kills: tuple[Kill, ...] = ()
    series: Mapping[str, JSON] = field(default_factory=dict)
    failure: Failure | None = None


@dataclass(frozen=True)
class Run:
    """A whole run: where it ran and the experiments it finished so far."""

    id: str
    cluster: Cluster
    harness_version: str
    started_at: datetime
    #: None while the run goes on, or when it was interrupted.
    ended_at: datetime | None
    experiments: tuple[Experiment, ...] = ()

    @property
    def complete(self) -> bool:
        """Return whether the run reached its end."""
        return self.ended_at is not None


class RawCluster(TypedDict):
    kind: str
    kubernetes_version: str | None


class RawRun(TypedDict):
    id: str
    cluster: RawCluster
    harness_version: str
    started_at: str
    ended_at: str | None


class RawPod(TypedDict):
    name: str
    uid: str
    delta: int
    client_count: int | None


class RawKill(TypedDict):
    pod: str
    killed_at: str
    created_s: float | None
    scheduled_s: float | None
    running_s: float | None
    ready_s: float | None
    first_request_s: float | None
    grace: float | None


class RawFailure(TypedDict):
    message: str
    events: list[str]
    logs: dict[str, str]


class RawExperiment(TypedDict):
    name: str
    verdict: Verdict
    started_at: str
    ended_at: str
    parameters: dict[str, JSON]
    pods: list[RawPod]
    statistics: dict[str, JSON]
    kills: list[RawKill]
    series: dict[str, JSON]
    failure: RawFailure | None


class RawResults(TypedDict):
    schema: int
    run: RawRun
    experiments: list[RawExperiment]


# Writing.


def timestamp(moment: datetime) -> str:
    """Format an aware datetime as ISO-8601 UTC with milliseconds and a ``Z``."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment} has no time zone; pass an aware datetime")
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def new_run_id(now: datetime | None = None) -> str:
    """Return a run id such as ``20261203-110512-ab12``: UTC time and 4 random hex."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _mapped(value: JSON, leaf: Callable[[JSON], JSON]) -> JSON:
    """Return ``value`` with ``leaf`` applied to every scalar inside it."""
    if isinstance(value, list):
        return [_mapped(item, leaf) for item in value]
    if isinstance(value, dict):
        return {key: _mapped(item, leaf) for key, item in value.items()}
    return leaf(value)


def _finite_leaf(value: JSON) -> JSON:
    if isinstance(value, float) and not math.isfinite(value):
        return (
            "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        )
    return value


def _restored_leaf(value: JSON) -> JSON:
    return _NON_FINITE.get(value, value) if isinstance(value, str) else value


def _finite(value: JSON) -> JSON:
    return _mapped(value, _finite_leaf)


def _restored(value: JSON) -> JSON:
    return _mapped(value, _restored_leaf)


def _raw_kill(kill: Kill) -> RawKill:
    return {
        "pod": kill.pod,
        "killed_at": timestamp(kill.killed_at),
        "created_s": kill.created_s,
        "scheduled_s": kill.scheduled_s,
        "running_s": kill.running_s,
        "ready_s": kill.ready_s,
        "first_request_s": kill.first_request_s,
        "grace": kill.grace,
    }


def _raw_experiment(experiment: Experiment) -> RawExperiment:
    failure = experiment.failure
    return {
        "name": experiment.name,
        "verdict": experiment.verdict,
        "started_at": timestamp(experiment.started_at),
        "ended_at": timestamp(experiment.ended_at),
        "parameters": dict(experiment.parameters),
        "pods": [
            {
                "name": pod.name,
                "uid": pod.uid,
                "delta": pod.delta,
                "client_count": pod.client_count,
            }
            for pod in experiment.pods
        ],
        "statistics": dict(experiment.statistics),
        "kills": [_raw_kill(kill) for kill in experiment.kills],
        "series": dict(experiment.series),
        "failure": None
        if failure is None
        else {
            "message": failure.message,
            "events": list(failure.events),
            "logs": dict(failure.logs),
        },
    }


def to_raw(run: Run) -> RawResults:
    """Return the JSON document of a run."""
    return {
        "schema": SCHEMA,
        "run": {
            "id": run.id,
            "cluster": {
                "kind": run.cluster.kind,
                "kubernetes_version": run.cluster.kubernetes_version,
            },
            "harness_version": run.harness_version,
            "started_at": timestamp(run.started_at),
            "ended_at": None if run.ended_at is None else timestamp(run.ended_at),
        },
        "experiments": [_raw_experiment(e) for e in run.experiments],
    }


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file."""
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_run(run: Run, path: Path) -> None:
    """Write the results file of ``run`` to ``path`` atomically."""
    try:
        text = json.dumps(_finite(cast(JSON, to_raw(run))), indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ResultsError(
            f"run {run.id}: results hold a value JSON cannot carry ({e}); "
            "pass numbers, strings, booleans, None, lists and dicts only"
        ) from e
    write_atomically(path, text + "\n")


def point_latest(report_dir: Path, run_id: str) -> None:
    """Point ``report_dir/latest`` at the folder of ``run_id``, atomically."""
    link = report_dir / LATEST_LINK
    if link.exists() and not link.is_symlink():
        raise ResultsError(
            f"{link} is not a symbolic link; move it away so the harness can "
            "point it at the newest run"
        )
    temporary = report_dir / f".{LATEST_LINK}.{secrets.token_hex(4)}"
    os.symlink(run_id, temporary)
    try:
        os.replace(temporary, link)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class RunRecorder:
    """Keep the results file of a run up to date as experiments finish."""

    def __init__(self, run: Run, *, path: Path) -> None:
        self._run = run
        self.path = path

    @property
    def run(self) -> Run:
        """Return the run as recorded so far."""
        return self._run

    def set_cluster(self, cluster: Cluster) -> None:
        """Record what the run runs on, once it is known."""
        self._save(replace(self._run, cluster=cluster))

    def add(self, experiment: Experiment) -> None:
        """Append an experiment's outcome and write the file."""
        experiments = (*self._run.experiments, experiment)
        self._save(replace(self._run, experiments=experiments))
        logger.info(
            "run %s: experiment %s %s",
            self._run.id,
            experiment.name,
            experiment.verdict,
        )

    def finish(self, *, ended_at: datetime | None = None) -> Run:
        """Mark the run complete and write the file."""
        self._save(replace(self._run, ended_at=ended_at or datetime.now(UTC)))
        return self._run

    def _save(self, run: Run) -> None:
        write_run(run, self.path)
        self._run = run


def start_run(
    report_dir: Path,
    *,
    cluster: Cluster,
    started_at: datetime | None = None,
    run_id: str | None = None,
) -> RunRecorder:
    """Create ``report_dir/<run-id>/results.json`` and point ``latest`` at it."""
    started = started_at or datetime.now(UTC)
    report_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(10):
        chosen = run_id or new_run_id(started)
        folder = report_dir / chosen
        try:
            folder.mkdir()
        except FileExistsError:
            if run_id is not None:
                raise ResultsError(
                    f"run {run_id} already has a folder {folder}; "
                    "choose a new run id or move the old one away"
                ) from None
            continue
        break
    else:
        raise ResultsError(f"no free run id in {report_dir} after 10 tries")

    run = Run(
        id=chosen,
        cluster=cluster,
        harness_version=__version__,
        started_at=started,
        ended_at=None,
    )
    recorder = RunRecorder(run, path=folder / RESULTS_FILE)
    recorder._save(run)
    point_latest(report_dir, chosen)
    logger.info("run %s: recording into %s", chosen, recorder.path)
    return recorder


# Reading.


class _Checker:
    """Pull typed fields out of parsed JSON, noting every problem by its place."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def object(self, value: object, where: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.problems.append(f"{where} is {_kind(value)}, expected an object")
        return None

    def get(
        self,
        obj: Mapping[str, Any],
        key: str,
        where: str,
        types: tuple[type, ...],
        *,
        nullable: bool = False,
    ) -> Any:
        place = f"{where}.{key}" if where else key
        if key not in obj:
            self.problems.append(f"{place} is missing")
            return None
        value = obj[key]
        if value is None and nullable:
            return None
        # bool is an int to Python, but never a number in a results file.
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            names = " or ".join(_TYPE_NAMES[t] for t in types)
            if nullable:
                names += " or null"
            self.problems.append(f"{place} is {_kind(value)}, expected {names}")
            return None
        return value

    def number(self, obj: Mapping[str, Any], key: str, where: str) -> float | None:
        value = self.get(obj, key, where, (int, float, str), nullable=True)
        if isinstance(value, str):
            if value not in _NON_FINITE:
                self.problems.append(
                    f"{where}.{key} is the string {value!r}, expected a number"
                )
                return None
            return _NON_FINITE[value]
        return None if value is None else float(value)

    def moment(
        self, obj: Mapping[str, Any], key: str, where: str, *, nullable: bool = False
    ) -> datetime | None:
        text = self.get(obj, key, where, (str,), nullable=nullable)
        if text is None:
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            self.problems.append(
                f"{where}.{key} is {text!r}, expected an ISO-8601 UTC timestamp"
            )
            return None
        return moment

    def items(self, obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
        value = self.get(obj, key, where, (list,))
        return [] if value is None else value


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "an object",
}
_NON_FINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in _TYPE_NAMES.items():
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _read_experiment(check: _Checker, raw: object, where: str) -> Experiment | None:
    obj = check.object(raw, where)
    if obj is None:
        return None
    before = len(check.problems)
    name = check.get(obj, "name", where, (str,))
    verdict = check.get(obj, "verdict", where, (str,))
    if verdict is not None and verdict not in VERDICTS:
        check.problems.append(
            f"{where}.verdict is {verdict!r}, expected one of {', '.join(VERDICTS)}"
        )
    started_at = check.moment(obj, "started_at", where)
    ended_at = check.moment(obj, "ended_at", where)
    parameters = check.get(obj, "parameters", where, (dict,))
    statistics = check.get(obj, "statistics", where, (dict,))
    series = check.get(obj, "series", where, (dict,))

    pods = []
    for i, raw_pod in enumerate(check.items(obj, "pods", where)):
        place = f"{where}.pods[{i}]"
        pod = check.object(raw_pod, place)
        if pod is not None:
            pods.append(
                PodTally(
                    name=check.get(pod, "name", place, (str,)),
                    uid=check.get(pod, "uid", place, (str,)),
                    delta=check.get(pod, "delta", place, (int,)),
                    client_count=check.get(
                        pod, "client_count", place, (int,), nullable=True
                    ),
                )
            )

    kills = []
    for i, raw_kill in enumerate(check.items(obj, "kills", where)):
        place = f"{where}.kills[{i}]"
        kill = check.object(raw_kill, place)
        if kill is not None:
            kills.append(
                Kill(
                    pod=check.get(kill, "pod", place, (str,)),
                    killed_at=cast(datetime, check.moment(kill, "killed_at", place)),
                    created_s=check.number(kill, "created_s", place),
                    scheduled_s=check.number(kill, "scheduled_s", place),
                    running_s=check.number(kill, "running_s", place),
                    ready_s=check.number(kill, "ready_s", place),
                    first_request_s=check.number(kill, "first_request_s", place),
                    grace=check.number(kill, "grace", place),
                )
            )

    failure = None
    raw_failure = check.get(obj, "failure", where, (dict,), nullable=True)
    if raw_failure is not None:
        place = f"{where}.failure"
        events = check.items(raw_failure, "events", place)
        logs = check.get(raw_failure, "logs", place, (dict,))
        failure = Failure(
            message=check.get(raw_failure, "message", place, (str,)),
            events=tuple(str(event) for event in events),
            logs={str(k): str(v) for k, v in (logs or {}).items()},
        )

    if len(check.problems) > before:
        return None
    return Experiment(
        name=name,
        verdict=verdict,
        started_at=cast(datetime, started_at),
        ended_at=cast(datetime, ended_at),
        parameters=cast(dict[str, JSON], _restored(parameters)),
        pods=tuple(pods),
        statistics=cast(dict[str, JSON], _restored(statistics)),
        kills=tuple(kills),
        series=cast(dict[str, JSON], _restored(series)),
        failure=failure,
    )


def parse_run(document: object, *, source: str = "results") -> Run:
    """Check a parsed results document against the schema and return its run.

    Every problem found is listed in the one error raised.
    """
    check = _Checker()
    top = check.object(document, "the document")
    if top is None:
        raise ResultsError(f"{source}: {check.problems[0]}")
    schema = check.get(top, "schema", "", (int,))
    if schema is not None and schema != SCHEMA:
        raise ResultsError(
            f"{source}: schema {schema} is not the one this harness reads ({SCHEMA}); "
            "read it with the harness version that wrote it"
        )

    run_obj = check.get(top, "run", "", (dict,))
    run_id = cluster = harness_version = started_at = ended_at = None
    if run_obj is not None:
        run_id = check.get(run_obj, "id", "run", (str,))
        harness_version = check.get(run_obj, "harness_version", "run", (str,))
        started_at = check.moment(run_obj, "started_at", "run")
        ended_at = check.moment(run_obj, "ended_at", "run", nullable=True)
        raw_cluster = check.get(run_obj, "cluster", "run", (dict,))
        if raw_cluster is not None:
            cluster = Cluster(
                kind=check.get(raw_cluster, "kind", "run.cluster", (str,)),
                kubernetes_version=check.get(
                    raw_cluster,
                    "kubernetes_version",
                    "run.cluster",
                    (str,),
                    nullable=True,
                ),
            )

    experiments = [
        _read_experiment(check, raw, f"experiments[{i}]")
        for i, raw in enumerate(check.items(top, "experiments", ""))
    ]

    if check.problems:
        raise ResultsError(f"{source}: " + "; ".join(check.problems))
    return Run(
        id=cast(str, run_id),
        cluster=cast(Cluster, cluster),
        harness_version=cast(str, harness_version),
        started_at=cast(datetime, started_at),
        ended_at=ended_at,
        experiments=tuple(e for e in experiments if e is not None),
    )


def read_run(path: Path) -> Run:
    """Read and check a results file; a run cut short comes back incomplete.

    ``path`` may be a results file or a run folder such as ``reports/latest``.
    """
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(
            f"{path}: no such results file; run the experiments first"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
            "the file was not written by the harness or was damaged"
        ) from e
    return parse_run(document, source=str(path))
