"""Build, cache and check the Kubernetes, etcd and CoreDNS binaries.

The embedded cluster runs upstream components as host processes. There are
no release downloads on this machine, only the Go module proxy, so the
binaries are compiled from their Go modules. ``k8s.io/kubernetes`` cannot be
built with ``go install`` because its ``replace`` directives point its
staging modules into its own tree; each component is therefore built inside
a small generated wrapper module that pins those modules at their released
versions. A cold build takes tens of minutes; the Go caches and the finished
binaries stay on the machine, so later calls only check the versions.

A user who has binaries already points ``HARNESS_BIN_DIR`` (or ``bin_dir``)
at them, and nothing is built.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from harness.errors import BuildError, HarnessError, PrerequisiteError
from harness.paths import cache_dir
from harness.progress import Progress

log = logging.getLogger(__name__)

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
COREDNS_VERSION = "v1.15.0"

#: The oldest Go that builds Kubernetes v1.34.
MINIMUM_GO = (1, 24)

#: Where the Go tarball installs ``go`` when it is not on PATH.
FALLBACK_GO = Path("/usr/local/go/bin/go")

#: Seconds between two lines of progress during a long ``go build``.
HEARTBEAT_SECONDS = 30.0

#: Seconds a ``--version`` call may take before the binary counts as broken.
VERSION_TIMEOUT = 30.0

#: Seconds ``go mod download`` and ``go mod edit`` may take.
GO_QUERY_TIMEOUT = 600.0

#: Seconds a whole ``go build`` of one group may take on a slow machine.
BUILD_TIMEOUT = 4 * 3600.0

#: Seconds a build waits for another process's build to release the cache.
BUILD_LOCK_TIMEOUT = 90 * 60.0

#: Seconds between two looks at whether the other build released the cache.
LOCK_POLL_SECONDS = 1.0

#: Earlier builds a ``build.json`` remembers, the first one included.
HISTORY_LENGTH = 10
_HISTORY_KEYS = ("version", "go_version", "built_at", "packages_compiled", "seconds")

#: Lines of the build log quoted in a ``BuildError``.
LOG_TAIL_LINES = 40

_GO_NOT_FOUND = (
    "go not found: install Go 1.24 or newer, "
    "or point HARNESS_BIN_DIR at prebuilt binaries"
)


@dataclass(frozen=True)
class Binaries:
    """Paths of the executables a single-node cluster runs."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubelet: Path
    kube_proxy: Path
    kubectl: Path
    etcd: Path
    coredns: Path


@dataclass(frozen=True)
class Component:
    """One Go module whose commands are built by a single ``go build``."""

    name: str
    module: str
    version: str
    #: Binary file name and the import path of its ``main`` package.
    commands: tuple[tuple[str, str], ...]
    #: Version at which the sibling modules the module replaces are pinned;
    #: empty when the module replaces none.
    siblings_version: str


KUBERNETES = Component(
    name="kubernetes",
    module="k8s.io/kubernetes",
    version=KUBERNETES_VERSION,
    commands=tuple(
        (cmd, f"k8s.io/kubernetes/cmd/{cmd}")
        for cmd in (
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "kubectl",
        )
    ),
    # The staging modules are released as v0.<minor>.<patch> with Kubernetes.
    siblings_version="v0." + KUBERNETES_VERSION.removeprefix("v1."),
)
ETCD = Component(
    name="etcd",
    module="go.etcd.io/etcd/server/v3",
    version=ETCD_VERSION,
    commands=(("etcd", "go.etcd.io/etcd/server/v3"),),
    siblings_version=ETCD_VERSION,
)
COREDNS = Component(
    name="coredns",
    module="github.com/coredns/coredns",
    version=COREDNS_VERSION,
    commands=(("coredns", "github.com/coredns/coredns"),),
    siblings_version=COREDNS_VERSION,
)

#: Built in this order: the small ones first, so a failure shows early.
COMPONENTS = (ETCD, COREDNS, KUBERNETES)

