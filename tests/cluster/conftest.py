"""The embedded cluster the ``cluster`` tests share: brought up once per session.

The tests use a cluster of their own (``test``, with its own state
directory), so a cluster a user keeps running is never touched: the tests
are skipped while it runs, since both would want the same ports.
"""

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.cluster import local, networking
from harness.cluster.settings import ClusterSettings

#: Seconds ``up`` may take, warm caches assumed.
UP_TIMEOUT = 120.0


@dataclass(frozen=True)
class RunningCluster:
    """The test cluster, and what the machine looked like before it came up."""

    settings: ClusterSettings
    kubectl: Path
    before: networking.Snapshot

    def kubectl_run(self, *args: str, timeout: float = 60.0) -> str:
        """Run kubectl against the cluster and return its output."""
        done = subprocess.run(
            [
                str(self.kubectl),
                f"--kubeconfig={self.settings.layout.admin_kubeconfig}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def wait_for(
    condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(interval)


@pytest.fixture(scope="session")
def cluster() -> Iterator[RunningCluster]:
    """Bring the test cluster up from nothing; take it down after the session."""
    from harness import binaries, imaging

    if os.geteuid() != 0:
        pytest.skip("the cluster tests need root")
    found = binaries.find()
    if found is None:
        pytest.skip("the binaries are not built: run python -m harness.binaries")
    if local.status(ClusterSettings()).running:
        pytest.skip("cluster local is running: `harness cluster down` to run these")
    imaging.build(names=["pause", "catalog"])

    settings = ClusterSettings(name="test")
    local.down(settings, purge=True)
    before = networking.snapshot()
    try:
        local.up(settings, timeout=UP_TIMEOUT)
        local.load_images(settings, names=["catalog"])
        yield RunningCluster(settings=settings, kubectl=found.kubectl, before=before)
    finally:
        # The state (logs above all) stays for a post-mortem; the next
        # session purges it before it starts.
        local.down(settings)
