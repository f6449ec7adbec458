"""Run the customer service: ``python3 -m services.customer``."""

from services.customer.app import create_app
from services.kit import run

raise SystemExit(run(create_app, service_name="customer"))
