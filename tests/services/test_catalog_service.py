"""The catalog service: REST and HTML on the same URLs, strict 4xx errors."""

from collections.abc import Awaitable, Callable

import pytest
from quart.typing import TestClientProtocol as Client

from services.catalog import create_app
from services.kit import SERVED_BY, Settings

pytestmark = pytest.mark.anyio

HTML = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}
Metric = Callable[..., Awaitable[float]]


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Client:
    """A test client of a fresh catalog app."""
    return create_app(make_settings(POD_NAME="catalog-test")).test_client()


async def test_every_start_seeds_the_same_items() -> None:
    first = create_app(Settings.from_environ({"POD_NAME": "a"})).test_client()
    second = create_app(Settings.from_environ({"POD_NAME": "b"})).test_client()

    items = await (await first.get("/catalog")).get_json()

    assert items == await (await second.get("/catalog")).get_json()
    assert len(items) >= 4
    assert [item["id"] for item in items] == list(range(1, len(items) + 1))
    assert all(isinstance(item["price"], int | float) for item in items)


async def test_the_list_is_the_same_with_or_without_a_trailing_slash(
    client: Client,
) -> None:
    bare = await client.get("/catalog")
    slashed = await client.get("/catalog/")

    assert bare.status_code == slashed.status_code == 200
    assert await bare.get_json() == await slashed.get_json()


async def test_an_item_can_be_created_read_replaced_and_deleted(
    client: Client,
) -> None:
    created = await client.post("/catalog", json={"name": "Saucer", "price": 4.5})
    location = created.headers["Location"]
    item = await created.get_json()
    read = await client.get(location)
    replaced = await client.put(location, json={"name": "Big saucer", "price": 5})
    after_put = await (await client.get(location)).get_json()
    deleted = await client.delete(location)
    gone = await client.get(location)

    assert created.status_code == 201
    assert location == f"/catalog/{item['id']}"
    assert item == {"id": item["id"], "name": "Saucer", "price": 4.5}
    assert await read.get_json() == item
    assert replaced.status_code == 200
    assert after_put == {"id": item["id"], "name": "Big saucer", "price": 5}
    assert deleted.status_code == 204
    assert gone.status_code == 404


async def test_a_put_may_repeat_the_id_of_the_url(client: Client) -> None:
    response = await client.put(
        "/catalog/2", json={"id": 2, "name": "Tea pot", "price": 30}
    )

    assert response.status_code == 200
    assert (await response.get_json())["price"] == 30


@pytest.mark.parametrize(
    ("query", "names"),
    [
        pytest.param("name=Tea%20pot", ["Tea pot"], id="exact-name"),
        pytest.param("name=tea%20pot", [], id="exact-name-is-case-sensitive"),
        pytest.param("name=Tea", [], id="exact-name-needs-all-of-it"),
        pytest.param("q=CUP", ["Espresso cup"], id="part-ignores-case"),
        pytest.param(
            "q=o",
            ["Espresso cup", "Tea pot", "Coffee beans, 1 kg", "Sugar bowl"],
            id="many",
        ),
        pytest.param("q=zebra", [], id="no-match"),
        pytest.param("name=Milk%20jug&q=jug", ["Milk jug"], id="both-must-match"),
    ],
)
async def test_search_finds_items_by_exact_name_or_by_part(
    client: Client, query: str, names: list[str]
) -> None:
    response = await client.get(f"/catalog/search?{query}")

    assert response.status_code == 200
    assert [item["name"] for item in await response.get_json()] == names


@pytest.mark.parametrize(
    ("path", "heading"),
    [
        pytest.param("/catalog", "<h1>Catalog</h1>", id="list"),
        pytest.param("/catalog/1", "<h1>Espresso cup</h1>", id="detail"),
        pytest.param("/catalog/form", "<h1>New item</h1>", id="new-form"),
        pytest.param("/catalog/1/form", "<h1>Edit Espresso cup</h1>", id="edit-form"),
        pytest.param("/catalog/search", "<h1>Search the catalog</h1>", id="search"),
        pytest.param("/catalog/search?q=pot", "Tea pot", id="search-results"),
    ],
)
async def test_browsers_get_html_pages(client: Client, path: str, heading: str) -> None:
    response = await client.get(path, headers=HTML)

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = await response.get_data(as_text=True)
    assert heading in page
    assert "catalog-test" in page


async def test_the_list_page_shows_every_item_with_its_price(
    client: Client,
) -> None:
    page = await (await client.get("/catalog", headers=HTML)).get_data(as_text=True)

    assert "Coffee beans, 1 kg" in page
    assert "18.90" in page
    assert 'href="/catalog/3"' in page


async def test_the_new_item_form_creates_an_item_and_redirects_to_it(
    client: Client,
) -> None:
    response = await client.post(
        "/catalog", form={"name": "Spoon", "price": "1.25"}, headers=HTML
    )
    location = response.headers["Location"]
    item = await (await client.get(location)).get_json()

    assert response.status_code == 303
    assert item["name"] == "Spoon"
    assert item["price"] == 1.25


async def test_a_refused_form_is_shown_again_with_the_reason(
    client: Client,
) -> None:
    response = await client.post(
        "/catalog", form={"name": "Spoon", "price": "cheap"}, headers=HTML
    )

    page = await response.get_data(as_text=True)
    assert response.status_code == 422
    assert response.mimetype == "text/html"
    assert "price must be a number" in page
    assert 'value="Spoon"' in page


async def test_the_edit_form_changes_the_item(client: Client) -> None:
    response = await client.post(
        "/catalog/4/form", form={"name": "Cream jug", "price": "13"}, headers=HTML
    )
    item = await (await client.get("/catalog/4")).get_json()

    assert response.status_code == 303
    assert response.headers["Location"] == "/catalog/4"
    assert item == {"id": 4, "name": "Cream jug", "price": 13.0}


