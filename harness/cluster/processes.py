"""The cluster's processes: started detached, recorded, stopped by PID.

Every component runs inside one mount namespace of the cluster's own, held
open by a ``sleep`` started with ``unshare --mount --propagation private``.
The mounts containerd and the kubelet make (container root file systems,
pod volumes, network namespace files) live in that namespace only, the host's
mount table never sees them, and they vanish with the namespace when its last
process exits. Inside it, a tmpfs covers ``/run``, and state folders are bound
over the fixed paths the components write to (``/var/lib/kubelet``,
``/var/lib/cni``, ``/var/log``) and over ``/etc/resolv.conf``.

A component is started through ``sh`` so that it is orphaned at once: it
outlives the harness, and no child of the harness is left to reap. Its
record holds its PID and the kernel's start time of that PID, so a recycled
PID is never mistaken for it. Processes are only ever signalled by recorded
PID, or as members of the cluster's mount namespace (the containerd shims
and what they run).
"""

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.errors import CommandError, HarnessError

logger = logging.getLogger(__name__)

#: Name of the record of the process that holds the mount namespace.
HOLDER = "namespace"

#: File in the run folder naming the cluster's mount namespace.
NAMESPACE_ID = "namespace.id"

#: Seconds a freshly started process may take to show up.
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class ProcessRecord:
    """One process the cluster started, as recorded on disk."""

    name: str
    pid: int
    #: The kernel's start time of ``pid``, in clock ticks since boot.
    start_ticks: int
    argv: tuple[str, ...]
    log: str
    version: str = ""

    def write(self, run_dir: Path) -> None:
        """Write this record to ``<run_dir>/<name>.json``."""
        run_dir.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["argv"] = list(self.argv)
        path = run_dir / f"{self.name}.json"
        path.write_text(json.dumps(data, indent=2) + "\n")


def read_record(run_dir: Path, name: str) -> ProcessRecord | None:
    """Return the record of one process, or None if there is none."""
    try:
        data = json.loads((run_dir / f"{name}.json").read_text())
        return ProcessRecord(
            name=data["name"],
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            argv=tuple(data["argv"]),
            log=data["log"],
            version=data.get("version", ""),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def records(run_dir: Path) -> list[ProcessRecord]:
    """Return every process record in a folder."""
    if not run_dir.is_dir():
        return []
    found = []
    for path in sorted(run_dir.glob("*.json")):
        record = read_record(run_dir, path.stem)
        if record is not None:
            found.append(record)
    return found


def forget(run_dir: Path, name: str) -> None:
    """Delete the record of one process."""
    (run_dir / f"{name}.json").unlink(missing_ok=True)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """Return the state letter, parent PID and start time of a process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after it.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def start_ticks(pid: int) -> int | None:
    """Return the kernel's start time of a live process, or None."""
    stat = _stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return None
    return stat[2]


def is_running(record: ProcessRecord) -> bool:
    """Tell whether the recorded process is alive and is still that process."""
    return start_ticks(record.pid) == record.start_ticks


def _mount_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


#: Variables that would send a component's traffic to a proxy off the machine.
PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})


def without_proxies(env: Mapping[str, str]) -> dict[str, str]:
    """Return ``env`` without proxy variables, in any case: components talk directly."""
    kept = {k: v for k, v in env.items() if k.lower() not in PROXY_VARIABLES}
    kept["NO_PROXY"] = kept["no_proxy"] = "*"
    return kept


def spawn(
    argv: Sequence[str],
    *,
    name: str,
    log_path: Path,
    run_dir: Path,
    env: Mapping[str, str] | None = None,
    version: str = "",
) -> ProcessRecord:
    """Start a detached process whose output goes to ``log_path``; record it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as sink:
        sink.write(
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n"
        )
    environment = without_proxies(os.environ if env is None else env)
    environment["KH_LOG"] = str(log_path)
    # The shell starts the command in the background, prints its PID and
    # exits: the command is orphaned at once and keeps running on its own.
    launcher = 'exec 0</dev/null; "$@" >>"$KH_LOG" 2>&1 & echo $!'
    try:
        result = subprocess.run(
            ["sh", "-c", launcher, "sh", *argv],
            capture_output=True,
            text=True,
            env=environment,
            timeout=START_TIMEOUT,
            start_new_session=True,
            check=True,
        )
    except (subprocess.SubprocessError, OSError) as e:
        raise CommandError(f"cannot start {name}: {e}") from e
    pid = int(result.stdout.strip())
    deadline = time.monotonic() + START_TIMEOUT
    ticks = start_ticks(pid)
    while ticks is None and time.monotonic() < deadline:
        time.sleep(0.01)
        ticks = start_ticks(pid)
    if ticks is None:
        raise HarnessError(f"{name} exited at once; see its log {log_path}")
    record = ProcessRecord(
        name=name,
        pid=pid,
        start_ticks=ticks,
        argv=tuple(argv),
        log=str(log_path),
        version=version,
    )
    record.write(run_dir)
    logger.debug("started %s as PID %d", name, pid)
    return record


# TODO: when one of the bind mounts fails, the holder stays alive and
# recorded, and the next `up` repairs into a namespace that lacks the later
# binds (the resolver file is the last one); the holder should be ended and
# forgotten, or a "namespace complete" marker required before a repair.
def start_namespace(
    *, run_dir: Path, log_path: Path, binds: Sequence[tuple[Path, Path]]
) -> ProcessRecord:
    """Start the process that holds the cluster's mount namespace, and mount.

    ``binds`` are (source, target) pairs bound inside the namespace after a
    tmpfs covers ``/run``.
    """
    record = spawn(
        ["unshare", "--mount", "--propagation", "private", "sleep", "infinity"],
        name=HOLDER,
        log_path=log_path,
        run_dir=run_dir,
    )
    ours = _mount_namespace(os.getpid())
    deadline = time.monotonic() + START_TIMEOUT
    while _mount_namespace(record.pid) in (None, ours):
        if time.monotonic() > deadline or not is_running(record):
            raise HarnessError(
                f"unshare did not create a mount namespace; see {log_path}"
            )
        time.sleep(0.01)

    namespace = _mount_namespace(record.pid)
    (run_dir / NAMESPACE_ID).write_text(f"{namespace}\n")

    mounts = [["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/run"]]
    mounts += [
        ["mount", "--bind", str(source), str(target)] for source, target in binds
    ]
    for mount in mounts:
        in_namespace(record, mount)
    return record


def in_namespace(
    holder: ProcessRecord, argv: Sequence[str], *, timeout: float = 20.0
) -> str:
    """Run a command inside the cluster's mount namespace and return its output."""
    command = ["nsenter", f"--target={holder.pid}", "--mount", "--", *argv]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise CommandError(f"{' '.join(argv)} did not finish in {timeout:.0f}s") from e
    if result.returncode != 0:
        raise CommandError(
            f"{' '.join(argv)} failed in the cluster's mount namespace",
            output_tail=(result.stderr or result.stdout).strip(),
        )
    return result.stdout


