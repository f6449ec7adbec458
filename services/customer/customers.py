"""Customers: what one is, how a request describes one, and the seed.

Every pod starts with the same customers under the same ids.
"""

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from services.kit import InvalidFieldsError, record_object, shown, text

#: The fields a client sets, in the order forms and tables show them.
FIELDS = ("name", "firstname", "email", "street", "city")

_SEED = (
    ("Lovelace", "Ada", "ada@example.org", "12 St James's Square", "London"),
    ("Hopper", "Grace", "grace@example.org", "1 Navy Way", "Arlington"),
    ("Turing", "Alan", "alan@example.org", "78 High Street", "Bletchley"),
    ("Noether", "Emmy", "emmy@example.org", "3 Bunsenstrasse", "Göttingen"),
)


@dataclass(frozen=True)
class CustomerFields:
    """What a client may set on a customer: everything but the id."""

    name: str
    firstname: str
    email: str
    street: str
    city: str

    def with_id(self, customer_id: int) -> "Customer":
        """Return the customer these fields describe under ``customer_id``."""
        return Customer(id=customer_id, **asdict(self))


@dataclass(frozen=True)
class Customer:
    """Someone who buys from the shop."""

    id: int
    name: str
    firstname: str
    email: str
    street: str
    city: str

    @property
    def title(self) -> str:
        """Return what the customer's page is headed with."""
        return f"{self.firstname} {self.name}"

    def to_json(self) -> dict[str, object]:
        """Return the customer as the JSON object the API shows."""
        return asdict(self)

    def form_values(self) -> dict[str, str]:
        """Return the fields as the HTML form fills them in."""
        return {name: str(getattr(self, name)) for name in FIELDS}


def seed() -> list[Callable[[int], Customer]]:
    """Return the builders of the customers every pod starts with."""
    return [CustomerFields(*row).with_id for row in _SEED]


def _email(data: Mapping[str, object]) -> str:
    value = text(data, "email", max_length=254)
    local, at, domain = value.partition("@")
    if (
        not at
        or not local
        or not domain
        or "@" in domain
        or any(c.isspace() for c in value)
    ):
        raise InvalidFieldsError(
            f"email must be an address such as ada@example.org, not {shown(value)}"
        )
    return value


def parse_customer(body: object, customer_id: int | None = None) -> CustomerFields:
    """Check a JSON body describing a customer; ``customer_id`` is the URL's."""
    data = record_object(body, fields=FIELDS, record_id=customer_id)
    return CustomerFields(
        name=text(data, "name"),
        firstname=text(data, "firstname"),
        email=_email(data),
        street=text(data, "street"),
        city=text(data, "city"),
    )


def parse_customer_form(form: Mapping[str, str]) -> CustomerFields:
    """Check the fields of the HTML customer form."""
    return parse_customer({name: form.get(name, "") for name in FIELDS})


def matches(customer: Customer, *, name: str | None, part: str | None) -> bool:
    """Tell whether ``customer`` has exactly ``name`` and ``part`` in a name."""
    if name is not None and customer.name != name:
        return False
    if part is None:
        return True
    wanted = part.casefold()
    return wanted in customer.name.casefold() or wanted in customer.firstname.casefold()
