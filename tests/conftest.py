"""Fixtures that run the system under test on loopback, for any test that needs it.

The processes come from :mod:`tests.services.service_processes`: each listens
on a free port of 127.0.0.1 and is stopped by its PID when the test ends,
whether it passed or not.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.services.service_processes import (
    ServiceProcess,
    ServiceStarter,
    find_free_port,
)


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Find TCP ports of 127.0.0.1 that nothing listens on."""
    return find_free_port


@pytest.fixture
def service_starter(tmp_path: Path) -> Iterator[ServiceStarter]:
    """Start processes for one test; every one is stopped when it ends."""
    starter = ServiceStarter(tmp_path)
    try:
        yield starter
    finally:
        starter.stop_all()


@pytest.fixture
def start_service(service_starter: ServiceStarter) -> Callable[..., ServiceProcess]:
    """Start ``python -m services.<name>`` processes for one test."""
    return service_starter.start


@pytest.fixture
def start_front_door(
    service_starter: ServiceStarter,
) -> Callable[..., ServiceProcess]:
    """Start Apache front doors for one test (skips where Apache is missing)."""
    return service_starter.start_front_door
