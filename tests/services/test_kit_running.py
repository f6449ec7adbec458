"""Real service processes stop gracefully: readiness fails, requests finish, exit 0."""

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from services.kit import Settings
from services.kit.running import hypercorn_config
from tests.services.service_processes import (
    EXIT_TIMEOUT_SECONDS,
    PROJECT_ROOT,
    READY_TIMEOUT_SECONDS,
    ServiceProcess,
    ServiceStarter,
    clean_environment,
)

pytestmark = pytest.mark.anyio

#: Long enough that the checks after SIGTERM run well inside the drain.
DRAIN_SECONDS = 5
#: Upper bound for a readiness change to become visible.
VISIBLE_WITHIN_SECONDS = 5.0


async def readiness_after_signal(client: httpx.AsyncClient, url: str) -> int:
    """Poll readiness until it fails (or the bound passes); return the status."""
    deadline = time.monotonic() + VISIBLE_WITHIN_SECONDS
    status = 200
    while status == 200 and time.monotonic() < deadline:
        status = (await client.get(f"{url}/health/ready")).status_code
        if status == 200:
            await asyncio.sleep(0.05)
    return status


@pytest.mark.parametrize(
    "signum",
    [
        pytest.param(signal.SIGTERM, id="sigterm"),
        pytest.param(signal.SIGINT, id="sigint"),
    ],
)
async def test_a_signal_fails_readiness_while_serving_goes_on_then_exits_0(
    start_service: Callable[..., ServiceProcess], signum: signal.Signals
) -> None:
    catalog = start_service("catalog", env={"DRAIN_SECONDS": str(DRAIN_SECONDS)})
    limits = httpx.Limits(max_keepalive_connections=0)

    async with httpx.AsyncClient(trust_env=False, timeout=5, limits=limits) as client:
        before = await client.get(f"{catalog.base_url}/health/ready")
        catalog.process.send_signal(signum)
        after = await readiness_after_signal(client, catalog.base_url)
        served = await client.get(f"{catalog.base_url}/catalog/1")

    exit_status = await asyncio.to_thread(
        catalog.process.wait, timeout=DRAIN_SECONDS + EXIT_TIMEOUT_SECONDS
    )
    assert before.status_code == 200
    assert after == 503
    assert served.status_code == 200
    assert exit_status == 0
    assert "stopped" in catalog.log()


async def slow_body(first: bytes, rest: bytes, *, pause: float) -> AsyncIterator[bytes]:
    """Yield ``first``, wait ``pause`` seconds, then yield ``rest``."""
    yield first
    await asyncio.sleep(pause)
    yield rest


async def test_a_request_in_flight_at_sigterm_still_completes(
    start_service: Callable[..., ServiceProcess],
) -> None:
    catalog = start_service("catalog", env={"DRAIN_SECONDS": "0"})
    body = b'{"name": "Late spoon", "price": 2}'
    headers = {"Content-Type": "application/json"}

    async with httpx.AsyncClient(trust_env=False, timeout=15) as client:
        # The same kept-alive connection carries both requests, so the server
        # has accepted it before the signal comes.
        warm = await client.get(f"{catalog.base_url}/catalog/1")
        request = asyncio.create_task(
            client.post(
                f"{catalog.base_url}/catalog",
                content=slow_body(body[:10], body[10:], pause=2.0),
                headers=headers,
            )
        )
        await asyncio.sleep(1.0)
        catalog.process.send_signal(signal.SIGTERM)
        response = await request

    exit_status = await asyncio.to_thread(
        catalog.process.wait, timeout=EXIT_TIMEOUT_SECONDS
    )
    assert warm.status_code == 200
    assert response.status_code == 201
    assert response.json()["name"] == "Late spoon"
    assert exit_status == 0


#: A service whose startup takes a minute, unless a signal cuts it short.
SLOW_STARTUP = """
import sys, time
from services.kit import create_app, run

def slow_app(settings):
    print("creating the app", flush=True)
    time.sleep(60)
    print("app created", flush=True)
    return create_app("slow", settings=settings)

sys.exit(run(slow_app, service_name="slow"))
"""


def _wait_for_text(path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while text not in path.read_text(errors="replace"):
        assert process.poll() is None, path.read_text(errors="replace")
        assert time.monotonic() < deadline, path.read_text(errors="replace")
        time.sleep(0.02)


@pytest.mark.parametrize(
    "signum",
    [
        pytest.param(signal.SIGTERM, id="sigterm"),
        pytest.param(signal.SIGINT, id="sigint"),
    ],
)
def test_a_signal_during_a_slow_startup_ends_it_at_once_with_status_0(
    tmp_path: Path, signum: signal.Signals
) -> None:
    output = tmp_path / "slow.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", SLOW_STARTUP],
            cwd=PROJECT_ROOT,
            env=clean_environment(PYTHONPATH=str(PROJECT_ROOT), POD_NAME="slow-1"),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_text(output, "creating the app", process)
        process.send_signal(signum)
        status = process.wait(timeout=EXIT_TIMEOUT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=EXIT_TIMEOUT_SECONDS)

    assert status == 0, output.read_text()
    assert "app created" not in output.read_text()
    assert "Traceback" not in output.read_text()


def _catches(pid: int, signum: signal.Signals) -> bool:
    """Tell whether process ``pid`` has a handler of its own for ``signum``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def test_a_sigterm_as_soon_as_the_service_catches_it_ends_it_unserved_with_0(
    service_starter: ServiceStarter,
) -> None:
    catalog = service_starter.start("catalog", ready=False)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    # Signals before the handler exists end any process (the interpreter is
    # still starting); from the moment it exists, startup must stop cleanly.
    while not _catches(catalog.process.pid, signal.SIGTERM):
        assert catalog.process.poll() is None, catalog.log()
        assert time.monotonic() < deadline, catalog.log()
        time.sleep(0.001)

    catalog.process.send_signal(signal.SIGTERM)
    status = catalog.process.wait(timeout=EXIT_TIMEOUT_SECONDS)

    assert status == 0, catalog.log()
    # Hypercorn says where it listens once it has bound: it never did.
    assert "Running on" not in catalog.log()
    assert "Traceback" not in catalog.log()


@pytest.mark.parametrize(
    ("host", "bind"),
    [
        pytest.param("0.0.0.0", "0.0.0.0:8080", id="ipv4"),
        pytest.param("::", "[::]:8080", id="ipv6-in-brackets"),
    ],
)
def test_hypercorn_binds_the_configured_address(host: str, bind: str) -> None:
    settings = Settings.from_environ({"POD_NAME": "p", "BIND_HOST": host})

    config = hypercorn_config(settings)

    assert config.bind == [bind]
    assert config.graceful_timeout == settings.graceful_timeout_seconds
