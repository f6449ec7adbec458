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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
import yaml

from harness.paths import PROJECT_ROOT

APACHE = Path("/usr/sbin/apache2")
CONFIG_DIR = PROJECT_ROOT / "services" / "apache"
K8S_DIR = PROJECT_ROOT / "k8s"
LOOPBACK = "127.0.0.1"
#: The container's user; Apache runs as it when the tests run as root.
CONTAINER_UID = 10001
NOBODY_UID = 65534
#: Exit status of entrypoint.sh for a setting it cannot use.
EXIT_USAGE = 64
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 10.0

pytestmark = [
    pytest.mark.skipif(
        not APACHE.exists(), reason="needs Debian's apache2 (make system)"
    ),
    pytest.mark.timeout(300),
]


@dataclass(frozen=True)
class Running:
    """A process of ours that serves HTTP on loopback."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        """Return what the process wrote so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")


def free_port() -> int:
    """Return a loopback port that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def closed_url() -> str:
    """Return the URL of a loopback port that refuses connections."""
    return f"http://{LOOPBACK}:{free_port()}"


def client(base_url: str) -> httpx.Client:
    """Return an HTTP client that talks to ``base_url`` and nowhere else."""
    # trust_env=False: a proxy named in the environment must not see loopback.
    return httpx.Client(
        base_url=base_url, trust_env=False, timeout=REQUEST_TIMEOUT_SECONDS
    )


def _children(pid: int) -> list[int]:
    """Return the PIDs whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The parent PID is the second field after the ")" ending the name.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` and its children by PID: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    children = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def wait_until_ready(running: Running, *, path: str, timeout: float) -> None:
    """Poll ``path`` until it answers 200; fail with the log if it does not."""
    deadline = time.monotonic() + timeout
    with client(running.url) as http:
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                pytest.fail(
                    f"{running.name} exited with {running.process.returncode}:\n"
                    f"{running.log_text()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if http.get(path).status_code == 200:
                    return
            time.sleep(0.1)
    pytest.fail(f"{running.name} not ready within {timeout} s:\n{running.log_text()}")


def _clean_env(**settings: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        **settings,
    }


@contextlib.contextmanager
def running_service(name: str, *, log_dir: Path, **settings: str) -> Iterator[Running]:
    """Run ``python -m services.<name>`` on a loopback port until the block ends."""
    port = free_port()
    log = log_dir / f"{name}.log"
    env = _clean_env(
        BIND_HOST=LOOPBACK,
        PORT=str(port),
        POD_NAME=f"{name}-pod-under-apache",
        GRACEFUL_TIMEOUT_SECONDS="1",
        **settings,
    )
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Running(name, f"http://{LOOPBACK}:{port}", process, log)
    try:
        wait_until_ready(running, path="/health/ready", timeout=START_TIMEOUT_SECONDS)
        yield running
    finally:
        stop(process)


def _as_container_user() -> dict[str, Any]:
    """Return the Popen arguments that drop root to the container's user."""
    if os.geteuid() != 0:
        return {}
    return {"user": CONTAINER_UID, "group": CONTAINER_UID, "extra_groups": []}


def _copy_config(root: Path, *, owner: int | None) -> Path:
    """Copy services/apache to ``root``, as the image copies it, readable by all."""
    conf = root / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    for path in [conf, *conf.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
        if owner is not None:
            os.chown(path, owner, owner)
    (conf / "entrypoint.sh").chmod(0o755)
    return conf


@contextlib.contextmanager
def running_apache(*, as_root: bool = False, **settings: str) -> Iterator[Running]:
    """Run entrypoint.sh, and so httpd, on a loopback port until the block ends."""
    drop = {} if as_root else _as_container_user()
    owner = drop.get("user")
    root = Path(tempfile.mkdtemp(prefix="kube-harness-apache-"))
    try:
        root.chmod(0o755)
        conf = _copy_config(root, owner=owner)
        runtime = root / "tmp"
        runtime.mkdir()
        log = root / "httpd.log"
        log.touch()
        if owner is not None:
            os.chown(runtime, owner, owner)
            # httpd reopens its stdout and stderr by /proc/self/fd as this user,
            # so they must be its own, as runc makes a container's pipes.
            os.chown(log, owner, owner)

        port = free_port()
        env = _clean_env(
            BIND_HOST=LOOPBACK, PORT=str(port), TMPDIR=str(runtime), **settings
        )
        with log.open("ab") as out:
            process = subprocess.Popen(
                [str(conf / "entrypoint.sh")],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                **drop,
            )
        running = Running("apache", f"http://{LOOPBACK}:{port}", process, log)
        try:
            wait_until_ready(
                running, path="/health/ready", timeout=START_TIMEOUT_SECONDS
            )
            yield running
        finally:
            stop(process)
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Running]]:
    """Run catalog, customer and order, the order calling the other two."""
    log_dir = tmp_path_factory.mktemp("services")
    with contextlib.ExitStack() as stack:
        catalog = stack.enter_context(running_service("catalog", log_dir=log_dir))
        customer = stack.enter_context(running_service("customer", log_dir=log_dir))
        order = stack.enter_context(
            running_service(
                "order",
                log_dir=log_dir,
                CATALOG_URL=catalog.url,
                CUSTOMER_URL=customer.url,
            )
        )
        yield {"catalog": catalog, "customer": customer, "order": order}


def _pod(service: Running) -> str:
    return f"{service.name}-pod-under-apache"


@pytest.fixture(scope="module")
def apache(services: dict[str, Running]) -> Iterator[Running]:
    """Run Apache in front of the three services, with the default settings."""
    with running_apache(
        CATALOG_URL=services["catalog"].url,
        CUSTOMER_URL=services["customer"].url,
        ORDER_URL=services["order"].url,
    ) as running:
        yield running


@pytest.fixture
def front(apache: Running) -> Iterator[httpx.Client]:
    """Return a client of the front door."""
    with client(apache.url) as http:
        yield http


def test_the_index_page_links_to_a_page_of_each_service(
    front: httpx.Client, services: dict[str, Running]
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
    front: httpx.Client, services: dict[str, Running], path: str
) -> None:
    owner = services[path.split("/")[1].split("?")[0]]
    with client(owner.url) as direct:
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
    front: httpx.Client, services: dict[str, Running], service: str, part: str
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
    front: httpx.Client, services: dict[str, Running]
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
    front: httpx.Client, apache: Running, services: dict[str, Running]
) -> None:
    front.get("/catalog/2")

    line = re.compile(
        r'"GET /catalog/2 HTTP/1\.1" 200 \d+ \d+us served_by='
        + re.escape(_pod(services["catalog"]))
    )
    deadline = time.monotonic() + 5
    while not line.search(apache.log_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert line.search(apache.log_text()), apache.log_text()[-2000:]


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
    apache: Running, services: dict[str, Running], component: str, path: str
) -> None:
    target = apache if component == "apache" else services[component]
    with client(target.url) as http:
        assert http.get(path).status_code == 200


def test_apache_is_ready_and_alive_while_every_backend_is_down() -> None:
    with (
        running_apache(
            CATALOG_URL=closed_url(), CUSTOMER_URL=closed_url(), ORDER_URL=closed_url()
        ) as down,
        client(down.url) as http,
    ):
        assert http.get("/health/ready").status_code == 200
        assert http.get("/health/live").status_code == 200
        assert http.get("/").status_code == 200
        assert http.get("/catalog").status_code == 503


def test_a_backend_that_comes_back_is_used_at_once(
    services: dict[str, Running],
) -> None:
    catalog = services["catalog"]
    port = free_port()
    with (
        running_apache(
            CATALOG_URL=f"http://{LOOPBACK}:{port}",
            CUSTOMER_URL=closed_url(),
            ORDER_URL=closed_url(),
        ) as front_door,
        client(front_door.url) as http,
    ):
        assert http.get("/catalog").status_code == 503
        # The catalog appears where Apache was refused, as a new pod would.
        with CountingRelay(catalog.url, port=port):
            back = http.get("/catalog")

    assert back.status_code == 200
    assert back.headers["X-Served-By"] == _pod(catalog)


def test_a_backend_that_never_answers_is_a_502_once_the_proxy_timeout_expires() -> None:
    # A listening socket that nobody accepts from: connections complete in the
    # kernel's backlog, and no byte ever comes back.
    with socket.create_server((LOOPBACK, 0)) as silent:
        silent_url = f"http://{LOOPBACK}:{silent.getsockname()[1]}"
        with (
            running_apache(
                CATALOG_URL=silent_url,
                CUSTOMER_URL=closed_url(),
                ORDER_URL=closed_url(),
                PROXY_TIMEOUT_SECONDS="1",
            ) as slow,
            client(slow.url) as http,
        ):
            # The client would give up after REQUEST_TIMEOUT_SECONDS; Apache
            # answers long before, when its own 1 s wait expires.
            assert http.get("/catalog").status_code == 502
            assert "timeout specified has expired" in slow.log_text()


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
    services: dict[str, Running], reuse: str, most_connections: int
) -> None:
    catalog = services["catalog"]
    with (
        CountingRelay(catalog.url) as relay,
        running_apache(
            CATALOG_URL=relay.url,
            CUSTOMER_URL=closed_url(),
            ORDER_URL=closed_url(),
            PROXY_REUSE=reuse,
        ) as front_door,
        client(front_door.url) as http,
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
    backends = {
        "CATALOG_URL": closed_url(),
        "CUSTOMER_URL": closed_url(),
        "ORDER_URL": closed_url(),
    }
    env = _clean_env(**{**backends, "TMPDIR": str(tmp_path), setting: value})

    result = subprocess.run(
        [str(CONFIG_DIR / "entrypoint.sh")],
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
def test_apache_started_as_root_serves_from_workers_that_run_as_nobody() -> None:
    with (
        running_apache(
            as_root=True,
            CATALOG_URL=closed_url(),
            CUSTOMER_URL=closed_url(),
            ORDER_URL=closed_url(),
        ) as rooted,
        client(rooted.url) as http,
    ):
        assert http.get("/").status_code == 200
        workers = _children(rooted.process.pid)
        uids = set()
        for pid in workers:
            status = Path(f"/proc/{pid}/status").read_text()
            (uid_line,) = [x for x in status.splitlines() if x.startswith("Uid:")]
            uids.add(int(uid_line.split()[1]))

    assert workers
    assert uids == {NOBODY_UID}


def test_apache_stops_gracefully_on_sigwinch_and_exits_0() -> None:
    with running_apache(
        CATALOG_URL=closed_url(), CUSTOMER_URL=closed_url(), ORDER_URL=closed_url()
    ) as stopping:
        stopping.process.send_signal(signal.SIGWINCH)
        returncode = stopping.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        log = stopping.log_text()

    assert returncode == 0
    assert "shutting down gracefully" in log
