"""Tests of the run record: round trips, atomic updates, the latest link, checks."""

import json
import math
import re
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness import __version__
from harness.results import (
    Cluster,
    Experiment,
    Failure,
    Kill,
    PodTally,
    ResultsError,
    new_run_id,
    read_run,
    start_run,
    timestamp,
)

STARTED = datetime(2026, 12, 3, 11, 5, 12, 345000, tzinfo=UTC)
CLUSTER = Cluster(kind="local", kubernetes_version="v1.34.2")


def _experiment(name: str, *, offset_s: float = 0.0, **changes: object) -> Experiment:
    start = STARTED + timedelta(seconds=offset_s)
    fields: dict[str, object] = {
        "name": name,
        "verdict": "passed",
        "started_at": start,
        "ended_at": start + timedelta(seconds=42.5),
        "parameters": {"replicas": 3, "connections": "new"},
        "pods": (
            PodTally(name="catalog-a", uid="u-a", delta=1001, client_count=1001),
            PodTally(name="catalog-b", uid="u-b", delta=999, client_count=None),
        ),
        "statistics": {"p_value": 0.93, "max_min_ratio": math.inf},
        "kills": (
            Kill(
                pod="catalog-a",
                killed_at=start + timedelta(seconds=1),
                created_s=0.05,
                scheduled_s=0.07,
                running_s=0.9,
                ready_s=1.4,
                first_request_s=None,
                grace=30.0,
            ),
        ),
        "series": {"requests_per_second": [[0.0, 120.5], [1.0, 118.0]]},
        "failure": None,
    }
    fields.update(changes)
    return Experiment(**fields)  # type: ignore[arg-type]


def test_a_run_reads_back_as_it_was_recorded(tmp_path: Path) -> None:
    recorder = start_run(tmp_path, cluster=CLUSTER, started_at=STARTED)
    first = _experiment("load-balancing")
    second = _experiment(
        "self-healing",
        offset_s=60,
        verdict="failed",
        failure=Failure(
            message="catalog-b was not Ready within 60 s",
            events=("Warning BackOff pod/catalog-b: Back-off restarting",),
            logs={"catalog-b": "Traceback ...\nOSError: port in use\n"},
        ),
    )
    recorder.add(first)
    recorder.add(second)
    finished = recorder.finish(ended_at=STARTED + timedelta(minutes=5))

    read = read_run(recorder.path)

    assert read == finished
    assert read.complete
    assert read.harness_version == __version__
    assert read.experiments == (first, second)


def test_the_file_follows_the_documented_layout(tmp_path: Path) -> None:
    recorder = start_run(tmp_path, cluster=CLUSTER, started_at=STARTED)
    recorder.add(_experiment("load-balancing"))

    document = json.loads(recorder.path.read_text())

    assert document["schema"] == 1
    assert document["run"] == {
        "id": recorder.run.id,
        "cluster": {"kind": "local", "kubernetes_version": "v1.34.2"},
        "harness_version": __version__,
        "started_at": "2026-12-03T11:05:12.345Z",
        "ended_at": None,
    }
    (experiment,) = document["experiments"]
    assert experiment["ended_at"] == "2026-12-03T11:05:54.845Z"
    assert experiment["pods"][0] == {
        "name": "catalog-a",
        "uid": "u-a",
        "delta": 1001,
        "client_count": 1001,
    }
    assert experiment["kills"][0]["killed_at"] == "2026-12-03T11:05:13.345Z"
    assert experiment["statistics"]["max_min_ratio"] == "Infinity"
    assert experiment["failure"] is None


def test_the_run_folder_is_named_after_the_run_id(tmp_path: Path) -> None:
    recorder = start_run(tmp_path, cluster=CLUSTER, started_at=STARTED)

    assert re.fullmatch(r"20261203-110512-[0-9a-f]{4}", recorder.run.id)
    assert recorder.path == tmp_path / recorder.run.id / "results.json"


def test_run_ids_sort_by_time() -> None:
    earlier = new_run_id(STARTED)
    later = new_run_id(STARTED + timedelta(seconds=1))

    assert earlier < later


def test_a_run_without_an_end_reads_back_as_incomplete(tmp_path: Path) -> None:
    recorder = start_run(tmp_path, cluster=CLUSTER, started_at=STARTED)
    recorder.add(_experiment("load-balancing"))
    # The run stops here, as if the process had been killed.

    read = read_run(tmp_path / "latest")

    assert not read.complete
    assert [e.name for e in read.experiments] == ["load-balancing"]


def test_latest_points_at_the_newest_run(tmp_path: Path) -> None:
    first = start_run(tmp_path, cluster=CLUSTER, started_at=STARTED)
    second = start_run(
        tmp_path, cluster=CLUSTER, started_at=STARTED + timedelta(hours=1)
    )

    latest = tmp_path / "latest"
    assert latest.is_symlink()
    assert latest.readlink() == Path(second.run.id)
    assert read_run(latest).id == second.run.id
    assert (tmp_path / first.run.id / "results.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.run.id, second.run.id, "latest"]
    )


