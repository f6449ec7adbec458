"""Orders: what one is, how a request describes one, and how it is priced.

An order names a customer and counts of catalog items. Both are checked
against their services when the order is placed, and the total is computed
then from the catalog's prices, in decimal so that 0.1 + 0.2 stays 0.3.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from services.kit import InvalidFieldsError, form_integer, integer, json_object, shown

#: The most lines one order may have.
MAX_LINES = 50
#: The most pieces of one item one line may order.
MAX_COUNT = 1000

_COUNT_FIELD = re.compile(r"count-([0-9]{1,18})")


@dataclass(frozen=True)
class Line:
    """So many pieces of one catalog item."""

    item_id: int
    count: int


@dataclass(frozen=True)
class OrderFields:
    """What a client says when placing an order."""

    customer_id: int
    lines: tuple[Line, ...]

    @property
    def item_ids(self) -> list[int]:
        """Return the distinct item ids of the lines, in order of appearance."""
        return list(dict.fromkeys(line.item_id for line in self.lines))

    def priced(self, prices: Mapping[int, float]) -> Callable[[int], "Order"]:
        """Return the builder of the order at ``prices`` (item id to unit price)."""
        total = sum(
            (Decimal(str(prices[line.item_id])) * line.count for line in self.lines),
            Decimal(0),
        )

        def build(order_id: int) -> Order:
            return Order(
                id=order_id,
                customer_id=self.customer_id,
                lines=self.lines,
                total=float(total),
            )

        return build


@dataclass(frozen=True)
class Order:
    """A placed order with the total it cost when placed."""

    id: int
    customer_id: int
    lines: tuple[Line, ...]
    total: float

    def to_json(self) -> dict[str, object]:
        """Return the order as the JSON object the API shows."""
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "lines": [
                {"item_id": line.item_id, "count": line.count} for line in self.lines
            ],
            "total": self.total,
        }


def _line(value: object, position: int) -> Line:
    if not isinstance(value, dict):
        raise InvalidFieldsError(
            f"line {position} must be an object with item_id and count, "
            f"not {shown(value)}"
        )
    data = json_object(value, required=("item_id", "count"))
    return Line(
        item_id=integer(data, "item_id"),
        count=integer(data, "count", maximum=MAX_COUNT),
    )


def parse_order(body: object) -> OrderFields:
    """Check a JSON body that places an order."""
    data = json_object(body, required=("customer_id", "lines"))
    customer_id = integer(data, "customer_id")
    lines = data["lines"]
    if not isinstance(lines, list) or not 1 <= len(lines) <= MAX_LINES:
        raise InvalidFieldsError(
            f"lines must be a list of 1 to {MAX_LINES} lines, not {shown(lines)}"
        )
    return OrderFields(
        customer_id=customer_id,
        lines=tuple(_line(line, number) for number, line in enumerate(lines, 1)),
    )


def parse_order_form(form: Mapping[str, str]) -> OrderFields:
    """Check the HTML order form: a customer and ``count-<item id>`` fields."""
    lines: list[dict[str, object]] = []
    for key, value in form.items():
        match = _COUNT_FIELD.fullmatch(key)
        if match is None or value.strip() in ("", "0"):
            continue
        lines.append({"item_id": int(match[1]), "count": form_integer(form, key)})
    if not lines:
        raise InvalidFieldsError(
            "the order has no items; give a count for at least one"
        )
    return parse_order(
        {"customer_id": form_integer(form, "customer_id"), "lines": lines}
    )