#: Which component builds each field of ``Binaries``.
_FIELD_COMPONENT = {
    "kube_apiserver": KUBERNETES,
    "kube_controller_manager": KUBERNETES,
    "kube_scheduler": KUBERNETES,
    "kubelet": KUBERNETES,
    "kube_proxy": KUBERNETES,
    "kubectl": KUBERNETES,
    "etcd": ETCD,
    "coredns": COREDNS,
}


def binary_name(field: str) -> str:
    """Return the file name of the binary behind a ``Binaries`` field."""
    return field.replace("_", "-")


# --- versions ---------------------------------------------------------------


def version_command(binary: str) -> list[str]:
    """Return the arguments that make a binary print its version."""
    if binary == "kubectl":
        return ["version", "--client", "-o", "json"]
    if binary == "coredns":
        return ["-version"]
    return ["--version"]


def parse_version(binary: str, output: str) -> str | None:
    """Return the ``vX.Y.Z`` version a binary printed, or None if unreadable."""
    if binary == "kubectl":
        try:
            data = json.loads(output)
            version = data["clientVersion"]["gitVersion"]
        except (ValueError, KeyError, TypeError):
            return None
        return version if isinstance(version, str) else None
    patterns = {
        "etcd": r"etcd Version:\s*v?(\S+)",
        "coredns": r"CoreDNS-v?(\S+)",
    }
    match = re.search(patterns.get(binary, r"Kubernetes\s+v?(\S+)"), output)
    return f"v{match.group(1)}" if match else None


def read_version(path: Path) -> str | None:
    """Run a binary's version flag and return what it reports, None if it fails."""
    try:
        result = subprocess.run(
            [str(path), *version_command(path.name)],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        log.debug("version of %s unreadable: %s", path, e)
        return None
    if result.returncode != 0:
        log.debug("%s exited %d on its version flag", path, result.returncode)
        return None
    return parse_version(path.name, result.stdout + result.stderr)


def _numbers(version: str) -> tuple[int, ...]:
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(n) for n in match.groups()) if match else ()


def version_accepted(binary: str, version: str) -> bool:
    """Tell whether a prebuilt binary's version is one the harness can run."""
    numbers = _numbers(version)
    if not numbers:
        return False
    if binary == "etcd":
        return numbers[:2] == (3, 6) or (3, 5, 11) <= numbers < (3, 6, 0)
    if binary == "coredns":
        return numbers[0] == 1 and numbers[1] >= 11
    return numbers[:2] == _numbers(KUBERNETES_VERSION)[:2]


def expected_description(binary: str) -> str:
    """Return, for messages, which versions of a binary are accepted."""
    if binary == "etcd":
        return "etcd 3.5.11+ or 3.6.x"
    if binary == "coredns":
        return "CoreDNS 1.11 or newer"
    major, minor = _numbers(KUBERNETES_VERSION)[:2]
    return f"v{major}.{minor}.x"


def go_output_name(package: str) -> str:
    """Return the file name ``go build -o DIR/`` gives a ``main`` package.

    It is the last element of the import path, or the one before it when the
    last is a major version suffix such as ``v3``.
    """
    parts = package.split("/")
    if len(parts) > 1 and re.fullmatch(r"v\d+", parts[-1]):
        return parts[-2]
    return parts[-1]


def _read_versions(paths: Sequence[Path]) -> dict[Path, str | None]:
    with ThreadPoolExecutor(max_workers=max(1, len(paths))) as pool:
        return dict(zip(paths, pool.map(read_version, paths), strict=True))


# --- link flags and the wrapper module --------------------------------------


def kubernetes_ldflags(
    version: str, *, build_date: datetime, git_commit: str = ""
) -> list[str]:
    """Return the ``-X`` flags that stamp Kubernetes binaries with their version.

    They are the ones Kubernetes' own build sets, in both packages that
    report a version: ``component-base`` for the servers, ``client-go`` for
    clients such as kubectl.
    """
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if match is None:
        raise ValueError(f"Kubernetes version {version!r} is not vMAJOR.MINOR.PATCH")
    values = {
        "gitVersion": version,
        "gitMajor": match.group(1),
        "gitMinor": match.group(2),
        "gitTreeState": "clean",
        "buildDate": build_date.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        # Set even when unknown: left alone it reads as a "$Format:%H$" stub.
        "gitCommit": git_commit,
    }
    flags: list[str] = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags.extend(f"-X {package}.{key}={value}" for key, value in values.items())
    return flags


