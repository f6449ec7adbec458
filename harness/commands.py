"""Running the external tools the harness drives: buildah, debootstrap, ctr, tar.

Every call has a timeout, logs the command line at debug level, and turns a
failure into a :class:`~harness.errors.CommandError` whose message names the
tool and whose tail shows the last lines it printed, which is where tools say
what went wrong. A tool that overruns its timeout is killed together with the
processes it started (it runs in a process group of its own); a process
that left that group cannot hold the call open, since its output is read for
a few seconds more and then closed.
"""

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import CommandError, PrerequisiteError

logger = logging.getLogger(__name__)

#: How many lines of a failed tool's output an error carries.
TAIL_LINES = 25

#: Seconds the output of a killed tool is still read before its pipes are closed.
KILL_GRACE_SECONDS = 3.0

Arg = str | os.PathLike[str]


@dataclass(frozen=True)
class Completed:
    """What a finished tool left: its exit status and what it printed."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def require(tool: str, *, package: str) -> str:
    """Return the full path of ``tool``, or say which Debian package provides it."""
    found = shutil.which(tool)
    if found is None:
        raise PrerequisiteError(
            f"{tool} not found on PATH; install the Debian package {package} "
            f"(apt-get install {package}, or make system)"
        )
    return found


def require_root(*, why: str) -> None:
    """Raise :class:`PrerequisiteError` unless the harness runs as root."""
    if os.geteuid() != 0:
        raise PrerequisiteError(
            f"uid {os.geteuid()} is not root, and {why}; run the command as root"
        )


def tail(text: str, *, lines: int = TAIL_LINES) -> str:
    """Return the last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def describe(args: Sequence[Arg]) -> str:
    """Return a command line as a shell would show it."""
    return shlex.join(os.fspath(a) for a in args)


def run(
    args: Sequence[Arg],
    *,
    timeout: float,
    check: bool = True,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    log_file: Path | None = None,
) -> Completed:
    """Run a tool to its end within ``timeout`` seconds and return what it printed.

    With ``log_file``, standard output and error are appended to that file
    instead of being kept in memory (for tools that print a lot); the result
    then holds empty strings and an error carries the end of the file.
    """
    argv = tuple(os.fspath(a) for a in args)
    logger.debug("running %s", describe(argv))
    log = log_file.open("ab") if log_file is not None else None
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as e:
        if log is not None:
            log.close()
        raise CommandError(f"{argv[0]} could not be started: {e}") from e
    out: bytes | None
    err: bytes | None
    try:
        out, err = proc.communicate(
            input=input_text.encode() if input_text is not None else None,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        ended = proc.poll() is not None
        _kill_group(proc)
        out, err, held = _drain_after_kill(proc, argv)
        if ended:
            what = f"ended, but a process it started held its output past {timeout:g}s"
        else:
            what = f"did not finish within {timeout:g}s and was killed"
            if held:
                what += "; a process that left its group still holds its output"
        raise CommandError(
            f"{describe(argv)} {what}; look at the output below, or raise its timeout",
            output_tail=tail(_output(out, err, log_file)),
        ) from None
    finally:
        if log is not None:
            log.close()
    done = Completed(
        args=argv,
        returncode=proc.returncode,
        stdout=(out or b"").decode(errors="replace"),
        stderr=(err or b"").decode(errors="replace"),
    )
    if check and done.returncode != 0:
        raise CommandError(
            f"{describe(argv)} exited with status {done.returncode}",
            output_tail=tail(_output(out, err, log_file)),
        )
    return done


def _kill_group(proc: "subprocess.Popen[bytes]") -> None:
    # The tool leads a process group of its own (start_new_session), so its
    # group id is its PID: this ends exactly what it started.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _drain_after_kill(
    proc: "subprocess.Popen[bytes]", argv: Sequence[str]
) -> tuple[bytes | None, bytes | None, bool]:
    """Read what a killed tool printed; return it, and whether a pipe stayed open.

    A process that left the tool's group (``setsid``, a daemon) survives the
    kill and may hold the output pipes open for as long as it lives, so the
    reading stops after ``KILL_GRACE_SECONDS`` and the pipes are closed.
    """
    try:
        out, err = proc.communicate(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired as e:
        logger.warning(
            "%s was killed but its output stays open after %gs; closing it",
            describe(argv),
            KILL_GRACE_SECONDS,
        )
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=KILL_GRACE_SECONDS)
        return _as_bytes(e.stdout), _as_bytes(e.stderr), True
    return out, err, False


def _as_bytes(data: bytes | str | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


def _output(out: bytes | None, err: bytes | None, log_file: Path | None) -> str:
    if log_file is not None:
        return log_file.read_text(errors="replace") if log_file.exists() else ""
    text = (out or b"").decode(errors="replace")
    if err:
        text = f"{text}\n{err.decode(errors='replace')}"
    return text


def mount_points_under(path: Path) -> list[Path]:
    """Return the mount points at or below ``path``, deepest first."""
    root = Path(os.path.realpath(path))
    found: list[Path] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split(" ")
            if len(fields) < 5:
                continue
            point = Path(_unescape(fields[4]))
            if point == root or root in point.parents:
                found.append(point)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_under(path: Path, *, timeout: float = 30.0) -> list[Path]:
    """Unmount everything mounted at or below ``path`` and return what was.

    A mount that is busy is detached lazily, so that the folder can go; its
    file system is freed once its last user lets go of it.
    """
    points = mount_points_under(path)
    for point in points:
        done = run(["umount", point], timeout=timeout, check=False)
        if done.returncode != 0 and point in mount_points_under(point):
            logger.warning(
                "umount %s failed (%s); detaching it lazily",
                point,
                tail(done.stderr, lines=1),
            )
            run(["umount", "--lazy", point], timeout=timeout)
    if points:
        logger.debug("unmounted %d mounts under %s", len(points), path)
    return points


def remove_tree(path: Path, *, timeout: float = 300.0) -> None:
    """Unmount what is mounted below ``path``, then delete it, staying on its disk."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_under(path)
    run(["rm", "-rf", "--one-file-system", "--", path], timeout=timeout)


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n")):
        field = field.replace(code, char)
    return field.replace("\\134", "\\")
