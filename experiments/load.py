"""Traffic for the shop, sent through its front door and counted per pod.

A locustfile: ``locust -f experiments/load.py --host http://127.0.0.1:8080``
opens the web UI; add ``--headless -u 10 -r 5 --run-time 30s`` to run without
it. Shoppers browse the catalog and the customers (as JSON and as HTML pages),
search both and place orders, on the paths Apache serves (``/catalog...``,
``/customer...``, ``/order...``).

Every answer names the pod that gave it in ``X-Served-By``; the file counts
them, prints a table per pod and per route when a test stops, and can write
each request as a JSON line, so that what the client saw can be set against
each pod's own counters. Options (each also an environment variable):

``--connections`` / ``HARNESS_CONNECTIONS``
    ``new`` (default): every request on a fresh TCP connection, which is what
    makes kube-proxy pick a backend per request; ``keepalive``: each user
    keeps its connection, as browsers do.
``--scenario`` / ``HARNESS_SCENARIO``
    ``shop`` (default): everything; ``catalog``: the catalog's read routes;
    ``catalog-item``: ``GET /catalog/<id>`` only, so that every request lands
    on one route of one service.
``--max-requests`` / ``HARNESS_MAX_REQUESTS``
    Stop after this many requests. No more are ever sent, and the run ends
    only once all of them were answered, so all of them are counted and
    recorded. In a distributed run the bound is per worker: each worker stops
    its users there, and the run ends at ``--run-time``.
``--record`` / ``HARNESS_RECORD``
    Write each request as a JSON line to this file (a worker process writes
    ``<file>.<pid>``), flushed when the test stops. Fields: ``t`` (start,
    Unix seconds), ``route`` (the service's URL rule), ``method``, ``status``
    (0 when no answer came), ``latency_ms``, ``served_by``, ``error``.
``--max-failure-ratio`` / ``HARNESS_MAX_FAILURE_RATIO``
    Exit non-zero when more than this share of requests failed (default
    0.01). A run that sent no request at all exits non-zero too.
``--wait`` / ``HARNESS_WAIT_SECONDS``
    Each user pauses a random 0 to this many seconds between requests
    (default 0: as fast as the server answers).
``--item-id`` / ``HARNESS_ITEM_ID``
    The item the ``catalog-item`` scenario asks for (default 1, seeded in
    every catalog pod).

Bounds: ``--run-time`` and ``--max-requests`` bound the count and the time;
each request gives up after ``NETWORK_TIMEOUT_S``.
"""

import json
import logging
import os
import random
import time
from argparse import Namespace
from collections import Counter
from collections.abc import Callable
from typing import IO, Any, cast

import gevent
from locust import FastHttpUser, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

logger = logging.getLogger("harness.load")

SERVED_BY = "X-Served-By"
UNATTRIBUTED = "(no X-Served-By)"
NETWORK_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 5.0
#: How long the end of a bounded run waits for the answers still on their way.
DRAIN_TIMEOUT_S = NETWORK_TIMEOUT_S + CONNECT_TIMEOUT_S
SCENARIOS = ("shop", "catalog", "catalog-item")
CONNECTIONS = ("new", "keepalive")

ITEM = "/catalog/<int:item_id>"
CUSTOMER = "/customer/<int:customer_id>"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{value} is below 1")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{value} is not between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 60.0:
        raise ValueError(f"{value} is not between 0 and 60 seconds")
    return value


@events.init_command_line_parser.add_listener
def add_options(parser: LocustArgumentParser, **_: Any) -> None:
    """Add the shop's options, each readable from an environment variable too."""
    parser.add_argument(
        "--connections",
        choices=CONNECTIONS,
        default="new",
        env_var="HARNESS_CONNECTIONS",
        help="new: a fresh TCP connection per request; keepalive: reuse it",
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="shop",
        env_var="HARNESS_SCENARIO",
        help="shop: every route; catalog: catalog reads; catalog-item: one route",
    )
    parser.add_argument(
        "--max-requests",
        type=_positive_int,
        default=None,
        env_var="HARNESS_MAX_REQUESTS",
        help="stop after this many requests (per worker in a distributed run)",
    )
    parser.add_argument(
        "--record",
        default="",
        env_var="HARNESS_RECORD",
        include_in_web_ui=False,
        help="write each request as a JSON line to this file",
    )
    parser.add_argument(
        "--max-failure-ratio",
        type=_ratio,
        default=0.01,
        env_var="HARNESS_MAX_FAILURE_RATIO",
        help="exit non-zero when more than this share of requests failed",
    )
    parser.add_argument(
        "--wait",
        type=_seconds,
        default=0.0,
        env_var="HARNESS_WAIT_SECONDS",
        help="each user pauses a random 0 to this many seconds between requests",
    )
    parser.add_argument(
        "--item-id",
        type=_positive_int,
        default=1,
        env_var="HARNESS_ITEM_ID",
        help="the item the catalog-item scenario asks for",
    )


