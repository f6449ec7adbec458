"""The front door's httpd passes each path to the service that owns it.

Debian's real ``/usr/sbin/apache2`` runs our ``services/apache`` configuration
on loopback in front of the three services, each a real process; nothing is
mocked. Apache runs as the unprivileged user of the container when the tests
run as root, so that the same configuration is tested as the one the image
runs. A small TCP relay between Apache and the catalog counts the backend
connections Apache opens, which is what ``PROXY_REUSE`` decides.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
import yaml

from harness.paths import PROJECT_ROOT
from tests.services.service_processes import (
    APACHE,
    APACHE_DIR,
    LOOPBACK,
    ServiceProcess,
    ServiceStarter,
    children,
    clean_environment,
    find_free_port,
)

K8S_DIR = PROJECT_ROOT / "k8s"
NOBODY_UID = 65534
#: Exit status of entrypoint.sh for a setting it cannot use.
EXIT_USAGE = 64
STOP_TIMEOUT_SECONDS = 10.0

pytestmark = [
    pytest.mark.skipif(
        not APACHE.exists(), reason="needs Debian's apache2 (make system)"
    ),
    pytest.mark.timeout(300),
]
#: Starts Apache with the given settings, as the containers' user unless told.
FrontDoor = Callable[..., ServiceProcess]


def closed_url() -> str:
    """Return the URL of a loopback port that refuses connections."""
    return f"http://{LOOPBACK}:{find_free_port()}"


def backends_down(**settings: str) -> dict[str, str]:
    """Return ``settings`` with every backend URL not given on a refusing port."""
    names = ("CATALOG_URL", "CUSTOMER_URL", "ORDER_URL")
    return {**{name: closed_url() for name in names}, **settings}


def _pod(service: ServiceProcess) -> str:
    return f"{service.name}-pod-under-apache"


class CountingRelay:
    """A TCP relay on loopback that counts the connections it accepts."""

    def __init__(self, target: str, *, port: int = 0) -> None:
        host, target_port = target.removeprefix("http://").rsplit(":", 1)
        self._target = (host, int(target_port))
        self._listener = socket.create_server((LOOPBACK, port))
        self._listener.settimeout(0.1)
        self._lock = threading.Lock()
        self._accepted = 0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._start(self._accept)

    @property
    def url(self) -> str:
        """Return the URL that reaches the target through the relay."""
        return f"http://{LOOPBACK}:{self._listener.getsockname()[1]}"

    @property
    def accepted(self) -> int:
        """Return how many connections the relay accepted so far."""
        with self._lock:
            return self._accepted

    def _start(self, target: Callable[..., None], *args: socket.socket) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                downstream, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self._target, timeout=5)
            for sock in (downstream, upstream):
                sock.settimeout(None)
                # Forward each write at once, as the endpoints wrote it.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._accepted += 1
                self._sockets += [downstream, upstream]
            self._start(self._pump, downstream, upstream)
            self._start(self._pump, upstream, downstream)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Cut every connection and stop the relay's threads."""
        self._closing.set()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=STOP_TIMEOUT_SECONDS)
        for sock in [*sockets, self._listener]:
            sock.close()

    def __enter__(self) -> "CountingRelay":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [
            value for key, value in attrs if tag == "a" and key == "href" and value
        ]


def _title(html: str) -> str:
    match = re.search(r"<title>(.*?)</title>", html, re.DOTALL)
    assert match, "the page has no title"
    return match[1].strip()


def links(html: str) -> list[str]:
    """Return the targets of the links in ``html``."""
    parser = _Links()
    parser.feed(html)
    return parser.hrefs


@pytest.fixture(scope="module")
def starter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStarter]:
    """Start the processes the tests of this module share, and stop them after."""
    started = ServiceStarter(tmp_path_factory.mktemp("front-door"))
    try:
        yield started
    finally:
        started.stop_all()


def _start_under_apache(
    starter: ServiceStarter, name: str, **settings: str
) -> ServiceProcess:
    env = {
        "POD_NAME": f"{name}-pod-under-apache",
        "GRACEFUL_TIMEOUT_SECONDS": "1",
        **settings,
    }
    return starter.start(name, env=env)