def ldflags(component: Component, *, build_date: datetime, git_commit: str) -> str:
    """Return the whole ``-ldflags`` value for one component."""
    flags = ["-s", "-w"]
    if component is KUBERNETES:
        flags += kubernetes_ldflags(
            component.version, build_date=build_date, git_commit=git_commit
        )
    elif component is ETCD and git_commit:
        flags.append(f"-X go.etcd.io/etcd/api/v3/version.GitSHA={git_commit[:7]}")
    elif component is COREDNS and git_commit:
        flags.append(f"-X github.com/coredns/coredns/coremain.GitCommit={git_commit}")
    return " ".join(flags)


def wrapper_gomod(component: Component, upstream: Mapping[str, Any]) -> str:
    """Return the go.mod of a module that builds ``component`` as a dependency.

    ``upstream`` is the component's own go.mod as ``go mod edit -json``
    reads it. Every module it requires and replaces with a directory of its
    own tree is pinned at ``component.siblings_version``; replacements by
    another module version are carried over, since a dependency's
    ``replace`` directives do not apply to the module that requires it.
    """
    required = {req["Path"] for req in upstream.get("Require") or ()}
    pins: dict[str, str] = {}
    carried: list[str] = []
    for rep in upstream.get("Replace") or ():
        old, new = rep["Old"], rep["New"]
        if new.get("Version"):
            left = old["Path"] + (f" {old['Version']}" if old.get("Version") else "")
            carried.append(f"{left} => {new['Path']} {new['Version']}")
        elif old["Path"] in required:
            pins[old["Path"]] = component.siblings_version
        # A directory replacement of a module the component does not require
        # only guards against an unwanted dependency: it does not matter here.

    lines = [f"module kube-harness/build/{component.name}", ""]
    lines.append(f"go {upstream.get('Go') or '.'.join(map(str, MINIMUM_GO))}")
    godebug = upstream.get("Godebug") or upstream.get("GoDebug") or ()
    lines += [f"godebug {item['Key']}={item['Value']}" for item in godebug]
    lines += ["", "require (", f"\t{component.module} {component.version}"]
    lines += [f"\t{path} {version}" for path, version in sorted(pins.items())]
    lines.append(")")
    if carried:
        lines += ["", "replace (", *(f"\t{line}" for line in carried), ")"]
    return "\n".join(lines) + "\n"


# --- running Go -------------------------------------------------------------


def find_go() -> Path:
    """Return the ``go`` command to build with, or raise PrerequisiteError."""
    found = shutil.which("go")
    if found is None and os.access(FALLBACK_GO, os.X_OK):
        found = str(FALLBACK_GO)
    if found is None:
        raise PrerequisiteError(_GO_NOT_FOUND)
    return Path(found)