def namespaced(holder: ProcessRecord, argv: Sequence[str]) -> list[str]:
    """Return ``argv`` prefixed so that it runs in the cluster's mount namespace.

    ``nsenter`` enters the namespace and executes the command in its own
    process, so the PID started is the component's PID.
    """
    return ["nsenter", f"--target={holder.pid}", "--mount", "--", *argv]


def namespaces_of(recorded: Iterable[ProcessRecord]) -> set[str]:
    """Return the mount namespaces of the live recorded processes, other than ours.

    Components run in the cluster's namespace; the host's own is never
    returned, so nothing outside the cluster is ever counted as its member.
    """
    ours = _mount_namespace(os.getpid())
    found = set()
    for record in recorded:
        if is_running(record):
            namespace = _mount_namespace(record.pid)
            if namespace is not None and namespace != ours:
                found.add(namespace)
    return found


# TODO: ``marker`` is matched as a substring of a command line, so the state
# directory of cluster "local" also matches one of "local2"; it should match
# a whole argument under the state directory, with the holder's start time.
def recorded_namespace(run_dir: Path, *, marker: str) -> str | None:
    """Return the recorded mount namespace if processes of this cluster still use it.

    A namespace outlives the holder while shims run in it; its identifier
    could in principle be reused by another namespace once it is gone, so it
    counts only if one of its processes has ``marker`` (the cluster's state
    directory) on its command line, as every shim of the cluster has.
    """
    try:
        namespace = (run_dir / NAMESPACE_ID).read_text().strip()
    except OSError:
        return None
    if namespace == _mount_namespace(os.getpid()):
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _mount_namespace(int(entry.name)) != namespace:
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in command:
            return namespace
    return None


def members(namespaces: set[str]) -> list[int]:
    """Return every process in the given mount namespaces and its descendants.

    Containers run in mount namespaces of their own, made by runc from the
    cluster's; they are found as descendants of the shims.
    """
    if not namespaces:
        return []
    parents: dict[int, int] = {}
    inside: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None:
            continue
        parents[pid] = stat[1]
        if _mount_namespace(pid) in namespaces:
            inside.add(pid)
    found = set(inside)
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                changed = True
    found.discard(os.getpid())
    return sorted(found)


def signal_pids(pids: Iterable[int], sig: signal.Signals) -> None:
    """Send a signal to each PID, ignoring those already gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids_ticks: Mapping[int, int | None], *, timeout: float) -> list[int]:
    """Wait until none of the processes runs; return those still running."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [
            pid
            for pid, ticks in pids_ticks.items()
            if (now := start_ticks(pid)) is not None and now == ticks
        ]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


# TODO: ``stop`` and ``kill`` read a process's start time when they signal,
# not the one recorded at spawn, so a PID reused in the seconds between the
# liveness check and the signal would be signalled; pass the recorded start
# times through.
def stop(pids: Iterable[int], *, timeout: float) -> None:
    """Stop processes by PID: SIGTERM, and SIGKILL for those left after ``timeout``."""
    ticks = {pid: start_ticks(pid) for pid in pids}
    ticks = {pid: t for pid, t in ticks.items() if t is not None}
    if not ticks:
        return
    signal_pids(ticks, signal.SIGTERM)
    left = wait_gone(ticks, timeout=timeout)
    if left:
        logger.debug("killing PIDs %s after %.1fs", left, timeout)
        signal_pids(left, signal.SIGKILL)
        left = wait_gone({pid: ticks[pid] for pid in left}, timeout=5.0)
        if left:
            logger.warning("PIDs %s survived SIGKILL", left)


def kill(pids: Iterable[int]) -> None:
    """Kill processes by PID at once and wait for them to go."""
    ticks = {pid: t for pid in pids if (t := start_ticks(pid)) is not None}
    signal_pids(ticks, signal.SIGKILL)
    wait_gone(ticks, timeout=5.0)


def log_tail(path: Path | str, *, lines: int = 20) -> str:
    """Return the last lines of a log file."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])
