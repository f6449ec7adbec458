"""Tests of counter parsing and rises, on the real metrics of the catalog service.

Each test starts ``python -m services.catalog`` on a free loopback port, sends
it real requests and reads its real ``/metrics``.
"""

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import IO

import httpx
import pytest
from kubernetes.client import V1ObjectMeta, V1Pod, V1PodCondition, V1PodStatus

from harness.paths import PROJECT_ROOT
from harness.scraping import (
    PodCounters,
    RequestKey,
    ScrapeError,
    is_serving,
    parse_metrics,
    rise,
    rises,
    select,
    snapshot,
)

START_TIMEOUT_S = 30.0
ITEM = "/catalog/<int:item_id>"


# TODO: the helpers that run services on loopback are the same in
# test_scraping.py and test_traffic.py; they belong in tests/conftest.py.
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_catalog(pod_name: str) -> Iterator[httpx.Client]:
    """Run a catalog process on loopback; yield a client bound to it."""
    port = _free_port()
    env = {
        **os.environ,
        "BIND_HOST": "127.0.0.1",
        "PORT": str(port),
        "POD_NAME": pod_name,
        "LOG_LEVEL": "WARNING",
    }
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.catalog"],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=5.0
            ) as client:
                _wait_until_ready(client, process, log)
                yield client
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def _wait_until_ready(
    client: httpx.Client, process: "subprocess.Popen[bytes]", log: IO[bytes]
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            pytest.fail(f"the catalog exited with {process.returncode}:\n{output}")
        try:
            if client.get("/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the catalog was not ready within {START_TIMEOUT_S} s")


def _snapshot(client: httpx.Client, *, uid: str) -> PodCounters:
    response = client.get("/metrics")
    response.raise_for_status()
    return snapshot(response.text, pod=response.headers["X-Served-By"], uid=uid)


def _send(client: httpx.Client, *, lists: int, items: int, missing: int) -> None:
    for _ in range(lists):
        assert client.get("/catalog").status_code == 200
    for i in range(items):
        assert client.get(f"/catalog/{1 + i % 5}").status_code == 200
    for _ in range(missing):
        assert client.get("/catalog/999").status_code == 404


def test_parsed_counts_equal_the_requests_made() -> None:
    with running_catalog("catalog-a") as client:
        _send(client, lists=7, items=5, missing=3)
        for _ in range(4):
            page = client.get("/catalog/2", headers={"Accept": "text/html"})
            assert page.headers["content-type"].startswith("text/html")
        for name in ("Kettle", "Tray"):
            created = client.post("/catalog", json={"name": name, "price": 9.5})
            assert created.status_code == 201
        assert client.get("/catalog/search", params={"q": "tea"}).status_code == 200

        counters, started_at = parse_metrics(client.get("/metrics").text)

    assert counters == {
        RequestKey("/catalog", "GET", 200): 7,
        RequestKey(ITEM, "GET", 200): 9,
        RequestKey(ITEM, "GET", 404): 3,
        RequestKey("/catalog", "POST", 201): 2,
        RequestKey("/catalog/search", "GET", 200): 1,
    }
    assert started_at is not None
    assert abs(started_at - time.time()) < 600


def test_the_rise_of_one_pod_counts_the_requests_between_snapshots() -> None:
    with running_catalog("catalog-a") as client:
        _send(client, lists=3, items=2, missing=0)
        before = _snapshot(client, uid="uid-a")
        _send(client, lists=4, items=6, missing=2)
        after = _snapshot(client, uid="uid-a")

    risen = rise(before, after)

    assert not risen.new_pod
    assert not risen.restarted
    assert risen.pod == "catalog-a"
    assert risen.counters == {
        RequestKey("/catalog", "GET", 200): 4,
        RequestKey(ITEM, "GET", 200): 6,
        RequestKey(ITEM, "GET", 404): 2,
    }
    assert risen.total() == 12
    assert risen.seconds is not None
    assert risen.seconds >= 0


def test_a_new_uid_is_a_new_series_counted_from_zero() -> None:
    with running_catalog("catalog-a") as first:
        _send(first, lists=5, items=0, missing=0)
        before = _snapshot(first, uid="uid-old")
    with running_catalog("catalog-a") as second:
        _send(second, lists=8, items=1, missing=0)
        after = _snapshot(second, uid="uid-new")

    risen = rise(before, after)

    assert risen.new_pod
    assert not risen.restarted
    assert risen.counters == after.counters
    assert risen.total() == 9


def test_counters_that_went_down_under_one_uid_are_a_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running_catalog("catalog-a") as first:
        _send(first, lists=10, items=0, missing=0)
        before = _snapshot(first, uid="uid-a")
    with running_catalog("catalog-a") as restarted:
        _send(restarted, lists=3, items=0, missing=0)
        after = _snapshot(restarted, uid="uid-a")

    with caplog.at_level(logging.WARNING, logger="harness.scraping"):
        risen = rise(before, after)

    assert risen.restarted
    assert risen.counters == {RequestKey("/catalog", "GET", 200): 3}
    assert "pod catalog-a restarted" in caplog.text


def test_a_restart_is_seen_by_the_start_time_even_when_counters_grew() -> None:
    with running_catalog("catalog-a") as first:
        _send(first, lists=1, items=0, missing=0)
        before = _snapshot(first, uid="uid-a")
    with running_catalog("catalog-a") as restarted:
        _send(restarted, lists=6, items=0, missing=0)
        after = _snapshot(restarted, uid="uid-a")

    risen = rise(before, after)

    assert before.started_at != after.started_at
    assert risen.restarted
    assert risen.total() == 6


def test_rises_match_pods_by_uid_whatever_their_order() -> None:
    with running_catalog("catalog-a") as a, running_catalog("catalog-b") as b:
        before = [_snapshot(b, uid="uid-b"), _snapshot(a, uid="uid-a")]
        _send(a, lists=2, items=0, missing=0)
        _send(b, lists=5, items=0, missing=0)
        after = [_snapshot(a, uid="uid-a"), _snapshot(b, uid="uid-b")]

    by_pod = {r.pod: r.total() for r in rises(before, after)}

    assert by_pod == {"catalog-a": 2, "catalog-b": 5}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param({}, 23, id="everything"),
        pytest.param({"route_prefix": "/catalog"}, 20, id="prefix-catalog"),
        pytest.param({"route_prefix": "/catalog/"}, 20, id="prefix-with-slash"),
        pytest.param({"route_prefix": "/cat"}, 0, id="prefix-is-a-whole-segment"),
        pytest.param({"route": ITEM}, 12, id="one-route"),
        pytest.param({"route": ITEM, "status": 404}, 4, id="route-and-status"),
        pytest.param({"method": "POST"}, 3, id="method"),
        pytest.param({"route_prefix": "/order"}, 0, id="other-service"),
    ],
)
def test_counters_are_filtered_by_route_method_and_status(
    filters: dict[str, str | int], expected: int
) -> None:
    counters = {
        RequestKey("/catalog", "GET", 200): 5,
        RequestKey("/catalog", "POST", 201): 3,
        RequestKey(ITEM, "GET", 200): 8,
        RequestKey(ITEM, "GET", 404): 4,
        RequestKey("/health/ready", "GET", 200): 0,
        RequestKey("/customer", "GET", 200): 3,
    }
    measured = PodCounters(
        pod="p", uid="u", taken_at=datetime.now(UTC), counters=counters
    )

    assert measured.total(**filters) == expected  # type: ignore[arg-type]
    assert sum(select(counters, **filters).values()) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            'http_requests_total{route="/catalog",method="GET"} 1\n',
            "lacks a route, a method or a numeric status",
            id="no-status-label",
        ),
        pytest.param(
            'http_requests_total{route="/catalog",method="GET",status="ok"} 1\n',
            "lacks a route, a method or a numeric status",
            id="status-not-a-number",
        ),
        pytest.param(
            "http_requests_total{route=/catalog} 1\n",
            "does not parse",
            id="broken-labels",
        ),
    ],
)
def test_metrics_that_do_not_parse_name_the_pod(text: str, message: str) -> None:
    with pytest.raises(ScrapeError, match=f"pod catalog-x: .*{message}"):
        snapshot(text, pod="catalog-x", uid="u")


