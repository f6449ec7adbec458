"""The order service's URLs, each answering JSON or HTML as preferred.

Placing an order asks the customer service for the customer and the catalog
for every item, all at once, each call bounded by the upstream timeout. An
id that does not exist there is the client's mistake (422); a service that
does not answer is not (503).
"""

import asyncio
import logging
import math
from typing import cast

from quart import Blueprint, Response, render_template, url_for

from services.kit import (
    InvalidFieldsError,
    Records,
    UpstreamError,
    created,
    current_service,
    is_form,
    read_form,
    read_json,
    respond,
    see_other,
)
from services.order.orders import (
    MAX_COUNT,
    Order,
    OrderFields,
    parse_order,
    parse_order_form,
)
from services.order.upstreams import Upstream, Upstreams

logger = logging.getLogger(__name__)

#: The highest unit price taken from the catalog; beyond it the answer is wrong.
MAX_UNIT_PRICE = 1e12

order = Blueprint("order", __name__, url_prefix="/order", template_folder="templates")

#: The orders, and the 404 of one that does not exist.
ORDERS = Records[Order](noun="order", listing="/order", key="order.orders")
#: The key of the upstream client in ``app.extensions``.
UPSTREAMS_KEY = "order.upstreams"


def upstreams() -> Upstreams:
    """Return the client of the catalog and customer services."""
    return cast(Upstreams, current_service().extensions[UPSTREAMS_KEY])


def _unit_price(upstream: Upstream, item_id: int, body: object) -> float:
    price = body.get("price") if isinstance(body, dict) else None
    if isinstance(price, bool) or not isinstance(price, int | float):
        price = math.nan
    if not 0 <= price <= MAX_UNIT_PRICE:
        raise UpstreamError(
            f"the {upstream.name} service answered item {item_id} without a price"
        )
    return price


async def prices_of(fields: OrderFields) -> dict[int, float]:
    """Check the order's customer and items upstream; return the unit prices."""
    client = upstreams()
    item_ids = fields.item_ids
    answers = await asyncio.gather(
        client.get(client.customer, f"/customer/{fields.customer_id}"),
        *(client.get(client.catalog, f"/catalog/{item_id}") for item_id in item_ids),
        return_exceptions=True,
    )
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    if answers[0] is None:
        raise InvalidFieldsError(
            f"customer {fields.customer_id} does not exist; pick one from /customer"
        )
    prices: dict[int, float] = {}
    for item_id, body in zip(item_ids, answers[1:], strict=True):
        if body is None:
            raise InvalidFieldsError(
                f"item {item_id} does not exist in the catalog; pick one from /catalog"
            )
        prices[item_id] = _unit_price(client.catalog, item_id, body)
    return prices


async def place(fields: OrderFields) -> Order:
    """Check and price an order, then store it."""
    prices = await prices_of(fields)
    placed = await ORDERS.store().add(fields.priced(prices))
    logger.debug(
        "order %d placed for customer %d: total %s",
        placed.id,
        placed.customer_id,
        placed.total,
    )
    return placed


@order.get("")
async def list_orders() -> Response:
    """List every order."""
    found = await ORDERS.store().all()
    return await respond(
        [placed.to_json() for placed in found], template="order/list.html", orders=found
    )


@order.post("")
async def create_order() -> Response:
    """Place an order from a JSON body (201) or from the HTML form (303)."""
    if is_form():
        placed = await place(parse_order_form(await read_form()))
        return see_other(url_for("order.show_order", order_id=placed.id))
    placed = await place(parse_order(await read_json()))
    return await created(
        placed.to_json(),
        location=url_for("order.show_order", order_id=placed.id),
        template="order/detail.html",
        order=placed,
    )


def _choices(body: object, label: str) -> list[tuple[int, str]]:
    """Return (id, label) pairs of the records an upstream listed."""
    if not isinstance(body, list):
        return []
    choices = []
    for record in body:
        if isinstance(record, dict) and isinstance(record.get("id"), int):
            choices.append((record["id"], label.format_map(_Defaulting(record))))
    return choices


class _Defaulting(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "?"


@order.get("/form")
async def new_order_form() -> str:
    """Show the form for a new order, with the customers and items upstream."""
    client = upstreams()
    customers, items = await asyncio.gather(
        client.get(client.customer, "/customer"), client.get(client.catalog, "/catalog")
    )
    return await render_template(
        "order/form.html",
        customers=_choices(customers, "{firstname} {name}"),
        items=_choices(items, "{name} ({price})"),
        max_count=MAX_COUNT,
    )


@order.get("/<int:order_id>")
async def show_order(order_id: int) -> Response:
    """Show one order."""
    found = await ORDERS.find(order_id)
    return await respond(found.to_json(), template="order/detail.html", order=found)


@order.delete("/<int:order_id>")
async def delete_order(order_id: int) -> Response:
    """Cancel an order."""
    return await ORDERS.delete(order_id)


@order.post("/<int:order_id>/delete")
async def delete_order_from_page(order_id: int) -> Response:
    """Cancel an order from its page, then show the list."""
    return await ORDERS.delete_from_page(order_id, then=url_for("order.list_orders"))
