"""Tests of harness.containerd: its config, and a real private containerd."""

import json
import os
import shutil
import socket
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import imaging
from harness.containerd import PAUSE_IMAGE, Containerd
from harness.errors import CommandError, UsageError
from harness.progress import Progress


@pytest.fixture
def home() -> Iterator[Path]:
    """Make a short folder for a containerd (a socket path has at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="khc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_config_keeps_every_path_inside_home_and_is_ready_for_a_kubelet(
    home: Path,
) -> None:
    config = tomllib.loads(Containerd(home).write_config().read_text())
    assert config["root"] == str(home / "root")
    assert config["state"] == str(home / "state")
    assert config["grpc"]["address"] == str(home / "containerd.sock")
    assert config["plugins"]["io.containerd.internal.v1.opt"]["path"].startswith(
        str(home)
    )
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == PAUSE_IMAGE == "localhost/kube-harness/pause:0.1.0"
    assert cri["cni"] == {
        "bin_dir": "/usr/lib/cni",
        "conf_dir": str(home / "cni/net.d"),
    }
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is False
    assert runc["options"]["Root"].startswith(str(home))
    assert cri["containerd"]["snapshotter"] == "overlayfs"


def test_config_overrides_merge_into_the_defaults(home: Path) -> None:
    overrides = {
        "plugins": {"io.containerd.grpc.v1.cri": {"max_concurrent_downloads": 1}}
    }
    config = Containerd(home, config_overrides=overrides).config()
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["max_concurrent_downloads"] == 1
    assert cri["restrict_oom_score_adj"] is True


def test_a_home_too_long_for_a_socket_is_a_usage_error_naming_it(
    tmp_path: Path,
) -> None:
    long_home = tmp_path / ("x" * 100)
    with pytest.raises(UsageError, match="x" * 100):
        Containerd(long_home)


def test_stopping_a_containerd_that_never_started_does_nothing(home: Path) -> None:
    daemon = Containerd(home)
    assert daemon.pid is None
    daemon.stop()
    assert daemon.pid is None


def test_stopping_a_containerd_that_ended_after_its_pid_was_read_does_not_fail(
    home: Path,
) -> None:
    # Above the kernel's largest PID: no process has it, as with a daemon
    # that exited between the check of its PID and the signal.
    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1

    class EndedAfterTheCheck(Containerd):
        @property
        def pid(self) -> int | None:
            return gone

    daemon = EndedAfterTheCheck(home)
    daemon.pid_path.parent.mkdir(parents=True, exist_ok=True)
    daemon.pid_path.write_text(f"{gone}\n")

    daemon.stop(remove_containers=False)

    assert not daemon.pid_path.exists()


# --- a real containerd -----------------------------------------------------------


def _require_runtime() -> None:
    """Skip when containerd and buildah cannot be installed here; fail when they can."""
    if os.geteuid() != 0:
        pytest.skip("a private containerd and image builds need root")
    missing = [
        tool
        for tool in ("containerd", "ctr", "runc", "buildah", "debootstrap")
        if shutil.which(tool) is None
    ]
    if missing and shutil.which("apt-get") is None:
        pytest.skip(f"{', '.join(missing)} missing and no apt-get to install them")
    if missing:
        pytest.fail(f"{', '.join(missing)} missing; install them with make system")


@pytest.fixture(scope="module")
def catalog_archive() -> Path:
    """Build the catalog image (cached after the first build) and return its archive."""
    _require_runtime()
    images = imaging.build(names=["catalog"], progress=Progress("test", quiet=True))
    return next(image.archive for image in images if image.name == "catalog")


def _mounts() -> set[str]:
    # Mount ids and parents differ between readings; compare where and what.
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return {" ".join(line.split(" ")[3:]) for line in lines}


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str, *, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    # No proxy handler: a request to 127.0.0.1 goes nowhere else.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        headers = {key.lower(): value for key, value in response.headers.items()}
        return response.status, headers, response.read()


def _wait_ready(url: str, *, timeout: float, log: Path) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _, _ = _get(url, timeout=1.0)
            return status
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{url}: {e}; container log:\n{_text(log)}"
                ) from None
            time.sleep(0.1)


@pytest.mark.containerd
def test_the_catalog_image_serves_from_a_private_containerd_and_leaves_nothing_behind(
    catalog_archive: Path, home: Path
) -> None:
    mounts_before = _mounts()
    daemon = Containerd(home)
    daemon.start()
    try:
        assert daemon.pid is not None
        assert _processes_mentioning(str(daemon.config_path)) == [daemon.pid]
        reference = daemon.import_archive(catalog_archive)
        assert reference == imaging.reference("catalog")
        port = _free_port()
        with daemon.running(
            reference,
            name="catalog-test",
            env={"PORT": str(port), "BIND_HOST": "127.0.0.1", "POD_NAME": "c-1"},
        ) as container:
            base = f"http://127.0.0.1:{port}"
            ready = _wait_ready(f"{base}/health/ready", timeout=30.0, log=container.log)
            assert ready == 200
            status, headers, body = _get(f"{base}/catalog")
            assert status == 200
            assert headers["x-served-by"] == "c-1"
            assert isinstance(json.loads(body), list)
            assert daemon.task_status("catalog-test") == "RUNNING"
            pid = _task_pid(daemon, "catalog-test")
            assert _status_uids(pid) == {10001}
        assert "catalog-test" not in daemon.ctr("containers", "list", "--quiet").stdout
        assert container.log.read_text().strip()
    finally:
        daemon.stop()
    assert daemon.pid is None
    assert _processes_mentioning(str(home)) == []
    assert _mounts() == mounts_before


@pytest.mark.containerd
@pytest.mark.parametrize(
    ("read_only", "mounted", "refusal"),
    [
        pytest.param(True, "ro", "Read-only file system", id="read-only"),
        # The control: the same check sees a writable root when asked for one.
        pytest.param(False, "rw", "Permission denied", id="writable"),
    ],
)
def test_the_root_file_system_of_a_container_is_read_only(
    catalog_archive: Path, home: Path, read_only: bool, mounted: str, refusal: str
) -> None:
    name = f"root-{mounted}-test"
    with Containerd(home) as daemon:
        reference = daemon.import_archive(catalog_archive)
        with daemon.running(
            reference,
            name=name,
            read_only=read_only,
            args=[
                "sh",
                "-c",
                "trap 'exit 0' TERM; touch /probe 2>&1; id -u; sleep 30 & wait",
            ],
        ) as container:
            deadline = time.monotonic() + 10.0
            while "10001" not in _text(container.log):
                assert time.monotonic() < deadline, _text(container.log)
                time.sleep(0.1)
            root_options = _root_mount_options(_task_pid(daemon, name))

            assert refusal in _text(container.log)
            assert mounted in root_options


def _root_mount_options(pid: int) -> set[str]:
    """Return the options of the ``/`` mount that process ``pid`` sees."""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        # Fields: id, parent, device, root, mount point, mount options, ...
        if fields[4] == "/":
            return set(fields[5].split(","))
    raise AssertionError(f"PID {pid} sees no / mount")


@pytest.mark.containerd
def test_containers_a_failed_removal_leaves_are_killed_by_pid_before_unmounting(
    catalog_archive: Path, home: Path
) -> None:
    class RemovalFails(Containerd):
        def _remove_all_containers(self) -> None:
            raise CommandError("ctr could not remove the containers (on purpose)")

    mounts_before = _mounts()
    daemon = RemovalFails(home)
    daemon.start()
    try:
        reference = daemon.import_archive(catalog_archive)
        daemon.run(reference, name="left-running", args=["sleep", "60"])
        # A task that has ended still has its shim until containerd deletes it.
        daemon.run(reference, name="left-ended", args=["true"])
        deadline = time.monotonic() + 10.0
        while daemon.task_status("left-ended") != "STOPPED":
            assert time.monotonic() < deadline, daemon.ctr("tasks", "list").stdout
            time.sleep(0.1)
        task = _task_pid(daemon, "left-running")
        shims = _processes_mentioning(str(daemon.socket))
        bundles = daemon.state / "io.containerd.runtime.v2.task" / "k8s.io"
        sockets = [
            Path((bundle / "address").read_text().removeprefix("unix://"))
            for bundle in bundles.iterdir()
        ]
        assert len(shims) == len(sockets) == 2
        assert all(path.exists() for path in sockets)
    finally:
        daemon.stop()

    assert _ended(task)
    assert [path for path in sockets if path.exists()] == []
    assert _processes_mentioning(str(home)) == []
    assert _mounts() == mounts_before
    assert not list(Path("/sys/fs/cgroup").glob("*/left-*"))


def _ended(pid: int) -> bool:
    """Tell whether ``pid`` has ended (a zombie waiting to be reaped has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _task_pid(daemon: Containerd, name: str) -> int:
    for line in daemon.ctr("tasks", "list").stdout.splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            return int(fields[1])
    raise AssertionError(f"no task {name}")


def _status_uids(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(uid) for uid in line.split()[1:]}
    raise AssertionError(f"no Uid line for PID {pid}")
