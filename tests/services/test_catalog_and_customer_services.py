"""The catalog and the customer service: REST and HTML on the same URLs, strict 4xx.

Both are the kit's resource routes on records of their own, so each test here
runs on both services, with each one's own records, fields and rules.
"""

import json
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlencode

import pytest
from quart.typing import TestClientProtocol as Client

from services.catalog import create_app as create_catalog
from services.customer import create_app as create_customer
from services.kit import SERVED_BY, ServiceApp, Settings

pytestmark = pytest.mark.anyio

BROWSER = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"
HTML = {"Accept": BROWSER}
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
Metric = Callable[..., Awaitable[float]]
#: Returns a test client of a fresh app of the service it is given.
Clients = Callable[[str], Client]

APPS: dict[str, Callable[[Settings], ServiceApp]] = {
    "catalog": create_catalog,
    "customer": create_customer,
}
GRACE = {
    "name": "Hopper",
    "firstname": "Grace",
    "email": "grace@example.org",
    "street": "1 Navy Way",
    "city": "Arlington",
}
SERVICES = [
    pytest.param("catalog", id="catalog"),
    pytest.param("customer", id="customer"),
]


def encoded(body: Mapping[str, object]) -> bytes:
    """Return ``body`` as the bytes of a JSON document."""
    return json.dumps(body).encode()


@pytest.fixture
def clients(make_settings: Callable[..., Settings]) -> Clients:
    """Make test clients of fresh apps, each the pod ``<service>-test``."""

    def client(service: str) -> Client:
        app = APPS[service](make_settings(POD_NAME=f"{service}-test"))
        return app.test_client()

    return client


@pytest.mark.parametrize(
    ("service", "fields", "numbers"),
    [
        pytest.param("catalog", {"id", "name", "price"}, ("price",), id="catalog"),
        pytest.param(
            "customer",
            {"id", "name", "firstname", "email", "street", "city"},
            (),
            id="customer",
        ),
    ],
)
async def test_every_start_seeds_the_same_records(
    make_settings: Callable[..., Settings],
    service: str,
    fields: set[str],
    numbers: tuple[str, ...],
) -> None:
    first = APPS[service](make_settings(POD_NAME="a")).test_client()
    second = APPS[service](make_settings(POD_NAME="b")).test_client()

    records = await (await first.get(f"/{service}")).get_json()

    assert records == await (await second.get(f"/{service}")).get_json()
    assert len(records) >= 4
    assert [record["id"] for record in records] == list(range(1, len(records) + 1))
    assert all(set(record) == fields for record in records)
    for name in numbers:
        assert all(isinstance(record[name], int | float) for record in records)


@pytest.mark.parametrize("service", SERVICES)
async def test_the_list_is_the_same_with_or_without_a_trailing_slash(
    clients: Clients, service: str
) -> None:
    client = clients(service)

    bare = await client.get(f"/{service}")
    slashed = await client.get(f"/{service}/")

    assert bare.status_code == slashed.status_code == 200
    assert await bare.get_json() == await slashed.get_json()


@pytest.mark.parametrize(
    ("service", "body", "replacement"),
    [
        pytest.param(
            "catalog",
            {"name": "Saucer", "price": 4.5},
            {"name": "Big saucer", "price": 5},
            id="catalog",
        ),
        pytest.param(
            "customer",
            {**GRACE, "name": "Murray"},
            {**GRACE, "city": "Arlington, VA"},
            id="customer",
        ),
    ],
)
async def test_a_record_can_be_created_read_replaced_and_deleted(
    clients: Clients,
    service: str,
    body: dict[str, object],
    replacement: dict[str, object],
) -> None:
    client = clients(service)

    created = await client.post(f"/{service}", json=body)
    location = created.headers["Location"]
    record = await created.get_json()
    read = await client.get(location)
    replaced = await client.put(location, json=replacement)
    after_put = await (await client.get(location)).get_json()
    deleted = await client.delete(location)
    gone = await client.get(location)

    assert created.status_code == 201
    assert location == f"/{service}/{record['id']}"
    assert record == {"id": record["id"], **body}
    assert await read.get_json() == record
    assert replaced.status_code == 200
    assert after_put == {"id": record["id"], **replacement}
    assert deleted.status_code == 204
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "field", "value"),
    [
        pytest.param(
            "/catalog/2",
            {"id": 2, "name": "Tea pot", "price": 30},
            "price",
            30,
            id="catalog",
        ),
        pytest.param(
            "/customer/2",
            {"id": 2, **GRACE, "city": "Reno"},
            "city",
            "Reno",
            id="customer",
        ),
    ],
)
async def test_a_put_may_repeat_the_id_of_the_url(
    clients: Clients, path: str, body: dict[str, object], field: str, value: object
) -> None:
    response = await clients(path.split("/")[1]).put(path, json=body)

    assert response.status_code == 200
    assert (await response.get_json())[field] == value