def go_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment of every ``go`` call: local toolchain, no cgo.

    GOMODCACHE, GOCACHE and GOPROXY come from the caller's environment when
    set there, so both caches can live elsewhere. Every binary is static:
    upstream builds kubelet with cgo where a C compiler exists, but nothing
    it does on a Linux node needs it, and one setting lets a single
    ``go build`` share the compilation of all six Kubernetes commands.
    """
    env = dict(os.environ if base is None else base)
    env.update(
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
        GOFLAGS="-mod=mod -buildvcs=false",
        GOWORK="off",
    )
    return env


def _go_json(go: Path, args: Sequence[str], *, cwd: Path) -> dict[str, Any]:
    command = f"go {' '.join(args)}"
    try:
        result = subprocess.run(
            [str(go), *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=go_environment(),
            timeout=GO_QUERY_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"{command} did not finish in {e.timeout}s") from e
    except OSError as e:
        raise PrerequisiteError(f"{go} could not run ({e}): reinstall Go 1.24+") from e
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise BuildError(f"{command} failed: {' / '.join(tail)}")
    try:
        data = json.loads(result.stdout)
    except ValueError as e:
        first = (result.stdout.strip().splitlines() or ["nothing"])[0][:80]
        raise BuildError(
            f"{command} printed {first!r} instead of JSON: check that {go} is Go"
        ) from e
    if not isinstance(data, dict):
        raise BuildError(
            f"{command} printed a JSON {type(data).__name__}, not an object: "
            f"check that {go} is Go"
        )
    return data


def go_version(go: Path, *, timeout: float = GO_QUERY_TIMEOUT) -> str:
    """Return the version of a ``go`` command, such as ``go1.26.8``."""
    try:
        result = subprocess.run(
            [str(go), "env", "GOVERSION"],
            capture_output=True,
            text=True,
            env=go_environment(),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise PrerequisiteError(
            f"{go} env GOVERSION did not answer within {timeout:g}s: "
            "check that it runs, or reinstall Go 1.24+"
        ) from e
    except OSError as e:
        raise PrerequisiteError(
            f"{go} env GOVERSION could not run ({e}): reinstall Go 1.24+"
        ) from e
    version = result.stdout.strip()
    if result.returncode != 0 or not version.startswith("go"):
        raise PrerequisiteError(f"{go} env GOVERSION failed: reinstall Go 1.24+")
    return version


def _require_go(go: Path, version: str, *, needed: str) -> None:
    have = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    want = tuple(int(n) for n in needed.split(".")[:3])
    if have < want:
        raise PrerequisiteError(
            f"{go} is {version} but go{needed} or newer is needed: "
            "upgrade Go, or point HARNESS_BIN_DIR at prebuilt binaries"
        )


@dataclass(frozen=True)
class UpstreamModule:
    """What ``go mod download`` says about a component's module."""

    gomod: dict[str, Any]
    #: The commit the proxy says the version was cut from, if it says so.
    git_commit: str


