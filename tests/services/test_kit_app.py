"""What every service gets from the kit: probes, metrics, X-Served-By, errors."""

import logging
from collections.abc import Awaitable, Callable

import pytest
from quart import Response, jsonify

from services.kit import (
    SERVED_BY,
    MemoryStore,
    Phase,
    ServiceApp,
    Settings,
    create_app,
    read_json,
)

pytestmark = pytest.mark.anyio

Metric = Callable[..., Awaitable[float]]


def kit_app(settings: Settings) -> ServiceApp:
    """Return a bare kit app with one route that echoes JSON and one that fails."""
    app = create_app("probe", settings=settings)

    @app.post("/probe/echo")
    async def echo() -> Response:
        return jsonify(await read_json())

    @app.get("/probe/boom")
    async def boom() -> Response:
        raise RuntimeError("a bug in a view")

    return app


async def test_readiness_fails_until_startup_has_finished(
    make_settings: Callable[..., Settings],
) -> None:
    app = kit_app(make_settings())

    response = await app.test_client().get("/health/ready")

    assert response.status_code == 503
    assert (await response.get_json())["status"] == "starting"


async def test_readiness_passes_after_startup_and_fails_once_shutdown_begins(
    make_settings: Callable[..., Settings],
) -> None:
    app = kit_app(make_settings())

    async with app.test_app() as test_app:
        client = test_app.test_client()
        ready = await client.get("/health/ready")
        app.health.begin_shutdown()
        stopping = await client.get("/health/ready")
        alive = await client.get("/health/live")

    assert ready.status_code == 200
    assert stopping.status_code == 503
    assert (await stopping.get_json())["status"] == "stopping"
    assert alive.status_code == 200


async def test_the_end_of_serving_fails_readiness(
    make_settings: Callable[..., Settings],
) -> None:
    app = kit_app(make_settings())

    async with app.test_app():
        assert app.health.phase is Phase.READY

    assert app.health.phase is Phase.STOPPING
    assert (await app.test_client().get("/health/ready")).status_code == 503


async def test_a_stopping_service_never_becomes_ready_again(
    make_settings: Callable[..., Settings],
) -> None:
    app = kit_app(make_settings())
    app.health.begin_shutdown()

    app.health.mark_ready()

    assert not app.health.ready


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        pytest.param("GET", "/health/live", None, 200, id="live"),
        pytest.param("GET", "/metrics", None, 200, id="metrics"),
        pytest.param("POST", "/probe/echo", b"[1]", 200, id="success"),
        pytest.param("GET", "/nowhere", None, 404, id="unknown-path"),
        pytest.param("DELETE", "/probe/echo", None, 405, id="wrong-method"),
        pytest.param("POST", "/probe/echo", b"[1", 400, id="malformed-json"),
        pytest.param("POST", "/probe/echo", b"x" * 70_000, 413, id="oversize-body"),
        pytest.param("GET", "/probe/boom", None, 500, id="unexpected-exception"),
    ],
)
async def test_every_answer_names_the_pod_that_served_it(
    make_settings: Callable[..., Settings],
    method: str,
    path: str,
    body: bytes | None,
    status: int,
) -> None:
    client = kit_app(make_settings(POD_NAME="probe-abc12")).test_client()
    headers = {"Content-Type": "application/json"}

    response = await client.open(path, method=method, data=body, headers=headers)

    assert response.status_code == status
    assert response.headers[SERVED_BY] == "probe-abc12"