@pytest.fixture(scope="module")
def services(starter: ServiceStarter) -> dict[str, ServiceProcess]:
    """Run catalog, customer and order, the order calling the other two."""
    catalog = _start_under_apache(starter, "catalog")
    customer = _start_under_apache(starter, "customer")
    order = _start_under_apache(
        starter, "order", CATALOG_URL=catalog.base_url, CUSTOMER_URL=customer.base_url
    )
    return {"catalog": catalog, "customer": customer, "order": order}


@pytest.fixture(scope="module")
def apache(
    starter: ServiceStarter, services: dict[str, ServiceProcess]
) -> ServiceProcess:
    """Run Apache in front of the three services, with the default settings."""
    return starter.start_front_door(
        CATALOG_URL=services["catalog"].base_url,
        CUSTOMER_URL=services["customer"].base_url,
        ORDER_URL=services["order"].base_url,
    )


@pytest.fixture
def front(apache: ServiceProcess) -> Iterator[httpx.Client]:
    """Return a client of the front door."""
    with apache.client() as http:
        yield http


def test_the_index_page_links_to_a_page_of_each_service(
    front: httpx.Client, services: dict[str, ServiceProcess]
) -> None:
    index = front.get("/")

    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert "X-Served-By" not in index.headers
    targets = links(index.text)
    assert sorted(targets) == ["/catalog/", "/customer/", "/order/"]
    for target in targets:
        page = front.get(target, headers={"Accept": "text/html"})
        owner = services[target.strip("/")]
        assert page.status_code == 200, target
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["X-Served-By"] == _pod(owner)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/catalog", id="catalog-list"),
        pytest.param("/catalog/1", id="catalog-item"),
        pytest.param("/catalog/form", id="catalog-form"),
        pytest.param("/catalog/search?q=cup", id="catalog-search"),
        pytest.param("/customer", id="customer-list"),
        pytest.param("/customer/1", id="customer-item"),
        pytest.param("/customer/form", id="customer-form"),
        pytest.param("/customer/search", id="customer-search"),
        pytest.param("/order", id="order-list"),
        pytest.param("/order/form", id="order-form"),
    ],
)
def test_an_html_page_passes_through_from_the_service_that_owns_its_path(
    front: httpx.Client, services: dict[str, ServiceProcess], path: str
) -> None:
    owner = services[path.split("/")[1].split("?")[0]]
    with owner.client() as direct:
        expected = direct.get(path, headers={"Accept": "text/html"})

    page = front.get(path, headers={"Accept": "text/html"})

    assert page.status_code == expected.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["X-Served-By"] == _pod(owner)
    assert _title(page.text) == _title(expected.text)


NEW_RECORDS: dict[str, dict[str, object]] = {
    "catalog": {"name": "Harness test lamp", "price": 12.5},
    "customer": {
        "name": "Tester",
        "firstname": "Ada",
        "email": "ada.tester@example.org",
        "street": "1 Loopback Lane",
        "city": "Localhost",
    },
}


@pytest.mark.parametrize(
    ("service", "part"),
    [
        pytest.param("catalog", "lamp", id="catalog"),
        pytest.param("customer", "Test", id="customer"),
    ],
)
def test_rest_calls_pass_through_to_the_service_that_owns_the_path(
    front: httpx.Client, services: dict[str, ServiceProcess], service: str, part: str
) -> None:
    pod = _pod(services[service])
    record = NEW_RECORDS[service]

    before = front.get(f"/{service}")
    created = front.post(f"/{service}", json=record)
    fetched = front.get(created.headers["Location"])
    after = front.get(f"/{service}")
    found = front.get(f"/{service}/search", params={"q": part})

    for response in (before, created, fetched, after, found):
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["X-Served-By"] == pod
    assert created.status_code == 201
    assert fetched.status_code == 200
    assert fetched.json() == created.json()
    assert record.items() <= fetched.json().items()
    assert len(after.json()) == len(before.json()) + 1
    assert created.json() in found.json()


