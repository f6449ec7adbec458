"""A resource: records under one URL prefix, REST for programs and pages for people.

The catalog's items and the customer service's customers are the same thing
with other fields: records in a store that clients list, create (from JSON or
from an HTML form), read, replace, delete and search by name. A ``Resource``
describes what differs (names, fields, checks, the words on its pages) and
``resource_blueprint`` serves it, ``<id>`` standing for ``<int:<noun>_id>``:

- ``GET /<name>`` lists the records; ``POST /<name>`` adds one from JSON (201)
  or from the form (303); ``GET /<name>/form`` is the form of a new one;
- ``GET /<name>/search`` finds them by exact ``name`` or by a part ``q``;
- ``GET``, ``PUT`` and ``DELETE /<name>/<id>`` read, replace and remove one;
- ``GET /<name>/<id>/form`` is the form that changes one, which posts to
  ``/<name>/<id>/form``; its page's delete button posts to
  ``/<name>/<id>/delete``, because browsers cannot send PUT or DELETE.

The URL rules are the ``route`` label of the request metrics, which the
harness counts, so they must stay as spelled here. The pages are
``kit/resource/<page>.html`` unless the service has its own
``<name>/<page>.html`` in its templates.
"""

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from quart import Blueprint, Response, render_template, request, url_for

from services.kit.app import ServiceApp, create_app
from services.kit.bodies import is_form, read_form, read_json
from services.kit.errors import InvalidFieldsError, ServiceError
from services.kit.negotiation import created, respond, see_other, wants_html
from services.kit.records import Records
from services.kit.settings import Settings
from services.kit.stores import MemoryStore, Record

logger = logging.getLogger(__name__)


class ResourceRecord(Record, Protocol):
    """A record a resource serves."""

    @property
    def title(self) -> str:
        """Return what the record's page is headed with."""
        ...

    def to_json(self) -> dict[str, object]:
        """Return the record as the JSON object the API shows."""
        ...

    def form_values(self) -> dict[str, str]:
        """Return the fields as the HTML form fills them in."""
        ...


RecordT = TypeVar("RecordT", bound=ResourceRecord)
RecordT_co = TypeVar("RecordT_co", bound=ResourceRecord, covariant=True)
RecordT_contra = TypeVar("RecordT_contra", bound=ResourceRecord, contravariant=True)


class Fields(Protocol[RecordT_co]):
    """What a client sets on a record: everything but its id."""

    def with_id(self, record_id: int, /) -> RecordT_co:
        """Return the record these fields describe under ``record_id``."""
        ...


class Matches(Protocol[RecordT_contra]):
    """Tell whether a record has exactly ``name`` and contains ``part``."""

    def __call__(
        self, record: RecordT_contra, /, *, name: str | None, part: str | None
    ) -> bool:
        """Tell whether ``record`` is one the search asks for."""
        ...


@dataclass(frozen=True)
class Field:
    """One field of a record as the pages show it and its form asks for it."""

    #: The attribute of the record and the name of the form field.
    name: str
    #: The label on the record's page and in its form.
    label: str
    #: The heading of its column in tables; None leaves it out of them.
    column: str | None = None
    #: A %-format for a number, which tables also align right; None shows text.
    number_format: str | None = None
    #: Attributes of the form's ``<input>`` besides id, name and ``required``.
    input: tuple[tuple[str, str], ...] = ()

    def shown(self, record: object) -> str:
        """Return the field of ``record`` as a page shows it."""
        value = getattr(record, self.name)
        return self.number_format % value if self.number_format else str(value)


