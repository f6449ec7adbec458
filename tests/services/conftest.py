"""Fixtures for the service tests: apps in process, upstreams as real processes.

Real processes come from :mod:`tests.services.service_processes`, as in
``tests/conftest.py``, which also has the per-test ``start_service``.
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

import pytest
from prometheus_client.parser import text_string_to_metric_families
from quart.typing import TestClientProtocol as Client

from services.kit import ServiceApp, Settings
from services.order import create_app as create_order_app
from tests.services.service_processes import ServiceProcess, ServiceStarter


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run the async tests on asyncio, which Quart and Hypercorn use."""
    return "asyncio"


def clean_settings(**overrides: str) -> Settings:
    """Return settings from an empty environment plus ``overrides``."""
    return Settings.from_environ({"POD_NAME": "test-pod", **overrides})


async def read_metric(client: Client, name: str, labels: Mapping[str, str]) -> float:
    """Scrape the app and return the sample ``name`` with ``labels``, else 0."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    text = await response.get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == dict(labels):
                return float(sample.value)
    return 0.0


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Make settings from an empty environment plus the given variables."""
    return clean_settings


@pytest.fixture
def metric() -> Callable[..., Awaitable[float]]:
    """Read one sample from an app's /metrics through its test client."""
    return read_metric


@pytest.fixture(scope="session")
def upstreams(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, ServiceProcess]]:
    """Run a real catalog and a real customer service for the whole session."""
    starter = ServiceStarter(tmp_path_factory.mktemp("upstreams"))
    try:
        yield {name: starter.start(name) for name in ("catalog", "customer")}
    finally:
        starter.stop_all()


@pytest.fixture
async def order_app(upstreams: dict[str, ServiceProcess]) -> AsyncIterator[ServiceApp]:
    """Serve an order app (in process) in front of the real upstreams."""
    app = create_order_app(
        clean_settings(
            CATALOG_URL=upstreams["catalog"].base_url,
            CUSTOMER_URL=upstreams["customer"].base_url,
            UPSTREAM_TIMEOUT_SECONDS="5",
        )
    )
    async with app.test_app():
        yield app
