"""The customer service: REST and HTML on the same URLs, strict 4xx errors."""

import json
from collections.abc import Awaitable, Callable

import pytest
from quart.typing import TestClientProtocol as Client

from services.customer import create_app
from services.kit import SERVED_BY, Settings

pytestmark = pytest.mark.anyio

HTML = {"Accept": "text/html"}
Metric = Callable[..., Awaitable[float]]
GRACE = {
    "name": "Hopper",
    "firstname": "Grace",
    "email": "grace@example.org",
    "street": "1 Navy Way",
    "city": "Arlington",
}


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Client:
    """A test client of a fresh customer app."""
    return create_app(make_settings(POD_NAME="customer-test")).test_client()


async def test_every_start_seeds_the_same_customers(
    make_settings: Callable[..., Settings],
) -> None:
    first = create_app(make_settings()).test_client()
    second = create_app(make_settings()).test_client()

    customers = await (await first.get("/customer")).get_json()

    assert customers == await (await second.get("/customer")).get_json()
    assert len(customers) >= 4
    assert set(customers[0]) == {"id", "name", "firstname", "email", "street", "city"}


async def test_a_customer_can_be_created_read_replaced_and_deleted(
    client: Client,
) -> None:
    created = await client.post("/customer", json={**GRACE, "name": "Murray"})
    location = created.headers["Location"]
    customer = await created.get_json()
    replaced = await client.put(location, json={**GRACE, "city": "Arlington, VA"})
    after_put = await (await client.get(location)).get_json()
    deleted = await client.delete(location)

    assert created.status_code == 201
    assert customer == {"id": customer["id"], **GRACE, "name": "Murray"}
    assert replaced.status_code == 200
    assert after_put == {"id": customer["id"], **GRACE, "city": "Arlington, VA"}
    assert deleted.status_code == 204
    assert (await client.get(location)).status_code == 404


@pytest.mark.parametrize(
    ("query", "firstnames"),
    [
        pytest.param("name=Turing", ["Alan"], id="exact-name"),
        pytest.param("name=turing", [], id="exact-is-case-sensitive"),
        pytest.param("q=LOVE", ["Ada"], id="part-of-name"),
        pytest.param("q=gra", ["Grace"], id="part-of-first-name"),
        pytest.param("q=nobody", [], id="no-match"),
    ],
)
async def test_search_finds_customers_by_exact_name_or_by_part(
    client: Client, query: str, firstnames: list[str]
) -> None:
    response = await client.get(f"/customer/search?{query}")

    assert response.status_code == 200
    assert [c["firstname"] for c in await response.get_json()] == firstnames


@pytest.mark.parametrize(
    ("path", "text"),
    [
        pytest.param("/customer", "<h1>Customers</h1>", id="list"),
        pytest.param("/customer/1", "<h1>Ada Lovelace</h1>", id="detail"),
        pytest.param("/customer/form", "<h1>New customer</h1>", id="new-form"),
        pytest.param("/customer/2/form", 'value="grace@example.org"', id="edit-form"),
        pytest.param("/customer/search?q=emmy", "Noether", id="search"),
    ],
)
async def test_browsers_get_html_pages(client: Client, path: str, text: str) -> None:
    response = await client.get(path, headers=HTML)

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert text in await response.get_data(as_text=True)


async def test_the_forms_create_change_and_delete_customers(client: Client) -> None:
    created = await client.post("/customer", form=GRACE, headers=HTML)
    location = created.headers["Location"]
    changed = await client.post(
        f"{location}/form", form={**GRACE, "city": "New York"}, headers=HTML
    )
    city = (await (await client.get(location)).get_json())["city"]
    deleted = await client.post(f"{location}/delete", headers=HTML)

    assert created.status_code == changed.status_code == deleted.status_code == 303
    assert city == "New York"
    assert (await client.get(location)).status_code == 404


async def test_a_refused_form_is_shown_again_with_the_reason(client: Client) -> None:
    response = await client.post(
        "/customer", form={**GRACE, "email": "grace"}, headers=HTML
    )

    page = await response.get_data(as_text=True)
    assert response.status_code == 422
    assert "email must be an address" in page
    assert 'value="1 Navy Way"' in page


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        pytest.param("POST", "/customer", b"{", 400, "not valid JSON", id="malformed"),
        pytest.param("POST", "/customer", b'"x"', 422, "JSON object", id="a-string"),
        pytest.param(
            "POST",
            "/customer",
            {k: v for k, v in GRACE.items() if k != "city"},
            422,
            "lacks the field 'city'",
            id="missing-city",
        ),
        pytest.param(
            "POST", "/customer", {**GRACE, "email": "a@b@c"}, 422, "email", id="two-ats"
        ),
        pytest.param(
            "POST", "/customer", {**GRACE, "email": "@b"}, 422, "email", id="no-local"
        ),
        pytest.param(
            "POST", "/customer", {**GRACE, "email": "a @b"}, 422, "email", id="space"
        ),
        pytest.param(
            "POST",
            "/customer",
            {**GRACE, "firstname": None},
            422,
            "firstname",
            id="null",
        ),
        pytest.param(
            "POST", "/customer", {**GRACE, "age": 3}, 422, "unknown field", id="extra"
        ),
        pytest.param(
            "PUT", "/customer/1", {**GRACE, "id": True}, 422, "differs", id="bool-id"
        ),
        pytest.param(
            "PUT",
            "/customer/77",
            GRACE,
            404,
            "customer 77 does not exist",
            id="unknown",
        ),
        pytest.param(
            "DELETE", "/customer/77", None, 404, "customer 77", id="delete-unknown"
        ),
        pytest.param("PATCH", "/customer/1", GRACE, 405, "not allowed", id="patch"),
        pytest.param("POST", "/customer", b" " * 70_000, 413, "exceeds", id="oversize"),
    ],
)
async def test_bad_requests_get_a_4xx_with_a_json_sentence(
    client: Client,
    method: str,
    path: str,
    body: bytes | dict[str, object] | None,
    status: int,
    says: str,
) -> None:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": "application/json"}

    response = await client.open(path, method=method, data=data, headers=headers)

    assert response.status_code == status
    error = await response.get_json()
    assert error["status"] == status
    assert says in error["error"]
    assert response.headers[SERVED_BY] == "customer-test"


async def test_a_form_posted_to_put_is_an_unsupported_media_type(
    client: Client,
) -> None:
    response = await client.put("/customer/1", form=GRACE)

    assert response.status_code == 415


async def test_requests_count_under_their_rule(client: Client, metric: Metric) -> None:
    await client.get("/customer/1")
    await client.get("/customer/2")
    await client.get("/health/ready")

    labels = {"route": "/customer/<int:customer_id>", "method": "GET", "status": "200"}
    assert await metric(client, "http_requests_total", labels) == 2
