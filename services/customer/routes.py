"""The customer service's URLs: the kit's resource routes, at ``/customer``.

What is the customer service's own is here: the words on its pages and how
they show a customer's fields. The routes, the JSON and the errors are the
kit's.
"""

from services.customer.customers import (
    Customer,
    matches,
    parse_customer,
    parse_customer_form,
)
from services.kit import Field, Resource, resource_blueprint

CUSTOMERS = Resource[Customer](
    name="customer",
    noun="customer",
    plural="customers",
    title="Customers",
    search_title="Search customers",
    search_label="Name or first name contains",
    fields=(
        Field("name", "Name", column="Name", input=(("maxlength", "200"),)),
        Field(
            "firstname", "Firstname", column="First name", input=(("maxlength", "200"),)
        ),
        Field(
            "email",
            "Email",
            column="Email",
            input=(("type", "email"), ("maxlength", "254")),
        ),
        Field("street", "Street", input=(("maxlength", "200"),)),
        Field("city", "City", column="City", input=(("maxlength", "200"),)),
    ),
    parse=parse_customer,
    parse_form=parse_customer_form,
    matches=matches,
)

customer = resource_blueprint(CUSTOMERS, __name__)
