"""The customer service's URLs, each answering JSON or HTML as preferred.

As in the catalog, the pages post to ``/customer/<id>/form`` and
``/customer/<id>/delete`` because forms cannot PUT or DELETE.
"""

import logging
from typing import cast

from quart import Blueprint, Response, render_template, request, url_for

from services.customer.customers import (
    FIELDS,
    Customer,
    matches,
    parse_customer,
    parse_customer_form,
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

customer = Blueprint(
    "customer", __name__, url_prefix="/customer", template_folder="templates"
)

#: The key of the customer store in ``app.extensions``.
STORE_KEY = "customer.customers"


def customers() -> Store[Customer]:
    """Return the customer store of the current app."""
    return cast(Store[Customer], current_service().extensions[STORE_KEY])


async def find(customer_id: int) -> Customer:
    """Return the customer with ``customer_id`` or raise a 404."""
    found = await customers().get(customer_id)
    if found is None:
        raise NotFoundError(f"customer {customer_id} does not exist; see /customer")
    return found


async def form_page(
    *, record: Customer | None, error: ServiceError, form: dict[str, str]
) -> Response:
    """Show the customer form again with what was sent and why it was refused."""
    if not wants_html():
        raise error
    html = await render_template(
        "customer/form.html",
        customer=record,
        values=form,
        fields=FIELDS,
        error_message=error.message,
    )
    return Response(html, status=error.status, mimetype="text/html")


def see(record: Customer) -> Response:
    """Redirect a browser to the page of ``record``."""
    return see_other(url_for("customer.show_customer", customer_id=record.id))


@customer.get("")
async def list_customers() -> Response:
    """List every customer."""
    found = await customers().all()
    return await respond(
        [record.to_json() for record in found],
        template="customer/list.html",
        customers=found,
    )


@customer.post("")
async def create_customer() -> Response:
    """Add a customer from a JSON body (201) or from the HTML form (303)."""
    if is_form():
        form = await read_form()
        try:
            fields = parse_customer_form(form)
        except InvalidFieldsError as e:
            return await form_page(record=None, error=e, form=form.to_dict())
        record = await customers().add(fields.with_id)
        logger.debug("customer %d added from the form", record.id)
        return see(record)
    fields = parse_customer(await read_json())
    record = await customers().add(fields.with_id)
    logger.debug("customer %d added", record.id)
    location = url_for("customer.show_customer", customer_id=record.id)
    return await respond(
        record.to_json(),
        template="customer/detail.html",
        status=201,
        headers={"Location": location},
        customer=record,
        fields=FIELDS,
    )


@customer.get("/form")
async def new_customer_form() -> str:
    """Show the form for a new customer."""
    return await render_template(
        "customer/form.html", customer=None, values={}, fields=FIELDS
    )


@customer.get("/search")
async def search_customers() -> Response:
    """Find customers by exact ``name`` or by a part ``q`` of either name."""
    name = request.args.get("name")
    part = request.args.get("q")
    searched = name is not None or part is not None
    if not searched and not wants_html():
        raise InvalidFieldsError(
            "a search needs ?name=<exact name> or ?q=<part of a name>"
        )
    found = [
        record
        for record in await customers().all()
        if searched and matches(record, name=name, part=part)
    ]
    return await respond(
        [record.to_json() for record in found],
        template="customer/search.html",
        customers=found,
        searched=searched,
        part=part or "",
    )


@customer.get("/<int:customer_id>")
async def show_customer(customer_id: int) -> Response:
    """Show one customer."""
    record = await find(customer_id)
    return await respond(
        record.to_json(),
        template="customer/detail.html",
        customer=record,
        fields=FIELDS,
    )


@customer.put("/<int:customer_id>")
async def replace_customer(customer_id: int) -> Response:
    """Replace a customer with the JSON body."""
    await find(customer_id)
    record = parse_customer(await read_json(), customer_id=customer_id).with_id(
        customer_id
    )
    if not await customers().replace(record):
        raise NotFoundError(f"customer {customer_id} does not exist; see /customer")
    return await respond(
        record.to_json(),
        template="customer/detail.html",
        customer=record,
        fields=FIELDS,
    )


@customer.delete("/<int:customer_id>")
async def delete_customer(customer_id: int) -> Response:
    """Remove a customer."""
    if not await customers().delete(customer_id):
        raise NotFoundError(f"customer {customer_id} does not exist; see /customer")
    logger.debug("customer %d deleted", customer_id)
    return Response(status=204)


@customer.get("/<int:customer_id>/form")
async def edit_customer_form(customer_id: int) -> str:
    """Show the form to change a customer."""
    record = await find(customer_id)
    return await render_template(
        "customer/form.html",
        customer=record,
        values=record.form_values(),
        fields=FIELDS,
    )


@customer.post("/<int:customer_id>/form")
async def edit_customer(customer_id: int) -> Response:
    """Change a customer from the HTML form, then show it."""
    record = await find(customer_id)
    form = await read_form()
    try:
        changed = parse_customer_form(form).with_id(customer_id)
    except InvalidFieldsError as e:
        return await form_page(record=record, error=e, form=form.to_dict())
    if not await customers().replace(changed):
        raise NotFoundError(f"customer {customer_id} does not exist; see /customer")
    return see(changed)


@customer.post("/<int:customer_id>/delete")
async def delete_customer_from_page(customer_id: int) -> Response:
    """Remove a customer from its page, then show the list."""
    if not await customers().delete(customer_id):
        raise NotFoundError(f"customer {customer_id} does not exist; see /customer")
    logger.debug("customer %d deleted from its page", customer_id)
    return see_other(url_for("customer.list_customers"))
