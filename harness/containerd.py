"""A containerd of the harness's own, beside whatever the machine runs.

It keeps its root, state, socket, config and log under one folder, so it
never meets the machine's containerd nor leaves anything in the machine's
default paths, and its CRI settings are ready for a kubelet: cgroupfs
(cgroups are v1 here and PID 1 is not systemd), ``restrict_oom_score_adj``
(root lacks ``CAP_SYS_RESOURCE`` here, and runc fails without it), Debian's
CNI plugins in ``/usr/lib/cni``, and our own pause image as the sandbox.

The daemon is our child: it is stopped by the PID we recorded, never by
name, and whatever it left mounted under its folders is unmounted after.
Containers a stop could not remove through containerd are killed by the
PIDs of their tasks and shims, as containerd's state folder records them.
"""

import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from harness import __version__, commands
from harness.errors import CommandError, HarnessError, UsageError

logger = logging.getLogger(__name__)

#: The sandbox (pause) image that :mod:`harness.imaging` builds.
PAUSE_IMAGE = f"localhost/kube-harness/pause:{__version__}"

#: Where Debian's containernetworking-plugins package puts the CNI plugins.
CNI_BIN_DIR = Path("/usr/lib/cni")

#: The longest socket path a Unix socket takes, less the ".ttrpc" containerd adds.
_MAX_SOCKET_PATH = 107 - len(".ttrpc")

# Plugins that only log errors on this machine (no btrfs, zfs, devmapper or
# aufs here) or that would send traces somewhere.
_DISABLED_PLUGINS = (
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)


@dataclass(frozen=True)
class Container:
    """A container started by :meth:`Containerd.run`."""

    name: str
    namespace: str
    image: str
    #: The file its standard output and error go to.
    log: Path