def read_upstream(go: Path, component: Component, *, work: Path) -> UpstreamModule:
    """Download a component's module and read its go.mod and origin commit."""
    info = _go_json(
        go,
        ["mod", "download", "-json", f"{component.module}@{component.version}"],
        cwd=work,
    )
    if info.get("Error"):
        raise BuildError(f"{component.name}: {info['Error']}")
    gomod = _go_json(go, ["mod", "edit", "-json", info["GoMod"]], cwd=work)
    commit = (info.get("Origin") or {}).get("Hash", "")
    return UpstreamModule(gomod=gomod, git_commit=commit)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def _heartbeat(
    progress: Progress, what: str, count: Callable[[], str]
) -> Iterator[None]:
    stop = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            elapsed = int(time.monotonic() - start)
            progress.note(f"{what}: {elapsed // 60}m{elapsed % 60:02d}s, {count()}")

    thread = threading.Thread(target=beat, name=f"heartbeat-{what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _counted(done: int, total: int | None) -> str:
    if total:
        return f"{done} of at most {total} packages compiled"
    return f"{done} packages so far"


def run_logged(
    args: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    progress: Progress,
    what: str,
    timeout: float,
    total: int | None = None,
) -> int:
    """Run a ``go`` command, appending its output to a log; return lines seen.

    The lines ``go build -v`` prints name the packages it compiles, so their
    number (out of ``total``, the packages in the build, when known) shows a
    person that the build advances.
    """
    counted = [0]
    with log_path.open("a") as sink:
        sink.write(f"$ {' '.join(args)}\n")
        sink.flush()
        # A session of its own, so that a kill reaches the compilers and
        # linkers go starts, which would otherwise go on and hold the pipe.
        with subprocess.Popen(
            list(args),
            cwd=cwd,
            env=go_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        ) as proc:
            assert proc.stdout is not None
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                _kill_group(proc)

            timer = threading.Timer(timeout, expire)
            timer.start()
            try:
                with _heartbeat(progress, what, lambda: _counted(counted[0], total)):
                    for line in proc.stdout:
                        sink.write(line)
                        if not line.startswith(("go: ", "#")):
                            counted[0] += 1
                code = proc.wait()
            finally:
                timer.cancel()
                if proc.poll() is None:
                    _kill_group(proc)
                    proc.wait()
        sink.write(f"exit status {code}\n")
    if code != 0:
        reason = f"exited {code}"
        if expired.is_set():
            reason = f"killed after {timeout:.0f}s"
        raise BuildError(
            f"building {what} failed ({reason}); full log in {log_path}:\n"
            f"{_tail(log_path)}"
        )
    return counted[0]


def _kill_group(proc: subprocess.Popen[str]) -> None:
    # The command leads a session and process group of its own
    # (start_new_session), so the group id is the PID we started: this ends
    # exactly that command and what it started, nothing else.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


# --- the cache --------------------------------------------------------------


def bin_root() -> Path:
    """Return the folder that holds one folder of binaries per component."""
    return cache_dir() / "bin"


def component_dir(component: Component) -> Path:
    """Return where a component's finished binaries live."""
    return bin_root() / f"{component.name}-{component.version}"


def build_dir(component: Component) -> Path:
    """Return where a component's wrapper module and build log live."""
    return cache_dir() / "gobuild" / f"{component.name}-{component.version}"


def _binaries_in(folders: Mapping[str, Path]) -> Binaries:
    return Binaries(
        **{
            f.name: folders[_FIELD_COMPONENT[f.name].name] / binary_name(f.name)
            for f in fields(Binaries)
        }
    )


def _cached(component: Component) -> bool:
    folder = component_dir(component)
    try:
        record = json.loads((folder / "build.json").read_text())
    except (OSError, ValueError):
        return False
    if record.get("version") != component.version:
        return False
    return all(os.access(folder / name, os.X_OK) for name, _ in component.commands)


def find() -> Binaries | None:
    """Return the binaries available without building, or None.

    ``HARNESS_BIN_DIR``, when set, is where they are; otherwise the cache,
    where a complete set of each component counts. Versions are not run
    here: ``ensure`` does that.
    """
    explicit = os.environ.get("HARNESS_BIN_DIR")
    if explicit:
        binaries = _binaries_in(
            dict.fromkeys(("kubernetes", "etcd", "coredns"), Path(explicit))
        )
        paths = [getattr(binaries, f.name) for f in fields(Binaries)]
        return binaries if all(os.access(p, os.X_OK) for p in paths) else None
    if not all(_cached(c) for c in COMPONENTS):
        return None
    return _binaries_in({c.name: component_dir(c) for c in COMPONENTS})


def check_prebuilt(folder: Path) -> Binaries:
    """Return the binaries in a user's folder after checking each one.

    Raises PrerequisiteError naming the first binary that is missing, not
    executable, or of a version the harness cannot run.
    """
    binaries = _binaries_in(dict.fromkeys(("kubernetes", "etcd", "coredns"), folder))
    paths = [getattr(binaries, f.name) for f in fields(Binaries)]
    for path in paths:
        if not path.is_file():
            raise PrerequisiteError(
                f"{path} is missing: put {path.name} in {folder} "
                "or unset HARNESS_BIN_DIR to build it"
            )
        if not os.access(path, os.X_OK):
            raise PrerequisiteError(f"{path} is not executable: chmod +x it")
    versions = _read_versions(paths)
    for path in paths:
        version = versions[path]
        if version is None or not version_accepted(path.name, version):
            raise PrerequisiteError(
                f"{path} reports version {version or 'unreadable'}, "
                f"expected {expected_description(path.name)}: replace it, "
                "or unset HARNESS_BIN_DIR to build it"
            )
    log.info("using prebuilt binaries in %s", folder)
    return binaries


def _verified(component: Component, folder: Path) -> list[str]:
    """Return the binaries of ``folder`` that do not report the right version."""
    paths = [folder / name for name, _ in component.commands]
    versions = _read_versions(paths)
    return [
        f"{p.name} reports {versions[p] or 'no version'}"
        for p in paths
        if versions[p] != component.version
    ]


def _reusable(component: Component) -> bool:
    """Tell whether a component's cached binaries can be used as they are."""
    folder = component_dir(component)
    if not _cached(component):
        log.debug(
            "%s %s is not cached in %s", component.name, component.version, folder
        )
        return False
    wrong = _verified(component, folder)
    if wrong:
        log.warning("rebuilding %s: %s", component.name, ", ".join(wrong))
        return False
    log.debug("%s %s is cached in %s", component.name, component.version, folder)
    return True


@contextlib.contextmanager
def _build_lock(
    progress: Progress, *, timeout: float = BUILD_LOCK_TIMEOUT
) -> Iterator[None]:
    """Hold the cache's lock, so that two processes never build at once.

    The holder writes its PID into the lock file, so that one that waits
    can say whom it waits for; after ``timeout`` seconds it gives up with a
    :class:`BuildError`.
    """
    root = bin_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".lock"
    # Opened without truncating it: the holder's PID is in there.
    with path.open("a+") as handle:
        if not _try_lock(handle):
            _wait_for_lock(handle, path, progress, timeout=timeout)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            handle.truncate(0)
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _try_lock(handle: TextIO) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _lock_holder(handle: TextIO) -> str:
    handle.seek(0)
    text = handle.read().strip()
    return f"PID {text}" if text.isdigit() else "PID unknown"


def _wait_for_lock(
    handle: TextIO, path: Path, progress: Progress, *, timeout: float
) -> None:
    holder = _lock_holder(handle)
    progress.note(f"waiting for another build ({holder}) that holds {path}")
    start = time.monotonic()
    last_note = start
    while not _try_lock(handle):
        now = time.monotonic()
        # The first holder may have ended and another one taken over.
        holder = _lock_holder(handle)
        if now - start >= timeout:
            raise BuildError(
                f"another build ({holder}) has held {path} for over "
                f"{_duration(timeout)}; wait for it to end, or end {holder} "
                "if it is stuck"
            )
        if now - last_note >= HEARTBEAT_SECONDS:
            last_note = now
            progress.note(
                f"still waiting for another build ({holder}): {_duration(now - start)}"
            )
        time.sleep(min(LOCK_POLL_SECONDS, max(0.0, timeout - (now - start))))
    log.debug("took %s after waiting %.1fs", path, time.monotonic() - start)


def _duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{seconds:.0f}s"


def _install(staged: Path, final: Path) -> None:
    """Move a finished folder of binaries into place in one rename."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        final.rename(old / final.name)
        staged.rename(final)
        shutil.rmtree(old)
    else:
        staged.rename(final)


def _history(component: Component) -> list[dict[str, Any]]:
    """Return the earlier builds of a component, oldest (the cold one) first."""
    try:
        old = json.loads((component_dir(component) / "build.json").read_text())
    except (OSError, ValueError):
        return []
    history: list[dict[str, Any]] = old.get("history") or []
    history.append({key: old.get(key) for key in _HISTORY_KEYS if key in old})
    # Keep the first build, whose times are those of a cold cache, and the
    # latest few.
    return history[:1] + history[1:][-(HISTORY_LENGTH - 1) :]


def build(component: Component, *, progress: Progress) -> Path:
    """Build one component's binaries into the cache and return their folder."""
    go = find_go()
    go_ver = go_version(go)
    _require_go(go, go_ver, needed=".".join(map(str, MINIMUM_GO)))
    work = build_dir(component)
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "build.log"
    log_path.write_text("")
    started = time.monotonic()
    built_at = datetime.now(UTC)

    # Resolve: read the component's go.mod and write the wrapper module.
    upstream = read_upstream(go, component, work=work.parent)
    _require_go(go, go_ver, needed=upstream.gomod.get("Go") or "1.24")
    (work / "go.mod").write_text(wrapper_gomod(component, upstream.gomod))
    flags = ldflags(component, build_date=built_at, git_commit=upstream.git_commit)
    packages = [pkg for _, pkg in component.commands]

    # Download: listing the dependencies fetches every module and records its sum.
    in_build = run_logged(
        [str(go), "list", "-deps", "-f", "{{.ImportPath}}", *packages],
        cwd=work,
        log_path=log_path,
        progress=progress,
        what=f"{component.name} modules",
        timeout=GO_QUERY_TIMEOUT * 2,
    )
    resolved = time.monotonic()

    # Compile into a fresh folder next to the final one, dropping what a
    # killed build left behind (the caller holds the lock: nobody uses it).
    root = bin_root()
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(f".{component_dir(component).name}.*"):
        log.debug("removing %s, left by an interrupted build", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
    staged = Path(
        tempfile.mkdtemp(prefix=f".{component_dir(component).name}.", dir=root)
    )
    try:
        args = [
            str(go),
            "build",
            "-v",
            "-p",
            str(min(2, os.cpu_count() or 1)),
            "-trimpath",
            "-ldflags",
            flags,
            "-o",
            f"{staged}/",
            *packages,
        ]
        compiled = run_logged(
            args,
            cwd=work,
            log_path=log_path,
            progress=progress,
            what=component.name,
            timeout=BUILD_TIMEOUT,
            total=in_build,
        )
        finished = time.monotonic()
        for name, package in component.commands:
            if go_output_name(package) != name:
                (staged / go_output_name(package)).rename(staged / name)
        wrong = _verified(component, staged)
        if wrong:
            raise BuildError(
                f"built {component.name} but {', '.join(wrong)}, "
                f"expected {component.version}; log in {log_path}"
            )
        record = {
            "component": component.name,
            "module": component.module,
            "version": component.version,
            "git_commit": upstream.git_commit,
            "go_version": go_ver,
            "built_at": built_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "binaries": [name for name, _ in component.commands],
            "packages_compiled": compiled,
            "ldflags": flags,
            "seconds": {
                "resolve": round(resolved - started, 1),
                "compile": round(finished - resolved, 1),
                "total": round(finished - started, 1),
            },
        }
        record["history"] = _history(component)
        (staged / "build.json").write_text(json.dumps(record, indent=2) + "\n")
        staged.chmod(0o755)
        _install(staged, component_dir(component))
    finally:
        if staged.exists():
            shutil.rmtree(staged)
    log.info(
        "built %s %s in %.0fs",
        component.name,
        component.version,
        finished - started,
    )
    return component_dir(component)


def ensure(
    *,
    bin_dir: Path | None = None,
    progress: Progress | None = None,
    force: bool = False,
    lock_timeout: float = BUILD_LOCK_TIMEOUT,
) -> Binaries:
    """Return binaries the cluster can run, building whichever are missing.

    ``bin_dir`` (else ``HARNESS_BIN_DIR``) names prebuilt binaries to check
    and use instead. Otherwise cached builds are reused when their binaries
    report the right version, and rebuilt when not, or when ``force`` is set.
    While another process builds, this waits up to ``lock_timeout`` seconds.
    """
    explicit = bin_dir or (
        Path(os.environ["HARNESS_BIN_DIR"])
        if os.environ.get("HARNESS_BIN_DIR")
        else None
    )
    if explicit is not None:
        return check_prebuilt(explicit.expanduser())
    with _build_lock(progress or Progress("binaries"), timeout=lock_timeout):
        missing = [c for c in COMPONENTS if force or not _reusable(c)]
        progress = progress or Progress("binaries", total=len(missing))
        for component in missing:
            with progress.step(f"building {component.name} {component.version}"):
                build(component, progress=progress)
    return _binaries_in({c.name: component_dir(c) for c in COMPONENTS})


def main(argv: Sequence[str] | None = None) -> int:
    """Build every binary into the cache and print where they are."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.binaries",
        description="Build the Kubernetes, etcd and CoreDNS binaries, cached.",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        binaries = ensure(force=options.force)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for f in fields(Binaries):
        print(f"{binary_name(f.name)}\t{getattr(binaries, f.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