class Tally:
    """What one locust process sent and who answered, for one test."""

    def __init__(self) -> None:
        self.start(max_requests=None, record=None)

    def start(self, *, max_requests: int | None, record: IO[str] | None) -> None:
        """Forget the previous test and start counting a new one."""
        self.max_requests = max_requests
        self.record = record
        self.issued = 0
        self.answered = 0
        self.ending = False
        self.pods: Counter[str] = Counter()
        self.routes: Counter[str] = Counter()
        # What a worker has not yet reported to its master.
        self.unreported_pods: Counter[str] = Counter()
        self.unreported_routes: Counter[str] = Counter()

    def take(self) -> bool:
        """Take the right to send one more request, if the bound leaves one."""
        if self.max_requests is not None and self.issued >= self.max_requests:
            return False
        self.issued += 1
        return True

    def count(self, *, pod: str, route: str) -> None:
        """Count one request answered by ``pod`` (or by nobody) on ``route``."""
        self.pods[pod] += 1
        self.routes[route] += 1
        self.unreported_pods[pod] += 1
        self.unreported_routes[route] += 1

    def merge(self, pods: dict[str, int], routes: dict[str, int]) -> None:
        """Add what a worker reported."""
        self.pods.update(pods)
        self.routes.update(routes)

    def table(self) -> str:
        """Return the requests per pod and per route as a text table."""
        total = sum(self.pods.values())
        lines = ["", "Requests per pod (from X-Served-By):"]
        width = max([len(name) for name in self.pods] + [30])
        for pod, count in sorted(self.pods.items()):
            share = 100.0 * count / total if total else 0.0
            lines.append(f"  {pod:<{width}} {count:>9} {share:6.1f} %")
        lines.append(f"  {'total':<{width}} {total:>9}")
        lines.append("Requests per route:")
        width = max([len(name) for name in self.routes] + [30])
        for route, count in sorted(self.routes.items()):
            lines.append(f"  {route:<{width}} {count:>9}")
        return "\n".join(lines)


TALLY = Tally()


def _options(environment: Environment) -> Namespace:
    options = environment.parsed_options
    if options is None:
        raise RuntimeError("load.py runs under locust, which parses its options")
    return cast(Namespace, options)


def _record_path(environment: Environment) -> str | None:
    path: str = _options(environment).record
    if not path:
        return None
    if isinstance(environment.runner, WorkerRunner):
        return f"{path}.{os.getpid()}"
    return path


@events.init.add_listener
def truncate_record(environment: Environment, **_: Any) -> None:
    """Start each locust process with an empty record file."""
    if environment.parsed_options is None or isinstance(
        environment.runner, MasterRunner
    ):
        return
    path = _record_path(environment)
    if path:
        with open(path, "w", encoding="utf-8"):
            pass


@events.test_start.add_listener
def start_counting(environment: Environment, **_: Any) -> None:
    """Reset the tally and open the record file for a new test."""
    options = _options(environment)
    path = (
        None
        if isinstance(environment.runner, MasterRunner)
        else _record_path(environment)
    )
    record = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
    TALLY.start(max_requests=options.max_requests, record=record)


@events.request.add_listener
def count_request(
    request_type: str,
    name: str,
    response_time: float,
    response: Any,
    context: dict[str, Any],
    exception: BaseException | None,
    start_time: float | None = None,
    **_: Any,
) -> None:
    """Count who answered a request, and record it."""
    TALLY.answered += 1
    route = context.get("route", name)
    headers = getattr(response, "headers", None)
    served_by = headers.get(SERVED_BY) if headers else None
    status = int(getattr(response, "status_code", 0) or 0)
    TALLY.count(pod=served_by or UNATTRIBUTED, route=f"{request_type} {route}")
    if TALLY.record is not None:
        line = {
            "t": start_time if start_time is not None else time.time(),
            "route": route,
            "method": request_type,
            "status": status,
            "latency_ms": round(response_time, 3),
            "served_by": served_by,
            "error": None if exception is None else f"{exception!r}"[:300],
        }
        TALLY.record.write(json.dumps(line) + "\n")