@dataclass(frozen=True)
class Resource(Generic[RecordT]):
    """What a resource's routes need to know of its records."""

    #: The URL prefix, the blueprint and the service: ``catalog``.
    name: str
    #: What one record is called, in messages and on pages: ``item``.
    noun: str
    #: What many are called: ``items``.
    plural: str
    #: The heading of the list page.
    title: str
    #: The heading of the search page.
    search_title: str
    #: The label of the search box.
    search_label: str
    #: The fields, in the order pages show them; the first links to the record.
    fields: tuple[Field, ...]
    #: Check a JSON body; the id is the one in the URL, None for a new record.
    parse: Callable[[object, int | None], Fields[RecordT]]
    #: Check the fields of the HTML form.
    parse_form: Callable[[Mapping[str, str]], Fields[RecordT]]
    #: Tell which records a search finds.
    matches: Matches[RecordT]

    @property
    def id_name(self) -> str:
        """Return the name of the id in the URL rules: ``item_id``."""
        return f"{self.noun}_id"

    @property
    def records(self) -> Records[RecordT]:
        """Return where the records are kept and how a missing one is refused."""
        return Records(
            noun=self.noun, listing=f"/{self.name}", key=f"{self.name}.{self.plural}"
        )

    @property
    def columns(self) -> tuple[Field, ...]:
        """Return the fields that tables show."""
        return tuple(field for field in self.fields if field.column is not None)

    def templates(self, page: str) -> list[str]:
        """Return the names of ``page``: the service's own first, then the kit's."""
        return [f"{self.name}/{page}.html", f"kit/resource/{page}.html"]

    def url(self, view: str, record: Record | None = None) -> str:
        """Return the URL of ``view``, of ``record`` for the views of one record."""
        ids: dict[str, Any] = {} if record is None else {self.id_name: record.id}
        return url_for(f"{self.name}.{view}", **ids)


class _Views(Generic[RecordT]):
    """The views of one resource."""

    def __init__(self, resource: Resource[RecordT]) -> None:
        self.resource = resource
        self.records = resource.records

    async def _render(self, page: str, **context: Any) -> str:
        return await render_template(
            self.resource.templates(page), resource=self.resource, **context
        )

    async def _answer(
        self, data: object, page: str, *, status: int = 200, **context: Any
    ) -> Response:
        return await respond(
            data,
            template=self.resource.templates(page),
            status=status,
            resource=self.resource,
            **context,
        )

    async def _refused(
        self, *, record: RecordT | None, error: ServiceError, form: dict[str, str]
    ) -> Response:
        """Show the form again with what was sent and why it was refused."""
        if not wants_html():
            raise error
        html = await self._render(
            "form", record=record, values=form, error_message=error.message
        )
        return Response(html, status=error.status, mimetype="text/html")

    def _see(self, record: RecordT) -> Response:
        return see_other(self.resource.url("show", record))

    async def listing(self) -> Response:
        """List every record."""
        found = await self.records.store().all()
        return await self._answer(
            [record.to_json() for record in found], "list", records=found
        )

    async def create(self) -> Response:
        """Add a record from a JSON body (201) or from the HTML form (303)."""
        noun = self.resource.noun
        if is_form():
            form = await read_form()
            try:
                fields = self.resource.parse_form(form)
            except InvalidFieldsError as e:
                return await self._refused(record=None, error=e, form=form.to_dict())
            record = await self.records.store().add(fields.with_id)
            logger.debug("%s %d added from the form", noun, record.id)
            return self._see(record)
        fields = self.resource.parse(await read_json(), None)
        record = await self.records.store().add(fields.with_id)
        logger.debug("%s %d added", noun, record.id)
        return await created(
            record.to_json(),
            location=self.resource.url("show", record),
            template=self.resource.templates("detail"),
            resource=self.resource,
            record=record,
        )

    async def new_form(self) -> str:
        """Show the form for a new record."""
        return await self._render("form", record=None, values={})

    async def search(self) -> Response:
        """Find records by exact ``name`` or by a case-insensitive part ``q``."""
        name = request.args.get("name")
        part = request.args.get("q")
        searched = name is not None or part is not None
        if not searched and not wants_html():
            raise InvalidFieldsError(
                "a search needs ?name=<exact name> or ?q=<part of a name>"
            )
        found = [
            record
            for record in await self.records.store().all()
            if searched and self.resource.matches(record, name=name, part=part)
        ]
        return await self._answer(
            [record.to_json() for record in found],
            "search",
            records=found,
            searched=searched,
            part=part or "",
        )

    async def show(self, record_id: int) -> Response:
        """Show one record."""
        record = await self.records.find(record_id)
        return await self._answer(record.to_json(), "detail", record=record)

    async def replace(self, record_id: int) -> Response:
        """Replace a record with the JSON body."""
        await self.records.find(record_id)
        record = self.resource.parse(await read_json(), record_id).with_id(record_id)
        await self.records.replace(record)
        return await self._answer(record.to_json(), "detail", record=record)

    async def delete(self, record_id: int) -> Response:
        """Remove a record."""
        return await self.records.delete(record_id)

    async def edit_form(self, record_id: int) -> str:
        """Show the form to change a record."""
        record = await self.records.find(record_id)
        return await self._render("form", record=record, values=record.form_values())

    async def edit(self, record_id: int) -> Response:
        """Change a record from the HTML form, then show it."""
        record = await self.records.find(record_id)
        form = await read_form()
        try:
            changed = self.resource.parse_form(form).with_id(record_id)
        except InvalidFieldsError as e:
            return await self._refused(record=record, error=e, form=form.to_dict())
        await self.records.replace(changed)
        return self._see(changed)

    async def delete_from_page(self, record_id: int) -> Response:
        """Remove a record from its page, then show the list."""
        return await self.records.delete_from_page(
            record_id, then=self.resource.url("listing")
        )


