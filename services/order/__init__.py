"""The order service: orders of catalog items by customers.

Creating an order calls the customer and catalog services, so an order
request fans out over the cluster; with keep-alive off every such call opens
a connection of its own, which kube-proxy balances afresh.
"""

from services.order.app import create_app

__all__ = ["create_app"]