def test_latest_that_is_not_a_link_is_left_alone_with_an_error(tmp_path: Path) -> None:
    (tmp_path / "latest").mkdir()

    with pytest.raises(ResultsError, match="latest is not a symbolic link"):
        start_run(tmp_path, cluster=CLUSTER)

    assert (tmp_path / "latest").is_dir()


def test_readers_always_see_valid_json_while_experiments_are_appended(
    tmp_path: Path,
) -> None:
    recorder = start_run(tmp_path, cluster=CLUSTER, started_at=STARTED)
    # Large series make a file that takes several writes to fill, so that a
    # writer that wrote in place would be caught half way.
    series = {"latency_ms": [float(i) for i in range(5000)]}
    stop = threading.Event()
    seen: list[int] = []
    bad: list[str] = []

    def read_repeatedly() -> None:
        while not stop.is_set():
            text = recorder.path.read_text()
            try:
                seen.append(len(json.loads(text)["experiments"]))
            except json.JSONDecodeError as e:
                bad.append(f"{e} in {len(text)} characters")

    reader = threading.Thread(target=read_repeatedly)
    reader.start()
    try:
        for i in range(20):
            recorder.add(_experiment(f"experiment-{i}", series=series))
    finally:
        stop.set()
        reader.join(timeout=30)

    assert not reader.is_alive()
    assert bad == []
    assert seen, "the reader never got to read the file"
    assert seen == sorted(seen), "a reader saw experiments disappear"
    assert len(read_run(recorder.path).experiments) == 20
    assert [p.name for p in recorder.path.parent.iterdir()] == ["results.json"]


def test_an_experiment_json_cannot_carry_leaves_the_file_as_it_was(
    tmp_path: Path,
) -> None:
    recorder = start_run(tmp_path, cluster=CLUSTER, started_at=STARTED)
    recorder.add(_experiment("load-balancing"))
    before = recorder.path.read_text()

    with pytest.raises(ResultsError, match="a value JSON cannot carry"):
        recorder.add(_experiment("broken", parameters={"pods": {"a", "b"}}))

    assert recorder.path.read_text() == before
    assert [e.name for e in recorder.run.experiments] == ["load-balancing"]


def test_a_truncated_file_is_reported_as_damaged(tmp_path: Path) -> None:
    recorder = start_run(tmp_path, cluster=CLUSTER, started_at=STARTED)
    recorder.add(_experiment("load-balancing"))
    text = recorder.path.read_text()
    recorder.path.write_text(text[: len(text) // 2])

    with pytest.raises(ResultsError, match=r"results.json: not valid JSON \("):
        read_run(recorder.path)


def test_every_schema_problem_is_named_in_one_error(tmp_path: Path) -> None:
    recorder = start_run(tmp_path, cluster=CLUSTER, started_at=STARTED)
    recorder.add(_experiment("load-balancing"))
    document = json.loads(recorder.path.read_text())
    del document["run"]["started_at"]
    document["experiments"][0]["verdict"] = "maybe"
    document["experiments"][0]["pods"][1]["delta"] = "999"
    document["experiments"][0]["kills"][0]["killed_at"] = "yesterday"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(document))

    with pytest.raises(ResultsError) as caught:
        read_run(path)

    assert str(caught.value) == (
        f"{path}: run.started_at is missing; "
        "experiments[0].verdict is 'maybe', expected one of "
        "passed, failed, error, skipped; "
        "experiments[0].pods[1].delta is a string, expected an integer; "
        "experiments[0].kills[0].killed_at is 'yesterday', "
        "expected an ISO-8601 UTC timestamp"
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param([], "the document is a list, expected an object", id="a-list"),
        pytest.param(
            {"schema": 2, "run": {}, "experiments": []},
            "schema 2 is not the one this harness reads",
            id="newer-schema",
        ),
        pytest.param({"schema": 1, "experiments": []}, "run is missing", id="no-run"),
        pytest.param(
            {"schema": True, "run": {}, "experiments": {}},
            "schema is a boolean, expected an integer",
            id="boolean-schema",
        ),
    ],
)
def test_documents_that_are_not_results_are_refused(
    tmp_path: Path, document: object, message: str
) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document))

    with pytest.raises(ResultsError, match=re.escape(message)):
        read_run(path)


def test_a_missing_file_says_to_run_the_experiments(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no such results file"):
        read_run(tmp_path / "latest")


def test_timestamps_must_carry_a_time_zone() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        timestamp(datetime(2026, 12, 3, 11, 5, 12))


def test_timestamps_are_written_in_utc() -> None:
    in_berlin = STARTED.astimezone(timezone(timedelta(hours=1)))

    assert timestamp(in_berlin) == "2026-12-03T11:05:12.345Z"
