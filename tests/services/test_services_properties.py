"""Whatever a client sends to a write endpoint, no service answers with a 5xx.

Hypothesis sends arbitrary JSON documents, documents shaped like the real
ones with arbitrary values, HTML forms and raw bytes under assorted content
types. The order service calls real catalog and customer processes, so that
bodies which pass validation go the whole way.
"""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from quart.typing import TestClientProtocol as Client

from services.catalog import create_app as create_catalog
from services.customer import create_app as create_customer
from services.kit import SERVED_BY, Settings
from services.order import create_app as create_order
from tests.services.service_processes import ServiceProcess

pytestmark = pytest.mark.anyio

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)
small_ids = st.integers(min_value=-2, max_value=8)
# Values that often pass validation, so that bodies also reach the stores.
plausible = (
    small_ids
    | st.text(min_size=1, max_size=20)
    | st.floats(min_value=0, max_value=1000)
    | st.emails()
)
field_values = plausible | json_values


def shaped(*fields: str) -> st.SearchStrategy[dict[str, object]]:
    """Return objects with all or some of ``fields``, with arbitrary values."""
    every = st.fixed_dictionaries({name: field_values for name in fields})
    some = st.fixed_dictionaries(
        {}, optional={name: field_values for name in (*fields, "id")}
    )
    return every | some


order_lines = st.lists(
    st.fixed_dictionaries({"item_id": small_ids, "count": small_ids})
    | st.fixed_dictionaries(
        {}, optional={"item_id": field_values, "count": field_values}
    )
    | json_values,
    max_size=4,
)
order_bodies = st.fixed_dictionaries(
    {"customer_id": small_ids, "lines": order_lines}
) | st.fixed_dictionaries(
    {}, optional={"customer_id": field_values, "lines": order_lines | json_values}
)
#: Documents shaped like each service's records, and arbitrary ones.
DOCUMENTS = {
    "catalog": shaped("name", "price") | json_values,
    "customer": shaped("name", "firstname", "email", "street", "city") | json_values,
    "order": order_bodies | json_values,
}
FORM_FIELDS = (
    *("name", "price", "firstname", "email", "street", "city"),
    *("customer_id", "count-1", "count-3", "count-x", "other"),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "text/plain; charset=latin-1",
        "application/octet-stream",
        "",
    ]
)


@st.composite
def bodies(draw: st.DrawFn, service: str) -> tuple[str, bytes]:
    """Draw a content type and a body that may or may not match it."""
    kind = draw(st.sampled_from(["json", "form", "bytes"]))
    if kind == "json":
        return "application/json", json.dumps(draw(DOCUMENTS[service])).encode()
    if kind == "form":
        form = draw(
            st.dictionaries(
                st.sampled_from(FORM_FIELDS),
                st.text(max_size=20) | small_ids.map(str),
            )
        )
        return "application/x-www-form-urlencoded", urlencode(form).encode()
    return draw(content_types), draw(st.binary(max_size=300))


@pytest.fixture(scope="module")
async def clients(
    upstreams: dict[str, ServiceProcess],
) -> AsyncIterator[dict[str, Client]]:
    """Test clients of one app per service, shared by all examples."""
    environment = {
        "POD_NAME": "property-pod",
        "CATALOG_URL": upstreams["catalog"].base_url,
        "CUSTOMER_URL": upstreams["customer"].base_url,
        "UPSTREAM_TIMEOUT_SECONDS": "5",
    }
    settings_ = Settings.from_environ(environment)
    order = create_order(settings_)
    async with order.test_app():
        yield {
            "catalog": create_catalog(settings_).test_client(),
            "customer": create_customer(settings_).test_client(),
            "order": order.test_client(),
        }


ACCEPTS = st.sampled_from(["application/json", "text/html", ""])


async def send(
    client: Client, method: str, path: str, body: tuple[str, bytes], accept: str
) -> None:
    """Send ``body`` and check that the answer is a 4xx at worst, well formed."""
    content_type, data = body
    headers = {"Content-Type": content_type} if content_type else {}
    if accept:
        headers["Accept"] = accept

    response = await client.open(path, method=method, data=data, headers=headers)

    event(f"status {response.status_code}")  # seen with --hypothesis-show-statistics
    assert response.status_code < 500, await response.get_data(as_text=True)
    assert response.headers[SERVED_BY] == "property-pod"
    if response.status_code >= 400 and response.mimetype == "application/json":
        error = await response.get_json()
        assert error["status"] == response.status_code
        assert error["error"]


def no_write_answers_5xx(
    service: str, writes: list[object]
) -> Callable[..., Awaitable[None]]:
    """Return the test that ``service`` answers none of ``writes`` with a 5xx."""

    @pytest.mark.parametrize(("method", "path"), writes)
    @EXAMPLES
    @given(body=bodies(service), accept=ACCEPTS)
    async def test(
        clients: dict[str, Client],
        method: str,
        path: str,
        body: tuple[str, bytes],
        accept: str,
    ) -> None:
        await send(clients[service], method, path, body, accept)

    checked: Callable[..., Awaitable[None]] = test
    return checked


test_no_body_makes_a_catalog_write_answer_5xx = no_write_answers_5xx(
    "catalog",
    [
        pytest.param("POST", "/catalog", id="create"),
        pytest.param("PUT", "/catalog/2", id="replace"),
        pytest.param("POST", "/catalog/3/form", id="edit-form"),
        pytest.param("POST", "/catalog/1/delete", id="delete-form"),
        pytest.param("DELETE", "/catalog/4", id="delete"),
    ],
)
test_no_body_makes_a_customer_write_answer_5xx = no_write_answers_5xx(
    "customer",
    [
        pytest.param("POST", "/customer", id="create"),
        pytest.param("PUT", "/customer/2", id="replace"),
        pytest.param("POST", "/customer/3/form", id="edit-form"),
        pytest.param("POST", "/customer/1/delete", id="delete-form"),
        pytest.param("DELETE", "/customer/4", id="delete"),
    ],
)
test_no_body_makes_an_order_write_answer_5xx = no_write_answers_5xx(
    "order",
    [
        pytest.param("POST", "/order", id="create"),
        pytest.param("POST", "/order/1/delete", id="delete-form"),
        pytest.param("DELETE", "/order/2", id="delete"),
    ],
)