async def test_the_delete_button_removes_the_item_and_shows_the_list(
    client: Client,
) -> None:
    response = await client.post("/catalog/1/delete", headers=HTML)

    assert response.status_code == 303
    assert response.headers["Location"] == "/catalog"
    assert (await client.get("/catalog/1")).status_code == 404


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("method", "path", "content_type", "body", "status", "says"),
    [
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b'{"name": "x",',
            400,
            "not valid JSON",
            id="malformed-json",
        ),
        pytest.param(
            "POST", "/catalog", JSON, b"\xff\xfe{", 400, "not valid JSON", id="not-utf8"
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b'{"name": "x", "price": NaN}',
            400,
            "not valid JSON",
            id="nan",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b"[" * 5000 + b"]" * 5000,
            400,
            "not valid JSON",
            id="deep",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b"[]",
            422,
            "must be a JSON object",
            id="not-an-object",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b'{"name": "x"}',
            422,
            "lacks the field 'price'",
            id="missing-field",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b'{"name": "x", "price": 1, "colour": 2}',
            422,
            "unknown field",
            id="unknown-field",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b'{"name": "", "price": 1}',
            422,
            "name must be",
            id="empty-name",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b'{"name": "   ", "price": 1}',
            422,
            "name must be",
            id="blank-name",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b'{"name": "%s", "price": 1}' % (b"n" * 201),
            422,
            "name must be",
            id="long-name",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b'{"name": 7, "price": 1}',
            422,
            "name must be",
            id="name-not-text",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b'{"name": "x", "price": -1}',
            422,
            "price must be",
            id="negative-price",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b'{"name": "x", "price": true}',
            422,
            "price must be",
            id="bool-price",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b'{"name": "x", "price": "3"}',
            422,
            "price must be",
            id="text-price",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b'{"name": "x", "price": 1e999}',
            422,
            "price must be",
            id="infinite-price",
        ),
        pytest.param(
            "PUT",
            "/catalog/1",
            JSON,
            b'{"id": 2, "name": "x", "price": 1}',
            422,
            "differs from 1",
            id="other-id-in-put",
        ),
        pytest.param(
            "PUT",
            "/catalog/99",
            JSON,
            b'{"name": "x", "price": 1}',
            404,
            "item 99 does not exist",
            id="put-unknown-id",
        ),
        pytest.param(
            "DELETE",
            "/catalog/99",
            None,
            None,
            404,
            "item 99 does not exist",
            id="delete-unknown-id",
        ),
        pytest.param(
            "GET",
            "/catalog/99",
            None,
            None,
            404,
            "item 99 does not exist",
            id="get-unknown-id",
        ),
        pytest.param(
            "GET",
            "/catalog/abc",
            None,
            None,
            404,
            "nothing is served",
            id="id-not-a-number",
        ),
        pytest.param(
            "POST",
            "/catalog",
            "text/plain",
            b"name=x",
            415,
            "takes application/json",
            id="wrong-type",
        ),
        pytest.param(
            "POST",
            "/catalog",
            None,
            b'{"name": "x", "price": 1}',
            415,
            "no content type",
            id="no-type",
        ),
        pytest.param(
            "PUT",
            "/catalog/1",
            FORM,
            b"name=x&price=1",
            415,
            "takes application/json",
            id="form-put",
        ),
        pytest.param(
            "POST",
            "/catalog/1/form",
            JSON,
            b"{}",
            415,
            "takes application/x-www-form",
            id="json-to-form",
        ),
        pytest.param(
            "POST",
            "/catalog",
            FORM,
            b"name=\xff&price=1",
            400,
            "not UTF-8",
            id="form-not-utf8",
        ),
        pytest.param(
            "POST",
            "/catalog",
            JSON,
            b" " * 65_537,
            413,
            "exceeds 65536 bytes",
            id="oversize",
        ),
        pytest.param(
            "PATCH",
            "/catalog/1",
            JSON,
            b"{}",
            405,
            "is not allowed",
            id="unsupported-method",
        ),
        pytest.param(
            "GET",
            "/catalog/search",
            None,
            None,
            422,
            "needs ?name=",
            id="search-without-terms",
        ),
    ],
)
async def test_bad_requests_get_a_4xx_with_a_json_sentence(
    client: Client,
    method: str,
    path: str,
    content_type: str | None,
    body: bytes | None,
    status: int,
    says: str,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}

    response = await client.open(path, method=method, data=body, headers=headers)

    assert response.status_code == status
    error = await response.get_json()
    assert error["status"] == status
    assert says in error["error"]
    assert "\n" not in error["error"]
    assert response.headers[SERVED_BY] == "catalog-test"


async def test_a_request_to_the_list_counts_exactly_once(
    client: Client, metric: Metric
) -> None:
    labels = {"route": "/catalog", "method": "GET", "status": "200"}
    before = await metric(client, "http_requests_total", labels)

    await client.get("/catalog")
    await client.get("/metrics")
    await client.get("/health/ready")
    await client.get("/health/live")

    assert await metric(client, "http_requests_total", labels) == before + 1


async def test_item_requests_count_under_the_rule_not_the_path(
    client: Client, metric: Metric
) -> None:
    for item_id in (1, 2, 3, 99):
        await client.get(f"/catalog/{item_id}")

    rule = "/catalog/<int:item_id>"
    found = {"route": rule, "method": "GET", "status": "200"}
    missing = {"route": rule, "method": "GET", "status": "404"}
    assert await metric(client, "http_requests_total", found) == 3
    assert await metric(client, "http_requests_total", missing) == 1