class Containerd:
    """Start, use and stop a private containerd whose files all live in one folder.

    ``home`` holds ``config.toml``, ``containerd.log``, ``containerd.pid``,
    the socket ``containerd.sock``, and the ``root`` and ``state`` folders.
    Keep ``home`` short: a Unix socket path has at most 107 bytes.

    TODO: containerd 1.6 puts its shims' sockets in /run/containerd/s
    whatever the config says; each socket goes with its shim (``stop``
    removes those of shims it had to kill), the folder stays (and may be
    shared with the machine's own containerd).
    """

    def __init__(
        self,
        home: Path,
        *,
        sandbox_image: str = PAUSE_IMAGE,
        snapshotter: str = "overlayfs",
        cni_conf_dir: Path | None = None,
        config_overrides: Mapping[str, Any] | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.home = Path(os.path.abspath(home))
        self.root = self.home / "root"
        self.state = self.home / "state"
        self.socket = self.home / "containerd.sock"
        self.config_path = self.home / "config.toml"
        self.log_path = self.home / "containerd.log"
        self.pid_path = self.home / "containerd.pid"
        self.cni_conf_dir = cni_conf_dir or self.home / "cni" / "net.d"
        self.sandbox_image = sandbox_image
        self.snapshotter = snapshotter
        self.config_overrides = dict(config_overrides or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        if len(os.fsencode(self.socket)) > _MAX_SOCKET_PATH:
            raise UsageError(
                f"containerd home {self.home} makes a socket path longer than "
                f"{_MAX_SOCKET_PATH} bytes; choose a shorter folder"
            )

    # --- configuration --------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Return containerd's configuration, as the TOML file will hold it."""
        runc_options = {"SystemdCgroup": False, "Root": str(self.state / "runc")}
        cri = {
            "sandbox_image": self.sandbox_image,
            "restrict_oom_score_adj": True,
            "systemd_cgroup": False,
            "disable_tcp_service": True,
            "stream_server_address": "127.0.0.1",
            "stream_server_port": "0",
            "netns_mounts_under_state_dir": True,
            "containerd": {
                "snapshotter": self.snapshotter,
                "default_runtime_name": "runc",
                "runtimes": {
                    "runc": {
                        "runtime_type": "io.containerd.runc.v2",
                        "options": runc_options,
                    }
                },
            },
            "cni": {
                "bin_dir": str(CNI_BIN_DIR),
                "conf_dir": str(self.cni_conf_dir),
            },
        }
        config: dict[str, Any] = {
            "version": 2,
            "root": str(self.root),
            "state": str(self.state),
            "disabled_plugins": list(_DISABLED_PLUGINS),
            "grpc": {"address": str(self.socket)},
            "plugins": {
                # Left to its default, this plugin creates /opt/containerd.
                "io.containerd.internal.v1.opt": {"path": str(self.state / "opt")},
                "io.containerd.grpc.v1.cri": cri,
            },
        }
        return _merged(config, self.config_overrides)

    def write_config(self) -> Path:
        """Write ``config.toml`` and the folders it names; return its path."""
        for folder in (self.home, self.root, self.state, self.cni_conf_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(tomli_w.dumps(self.config()))
        return self.config_path

    # --- the daemon -----------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Return the PID of our running containerd, None if it is not running."""
        if self._process is not None:
            return self._process.pid if self._process.poll() is None else None
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        # A recorded PID is trusted only while it still runs our config file:
        # PIDs are reused.
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return os.fsencode(self.config_path) in argv

    def start(self) -> None:
        """Start containerd as our child and wait until it answers on its socket."""
        binary = commands.require("containerd", package="containerd")
        commands.require("ctr", package="containerd")
        commands.require_root(why="containerd mounts file systems and runs runc")
        if self.pid is not None:
            raise HarnessError(
                f"a containerd with {self.config_path} already runs as PID "
                f"{self.pid}; stop it first"
            )
        self.write_config()
        self.socket.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{self._process.pid}\n")
        logger.info("containerd started as PID %d in %s", self._process.pid, self.home)
        try:
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise

    def _wait_until_answering(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process.poll() is not None:
                raise CommandError(
                    f"containerd exited with status {self._process.returncode} at "
                    f"start; see {self.log_path}",
                    output_tail=self.log_tail(),
                )
            if self.socket.exists():
                done = self.ctr("version", timeout=5.0, check=False)
                if done.returncode == 0:
                    return
            if time.monotonic() > deadline:
                raise CommandError(
                    f"containerd did not answer on {self.socket} within "
                    f"{self.start_timeout:g}s; see {self.log_path}",
                    output_tail=self.log_tail(),
                )
            time.sleep(0.2)

    def stop(self, *, remove_containers: bool = True) -> None:
        """Stop containerd by its PID and unmount what it left under its folders.

        With ``remove_containers``, every container it runs is killed and
        deleted first, so that no shim or container outlives it; what the
        removal could not end is killed by the PIDs containerd recorded for
        its tasks, before the unmounting.
        """
        pid = self.pid
        leftovers = _Leftovers(tasks={}, shims=frozenset(), sockets=frozenset())
        if remove_containers:
            if pid is not None:
                try:
                    self._remove_all_containers()
                except CommandError as e:
                    logger.warning(
                        "containerd in %s: removing containers: %s", self.home, e
                    )
            leftovers = self._leftovers(ask=pid is not None)
        if pid is not None:
            self._terminate(pid)
        if remove_containers:
            self._kill_leftovers(leftovers)
            self._delete_runc_leftovers()
        self._process = None
        self.pid_path.unlink(missing_ok=True)
        for sock in (self.socket, self.socket.with_name(self.socket.name + ".ttrpc")):
            sock.unlink(missing_ok=True)
        for folder in (self.state, self.root):
            if folder.exists():
                commands.unmount_under(folder)

    def _terminate(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            # It ended between the check of its PID and the signal.
            logger.info("containerd PID %d had already stopped", pid)
            return
        if not self._wait_gone(pid, self.stop_timeout):
            logger.warning(
                "containerd PID %d ignored SIGTERM for %gs; killing it",
                pid,
                self.stop_timeout,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, 10.0)
        logger.info("containerd PID %d stopped", pid)

    # --- what outlives a failed removal ---------------------------------------

    def _delete_runc_leftovers(self) -> None:
        """Have runc delete the containers it still knows, and their cgroups.

        The shims run runc with a root of one folder per namespace under our
        state folder; a container left there keeps its cgroups until runc
        deletes it.
        """
        runc_root = self.state / "runc"
        for recorded in sorted(runc_root.glob("*/*/state.json")):
            root, name = recorded.parent.parent, recorded.parent.name
            logger.warning(
                "containerd in %s: deleting container %s that runc still holds",
                self.home,
                name,
            )
            with contextlib.suppress(CommandError):
                done = commands.run(
                    ["runc", "--root", root, "delete", "--force", name],
                    timeout=30.0,
                    check=False,
                )
                if done.returncode != 0:
                    logger.warning(
                        "runc delete %s failed: %s", name, commands.tail(done.stderr)
                    )

    def _leftovers(self, *, ask: bool) -> "_Leftovers":
        """Return the tasks still running and the shims still serving our socket.

        The task PIDs come from the ``init.pid`` files containerd keeps in
        each task's bundle under our state folder and, when ``ask`` is set,
        from ``ctr tasks list``; a task's shim is its parent process. A shim
        whose task has ended is found by the socket its bundle names: the
        kernel tells which processes hold it. Each counts only while it is a
        shim started for our socket.
        """
        pids: set[int] = set()
        shims: set[int] = set()
        bundles = self.state / "io.containerd.runtime.v2.task"
        for recorded in bundles.glob("*/*/init.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids.add(int(recorded.read_text().strip()))
        sockets = set()
        for address in bundles.glob("*/*/address"):
            path = _socket_path(address)
            if path is not None:
                sockets.add(path)
                shims |= _listeners(path)
        if ask:
            with contextlib.suppress(CommandError):
                for namespace in self.namespaces():
                    listed = self.ctr("tasks", "list", namespace=namespace, timeout=10)
                    for line in listed.stdout.splitlines()[1:]:
                        fields = line.split()
                        if len(fields) >= 2 and fields[1].isdigit():
                            pids.add(int(fields[1]))
        tasks: dict[int, int] = {}
        for task in sorted(pids):
            parent = _parent(task)
            if parent is not None and self._is_our_shim(parent):
                tasks[task] = parent
        shims = {
            shim for shim in shims | set(tasks.values()) if self._is_our_shim(shim)
        }
        return _Leftovers(
            tasks=tasks, shims=frozenset(shims), sockets=frozenset(sockets)
        )

    def _is_our_shim(self, pid: int) -> bool:
        # A shim is started with "-address <our socket>": PIDs are reused,
        # the socket path is ours alone.
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        wanted = os.fsencode(self.socket)
        return any(
            flag == b"-address" and value == wanted
            for flag, value in itertools.pairwise(argv)
        )

    def _kill_leftovers(self, leftovers: "_Leftovers") -> None:
        """Kill each task, then each shim, by PID, checking each is still ours."""
        for task, shim in leftovers.tasks.items():
            if _parent(task) == shim and self._is_our_shim(shim):
                logger.warning(
                    "containerd in %s: killing task PID %d that outlived it",
                    self.home,
                    task,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(task, signal.SIGKILL)
        # Each shim reaps its task before it goes in turn.
        _wait_all_gone(leftovers.tasks, timeout=self.stop_timeout)
        for shim in sorted(leftovers.shims):
            if self._is_our_shim(shim):
                logger.warning(
                    "containerd in %s: killing shim PID %d that outlived it",
                    self.home,
                    shim,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(shim, signal.SIGKILL)
        _wait_all_gone(leftovers.shims, timeout=self.stop_timeout)
        # A killed shim leaves its socket file behind, in a folder shared
        # with other containerds; it goes once nothing holds it any more.
        for path in leftovers.sockets:
            if not _listeners(path):
                path.unlink(missing_ok=True)

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self._is_ours(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def __enter__(self) -> "Containerd":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, *, lines: int = commands.TAIL_LINES) -> str:
        """Return the last lines containerd logged."""
        if not self.log_path.exists():
            return ""
        return commands.tail(self.log_path.read_text(errors="replace"), lines=lines)

    # --- the ctr client -------------------------------------------------------

    def ctr(
        self,
        *args: str | os.PathLike[str],
        namespace: str = "k8s.io",
        timeout: float = 60.0,
        check: bool = True,
    ) -> commands.Completed:
        """Run ``ctr ARGS`` against our containerd in ``namespace``."""
        return commands.run(
            ["ctr", "--address", self.socket, "--namespace", namespace, *args],
            timeout=timeout,
            check=check,
        )

    def namespaces(self) -> list[str]:
        """Return the containerd namespaces that exist."""
        return self.ctr("namespaces", "list", "--quiet").stdout.split()

    def images(self, *, namespace: str = "k8s.io") -> list[str]:
        """Return the references of the images in ``namespace``."""
        done = self.ctr("images", "list", "--quiet", namespace=namespace)
        return done.stdout.split()

    def import_archive(
        self, path: Path, *, namespace: str = "k8s.io", timeout: float = 300.0
    ) -> str:
        """Import and unpack an OCI archive; return the reference it names."""
        reference = _archive_reference(path)
        self.ctr(
            "images", "import", "--snapshotter", self.snapshotter, path,
            namespace=namespace, timeout=timeout,
        )  # fmt: skip
        if reference and reference not in self.images(namespace=namespace):
            raise CommandError(
                f"ctr imported {path} but {reference} is not in namespace "
                f"{namespace}; see {self.log_path}",
                output_tail=self.log_tail(),
            )
        logger.info("imported %s into containerd namespace %s", reference, namespace)
        return reference

    # --- containers -----------------------------------------------------------

    def run(
        self,
        image: str,
        *,
        name: str,
        namespace: str = "k8s.io",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        host_network: bool = True,
        read_only: bool = True,
        mounts: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> Container:
        """Start ``image`` as a detached container, as its image's user.

        ``mounts`` take ctr's form, such as
        ``type=tmpfs,src=tmpfs,dst=/tmp,options=nosuid:nodev``.
        """
        log = self.home / "containers" / f"{namespace}-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        options: list[str] = [
            "--detach",
            "--snapshotter", self.snapshotter,
            "--log-uri", f"file://{log}",
            "--fifo-dir", str(self.state / "fifo"),
            "--runc-root", str(self.state / "runc"),
            # runc's own cgroup per container, which it deletes with it.
            "--cgroup", "",
        ]  # fmt: skip
        if host_network:
            options.append("--net-host")
        if read_only:
            options.append("--read-only")
        for key, value in (env or {}).items():
            options += ["--env", f"{key}={value}"]
        for mount in mounts:
            options += ["--mount", mount]
        self.ctr(
            "run", *options, image, name, *args, namespace=namespace, timeout=timeout
        )
        logger.info("container %s/%s runs %s", namespace, name, image)
        return Container(name=name, namespace=namespace, image=image, log=log)

    def task_status(self, name: str, *, namespace: str = "k8s.io") -> str | None:
        """Return the status of a container's task (RUNNING, STOPPED...), or None."""
        for line in self.ctr("tasks", "list", namespace=namespace).stdout.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] == name:
                return fields[2]
        return None

    def remove(
        self,
        name: str,
        *,
        namespace: str = "k8s.io",
        grace_seconds: float = 10.0,
        timeout: float = 60.0,
    ) -> None:
        """Stop a container (SIGTERM, SIGKILL after ``grace_seconds``) and delete it."""
        status = self.task_status(name, namespace=namespace)
        if status is not None and status != "STOPPED":
            self.ctr("tasks", "kill", name, namespace=namespace, check=False)
            deadline = time.monotonic() + grace_seconds
            while self.task_status(name, namespace=namespace) not in (None, "STOPPED"):
                if time.monotonic() > deadline:
                    self.ctr(
                        "tasks", "kill", "--signal", "SIGKILL", name,
                        namespace=namespace, check=False,
                    )  # fmt: skip
                    break
                time.sleep(0.1)
        if status is not None:
            self.ctr(
                "tasks", "delete", "--force", name, namespace=namespace, timeout=timeout
            )
        self.ctr(
            "containers", "delete", name, namespace=namespace, timeout=timeout,
            check=False,
        )  # fmt: skip
        logger.info("container %s/%s removed", namespace, name)

    @contextlib.contextmanager
    def running(
        self, image: str, *, name: str, namespace: str = "k8s.io", **options: Any
    ) -> Iterator[Container]:
        """Run a container for the length of a ``with`` block, then remove it."""
        container = self.run(image, name=name, namespace=namespace, **options)
        try:
            yield container
        finally:
            self.remove(name, namespace=namespace)

    def _remove_all_containers(self) -> None:
        for namespace in self.namespaces():
            done = self.ctr("containers", "list", "--quiet", namespace=namespace)
            for name in done.stdout.split():
                self.remove(name, namespace=namespace, grace_seconds=2.0)


@dataclass(frozen=True)
class _Leftovers:
    """Processes of a containerd's containers that a removal did not end."""

    #: The PID of each task still running, with the PID of its shim.
    tasks: dict[int, int]
    #: The PIDs of the shims still serving the containerd's socket.
    shims: frozenset[int]
    #: The sockets those shims listen on, as the task bundles name them.
    sockets: frozenset[Path]


def _socket_path(address_file: Path) -> Path | None:
    """Return the Unix socket a shim's ``address`` file names, if it names one."""
    try:
        address = address_file.read_text().strip()
    except OSError:
        return None
    path = address.removeprefix("unix://")
    return Path(path) if address.startswith("unix://") and path else None


def _listeners(path: Path) -> set[int]:
    """Return the PIDs that hold the Unix socket bound at ``path``.

    The kernel lists each bound socket's inode with its path; the processes
    that hold it have it among their file descriptors.
    """
    inodes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == str(path):
                inodes.add(f"socket:[{fields[6]}]")
    holders: set[int] = set()
    if not inodes:
        return holders
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                holders.add(int(fd_dir.parent.name))
    return holders


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The fields after the ")" that ends the command name: state, parent, ...
    return stat.rsplit(")", 1)[1].split()


def _parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields and fields[0] != "Z" else None


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _wait_all_gone(pids: Iterable[int], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def _archive_reference(path: Path) -> str:
    with tarfile.open(path) as archive:
        member = archive.extractfile("index.json")
        if member is None:
            raise UsageError(f"{path} is not an OCI archive; it has no index.json")
        index = json.load(member)
    annotations = index["manifests"][0].get("annotations", {})
    return str(annotations.get("org.opencontainers.image.ref.name", ""))


def _merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged
