"""The customer service: the people who place orders.

The order service asks it whether an order's customer exists, one call per
order, on a connection of its own.
"""

from services.customer.app import create_app

__all__ = ["create_app"]