def _pod(phase: str, ready: str | None) -> V1Pod:
    conditions = None if ready is None else [V1PodCondition(type="Ready", status=ready)]
    return V1Pod(
        metadata=V1ObjectMeta(name="catalog-1", uid="u"),
        status=V1PodStatus(phase=phase, conditions=conditions),
    )


@pytest.mark.parametrize(
    ("pod", "serving"),
    [
        pytest.param(_pod("Running", "True"), True, id="running-and-ready"),
        pytest.param(_pod("Running", "False"), False, id="running-not-ready"),
        pytest.param(_pod("Running", None), False, id="running-no-conditions"),
        pytest.param(_pod("Pending", "False"), False, id="pending"),
        pytest.param(_pod("Succeeded", "True"), False, id="finished"),
    ],
)
def test_only_running_and_ready_pods_are_scraped(pod: V1Pod, serving: bool) -> None:
    assert is_serving(pod) is serving


def test_snapshots_are_taken_now_unless_told_otherwise() -> None:
    earlier = datetime.now(UTC) - timedelta(minutes=1)

    given = snapshot("", pod="p", uid="u", taken_at=earlier)
    fresh = snapshot("", pod="p", uid="u")

    assert given.taken_at == earlier
    assert fresh.taken_at > earlier
    assert fresh.counters == {}
    assert fresh.started_at is None