async def test_an_unexpected_exception_is_a_logged_500_with_a_json_error(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    client = kit_app(make_settings()).test_client()

    with caplog.at_level(logging.ERROR, logger="services.kit.errors"):
        response = await client.get("/probe/boom")

    assert response.status_code == 500
    assert await response.get_json() == {
        "error": "GET /probe/boom failed unexpectedly; it is logged",
        "status": 500,
    }
    assert "a bug in a view" in caplog.text


async def test_a_wrong_method_is_a_405_that_lists_the_allowed_ones(
    make_settings: Callable[..., Settings],
) -> None:
    client = kit_app(make_settings()).test_client()

    response = await client.put("/probe/echo", json=[])

    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    body = await response.get_json()
    assert body["status"] == 405
    assert body["error"].startswith("PUT /probe/echo is not allowed")


@pytest.mark.parametrize(
    ("accept", "mimetype"),
    [
        pytest.param(None, "application/json", id="no-accept"),
        pytest.param("*/*", "application/json", id="anything"),
        pytest.param("application/json", "application/json", id="json"),
        pytest.param(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "text/html",
            id="browser",
        ),
        pytest.param("application/json;q=0.5, text/html", "text/html", id="html-first"),
    ],
)
async def test_errors_come_as_json_unless_the_client_prefers_html(
    make_settings: Callable[..., Settings], accept: str | None, mimetype: str
) -> None:
    client = kit_app(make_settings()).test_client()
    headers = {"Accept": accept} if accept else {}

    response = await client.get("/nowhere", headers=headers)

    assert response.status_code == 404
    assert response.mimetype == mimetype
    assert "nothing is served at /nowhere" in await response.get_data(as_text=True)


async def test_a_request_counts_once_under_its_url_rule(
    make_settings: Callable[..., Settings], metric: Metric
) -> None:
    client = kit_app(make_settings()).test_client()
    labels = {"route": "/probe/echo", "method": "POST", "status": "200"}
    before = await metric(client, "http_requests_total", labels)

    await client.post("/probe/echo", json={"a": 1})

    assert await metric(client, "http_requests_total", labels) == before + 1
    durations = {"route": "/probe/echo", "method": "POST"}
    assert await metric(client, "http_request_duration_seconds_count", durations) == 1


async def test_probes_and_scrapes_are_not_counted(
    make_settings: Callable[..., Settings], metric: Metric
) -> None:
    client = kit_app(make_settings()).test_client()

    for path in ("/metrics", "/metrics/", "/health/live", "/health/ready"):
        await client.get(path)

    response = await client.get("/metrics")
    text = await response.get_data(as_text=True)
    assert "http_requests_total{" not in text


async def test_unmatched_paths_share_one_route_label(
    make_settings: Callable[..., Settings], metric: Metric
) -> None:
    client = kit_app(make_settings()).test_client()

    for number in range(3):
        await client.get(f"/random/{number}")

    labels = {"route": "<unmatched>", "method": "GET", "status": "404"}
    assert await metric(client, "http_requests_total", labels) == 3


async def test_a_non_standard_method_is_counted_as_other(
    make_settings: Callable[..., Settings], metric: Metric
) -> None:
    client = kit_app(make_settings()).test_client()

    await client.open("/probe/echo", method="BREW")

    labels = {"route": "<unmatched>", "method": "OTHER", "status": "405"}
    assert await metric(client, "http_requests_total", labels) == 1


async def test_without_metrics_requests_are_not_counted_but_process_metrics_stay(
    make_settings: Callable[..., Settings],
) -> None:
    client = kit_app(make_settings(METRICS_ENABLED="false")).test_client()

    await client.post("/probe/echo", json=[])
    response = await client.get("/metrics")

    text = await response.get_data(as_text=True)
    assert "http_requests_total" not in text
    assert "process_cpu_seconds_total" in text
    assert "python_info" in text


async def test_two_apps_count_apart(
    make_settings: Callable[..., Settings], metric: Metric
) -> None:
    first = kit_app(make_settings()).test_client()
    second = kit_app(make_settings()).test_client()

    await first.get("/nowhere")

    labels = {"route": "<unmatched>", "method": "GET", "status": "404"}
    assert await metric(first, "http_requests_total", labels) == 1
    assert await metric(second, "http_requests_total", labels) == 0


class Note:
    """A record for the store tests."""

    def __init__(self, record_id: int, text: str) -> None:
        self.id = record_id
        self.text = text


async def test_the_memory_store_numbers_records_from_one_and_keeps_order() -> None:
    store = MemoryStore([lambda i: Note(i, "a"), lambda i: Note(i, "b")])

    added = await store.add(lambda i: Note(i, "c"))
    deleted = await store.delete(2)
    replaced = await store.replace(Note(1, "A"))
    missing = await store.replace(Note(2, "B"))

    assert added.id == 3
    assert deleted
    assert not await store.delete(2)
    assert replaced
    assert not missing
    assert [(note.id, note.text) for note in await store.all()] == [(1, "A"), (3, "c")]
    assert await store.get(2) is None