@pytest.mark.parametrize(
    ("service", "query", "field", "found"),
    [
        pytest.param("catalog", "name=Tea%20pot", "name", ["Tea pot"], id="exact-name"),
        pytest.param(
            "catalog", "name=tea%20pot", "name", [], id="exact-name-is-case-sensitive"
        ),
        pytest.param(
            "catalog", "name=Tea", "name", [], id="exact-name-needs-all-of-it"
        ),
        pytest.param(
            "catalog", "q=CUP", "name", ["Espresso cup"], id="part-ignores-case"
        ),
        pytest.param(
            "catalog",
            "q=o",
            "name",
            ["Espresso cup", "Tea pot", "Coffee beans, 1 kg", "Sugar bowl"],
            id="many",
        ),
        pytest.param("catalog", "q=zebra", "name", [], id="no-match"),
        pytest.param(
            "catalog",
            "name=Milk%20jug&q=jug",
            "name",
            ["Milk jug"],
            id="both-must-match",
        ),
        pytest.param(
            "customer", "name=Turing", "firstname", ["Alan"], id="customer-exact-name"
        ),
        pytest.param(
            "customer",
            "name=turing",
            "firstname",
            [],
            id="customer-exact-is-case-sensitive",
        ),
        pytest.param(
            "customer", "q=LOVE", "firstname", ["Ada"], id="customer-part-of-name"
        ),
        pytest.param(
            "customer",
            "q=gra",
            "firstname",
            ["Grace"],
            id="customer-part-of-first-name",
        ),
        pytest.param("customer", "q=nobody", "firstname", [], id="customer-no-match"),
    ],
)
async def test_search_finds_records_by_exact_name_or_by_part(
    clients: Clients, service: str, query: str, field: str, found: list[str]
) -> None:
    response = await clients(service).get(f"/{service}/search?{query}")

    assert response.status_code == 200
    assert [record[field] for record in await response.get_json()] == found


@pytest.mark.parametrize(
    "accept",
    [pytest.param(BROWSER, id="browser"), pytest.param("text/html", id="html-only")],
)
@pytest.mark.parametrize(
    ("path", "text"),
    [
        pytest.param("/catalog", "<h1>Catalog</h1>", id="catalog-list"),
        pytest.param("/catalog/1", "<h1>Espresso cup</h1>", id="catalog-detail"),
        pytest.param("/catalog/form", "<h1>New item</h1>", id="catalog-new-form"),
        pytest.param(
            "/catalog/1/form", "<h1>Edit Espresso cup</h1>", id="catalog-edit-form"
        ),
        pytest.param(
            "/catalog/search", "<h1>Search the catalog</h1>", id="catalog-search"
        ),
        pytest.param("/catalog/search?q=pot", "Tea pot", id="catalog-search-results"),
        pytest.param("/customer", "<h1>Customers</h1>", id="customer-list"),
        pytest.param("/customer/1", "<h1>Ada Lovelace</h1>", id="customer-detail"),
        pytest.param("/customer/form", "<h1>New customer</h1>", id="customer-new-form"),
        pytest.param(
            "/customer/2/form", 'value="grace@example.org"', id="customer-edit-form"
        ),
        pytest.param("/customer/search?q=emmy", "Noether", id="customer-search"),
    ],
)
async def test_browsers_get_html_pages(
    clients: Clients, path: str, text: str, accept: str
) -> None:
    service = path.split("/")[1].split("?")[0]

    response = await clients(service).get(path, headers={"Accept": accept})

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = await response.get_data(as_text=True)
    assert text in page
    assert f"{service}-test" in page


@pytest.mark.parametrize(
    ("service", "texts"),
    [
        pytest.param(
            "catalog",
            ["Coffee beans, 1 kg", "18.90", 'href="/catalog/3"'],
            id="catalog",
        ),
        pytest.param(
            "customer",
            ["Turing", "Alan", "alan@example.org", "Bletchley", 'href="/customer/3"'],
            id="customer",
        ),
    ],
)
async def test_the_list_page_shows_every_record_with_a_link_to_it(
    clients: Clients, service: str, texts: list[str]
) -> None:
    response = await clients(service).get(f"/{service}", headers=HTML)

    page = await response.get_data(as_text=True)
    for text in texts:
        assert text in page


