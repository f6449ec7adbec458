"""Catalog items: what one is, how a request describes one, and the seed.

Every pod starts with the same items under the same ids, so a client may ask
any pod for item 1 and get the same answer.
"""

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from services.kit import form_number, number, record_object, text

#: The highest price an item may have.
MAX_PRICE = 1_000_000.0

_SEED = (
    ("Espresso cup", 6.5),
    ("Tea pot", 24.0),
    ("Coffee beans, 1 kg", 18.9),
    ("Milk jug", 12.25),
    ("Sugar bowl", 8.75),
)


@dataclass(frozen=True)
class Item:
    """One thing the shop sells."""

    id: int
    name: str
    price: float

    @property
    def title(self) -> str:
        """Return what the item's page is headed with."""
        return self.name

    def to_json(self) -> dict[str, object]:
        """Return the item as the JSON object the API shows."""
        return asdict(self)

    def form_values(self) -> dict[str, str]:
        """Return the fields as the HTML form fills them in."""
        return {"name": self.name, "price": f"{self.price:g}"}


@dataclass(frozen=True)
class ItemFields:
    """What a client may set on an item: everything but its id."""

    name: str
    price: float

    def with_id(self, item_id: int) -> Item:
        """Return the item these fields describe under ``item_id``."""
        return Item(id=item_id, name=self.name, price=self.price)


def seed() -> list[Callable[[int], Item]]:
    """Return the builders of the items every pod starts with."""
    return [ItemFields(name=name, price=price).with_id for name, price in _SEED]


def parse_item(body: object, item_id: int | None = None) -> ItemFields:
    """Check a JSON body describing an item; ``item_id`` is the one in the URL."""
    data = record_object(body, fields=("name", "price"), record_id=item_id)
    return ItemFields(
        name=text(data, "name"), price=number(data, "price", maximum=MAX_PRICE)
    )


def parse_item_form(form: Mapping[str, str]) -> ItemFields:
    """Check the fields of the HTML item form."""
    return parse_item(
        {"name": form.get("name", ""), "price": form_number(form, "price")}
    )


def matches(item: Item, *, name: str | None, part: str | None) -> bool:
    """Tell whether ``item`` has exactly ``name`` and contains ``part``."""
    if name is not None and item.name != name:
        return False
    return part is None or part.casefold() in item.name.casefold()
