"""Tests of the locust runs, against real services on loopback.

Each test starts real service processes (and, for the shop, the real Apache
front door) on free loopback ports, drives them with ``experiments/load.py``
through :func:`harness.traffic.run_locust`, and sets what locust saw against
what the services counted themselves.
"""

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import pytest

from harness.errors import UsageError
from harness.scraping import RequestKey, parse_metrics
from harness.traffic import (
    LOCUSTFILE,
    Connections,
    Load,
    TrafficError,
    read_records,
    run_locust,
)
from tests.services.service_processes import ServiceProcess

ITEM = "/catalog/<int:item_id>"
#: Starts a service process as the pod it names; returns its base URL.
Serve = Callable[..., str]


@pytest.fixture
def serve(start_service: Callable[..., ServiceProcess]) -> Serve:
    """Run ``python -m services.<name>`` on loopback as a named pod."""

    def start(name: str, *, pod_name: str, env: Mapping[str, str] | None = None) -> str:
        settings = {"POD_NAME": pod_name, "LOG_LEVEL": "WARNING", **(env or {})}
        return start_service(name, env=settings).base_url

    return start


def _counters(url: str) -> dict[RequestKey, int]:
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        response = client.get(f"{url}/metrics")
    response.raise_for_status()
    return parse_metrics(response.text)[0]


def _rise(
    before: Mapping[RequestKey, int], after: Mapping[RequestKey, int]
) -> Counter[str]:
    """Return the rise per ``"<method> <route>"`` between two counter readings."""
    risen: Counter[str] = Counter()
    for key, value in after.items():
        if value - before.get(key, 0):
            risen[f"{key.method} {key.route}"] += value - before.get(key, 0)
    return risen


