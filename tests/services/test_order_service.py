"""The order service against real catalog and customer processes on loopback."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config

from services.kit import SERVED_BY, ServiceApp, Settings
from services.order import create_app
from tests.services.service_processes import ServiceProcess

pytestmark = pytest.mark.anyio

HTML = {"Accept": "text/html"}
#: Far above any upstream timeout the tests set: only a hang reaches it.
HANG_BOUND_SECONDS = 20


def catalog_prices(catalog: ServiceProcess) -> dict[int, Decimal]:
    """Return the unit prices the real catalog process answers."""
    with httpx.Client(trust_env=False, timeout=5) as client:
        items = client.get(f"{catalog.base_url}/catalog").json()
    return {item["id"]: Decimal(str(item["price"])) for item in items}


async def test_an_order_is_priced_from_the_catalog_and_stored(
    order_app: ServiceApp, upstreams: dict[str, ServiceProcess]
) -> None:
    prices = catalog_prices(upstreams["catalog"])
    lines = [{"item_id": 1, "count": 2}, {"item_id": 4, "count": 3}]
    client = order_app.test_client()

    created = await client.post("/order", json={"customer_id": 2, "lines": lines})
    order = await created.get_json()
    read = await client.get(created.headers["Location"])
    listed = await client.get("/order")

    assert created.status_code == 201
    assert order == {
        "id": order["id"],
        "customer_id": 2,
        "lines": lines,
        "total": float(prices[1] * 2 + prices[4] * 3),
    }
    assert await read.get_json() == order
    assert order in await listed.get_json()


async def test_an_order_can_be_deleted(order_app: ServiceApp) -> None:
    client = order_app.test_client()
    created = await client.post(
        "/order", json={"customer_id": 1, "lines": [{"item_id": 2, "count": 1}]}
    )
    location = created.headers["Location"]

    deleted = await client.delete(location)

    assert deleted.status_code == 204
    assert (await client.get(location)).status_code == 404
    assert (await client.delete(location)).status_code == 404


@pytest.mark.parametrize(
    ("body", "says"),
    [
        pytest.param(
            {"customer_id": 999, "lines": [{"item_id": 1, "count": 1}]},
            "customer 999 does not exist",
            id="unknown-customer",
        ),
        pytest.param(
            {
                "customer_id": 1,
                "lines": [{"item_id": 1, "count": 1}, {"item_id": 777, "count": 1}],
            },
            "item 777 does not exist",
            id="unknown-item",
        ),
    ],
)
async def test_an_id_unknown_upstream_is_a_422_naming_it(
    order_app: ServiceApp, body: dict[str, Any], says: str
) -> None:
    client = order_app.test_client()

    response = await client.post("/order", json=body)

    assert response.status_code == 422
    assert says in (await response.get_json())["error"]
    assert await (await client.get("/order")).get_json() == []


@pytest.fixture
def closed_port(free_port: Callable[[], int]) -> int:
    """A port of 127.0.0.1 that refuses connections."""
    return free_port()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port of 127.0.0.1 that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.fixture
async def order_with_dead_upstreams(
    make_settings: Callable[..., Settings], closed_port: int, silent_port: int
) -> AsyncIterator[ServiceApp]:
    """An order app whose customer refuses connections and catalog never answers."""
    app = create_app(
        make_settings(
            POD_NAME="order-test",
            CUSTOMER_URL=f"http://127.0.0.1:{closed_port}",
            CATALOG_URL=f"http://127.0.0.1:{silent_port}",
            UPSTREAM_TIMEOUT_SECONDS="0.5",
        )
    )
    async with app.test_app():
        yield app


async def test_an_unreachable_upstream_is_a_503_naming_it(
    make_settings: Callable[..., Settings],
    upstreams: dict[str, ServiceProcess],
    closed_port: int,
) -> None:
    app = create_app(
        make_settings(
            CUSTOMER_URL=upstreams["customer"].base_url,
            CATALOG_URL=f"http://127.0.0.1:{closed_port}",
        )
    )
    body = {"customer_id": 1, "lines": [{"item_id": 1, "count": 1}]}

    async with app.test_app():
        async with asyncio.timeout(HANG_BOUND_SECONDS):
            response = await app.test_client().post("/order", json=body)

    assert response.status_code == 503
    error = await response.get_json()
    assert error["error"].startswith(
        f"the catalog service cannot be reached at http://127.0.0.1:{closed_port}"
    )


async def test_an_upstream_slower_than_the_timeout_is_a_503_naming_it(
    make_settings: Callable[..., Settings],
    upstreams: dict[str, ServiceProcess],
    silent_port: int,
) -> None:
    app = create_app(
        make_settings(
            CUSTOMER_URL=f"http://127.0.0.1:{silent_port}",
            CATALOG_URL=upstreams["catalog"].base_url,
            UPSTREAM_TIMEOUT_SECONDS="0.3",
        )
    )
    body = {"customer_id": 1, "lines": [{"item_id": 1, "count": 1}]}

    async with app.test_app():
        async with asyncio.timeout(HANG_BOUND_SECONDS):
            response = await app.test_client().post("/order", json=body)

    assert response.status_code == 503
    assert "customer service" in (await response.get_json())["error"]
    assert "did not answer within 0.3 s" in (await response.get_json())["error"]


@pytest.mark.parametrize(
    ("content_type", "body", "status", "says"),
    [
        pytest.param("application/json", b"{", 400, "not valid JSON", id="malformed"),
        pytest.param("text/csv", b"1,2", 415, "takes application/json", id="csv"),
        pytest.param("application/json", b"{}", 422, "customer_id", id="empty"),
        pytest.param(
            "application/json",
            b'{"customer_id": 1, "lines": []}',
            422,
            "lines must be a list of 1 to 50",
            id="no-lines",
        ),
        pytest.param(
            "application/json",
            b'{"customer_id": 1, "lines": [{"item_id": 1, "count": 0}]}',
            422,
            "count must be from 1",
            id="zero-count",
        ),
        pytest.param(
            "application/json",
            b'{"customer_id": 1, "lines": [{"item_id": 1.0, "count": 1}]}',
            422,
            "item_id must be an integer",
            id="float-id",
        ),
        pytest.param(
            "application/json",
            b'{"customer_id": false, "lines": [{"item_id": 1, "count": 1}]}',
            422,
            "customer_id must be an integer",
            id="bool-customer",
        ),
        pytest.param(
            "application/json",
            b'{"customer_id": 1, "lines": [7]}',
            422,
            "line 1 must be an object",
            id="line-not-object",
        ),
        pytest.param(
            "application/json",
            json.dumps(
                {"customer_id": 1, "lines": [{"item_id": 1, "count": 1}] * 51}
            ).encode(),
            422,
            "lines must be a list of 1 to 50",
            id="too-many-lines",
        ),
        pytest.param(
            "application/x-www-form-urlencoded",
            b"customer_id=1",
            422,
            "no items",
            id="form-without-counts",
        ),
    ],
)
async def test_a_bad_order_is_refused_before_any_upstream_call(
    order_with_dead_upstreams: ServiceApp,
    content_type: str,
    body: bytes,
    status: int,
    says: str,
) -> None:
    client = order_with_dead_upstreams.test_client()

    response = await client.post(
        "/order", data=body, headers={"Content-Type": content_type}
    )

    assert response.status_code == status
    assert says in (await response.get_json())["error"]
    assert response.headers[SERVED_BY] == "order-test"


async def test_the_order_form_lists_upstream_customers_and_items(
    order_app: ServiceApp,
) -> None:
    response = await order_app.test_client().get("/order/form", headers=HTML)

    page = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert '<option value="1">Ada Lovelace</option>' in page
    assert 'name="count-3"' in page
    assert "Coffee beans, 1 kg" in page


async def test_the_order_form_places_an_order_and_shows_it(
    order_app: ServiceApp, upstreams: dict[str, ServiceProcess]
) -> None:
    prices = catalog_prices(upstreams["catalog"])
    client = order_app.test_client()

    placed = await client.post(
        "/order",
        form={"customer_id": "3", "count-2": "2", "count-3": "", "count-5": "0"},
        headers=HTML,
    )
    page = await client.get(placed.headers["Location"], headers=HTML)
    order = await (await client.get(placed.headers["Location"])).get_json()

    assert placed.status_code == 303
    assert order["lines"] == [{"item_id": 2, "count": 2}]
    assert order["total"] == float(prices[2] * 2)
    assert f"{prices[2] * 2:.2f}" in await page.get_data(as_text=True)
    assert (await client.get("/order", headers=HTML)).mimetype == "text/html"


async def test_the_order_form_is_a_503_page_when_an_upstream_is_down(
    order_with_dead_upstreams: ServiceApp,
) -> None:
    async with asyncio.timeout(HANG_BOUND_SECONDS):
        response = await order_with_dead_upstreams.test_client().get(
            "/order/form", headers=HTML
        )

    assert response.status_code == 503
    assert response.mimetype == "text/html"
    assert "service" in await response.get_data(as_text=True)


class RecordingUpstream:
    """A catalog and customer stand-in that records each caller's port."""

    def __init__(self) -> None:
        self.client_ports: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.client_ports.append(scope["client"][1])
        record_id = int(scope["path"].rsplit("/", 1)[1])
        body = json.dumps({"id": record_id, "price": 1.5}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def recording_upstream(
    free_port: Callable[[], int],
) -> AsyncIterator[tuple[str, RecordingUpstream]]:
    """Serve a recording upstream on loopback; yield its URL and recorder."""
    recorder = RecordingUpstream()
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    stop = asyncio.Event()
    server = asyncio.create_task(serve(recorder, config, shutdown_trigger=stop.wait))
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(trust_env=False) as probe:
        for _ in range(100):
            try:
                await probe.get(f"{url}/catalog/0")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    recorder.client_ports.clear()
    yield url, recorder
    stop.set()
    await asyncio.wait_for(server, HANG_BOUND_SECONDS)


@pytest.mark.parametrize(
    ("keepalive", "opens_one_connection_per_call"),
    [
        pytest.param("false", True, id="keepalive-off"),
        pytest.param("true", False, id="keepalive-on"),
    ],
)
async def test_upstream_calls_open_a_new_connection_each_unless_keepalive_is_on(
    make_settings: Callable[..., Settings],
    recording_upstream: tuple[str, RecordingUpstream],
    keepalive: str,
    opens_one_connection_per_call: bool,
) -> None:
    url, recorder = recording_upstream
    app = create_app(
        make_settings(CATALOG_URL=url, CUSTOMER_URL=url, UPSTREAM_KEEPALIVE=keepalive)
    )
    body = {"customer_id": 1, "lines": [{"item_id": 1, "count": 1}]}

    async with app.test_app():
        client = app.test_client()
        for _ in range(4):
            assert (await client.post("/order", json=body)).status_code == 201

    calls = len(recorder.client_ports)
    connections = len(set(recorder.client_ports))
    assert calls == 8
    assert (connections == calls) is opens_one_connection_per_call


async def test_an_order_process_reaches_the_real_upstreams(
    start_service: Callable[..., ServiceProcess],
    upstreams: dict[str, ServiceProcess],
) -> None:
    order = start_service(
        "order",
        env={
            "CATALOG_URL": upstreams["catalog"].base_url,
            "CUSTOMER_URL": upstreams["customer"].base_url,
        },
    )
    body = {"customer_id": 4, "lines": [{"item_id": 3, "count": 5}]}

    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        created = await client.post(f"{order.base_url}/order", json=body)
        unknown = await client.post(
            f"{order.base_url}/order",
            json={"customer_id": 4, "lines": [{"item_id": 404, "count": 1}]},
        )

    prices = catalog_prices(upstreams["catalog"])
    assert created.status_code == 201
    assert created.json()["total"] == float(prices[3] * 5)
    assert created.headers[SERVED_BY] == f"order-{order.port}"
    assert unknown.status_code == 422
