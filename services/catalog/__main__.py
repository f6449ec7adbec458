"""Run the catalog service: ``python3 -m services.catalog``."""

from services.catalog.app import create_app
from services.kit import run

raise SystemExit(run(create_app, service_name="catalog"))
