"""Run the order service: ``python3 -m services.order``."""

from services.kit import run
from services.order.app import create_app

raise SystemExit(run(create_app, service_name="order"))