@events.report_to_master.add_listener
def report_tally(data: dict[str, Any], **_: Any) -> None:
    """Send a worker's counts since its last report to the master."""
    data["harness_tally"] = {
        "pods": dict(TALLY.unreported_pods),
        "routes": dict(TALLY.unreported_routes),
    }
    TALLY.unreported_pods.clear()
    TALLY.unreported_routes.clear()


@events.worker_report.add_listener
def merge_tally(data: dict[str, Any], **_: Any) -> None:
    """Add a worker's counts to the master's."""
    reported = data.get("harness_tally")
    if reported:
        TALLY.merge(reported["pods"], reported["routes"])


@events.test_stop.add_listener
def print_tally(environment: Environment, **_: Any) -> None:
    """Flush the record and print the table of who answered."""
    if TALLY.record is not None:
        TALLY.record.close()
        TALLY.record = None
    # A master hears the workers' last counts only as the run quits.
    if not isinstance(environment.runner, MasterRunner | WorkerRunner):
        print(TALLY.table(), flush=True)


@events.quitting.add_listener
def print_workers_tally(environment: Environment, **_: Any) -> None:
    """Print the table of who answered, summed over all workers."""
    if isinstance(environment.runner, MasterRunner):
        print(TALLY.table(), flush=True)


@events.quitting.add_listener
def set_exit_code(environment: Environment, **_: Any) -> None:
    """Exit non-zero when too many requests failed, or none was sent."""
    if isinstance(environment.runner, WorkerRunner):
        return
    total = environment.stats.total
    allowed: float = _options(environment).max_failure_ratio
    runner = environment.runner
    if total.num_requests == 0:
        logger.error("no request was sent, so the run proves nothing")
        environment.process_exit_code = 1
    elif total.fail_ratio > allowed:
        logger.error(
            "%d of %d requests failed (%.2f %%), more than the %.2f %% allowed",
            total.num_failures,
            total.num_requests,
            100 * total.fail_ratio,
            100 * allowed,
        )
        environment.process_exit_code = 1
    elif runner is not None and runner.exceptions:
        logger.error("the shoppers raised %d exceptions", len(runner.exceptions))
        environment.process_exit_code = 1
    else:
        environment.process_exit_code = 0


def _end_when_answered(environment: Environment) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while TALLY.answered < TALLY.issued and time.monotonic() < deadline:
        gevent.sleep(0.01)
    if TALLY.answered < TALLY.issued:
        logger.warning(
            "%d of %d requests still unanswered after %.0f s; ending the run",
            TALLY.issued - TALLY.answered,
            TALLY.issued,
            DRAIN_TIMEOUT_S,
        )
    else:
        logger.info("all %d requests were answered; ending the run", TALLY.issued)
    if environment.runner is not None:
        environment.runner.quit()


def _listed_ids(response: Any) -> list[int]:
    if response.status_code != 200:
        return []
    try:
        return [int(entry["id"]) for entry in response.json()]
    except (ValueError, TypeError, KeyError):
        logger.warning("%s answered a list without ids", response.url)
        return []


