"""Processes of the system under test, on free loopback ports, stopped by PID.

A service runs as ``python -m services.<name>`` from the project root; the
front door runs ``services/apache/entrypoint.sh`` from a copy of that folder,
as the image holds it, and as the image's user when the tests run as root.
Each listens on 127.0.0.1 only, writes a log file of its own, and is stopped
by the PID it was started with: SIGTERM first, SIGKILL if it does not exit in
time, then SIGKILL for any child it leaves behind (Apache's workers).
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
#: How long a process may take to pass its readiness probe.
READY_TIMEOUT_SECONDS = 30.0
#: How long a process may take to exit after SIGTERM, and after SIGKILL.
EXIT_TIMEOUT_SECONDS = 20.0
#: How long one request of the tests to a process may take.
REQUEST_TIMEOUT_SECONDS = 10.0
APACHE = Path("/usr/sbin/apache2")
APACHE_DIR = PROJECT_ROOT / "services" / "apache"
#: The user of the containers; Apache runs as it when the tests run as root.
CONTAINER_UID = 10001


def find_free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def children(pid: int) -> list[int]:
    """Return the PIDs whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The parent PID is the second field after the ")" ending the name.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def clean_environment(**variables: str) -> dict[str, str]:
    """Return an environment with only a search path, a locale and ``variables``."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        **variables,
    }


@dataclass
class ServiceProcess:
    """A process of the system under test, serving HTTP on a loopback port."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        """Return the URL the process answers at."""
        return f"http://{LOOPBACK}:{self.port}"

    def client(self, *, timeout: float = REQUEST_TIMEOUT_SECONDS) -> httpx.Client:
        """Return an HTTP client of this process and of nothing else."""
        # trust_env=False: a proxy named in the environment must not see loopback.
        return httpx.Client(base_url=self.base_url, trust_env=False, timeout=timeout)

    def log(self) -> str:
        """Return what the process wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        """Stop the process and its children by PID; return its exit status."""
        if self.process.poll() is None:
            left = children(self.process.pid)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=EXIT_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
            for child in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        return self.process.wait(timeout=EXIT_TIMEOUT_SECONDS)

    def __enter__(self) -> "ServiceProcess":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_ready(service: ServiceProcess) -> None:
    """Wait until ``service`` passes its readiness probe, or fail with its log."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    with service.client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                pytest.fail(
                    f"{service.name} exited with {service.process.returncode}:\n"
                    f"{service.log()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get("/health/ready").status_code == 200:
                    return
            time.sleep(0.05)
    pytest.fail(
        f"{service.name} not ready in {READY_TIMEOUT_SECONDS} s:\n{service.log()}"
    )


def _as_container_user() -> dict[str, Any]:
    """Return the Popen arguments that drop root to the containers' user."""
    if os.geteuid() != 0:
        return {}
    return {"user": CONTAINER_UID, "group": CONTAINER_UID, "extra_groups": []}


class ServiceStarter:
    """Start processes of the system under test and stop every one at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[ServiceProcess] = []
        self._scratch: list[Path] = []

    def _launch(
        self,
        name: str,
        command: list[str],
        *,
        port: int,
        log_path: Path,
        ready: bool,
        **popen: Any,
    ) -> ServiceProcess:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **popen,
            )
        service = ServiceProcess(
            name=name, port=port, process=process, log_path=log_path
        )
        self.started.append(service)
        if ready:
            wait_ready(service)
        return service

    def start(
        self, name: str, *, env: Mapping[str, str] | None = None, ready: bool = True
    ) -> ServiceProcess:
        """Start the service ``name`` on a free port; wait for readiness if asked.

        The pod is named ``<name>-<port>`` unless ``env`` names it.
        """
        port = find_free_port()
        settings = {
            "PYTHONDONTWRITEBYTECODE": "1",
            "BIND_HOST": LOOPBACK,
            "PORT": str(port),
            "POD_NAME": f"{name}-{port}",
            **(env or {}),
        }
        return self._launch(
            name,
            [sys.executable, "-m", f"services.{name}"],
            port=port,
            log_path=self.log_dir / f"{name}-{port}.log",
            ready=ready,
            cwd=PROJECT_ROOT,
            env=clean_environment(**settings),
        )

    def start_front_door(
        self, *, as_root: bool = False, **settings: str
    ) -> ServiceProcess:
        """Start Apache on a free port with ``settings`` (its backend URLs, ...)."""
        if not APACHE.exists():
            pytest.skip(f"the front door needs {APACHE}; make system installs it")
        drop = {} if as_root else _as_container_user()
        owner: int | None = drop.get("user")
        # Not below the tests' temporary folder: only its owner may enter that.
        root = Path(tempfile.mkdtemp(prefix="kube-harness-apache-"))
        self._scratch.append(root)
        root.chmod(0o755)
        conf = root / "conf"
        shutil.copytree(APACHE_DIR, conf)
        for path in [conf, *conf.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (conf / "entrypoint.sh").chmod(0o755)
        runtime = root / "tmp"
        runtime.mkdir()
        log_path = root / "httpd.log"
        log_path.touch()
        if owner is not None:
            # httpd reopens its stdout and stderr by /proc/self/fd as this user,
            # so they must be its own, as runc makes a container's pipes.
            for path in [conf, *conf.rglob("*"), runtime, log_path]:
                os.chown(path, owner, owner)

        port = find_free_port()
        environment = clean_environment(
            **{"BIND_HOST": LOOPBACK, "PORT": str(port), "TMPDIR": str(runtime)},
            **settings,
        )
        return self._launch(
            "apache",
            [str(conf / "entrypoint.sh")],
            port=port,
            log_path=log_path,
            ready=True,
            env=environment,
            **drop,
        )

    def stop_all(self) -> None:
        """Stop every process this starter started and remove its scratch folders."""
        for service in self.started:
            service.stop()
        for root in self._scratch:
            shutil.rmtree(root, ignore_errors=True)
