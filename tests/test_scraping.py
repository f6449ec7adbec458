"""Tests of counter parsing and rises, on the real metrics of the catalog service.

Each test starts ``python -m services.catalog`` on a free loopback port, sends
it real requests and reads its real ``/metrics``.
"""

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from kubernetes.client import V1ObjectMeta, V1Pod, V1PodCondition, V1PodStatus

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
from tests.services.service_processes import ServiceProcess

ITEM = "/catalog/<int:item_id>"
#: Starts a catalog process as the pod it names.
Catalog = Callable[[str], ServiceProcess]


@pytest.fixture
def catalog(start_service: Callable[..., ServiceProcess]) -> Catalog:
    """Start catalog processes on loopback, each as the pod it is named."""

    def start(pod_name: str) -> ServiceProcess:
        env = {"POD_NAME": pod_name, "LOG_LEVEL": "WARNING"}
        return start_service("catalog", env=env)

    return start


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


def _one_life(catalog: Catalog, *, lists: int, items: int = 0, uid: str) -> PodCounters:
    """Run pod catalog-a, send it requests, snapshot it as ``uid``, then stop it."""
    with catalog("catalog-a") as pod, pod.client() as client:
        _send(client, lists=lists, items=items, missing=0)
        return _snapshot(client, uid=uid)


def test_parsed_counts_equal_the_requests_made(catalog: Catalog) -> None:
    with catalog("catalog-a") as pod, pod.client() as client:
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


def test_the_rise_of_one_pod_counts_the_requests_between_snapshots(
    catalog: Catalog,
) -> None:
    with catalog("catalog-a") as pod, pod.client() as client:
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


def test_a_new_uid_is_a_new_series_counted_from_zero(catalog: Catalog) -> None:
    before = _one_life(catalog, lists=5, uid="uid-old")
    after = _one_life(catalog, lists=8, items=1, uid="uid-new")

    risen = rise(before, after)

    assert risen.new_pod
    assert not risen.restarted
    assert risen.counters == after.counters
    assert risen.total() == 9


def test_counters_that_went_down_under_one_uid_are_a_restart(
    catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    before = _one_life(catalog, lists=10, uid="uid-a")
    after = _one_life(catalog, lists=3, uid="uid-a")

    with caplog.at_level(logging.WARNING, logger="harness.scraping"):
        risen = rise(before, after)

    assert risen.restarted
    assert risen.counters == {RequestKey("/catalog", "GET", 200): 3}
    assert "pod catalog-a restarted" in caplog.text


def test_a_restart_is_seen_by_the_start_time_even_when_counters_grew(
    catalog: Catalog,
) -> None:
    before = _one_life(catalog, lists=1, uid="uid-a")
    after = _one_life(catalog, lists=6, uid="uid-a")

    risen = rise(before, after)

    assert before.started_at != after.started_at
    assert risen.restarted
    assert risen.total() == 6


def test_rises_match_pods_by_uid_whatever_their_order(catalog: Catalog) -> None:
    with catalog("catalog-a").client() as a, catalog("catalog-b").client() as b:
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