def test_an_order_placed_through_apache_is_priced_from_the_catalog(
    front: httpx.Client, services: dict[str, ServiceProcess]
) -> None:
    customer = front.get("/customer").json()[0]
    first, second = front.get("/catalog").json()[:2]
    lines = [
        {"item_id": first["id"], "count": 2},
        {"item_id": second["id"], "count": 1},
    ]

    placed = front.post("/order", json={"customer_id": customer["id"], "lines": lines})
    fetched = front.get(placed.headers["Location"])

    assert placed.status_code == 201, placed.text
    assert placed.headers["X-Served-By"] == _pod(services["order"])
    assert fetched.status_code == 200
    assert fetched.json() == placed.json()
    assert placed.json()["customer_id"] == customer["id"]
    assert placed.json()["lines"] == lines
    assert placed.json()["total"] == pytest.approx(2 * first["price"] + second["price"])


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/nothing-here", id="unknown"),
        pytest.param("/catalogue", id="prefix-of-no-segment"),
        pytest.param("/health", id="health-folder"),
        pytest.param("/health/", id="health-folder-slash"),
        pytest.param("/health/ready/more", id="below-a-probe"),
        pytest.param("/server-status", id="server-status"),
        pytest.param("/balancer-manager", id="balancer-manager"),
        pytest.param("/httpd.conf", id="config"),
        pytest.param("/entrypoint.sh", id="entry-script"),
        pytest.param("/health.txt", id="probe-file"),
        pytest.param("/htdocs/", id="document-root-folder"),
    ],
)
def test_a_path_the_front_door_does_not_know_is_a_404(
    front: httpx.Client, path: str
) -> None:
    response = front.get(path)

    assert response.status_code == 404
    assert "X-Served-By" not in response.headers


def test_the_server_header_names_no_version(front: httpx.Client) -> None:
    assert front.get("/").headers["Server"] == "Apache"
    assert "Apache/" not in front.get("/nothing-here").text


