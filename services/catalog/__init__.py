"""The catalog service: the items a shop sells, with their prices.

The order service asks it for each item an order names, so its answer time
and its pods' request counts show how traffic spreads downstream.
"""

from services.catalog.app import create_app

__all__ = ["create_app"]