@pytest.mark.parametrize(
    ("service", "form", "says", "kept"),
    [
        pytest.param(
            "catalog",
            {"name": "Spoon", "price": "cheap"},
            "price must be a number",
            'value="Spoon"',
            id="catalog",
        ),
        pytest.param(
            "customer",
            {**GRACE, "email": "grace"},
            "email must be an address",
            'value="1 Navy Way"',
            id="customer",
        ),
    ],
)
async def test_a_refused_form_is_shown_again_with_the_reason(
    clients: Clients, service: str, form: dict[str, str], says: str, kept: str
) -> None:
    response = await clients(service).post(f"/{service}", form=form, headers=HTML)

    page = await response.get_data(as_text=True)
    assert response.status_code == 422
    assert response.mimetype == "text/html"
    assert says in page
    assert kept in page


@pytest.mark.parametrize(
    ("service", "form", "expected"),
    [
        pytest.param(
            "catalog",
            {"name": "Spoon", "price": "1.25"},
            {"name": "Spoon", "price": 1.25},
            id="catalog",
        ),
        pytest.param("customer", GRACE, GRACE, id="customer"),
    ],
)
async def test_the_new_record_form_creates_a_record_and_redirects_to_it(
    clients: Clients, service: str, form: dict[str, str], expected: dict[str, object]
) -> None:
    client = clients(service)

    response = await client.post(f"/{service}", form=form, headers=HTML)
    location = response.headers["Location"]
    record = await (await client.get(location)).get_json()

    assert response.status_code == 303
    assert record == {"id": record["id"], **expected}


@pytest.mark.parametrize(
    ("body", "name"),
    [
        pytest.param(b"name=Caf%C3%A9+cup&price=3", "Café cup", id="percent-encoded"),
        pytest.param("name=Café cup&price=3".encode(), "Café cup", id="raw-utf8"),
        pytest.param(b"name=%E2%82%AC+jar&price=3", "€ jar", id="three-bytes"),
    ],
)
async def test_a_form_in_utf8_stores_the_text_it_encodes(
    clients: Clients, body: bytes, name: str
) -> None:
    client = clients("catalog")

    response = await client.post(
        "/catalog", data=body, headers={**HTML, "Content-Type": FORM}
    )
    record = await (await client.get(response.headers["Location"])).get_json()

    assert response.status_code == 303
    assert record["name"] == name
    assert record["price"] == 3.0


@pytest.mark.parametrize(
    ("path", "form", "expected"),
    [
        pytest.param(
            "/catalog/4",
            {"name": "Cream jug", "price": "13"},
            {"id": 4, "name": "Cream jug", "price": 13.0},
            id="catalog",
        ),
        pytest.param(
            "/customer/4",
            {**GRACE, "city": "New York"},
            {"id": 4, **GRACE, "city": "New York"},
            id="customer",
        ),
    ],
)
async def test_the_edit_form_changes_the_record(
    clients: Clients, path: str, form: dict[str, str], expected: dict[str, object]
) -> None:
    client = clients(path.split("/")[1])

    response = await client.post(f"{path}/form", form=form, headers=HTML)
    record = await (await client.get(path)).get_json()

    assert response.status_code == 303
    assert response.headers["Location"] == path
    assert record == expected


@pytest.mark.parametrize("service", SERVICES)
async def test_the_delete_button_removes_the_record_and_shows_the_list(
    clients: Clients, service: str
) -> None:
    client = clients(service)

    response = await client.post(f"/{service}/1/delete", headers=HTML)

    assert response.status_code == 303
    assert response.headers["Location"] == f"/{service}"
    assert (await client.get(f"/{service}/1")).status_code == 404