def _client_ports(port: int) -> set[int]:
    """Return the client ports of the TCP connections to ``port`` the kernel knows.

    A closed connection stays listed for a while (a minute in TIME_WAIT on the
    side that closed first), so a listing right after a run shows each
    connection it opened once, on the client side or on the server side.
    """
    listing = subprocess.run(
        ["ss", "-Htan", "state", "all"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    ports = set()
    for line in listing.splitlines():
        fields = line.split()
        if fields[0] == "LISTEN":
            continue
        local, peer = fields[-2], fields[-1]
        local_port = int(local.rsplit(":", 1)[1])
        peer_port = int(peer.rsplit(":", 1)[1])
        if local_port == port:
            ports.add(peer_port)
        elif peer_port == port:
            ports.add(local_port)
    return ports


def test_the_count_per_pod_equals_each_pods_own_counter_rise(serve: Serve) -> None:
    a = serve("catalog", pod_name="catalog-a")
    b = serve("catalog", pod_name="catalog-b")

    before_a, before_b = _counters(a), _counters(b)
    first = run_locust(
        Load(users=4, run_time_s=60, scenario="catalog", max_requests=300),
        host=a,
    )
    middle_a, middle_b = _counters(a), _counters(b)
    second = run_locust(
        Load(users=3, run_time_s=60, scenario="catalog-item", max_requests=150),
        host=b,
    )
    after_a, after_b = _counters(a), _counters(b)

    assert first.exit_code == 0, first.output_tail
    assert first.per_pod == {"catalog-a": 300}
    assert re.search(r"catalog-a +300 +100\.0 %", first.output_tail)
    assert first.per_route == _rise(before_a, middle_a)
    assert not _rise(before_b, middle_b)
    assert second.exit_code == 0, second.output_tail
    assert second.per_pod == {"catalog-b": 150}
    assert second.per_route == {f"GET {ITEM}": 150}
    assert second.per_route == _rise(middle_b, after_b)
    assert not _rise(middle_a, after_a)


def test_a_request_bound_ends_the_run_after_exactly_that_many(serve: Serve) -> None:
    url = serve("catalog", pod_name="catalog-a")

    # The run time is far longer than 200 requests take: only the bound ends it.
    before = _counters(url)
    result = run_locust(
        Load(
            users=8,
            spawn_rate=8,
            run_time_s=120,
            scenario="catalog-item",
            max_requests=200,
        ),
        host=url,
    )
    after = _counters(url)

    assert result.exit_code == 0, result.output_tail
    assert result.requests == 200
    assert sum(_rise(before, after).values()) == 200
    assert all(r.status == 200 and r.error is None for r in result.records)


def test_a_run_ended_by_its_run_time_records_every_request_it_sent(
    serve: Serve,
) -> None:
    url = serve("catalog", pod_name="catalog-a")

    before = _counters(url)
    result = run_locust(
        Load(users=6, spawn_rate=6, run_time_s=3, scenario="catalog"), host=url
    )
    after = _counters(url)

    assert result.exit_code == 0, result.output_tail
    assert result.requests > 0
    assert result.per_route == _rise(before, after)


@pytest.mark.parametrize(
    "connections",
    [pytest.param("new", id="new"), pytest.param("keepalive", id="keepalive")],
)
def test_the_connection_mode_decides_how_many_tcp_connections_are_opened(
    serve: Serve, connections: Connections
) -> None:
    users, requests = 4, 200
    url = serve("catalog", pod_name="catalog-a")
    port = int(url.rsplit(":", 1)[1])

    earlier = _client_ports(port)
    result = run_locust(
        Load(
            users=users,
            run_time_s=60,
            scenario="catalog-item",
            connections=connections,
            max_requests=requests,
        ),
        host=url,
    )
    # The clients closed their connections when locust exited.
    opened = _client_ports(port) - earlier

    assert result.exit_code == 0, result.output_tail
    assert result.requests == requests
    if connections == "new":
        # Linux may reuse a loopback port in TIME_WAIT for a new connection,
        # which hides a few; keeping connections alive would show at most one
        # per user.
        assert len(opened) >= 0.9 * requests
    else:
        assert 1 <= len(opened) <= users


@pytest.mark.parametrize(
    ("allowed", "exit_zero"),
    [
        pytest.param(0.01, False, id="default-ratio-fails"),
        pytest.param(1.0, True, id="every-failure-allowed"),
    ],
)
def test_the_failure_ratio_decides_the_exit_code(
    free_port: Callable[[], int], allowed: float, exit_zero: bool
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"

    result = run_locust(
        Load(
            users=2,
            run_time_s=30,
            scenario="catalog-item",
            max_requests=50,
            max_failure_ratio=allowed,
        ),
        host=closed,
    )

    assert (result.exit_code == 0) is exit_zero, result.output_tail
    assert result.requests == 50
    assert result.failures == 50
    assert result.per_pod == {}
    assert result.unattributed == 50
    assert all(r.status == 0 and r.error for r in result.records)


def test_the_shop_scenario_visits_every_route_through_the_front_door(
    serve: Serve, start_front_door: Callable[..., ServiceProcess]
) -> None:
    catalog = serve("catalog", pod_name="catalog-1")
    customer = serve("customer", pod_name="customer-1")
    order = serve(
        "order",
        pod_name="order-1",
        env={"CATALOG_URL": catalog, "CUSTOMER_URL": customer},
    )
    front_door = start_front_door(
        CATALOG_URL=catalog, CUSTOMER_URL=customer, ORDER_URL=order
    ).base_url

    before = {url: _counters(url) for url in (catalog, customer, order)}
    result = run_locust(
        Load(users=5, run_time_s=90, scenario="shop", max_requests=600),
        host=front_door,
    )
    risen = {url: _rise(before[url], _counters(url)) for url in before}

    assert result.exit_code == 0, result.output_tail
    assert result.failures == 0
    assert result.unattributed == 0
    assert set(result.per_route) == {
        "GET /catalog",
        f"GET {ITEM}",
        "GET /catalog/search",
        "GET /customer",
        "GET /customer/<int:customer_id>",
        "GET /customer/search",
        "GET /order",
        "POST /order",
    }
    order_routes = Counter(
        {route: n for route, n in result.per_route.items() if "/order" in route}
    )
    # Only the shoppers call the order service; it calls the other two itself,
    # so their counters rose by the shoppers' requests and the order's lookups.
    assert risen[order] == order_routes
    assert result.per_pod["order-1"] == order_routes.total()
    for url, pod in ((catalog, "catalog-1"), (customer, "customer-1")):
        assert risen[url].total() >= result.per_pod[pod]
    assert sum(result.per_pod.values()) == 600


def test_a_record_that_is_not_from_the_locustfile_is_refused(tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    record.write_text('{"t": 1.0, "route": "/catalog"}\n')

    with pytest.raises(TrafficError, match="line 1 is not a request record"):
        read_records(record)


def test_a_locustfile_that_does_not_load_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('no users here')\n")

    with pytest.raises(TrafficError, match="before it sent anything"):
        run_locust(Load(run_time_s=5), host="http://127.0.0.1:9", locustfile=broken)


def test_the_locustfile_reads_its_options_from_the_environment(
    serve: Serve, tmp_path: Path
) -> None:
    record = tmp_path / "requests.jsonl"
    url = serve("catalog", pod_name="catalog-a")

    before = _counters(url)
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--host",
            url,
            "-u",
            "2",
            "-r",
            "2",
            "--run-time",
            "60s",
            "--only-summary",
        ],
        cwd=tmp_path,
        env={
            **os.environ,
            "HARNESS_SCENARIO": "catalog-item",
            "HARNESS_ITEM_ID": "3",
            "HARNESS_MAX_REQUESTS": "40",
            "HARNESS_CONNECTIONS": "keepalive",
            "HARNESS_RECORD": str(record),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    after = _counters(url)

    assert finished.returncode == 0, finished.stdout + finished.stderr
    records = read_records(record)
    assert len(records) == 40
    assert {(r.method, r.route, r.status, r.served_by) for r in records} == {
        ("GET", ITEM, 200, "catalog-a")
    }
    assert _rise(before, after) == {f"GET {ITEM}": 40}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"users": 0}, "users=0 must be at least 1", id="no-users"),
        pytest.param({"max_requests": 0}, "max_requests=0", id="no-requests"),
        pytest.param({"max_failure_ratio": 1.5}, "max_failure_ratio=1.5", id="ratio"),
        pytest.param({"run_time_s": 0}, "run_time_s=0", id="no-time"),
    ],
)
def test_a_load_that_cannot_run_is_refused(
    changes: dict[str, float], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        Load(**changes)  # type: ignore[arg-type]
