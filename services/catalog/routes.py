"""The catalog's URLs, each answering JSON or HTML as the client prefers.

Browsers cannot send PUT or DELETE from a form, so the pages post to
``/catalog/<id>/form`` and ``/catalog/<id>/delete`` instead; everything else is
plain REST on ``/catalog``.
"""

import logging
from typing import cast

from quart import Blueprint, Response, render_template, request, url_for

from services.catalog.items import (
    Item,
    ItemFields,
    matches,
    parse_item,
    parse_item_form,
)
from services.kit import (
    InvalidFieldsError,
    NotFoundError,
    ServiceError,
    Store,
    current_service,
    is_form,
    read_form,
    read_json,
    respond,
    see_other,
    wants_html,
)

logger = logging.getLogger(__name__)

catalog = Blueprint(
    "catalog", __name__, url_prefix="/catalog", template_folder="templates"
)

#: The key of the item store in ``app.extensions``.
STORE_KEY = "catalog.items"


def items() -> Store[Item]:
    """Return the item store of the current app."""
    return cast(Store[Item], current_service().extensions[STORE_KEY])


async def find(item_id: int) -> Item:
    """Return the item with ``item_id`` or raise a 404."""
    item = await items().get(item_id)
    if item is None:
        raise NotFoundError(f"item {item_id} does not exist; see /catalog")
    return item


async def form_page(
    *, item: Item | None, error: ServiceError, form: dict[str, str]
) -> Response:
    """Show the item form again with what was sent and why it was refused."""
    if not wants_html():
        raise error
    html = await render_template(
        "catalog/form.html", item=item, values=form, error_message=error.message
    )
    return Response(html, status=error.status, mimetype="text/html")


def see(item: Item) -> Response:
    """Redirect a browser to the page of ``item``."""
    return see_other(url_for("catalog.show_item", item_id=item.id))


@catalog.get("")
async def list_items() -> Response:
    """List every item."""
    found = await items().all()
    return await respond(
        [item.to_json() for item in found], template="catalog/list.html", items=found
    )


@catalog.post("")
async def create_item() -> Response:
    """Add an item from a JSON body (201) or from the HTML form (303)."""
    if is_form():
        form = await read_form()
        try:
            fields = parse_item_form(form)
        except InvalidFieldsError as e:
            return await form_page(item=None, error=e, form=form.to_dict())
        item = await items().add(fields.with_id)
        logger.debug("item %d added from the form", item.id)
        return see(item)
    fields = parse_item(await read_json())
    item = await items().add(fields.with_id)
    logger.debug("item %d added", item.id)
    location = url_for("catalog.show_item", item_id=item.id)
    return await respond(
        item.to_json(),
        template="catalog/detail.html",
        status=201,
        headers={"Location": location},
        item=item,
    )


@catalog.get("/form")
async def new_item_form() -> str:
    """Show the form for a new item."""
    return await render_template("catalog/form.html", item=None, values={})


@catalog.get("/search")
async def search_items() -> Response:
    """Find items by exact ``name`` or by a case-insensitive part ``q``."""
    name = request.args.get("name")
    part = request.args.get("q")
    searched = name is not None or part is not None
    if not searched and not wants_html():
        raise InvalidFieldsError(
            "a search needs ?name=<exact name> or ?q=<part of a name>"
        )
    found = [
        item
        for item in await items().all()
        if searched and matches(item, name=name, part=part)
    ]
    return await respond(
        [item.to_json() for item in found],
        template="catalog/search.html",
        items=found,
        searched=searched,
        name=name or "",
        part=part or "",
    )


@catalog.get("/<int:item_id>")
async def show_item(item_id: int) -> Response:
    """Show one item."""
    item = await find(item_id)
    return await respond(item.to_json(), template="catalog/detail.html", item=item)


@catalog.put("/<int:item_id>")
async def replace_item(item_id: int) -> Response:
    """Replace an item with the JSON body."""
    await find(item_id)
    fields: ItemFields = parse_item(await read_json(), item_id=item_id)
    item = fields.with_id(item_id)
    if not await items().replace(item):
        raise NotFoundError(f"item {item_id} does not exist; see /catalog")
    return await respond(item.to_json(), template="catalog/detail.html", item=item)


@catalog.delete("/<int:item_id>")
async def delete_item(item_id: int) -> Response:
    """Remove an item."""
    if not await items().delete(item_id):
        raise NotFoundError(f"item {item_id} does not exist; see /catalog")
    logger.debug("item %d deleted", item_id)
    return Response(status=204)


@catalog.get("/<int:item_id>/form")
async def edit_item_form(item_id: int) -> str:
    """Show the form to change an item."""
    item = await find(item_id)
    values = {"name": item.name, "price": f"{item.price:g}"}
    return await render_template("catalog/form.html", item=item, values=values)


@catalog.post("/<int:item_id>/form")
async def edit_item(item_id: int) -> Response:
    """Change an item from the HTML form, then show it."""
    item = await find(item_id)
    form = await read_form()
    try:
        changed = parse_item_form(form).with_id(item_id)
    except InvalidFieldsError as e:
        return await form_page(item=item, error=e, form=form.to_dict())
    if not await items().replace(changed):
        raise NotFoundError(f"item {item_id} does not exist; see /catalog")
    return see(changed)


@catalog.post("/<int:item_id>/delete")
async def delete_item_from_page(item_id: int) -> Response:
    """Remove an item from its page, then show the list."""
    if not await items().delete(item_id):
        raise NotFoundError(f"item {item_id} does not exist; see /catalog")
    logger.debug("item %d deleted from its page", item_id)
    return see_other(url_for("catalog.list_items"))