@pytest.mark.parametrize(
    ("service", "form", "field", "value", "stored"),
    [
        pytest.param(
            "catalog",
            {"name": "Spoon", "price": "1.25"},
            "price",
            "2",
            2.0,
            id="catalog",
        ),
        pytest.param("customer", GRACE, "city", "New York", "New York", id="customer"),
    ],
)
async def test_the_forms_create_change_and_delete_a_new_record(
    clients: Clients,
    service: str,
    form: dict[str, str],
    field: str,
    value: str,
    stored: object,
) -> None:
    client = clients(service)

    created = await client.post(f"/{service}", form=form, headers=HTML)
    location = created.headers["Location"]
    changed = await client.post(
        f"{location}/form", form={**form, field: value}, headers=HTML
    )
    after = (await (await client.get(location)).get_json())[field]
    deleted = await client.post(f"{location}/delete", headers=HTML)

    assert created.status_code == changed.status_code == deleted.status_code == 303
    assert after == stored
    assert (await client.get(location)).status_code == 404


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
            FORM,
            b"name=%ff%fe&price=1",
            400,
            'the form field "name" sent to /catalog is not UTF-8',
            id="form-percent-encoded-not-utf8",
        ),
        pytest.param(
            "POST",
            "/catalog",
            FORM,
            b"name=Spoon&price=1&%c3%28=x",
            400,
            "has a field name that is not UTF-8",
            id="form-name-not-utf8",
        ),
        pytest.param(
            "POST",
            "/customer",
            FORM,
            urlencode(GRACE).encode() + b"&city=%e9",
            400,
            'the form field "city" sent to /customer is not UTF-8',
            id="customer-form-latin1-city",
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
        pytest.param(
            "POST",
            "/customer",
            JSON,
            b"{",
            400,
            "not valid JSON",
            id="customer-malformed",
        ),
        pytest.param(
            "POST",
            "/customer",
            JSON,
            b'"x"',
            422,
            "JSON object",
            id="customer-a-string",
        ),
        pytest.param(
            "POST",
            "/customer",
            JSON,
            encoded({k: v for k, v in GRACE.items() if k != "city"}),
            422,
            "lacks the field 'city'",
            id="customer-missing-city",
        ),
        pytest.param(
            "POST",
            "/customer",
            JSON,
            encoded({**GRACE, "email": "a@b@c"}),
            422,
            "email",
            id="customer-two-ats",
        ),
        pytest.param(
            "POST",
            "/customer",
            JSON,
            encoded({**GRACE, "email": "@b"}),
            422,
            "email",
            id="customer-no-local",
        ),
        pytest.param(
            "POST",
            "/customer",
            JSON,
            encoded({**GRACE, "email": "a @b"}),
            422,
            "email",
            id="customer-space",
        ),
        pytest.param(
            "POST",
            "/customer",
            JSON,
            encoded({**GRACE, "firstname": None}),
            422,
            "firstname",
            id="customer-null",
        ),
        pytest.param(
            "POST",
            "/customer",
            JSON,
            encoded({**GRACE, "age": 3}),
            422,
            "unknown field",
            id="customer-extra",
        ),
        pytest.param(
            "PUT",
            "/customer/1",
            JSON,
            encoded({**GRACE, "id": True}),
            422,
            "differs",
            id="customer-bool-id",
        ),
        pytest.param(
            "PUT",
            "/customer/77",
            JSON,
            encoded(GRACE),
            404,
            "customer 77 does not exist",
            id="customer-unknown",
        ),
        pytest.param(
            "DELETE",
            "/customer/77",
            JSON,
            None,
            404,
            "customer 77",
            id="customer-delete-unknown",
        ),
        pytest.param(
            "PATCH",
            "/customer/1",
            JSON,
            encoded(GRACE),
            405,
            "not allowed",
            id="customer-patch",
        ),
        pytest.param(
            "POST",
            "/customer",
            JSON,
            b" " * 70_000,
            413,
            "exceeds",
            id="customer-oversize",
        ),
        pytest.param(
            "PUT",
            "/customer/1",
            FORM,
            urlencode(GRACE).encode(),
            415,
            "takes application/json",
            id="customer-form-put",
        ),
    ],
)
async def test_bad_requests_get_a_4xx_with_a_json_sentence(
    clients: Clients,
    method: str,
    path: str,
    content_type: str | None,
    body: bytes | None,
    status: int,
    says: str,
) -> None:
    service = path.split("/")[1]
    headers = {"Content-Type": content_type} if content_type else {}

    response = await clients(service).open(
        path, method=method, data=body, headers=headers
    )

    assert response.status_code == status
    error = await response.get_json()
    assert error["status"] == status
    assert says in error["error"]
    assert "\n" not in error["error"]
    assert response.headers[SERVED_BY] == f"{service}-test"


@pytest.mark.parametrize("service", SERVICES)
async def test_a_request_to_the_list_counts_exactly_once(
    clients: Clients, metric: Metric, service: str
) -> None:
    client = clients(service)
    labels = {"route": f"/{service}", "method": "GET", "status": "200"}
    before = await metric(client, "http_requests_total", labels)

    await client.get(f"/{service}")
    await client.get("/metrics")
    await client.get("/health/ready")
    await client.get("/health/live")

    assert await metric(client, "http_requests_total", labels) == before + 1


@pytest.mark.parametrize(
    ("service", "rule", "record_ids", "found", "missing"),
    [
        pytest.param(
            "catalog", "/catalog/<int:item_id>", (1, 2, 3, 99), 3, 1, id="catalog"
        ),
        pytest.param(
            "customer", "/customer/<int:customer_id>", (1, 2), 2, 0, id="customer"
        ),
    ],
)
async def test_record_requests_count_under_the_rule_not_the_path(
    clients: Clients,
    metric: Metric,
    service: str,
    rule: str,
    record_ids: tuple[int, ...],
    found: int,
    missing: int,
) -> None:
    client = clients(service)

    for record_id in record_ids:
        await client.get(f"/{service}/{record_id}")
    await client.get("/health/ready")

    ok = {"route": rule, "method": "GET", "status": "200"}
    not_found = {"route": rule, "method": "GET", "status": "404"}
    assert await metric(client, "http_requests_total", ok) == found
    assert await metric(client, "http_requests_total", not_found) == missing