def test_the_access_log_names_the_pod_that_served_and_the_response_time(
    front: httpx.Client, apache: ServiceProcess, services: dict[str, ServiceProcess]
) -> None:
    front.get("/catalog/2")

    line = re.compile(
        r'"GET /catalog/2 HTTP/1\.1" 200 \d+ \d+us served_by='
        + re.escape(_pod(services["catalog"]))
    )
    deadline = time.monotonic() + 5
    while not line.search(apache.log()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert line.search(apache.log()), apache.log()[-2000:]


def _probe_paths() -> list[Any]:
    params = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not doc or doc["kind"] != "Deployment":
                continue
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                name = doc["metadata"]["name"]
                probe_path = container[kind]["httpGet"]["path"]
                params.append(pytest.param(name, probe_path, id=f"{name}-{kind}"))
    return params


@pytest.mark.parametrize(("component", "path"), _probe_paths())
def test_every_probe_of_the_manifests_answers_200_on_the_real_process(
    apache: ServiceProcess,
    services: dict[str, ServiceProcess],
    component: str,
    path: str,
) -> None:
    target = apache if component == "apache" else services[component]
    with target.client() as http:
        assert http.get(path).status_code == 200


def test_apache_is_ready_and_alive_while_every_backend_is_down(
    start_front_door: FrontDoor,
) -> None:
    with (
        start_front_door(**backends_down()) as down,
        down.client() as http,
    ):
        assert http.get("/health/ready").status_code == 200
        assert http.get("/health/live").status_code == 200
        assert http.get("/").status_code == 200
        assert http.get("/catalog").status_code == 503


def test_a_backend_that_comes_back_is_used_at_once(
    services: dict[str, ServiceProcess], start_front_door: FrontDoor
) -> None:
    catalog = services["catalog"]
    port = find_free_port()
    with (
        start_front_door(
            **backends_down(CATALOG_URL=f"http://{LOOPBACK}:{port}")
        ) as front_door,
        front_door.client() as http,
    ):
        assert http.get("/catalog").status_code == 503
        # The catalog appears where Apache was refused, as a new pod would.
        with CountingRelay(catalog.base_url, port=port):
            back = http.get("/catalog")

    assert back.status_code == 200
    assert back.headers["X-Served-By"] == _pod(catalog)


def test_a_backend_that_never_answers_is_a_502_once_the_proxy_timeout_expires(
    start_front_door: FrontDoor,
) -> None:
    # A listening socket that nobody accepts from: connections complete in the
    # kernel's backlog, and no byte ever comes back.
    with socket.create_server((LOOPBACK, 0)) as silent:
        silent_url = f"http://{LOOPBACK}:{silent.getsockname()[1]}"
        with (
            start_front_door(
                **backends_down(CATALOG_URL=silent_url, PROXY_TIMEOUT_SECONDS="1")
            ) as slow,
            slow.client() as http,
        ):
            # The client would give up after REQUEST_TIMEOUT_SECONDS; Apache
            # answers long before, when its own 1 s wait expires.
            assert http.get("/catalog").status_code == 502
            assert "timeout specified has expired" in slow.log()


REQUESTS = 20


@pytest.mark.parametrize(
    ("reuse", "most_connections"),
    [
        # A new connection per request: every request is a fresh pick.
        pytest.param("off", REQUESTS, id="off-one-connection-per-request"),
        # Kept alive: at most one pooled connection per Apache process (2).
        pytest.param("on", 2, id="on-connections-are-reused"),
    ],
)
def test_proxy_reuse_decides_whether_apache_keeps_backend_connections(
    services: dict[str, ServiceProcess],
    start_front_door: FrontDoor,
    reuse: str,
    most_connections: int,
) -> None:
    catalog = services["catalog"]
    with (
        CountingRelay(catalog.base_url) as relay,
        start_front_door(
            **backends_down(CATALOG_URL=relay.url, PROXY_REUSE=reuse)
        ) as front_door,
        front_door.client() as http,
    ):
        served = [http.get("/catalog").headers["X-Served-By"] for _ in range(REQUESTS)]
        accepted = relay.accepted

    assert served == [_pod(catalog)] * REQUESTS
    if reuse == "off":
        assert accepted == REQUESTS
    else:
        assert 1 <= accepted <= most_connections


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        pytest.param("PROXY_REUSE", "sometimes", id="reuse-not-on-or-off"),
        pytest.param("PROXY_REUSE", "ON", id="reuse-upper-case"),
        pytest.param("PORT", "http", id="port-not-a-number"),
        pytest.param("PORT", "70000", id="port-too-high"),
        pytest.param("PROXY_TIMEOUT_SECONDS", "1.5", id="timeout-not-whole"),
        pytest.param("ORDER_URL", "order:8080", id="url-without-scheme"),
    ],
)
def test_a_setting_apache_cannot_use_stops_it_at_start_with_one_line(
    setting: str, value: str, tmp_path: Path
) -> None:
    env = clean_environment(**backends_down(TMPDIR=str(tmp_path), **{setting: value}))

    result = subprocess.run(
        [str(APACHE_DIR / "entrypoint.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"{setting}='{value}'" in line
    assert "set it to" in line


@pytest.mark.skipif(
    os.geteuid() != 0, reason="checks what happens when started as root"
)
def test_apache_started_as_root_serves_from_workers_that_run_as_nobody(
    start_front_door: FrontDoor,
) -> None:
    with (
        start_front_door(as_root=True, **backends_down()) as rooted,
        rooted.client() as http,
    ):
        assert http.get("/").status_code == 200
        workers = children(rooted.process.pid)
        uids = set()
        for pid in workers:
            status = Path(f"/proc/{pid}/status").read_text()
            (uid_line,) = [x for x in status.splitlines() if x.startswith("Uid:")]
            uids.add(int(uid_line.split()[1]))

    assert workers
    assert uids == {NOBODY_UID}


def test_apache_stops_gracefully_on_sigwinch_and_exits_0(
    start_front_door: FrontDoor,
) -> None:
    with start_front_door(**backends_down()) as stopping:
        stopping.process.send_signal(signal.SIGWINCH)
        returncode = stopping.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        log = stopping.log()

    assert returncode == 0
    assert "shutting down gracefully" in log
