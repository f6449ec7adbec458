"""A resource of the kit on records of a test's own: rules, 404s, own templates."""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.kit import (
    Field,
    Resource,
    ServiceApp,
    Settings,
    create_resource_app,
    record_object,
    resource_blueprint,
    text,
)

pytestmark = pytest.mark.anyio

HTML = {"Accept": "text/html"}
Metric = Callable[..., Awaitable[float]]


@dataclass(frozen=True)
class Note:
    """A record with one field."""

    id: int
    text: str

    @property
    def title(self) -> str:
        """Return what the note's page is headed with."""
        return f"Note {self.id}"

    def to_json(self) -> dict[str, object]:
        """Return the note as JSON."""
        return {"id": self.id, "text": self.text}

    def form_values(self) -> dict[str, str]:
        """Return the note's form values."""
        return {"text": self.text}


@dataclass(frozen=True)
class NoteFields:
    """The text of a note."""

    text: str

    def with_id(self, note_id: int) -> Note:
        """Return the note under ``note_id``."""
        return Note(id=note_id, text=self.text)


def parse_note(body: object, note_id: int | None = None) -> NoteFields:
    """Check a JSON body describing a note."""
    data = record_object(body, fields=("text",), record_id=note_id)
    return NoteFields(text=text(data, "text"))


def parse_note_form(form: Mapping[str, str]) -> NoteFields:
    """Check the note form."""
    return parse_note({"text": form.get("text", "")})


def matches(note: Note, *, name: str | None, part: str | None) -> bool:
    """Tell whether the note's text is ``name`` and contains ``part``."""
    return name in (None, note.text) and (part is None or part in note.text)


NOTES = Resource[Note](
    name="notes",
    noun="note",
    plural="notes",
    title="Notes",
    search_title="Search the notes",
    search_label="Text contains",
    fields=(Field("text", "Text", column="Text"),),
    parse=parse_note,
    parse_form=parse_note_form,
    matches=matches,
)


def notes_app(make_settings: Callable[..., Settings], *, root: Path) -> ServiceApp:
    """Return an app serving two notes; ``root`` holds the app's own templates."""
    blueprint = resource_blueprint(NOTES, __name__)
    blueprint.root_path = str(root)
    seed = [NoteFields("first").with_id, NoteFields("second").with_id]
    return create_resource_app(blueprint, NOTES, seed, settings=make_settings())


async def test_the_rules_name_the_id_after_the_noun(
    make_settings: Callable[..., Settings], metric: Metric, tmp_path: Path
) -> None:
    client = notes_app(make_settings, root=tmp_path).test_client()

    found = await client.get("/notes/2")
    missing = await client.get("/notes/9")

    assert await found.get_json() == {"id": 2, "text": "second"}
    assert (await missing.get_json())["error"] == "note 9 does not exist; see /notes"
    rule = "/notes/<int:note_id>"
    for status, count in (("200", 1), ("404", 1)):
        labels = {"route": rule, "method": "GET", "status": status}
        assert await metric(client, "http_requests_total", labels) == count


async def test_a_template_of_the_service_replaces_the_page_of_the_kit(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    own = tmp_path / "templates" / "notes"
    own.mkdir(parents=True)
    (own / "detail.html").write_text("<p>own page of {{ record.text }}</p>")
    client = notes_app(make_settings, root=tmp_path).test_client()

    detail = await (await client.get("/notes/1", headers=HTML)).get_data(as_text=True)
    listing = await (await client.get("/notes", headers=HTML)).get_data(as_text=True)

    assert detail == "<p>own page of first</p>"
    assert "<h1>Notes</h1>" in listing
    assert 'href="/notes/2"' in listing