_View = Callable[[], Awaitable[Response | str]]
_RecordView = Callable[[int], Awaitable[Response | str]]


def _of_one(view: _RecordView) -> Callable[..., Awaitable[Response | str]]:
    """Adapt a view of one record to its rule, which names the id by resource."""

    async def by_id(**ids: int) -> Response | str:
        (record_id,) = ids.values()
        return await view(record_id)

    return by_id


def resource_blueprint(resource: Resource[RecordT], import_name: str) -> Blueprint:
    """Return the routes of ``resource``; ``import_name`` finds its own templates."""
    blueprint = Blueprint(
        resource.name,
        import_name,
        url_prefix=f"/{resource.name}",
        template_folder="templates",
    )
    views = _Views(resource)
    every: list[tuple[str, str, _View]] = [
        ("", "GET", views.listing),
        ("", "POST", views.create),
        ("/form", "GET", views.new_form),
        ("/search", "GET", views.search),
    ]
    one = f"/<int:{resource.id_name}>"
    each: list[tuple[str, str, _RecordView]] = [
        (one, "GET", views.show),
        (one, "PUT", views.replace),
        (one, "DELETE", views.delete),
        (f"{one}/form", "GET", views.edit_form),
        (f"{one}/form", "POST", views.edit),
        (f"{one}/delete", "POST", views.delete_from_page),
    ]
    for rule, method, view in every:
        blueprint.add_url_rule(rule, view.__name__, view, methods=[method])
    for rule, method, record_view in each:
        blueprint.add_url_rule(
            rule, record_view.__name__, _of_one(record_view), methods=[method]
        )
    return blueprint


def create_resource_app(
    blueprint: Blueprint,
    resource: Resource[RecordT],
    seed: Iterable[Callable[[int], RecordT]],
    *,
    settings: Settings | None,
) -> ServiceApp:
    """Return the app of a service that serves ``resource`` from a seeded store.

    ``blueprint`` is the one ``resource_blueprint`` made of ``resource``;
    settings come from the environment if not given.
    """
    app = create_app(
        resource.name, settings=settings if settings else Settings.from_environ()
    )
    resource.records.install(app, MemoryStore(seed))
    app.register_blueprint(blueprint)
    return app