class Shopper(FastHttpUser):
    """Someone who browses the shop and now and then places an order."""

    connection_timeout = CONNECT_TIMEOUT_S
    network_timeout = NETWORK_TIMEOUT_S
    # Each recorded request must be one HTTP exchange: no retries, no redirects.
    max_retries = 0

    def wait_time(self) -> float:
        """Pause a random 0 to ``--wait`` seconds between requests."""
        limit: float = _options(self.environment).wait
        return random.uniform(0.0, limit) if limit else 0.0

    def on_start(self) -> None:
        """Read the options this user follows."""
        options = _options(self.environment)
        self.new_connections = options.connections == "new"
        self.scenario: str = options.scenario
        self.item_id: int = options.item_id
        self.item_ids: list[int] = []
        self.customer_ids: list[int] = []

    @task
    def visit(self) -> None:
        """Do one thing the scenario allows, picked by its weight."""
        actions = SCENARIO_ACTIONS[self.scenario]
        choice = random.choices(
            [action for action, _ in actions], [weight for _, weight in actions]
        )[0]
        choice(self)

    def send(
        self,
        method: str,
        path: str,
        *,
        route: str,
        html: bool = False,
        body: object = None,
    ) -> Any:
        """Send one request, within the bound, as the connection mode says."""
        if not TALLY.take():
            if not TALLY.ending and not isinstance(
                self.environment.runner, WorkerRunner
            ):
                TALLY.ending = True
                gevent.spawn(_end_when_answered, self.environment)
            raise StopUser()
        headers = {"Accept": "text/html" if html else "application/json"}
        if self.new_connections:
            headers["Connection"] = "close"
        return self.client.request(
            method,
            path,
            name=f"{route} [html]" if html else route,
            headers=headers,
            json=body,
            allow_redirects=False,
            context={"route": route},
        )

    def _ids(self, path: str, route: str) -> list[int]:
        return _listed_ids(self.send("GET", path, route=route))

    def known_items(self) -> list[int]:
        """Return the catalog's item ids, reading them once."""
        if not self.item_ids:
            self.item_ids = self._ids("/catalog", "/catalog")
        return self.item_ids

    def known_customers(self) -> list[int]:
        """Return the customer ids, reading them once."""
        if not self.customer_ids:
            self.customer_ids = self._ids("/customer", "/customer")
        return self.customer_ids

    def list_items(self, *, html: bool = False) -> None:
        """Look at the whole catalog."""
        response = self.send("GET", "/catalog", route="/catalog", html=html)
        if not html and not self.item_ids:
            self.item_ids = _listed_ids(response)

    def show_item(self, *, html: bool = False) -> None:
        """Look at one item."""
        ids = self.known_items()
        if ids:
            item = random.choice(ids)
            self.send("GET", f"/catalog/{item}", route=ITEM, html=html)

    def show_one_item(self) -> None:
        """Look at the one item of the ``catalog-item`` scenario."""
        self.send("GET", f"/catalog/{self.item_id}", route=ITEM)

    def search_items(self) -> None:
        """Search the catalog for part of a name."""
        part = random.choice(("cup", "tea", "jug", "bowl", "beans"))
        self.send("GET", f"/catalog/search?q={part}", route="/catalog/search")

    def list_customers(self) -> None:
        """Look at every customer."""
        self.send("GET", "/customer", route="/customer")

    def show_customer(self, *, html: bool = False) -> None:
        """Look at one customer."""
        ids = self.known_customers()
        if ids:
            customer = random.choice(ids)
            self.send("GET", f"/customer/{customer}", route=CUSTOMER, html=html)

    def search_customers(self) -> None:
        """Search the customers for part of a name."""
        part = random.choice(("a", "lace", "hop", "tur"))
        self.send("GET", f"/customer/search?q={part}", route="/customer/search")

    def place_order(self) -> None:
        """Order a few items for a known customer."""
        items, customers = self.known_items(), self.known_customers()
        if not items or not customers:
            return
        chosen = random.sample(items, k=min(len(items), random.randint(1, 3)))
        body = {
            "customer_id": random.choice(customers),
            "lines": [{"item_id": i, "count": random.randint(1, 4)} for i in chosen],
        }
        self.send("POST", "/order", route="/order", body=body)

    def list_orders(self) -> None:
        """Look at the orders this pod of the order service holds."""
        self.send("GET", "/order", route="/order")


Action = Callable[[Shopper], None]

CATALOG_ACTIONS: list[tuple[Action, int]] = [
    (Shopper.list_items, 3),
    (lambda shopper: shopper.list_items(html=True), 1),
    (Shopper.show_item, 4),
    (lambda shopper: shopper.show_item(html=True), 2),
    (Shopper.search_items, 1),
]
SCENARIO_ACTIONS: dict[str, list[tuple[Action, int]]] = {
    "catalog-item": [(Shopper.show_one_item, 1)],
    "catalog": CATALOG_ACTIONS,
    "shop": [
        *CATALOG_ACTIONS,
        (Shopper.list_customers, 2),
        (Shopper.show_customer, 2),
        (lambda shopper: shopper.show_customer(html=True), 1),
        (Shopper.search_customers, 1),
        (Shopper.place_order, 2),
        (Shopper.list_orders, 1),
    ],
}
