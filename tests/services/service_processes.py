"""Service processes for the tests: started on free loopback ports, stopped by PID.

Each process runs ``python -m services.<name>`` from the project root, listens
on 127.0.0.1 only, and is stopped by the PID it was started with: SIGTERM
first, SIGKILL if it does not exit in time.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: How long a service process may take to pass its readiness probe.
READY_TIMEOUT_SECONDS = 30.0
#: How long a service process may take to exit after SIGTERM.
EXIT_TIMEOUT_SECONDS = 20.0


def find_free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServiceProcess:
    """A service started as ``python -m services.<name>``."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        """Return the URL the service answers at."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Return what the process wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """Stop the process by its PID, SIGTERM first; return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=EXIT_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=EXIT_TIMEOUT_SECONDS)


def wait_ready(service: ServiceProcess) -> None:
    """Wait until ``service`` passes its readiness probe, or fail."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                pytest.fail(f"{service.name} exited early:\n{service.log()}")
            try:
                if client.get(f"{service.base_url}/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    pytest.fail(
        f"{service.name} not ready in {READY_TIMEOUT_SECONDS} s:\n{service.log()}"
    )


class ServiceStarter:
    """Start service processes and stop every one of them at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[ServiceProcess] = []

    def start(
        self, name: str, *, env: Mapping[str, str] | None = None, ready: bool = True
    ) -> ServiceProcess:
        """Start the service ``name`` on a free port; wait for readiness if asked."""
        port = find_free_port()
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "BIND_HOST": "127.0.0.1",
            "PORT": str(port),
            "POD_NAME": f"{name}-{port}",
            **(env or {}),
        }
        log_path = self.log_dir / f"{name}-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=PROJECT_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        service = ServiceProcess(
            name=name, port=port, process=process, log_path=log_path
        )
        self.started.append(service)
        if ready:
            wait_ready(service)
        return service

    def stop_all(self) -> None:
        """Stop every process this starter started."""
        for service in self.started:
            service.stop()
