"""The catalog's URLs: the kit's resource routes, serving items at ``/catalog``.

What is the catalog's own is here: the words on its pages and how they show
an item's fields. The routes, the JSON and the errors are the kit's.
"""

from services.catalog.items import Item, matches, parse_item, parse_item_form
from services.kit import Field, Resource, resource_blueprint

ITEMS = Resource[Item](
    name="catalog",
    noun="item",
    plural="items",
    title="Catalog",
    search_title="Search the catalog",
    search_label="Name contains",
    fields=(
        Field("name", "Name", column="Name", input=(("maxlength", "200"),)),
        Field(
            "price",
            "Price",
            column="Price",
            number_format="%.2f",
            input=(("type", "number"), ("min", "0"), ("step", "0.01")),
        ),
    ),
    parse=parse_item,
    parse_form=parse_item_form,
    matches=matches,
)

catalog = resource_blueprint(ITEMS, __name__)
