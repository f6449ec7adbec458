"""Tests of building, caching and checking the cluster's binaries."""

import io
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness import binaries
from harness.binaries import (
    COREDNS_VERSION,
    ETCD_VERSION,
    KUBERNETES,
    KUBERNETES_VERSION,
    Binaries,
)
from harness.errors import BuildError, PrerequisiteError
from harness.paths import PROJECT_ROOT
from harness.progress import Progress

PT_INTERP = 3

HAS_GO = shutil.which("go") is not None or os.access(binaries.FALLBACK_GO, os.X_OK)
needs_go = pytest.mark.skipif(not HAS_GO, reason="Go is not installed")


def _go_mod_edit_json(gomod: Path) -> dict[str, object]:
    result = subprocess.run(
        [str(binaries.find_go()), "mod", "edit", "-json", str(gomod)],
        capture_output=True,
        text=True,
        env=binaries.go_environment(),
        timeout=60,
        check=True,
    )
    data: dict[str, object] = json.loads(result.stdout)
    return data


def _requirements(gomod: Path) -> dict[str, str]:
    data = _go_mod_edit_json(gomod)
    requires = data.get("Require") or []
    assert isinstance(requires, list)
    return {req["Path"]: req["Version"] for req in requires}


# --- the wrapper module -----------------------------------------------------


@needs_go
def test_wrapper_pins_every_required_staging_module_kubernetes_replaces(
    tmp_path: Path,
) -> None:
    go = binaries.find_go()
    upstream = binaries.read_upstream(go, KUBERNETES, work=tmp_path)
    upstream_gomod = Path(
        json.loads(
            subprocess.run(
                [
                    str(go),
                    "mod",
                    "download",
                    "-json",
                    f"k8s.io/kubernetes@{KUBERNETES_VERSION}",
                ],
                capture_output=True,
                text=True,
                cwd=tmp_path,
                env=binaries.go_environment(),
                timeout=600,
                check=True,
            ).stdout
        )["GoMod"]
    )
    # Read the real go.mod as text, independently of how the harness reads it.
    text = upstream_gomod.read_text()
    replaced = set(re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/", text, re.M))
    required_upstream = _requirements(upstream_gomod)
    staged = {path for path in replaced if path in required_upstream}
    assert staged, "k8s.io/kubernetes no longer replaces any staging module"

    wrapper = tmp_path / "go.mod"
    wrapper.write_text(binaries.wrapper_gomod(KUBERNETES, upstream.gomod))
    pinned = _requirements(wrapper)

    assert pinned.pop("k8s.io/kubernetes") == KUBERNETES_VERSION
    assert pinned == dict.fromkeys(staged, "v0.34.4")


def test_wrapper_carries_module_replacements_and_drops_unrequired_guards() -> None:
    upstream = {
        "Go": "1.25.0",
        "Godebug": [{"Key": "default", "Value": "go1.25"}],
        "Require": [
            {"Path": "example.com/app/api", "Version": "v0.0.0"},
            {"Path": "example.com/lib", "Version": "v1.0.0"},
        ],
        "Replace": [
            {"Old": {"Path": "example.com/app/api"}, "New": {"Path": "./api"}},
            {"Old": {"Path": "example.com/forbidden"}, "New": {"Path": "./NOPE"}},
            {
                "Old": {"Path": "example.com/lib", "Version": "v1.0.0"},
                "New": {"Path": "example.com/fork", "Version": "v1.0.1"},
            },
        ],
    }
    component = binaries.Component(
        name="app",
        module="example.com/app",
        version="v2.3.4",
        commands=(("app", "example.com/app"),),
        siblings_version="v2.3.4",
    )

    gomod = binaries.wrapper_gomod(component, upstream)

    assert "go 1.25.0\n" in gomod
    assert "godebug default=go1.25\n" in gomod
    assert "\texample.com/app v2.3.4\n" in gomod
    assert "\texample.com/app/api v2.3.4\n" in gomod
    assert "\texample.com/lib v1.0.0 => example.com/fork v1.0.1\n" in gomod
    assert "forbidden" not in gomod


# --- link flags -------------------------------------------------------------


def _flag_values(flags: list[str]) -> dict[str, dict[str, str]]:
    values: dict[str, dict[str, str]] = {}
    for flag in flags:
        option, assignment = flag.split(" ", 1)
        assert option == "-X"
        symbol, value = assignment.split("=", 1)
        package, name = symbol.rsplit(".", 1)
        values.setdefault(package, {})[name] = value
    return values


def test_kubernetes_link_flags_stamp_both_version_packages_alike() -> None:
    when = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)

    values = _flag_values(
        binaries.kubernetes_ldflags("v1.34.4", build_date=when, git_commit="abc123")
    )

    expected = {
        "gitVersion": "v1.34.4",
        "gitMajor": "1",
        "gitMinor": "34",
        "gitTreeState": "clean",
        "buildDate": "2026-03-01T12:30:05Z",
        "gitCommit": "abc123",
    }
    assert values == {
        "k8s.io/component-base/version": expected,
        "k8s.io/client-go/pkg/version": expected,
    }


def test_kubernetes_link_flags_blank_an_unknown_commit_and_use_utc() -> None:
    when = datetime(2026, 3, 1, 23, 0, 0, tzinfo=timezone(timedelta(hours=-2)))

    values = _flag_values(binaries.kubernetes_ldflags("v1.35.0", build_date=when))

    for package_values in values.values():
        assert package_values["gitCommit"] == ""
        assert package_values["buildDate"] == "2026-03-02T01:00:00Z"
        assert package_values["gitMinor"] == "35"


def test_kubernetes_link_flags_refuse_a_version_without_three_numbers() -> None:
    with pytest.raises(ValueError, match=r"v1\.34"):
        binaries.kubernetes_ldflags("v1.34", build_date=datetime.now(UTC))


def test_full_link_flags_strip_symbols_and_quote_no_spaces_inside_values() -> None:
    flags = binaries.ldflags(
        KUBERNETES, build_date=datetime(2026, 1, 1, tzinfo=UTC), git_commit=""
    )

    words = flags.split(" ")
    assert words[:2] == ["-s", "-w"]
    assert all(w == "-X" or "=" in w for w in words[2:])


@pytest.mark.parametrize(
    ("package", "name"),
    [
        pytest.param("k8s.io/kubernetes/cmd/kubelet", "kubelet", id="plain"),
        pytest.param("go.etcd.io/etcd/server/v3", "server", id="major-suffix"),
        pytest.param("github.com/coredns/coredns", "coredns", id="module-root"),
    ],
)
def test_go_names_binaries_after_the_path_without_its_major_suffix(
    package: str, name: str
) -> None:
    assert binaries.go_output_name(package) == name


# --- versions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("binary", "output", "version"),
    [
        pytest.param(
            "kubectl",
            '{"clientVersion": {"gitVersion": "v1.34.4", "major": "1"}}',
            "v1.34.4",
            id="kubectl-json",
        ),
        pytest.param("kube-apiserver", "Kubernetes v1.34.4\n", "v1.34.4", id="kube"),
        pytest.param(
            "etcd", "etcd Version: 3.6.16\nGit SHA: x\n", "v3.6.16", id="etcd"
        ),
        pytest.param(
            "coredns", "CoreDNS-1.15.0\nlinux/amd64, go1.26\n", "v1.15.0", id="coredns"
        ),
        pytest.param("kubelet", "command not understood\n", None, id="garbage"),
        pytest.param("kubectl", "not json", None, id="kubectl-garbage"),
    ],
)
def test_versions_are_read_from_what_each_binary_prints(
    binary: str, output: str, version: str | None
) -> None:
    assert binaries.parse_version(binary, output) == version


@pytest.mark.parametrize(
    ("binary", "version", "accepted"),
    [
        pytest.param("kubelet", "v1.34.0", True, id="same-minor"),
        pytest.param("kubelet", "v1.33.9", False, id="older-minor"),
        pytest.param("etcd", "v3.6.1", True, id="etcd-3.6"),
        pytest.param("etcd", "v3.5.11", True, id="etcd-3.5.11"),
        pytest.param("etcd", "v3.5.10", False, id="etcd-3.5.10"),
        pytest.param("etcd", "v3.4.30", False, id="etcd-3.4"),
        pytest.param("coredns", "v1.12.1", True, id="coredns-1.12"),
        pytest.param("coredns", "v1.10.1", False, id="coredns-1.10"),
    ],
)
def test_prebuilt_versions_are_accepted_by_minor_version(
    binary: str, version: str, accepted: bool
) -> None:
    assert binaries.version_accepted(binary, version) is accepted


# --- prebuilt binaries ------------------------------------------------------


def _version_output(name: str, version: str) -> str:
    if name == "kubectl":
        return json.dumps({"clientVersion": {"gitVersion": version}})
    if name == "etcd":
        return f"etcd Version: {version}\nGit SHA: 0000000"
    if name == "coredns":
        return f"CoreDNS-{version}\nlinux/amd64, go1.26.8, 0000000"
    return f"Kubernetes {version}"


def _fake_binaries(folder: Path, **wrong: str) -> None:
    """Write shell scripts that print versions the way the real binaries do."""
    good = {"etcd": "3.6.5", "coredns": "1.12.1"}
    for f in fields(Binaries):
        name = binaries.binary_name(f.name)
        version = wrong.get(name, good.get(name, "v1.34.2"))
        script = folder / name
        script.write_text(
            f"#!/bin/sh\ncat <<'EOF'\n{_version_output(name, version)}\nEOF\n"
        )
        script.chmod(0o755)


def test_prebuilt_binaries_of_the_right_versions_are_used_in_place(
    tmp_path: Path,
) -> None:
    _fake_binaries(tmp_path)

    found = binaries.ensure(bin_dir=tmp_path)

    assert found.kubelet == tmp_path / "kubelet"
    assert found.kube_controller_manager == tmp_path / "kube-controller-manager"
    assert found.etcd == tmp_path / "etcd"


def test_harness_bin_dir_points_ensure_at_prebuilt_binaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_binaries(tmp_path)
    monkeypatch.setenv("HARNESS_BIN_DIR", str(tmp_path))

    assert binaries.ensure().coredns == tmp_path / "coredns"
    assert binaries.find() == binaries.ensure()


@pytest.mark.parametrize(
    ("binary", "version"),
    [
        pytest.param("kube-scheduler", "v1.33.1", id="kubernetes-minor"),
        pytest.param("kubectl", "v1.30.0", id="kubectl-json"),
        pytest.param("etcd", "3.4.30", id="etcd"),
        pytest.param("coredns", "1.8.0", id="coredns"),
    ],
)
def test_a_prebuilt_binary_of_a_wrong_version_is_refused_by_name(
    tmp_path: Path, binary: str, version: str
) -> None:
    _fake_binaries(tmp_path, **{binary: version})

    with pytest.raises(PrerequisiteError) as caught:
        binaries.ensure(bin_dir=tmp_path)

    message = str(caught.value)
    assert str(tmp_path / binary) in message
    assert version in message
    assert "expected" in message


def test_a_missing_prebuilt_binary_is_refused_by_name(tmp_path: Path) -> None:
    _fake_binaries(tmp_path)
    (tmp_path / "kube-proxy").unlink()

    with pytest.raises(PrerequisiteError, match=r"kube-proxy is missing"):
        binaries.ensure(bin_dir=tmp_path)


def test_a_prebuilt_binary_that_is_not_executable_is_refused_by_name(
    tmp_path: Path,
) -> None:
    _fake_binaries(tmp_path)
    (tmp_path / "etcd").chmod(0o644)

    with pytest.raises(PrerequisiteError, match=r"etcd is not executable"):
        binaries.ensure(bin_dir=tmp_path)


# --- building ---------------------------------------------------------------


def test_building_without_go_names_the_two_ways_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_BIN_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(binaries, "FALLBACK_GO", tmp_path / "no-go")

    with pytest.raises(PrerequisiteError, match=r"^go not found: .*HARNESS_BIN_DIR"):
        binaries.ensure(progress=Progress("binaries", quiet=True))

    assert not (tmp_path / "cache" / "bin" / "etcd-v3.6.16").exists()


def test_a_failing_command_raises_build_error_with_the_end_of_its_log(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "build.log"

    with pytest.raises(BuildError) as caught:
        binaries.run_logged(
            [
                "sh",
                "-c",
                "echo pkg/one; echo pkg/two; echo 'boom: no such thing'; exit 3",
            ],
            cwd=tmp_path,
            log_path=log_path,
            progress=Progress("binaries", quiet=True),
            what="demo",
            timeout=60,
        )

    assert "building demo failed (exited 3)" in str(caught.value)
    assert "boom: no such thing" in str(caught.value)
    assert "pkg/one" in log_path.read_text()


def test_compiled_package_lines_are_counted_and_go_chatter_is_not(
    tmp_path: Path,
) -> None:
    count = binaries.run_logged(
        ["sh", "-c", "echo 'go: downloading x v1'; echo '# note'; echo a; echo b"],
        cwd=tmp_path,
        log_path=tmp_path / "build.log",
        progress=Progress("binaries", quiet=True),
        what="demo",
        timeout=60,
    )

    assert count == 2


def test_a_command_that_outlives_its_timeout_is_killed(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"building demo failed \(killed after 1s\)"):
        binaries.run_logged(
            ["sleep", "60"],
            cwd=tmp_path,
            log_path=tmp_path / "build.log",
            progress=Progress("binaries", quiet=True),
            what="demo",
            timeout=1,
        )


def _running(pid: int) -> bool:
    """Tell whether ``pid`` is a live process (a zombie counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pid: int, *, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.timeout(60)
def test_a_timeout_kills_the_compilers_go_started_not_only_go(tmp_path: Path) -> None:
    log_path = tmp_path / "build.log"
    # Like go with a compiler running: a child that does not hold the pipe,
    # so only a kill of the whole group ends it.
    script = "sleep 300 >/dev/null 2>&1 & echo $!; exec sleep 300"
    child = 0
    try:
        with pytest.raises(BuildError, match=r"\(killed after 2s\)"):
            binaries.run_logged(
                ["sh", "-c", script],
                cwd=tmp_path,
                log_path=log_path,
                progress=Progress("binaries", quiet=True),
                what="demo",
                timeout=2,
            )
        child = int(log_path.read_text().splitlines()[1])

        assert _gone(child)
    finally:
        if child and _running(child):
            os.kill(child, signal.SIGKILL)


def _hold_build_lock(cache: Path, *, seconds: float) -> subprocess.Popen[str]:
    """Start a process that holds the build lock of ``cache`` for ``seconds``."""
    code = (
        "import sys, time\n"
        "from harness import binaries\n"
        "from harness.progress import Progress\n"
        "with binaries._build_lock(Progress('other', quiet=True)):\n"
        "    print('held', flush=True)\n"
        f"    time.sleep({seconds})\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env={**os.environ, "HARNESS_CACHE": str(cache)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    ready, _, _ = select.select([holder.stdout], [], [], 60.0)
    if not ready or holder.stdout.readline().strip() != "held":
        holder.kill()
        holder.wait(timeout=10)
        pytest.fail("the process holding the lock did not start")
    return holder


def _end(holder: subprocess.Popen[str]) -> None:
    if holder.poll() is None:
        holder.kill()
    holder.wait(timeout=10)
    assert holder.stdout is not None
    holder.stdout.close()


@pytest.mark.timeout(120)
def test_waiting_for_another_build_is_bounded_and_names_its_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    monkeypatch.delenv("HARNESS_BIN_DIR", raising=False)
    shown = io.StringIO()
    holder = _hold_build_lock(cache, seconds=60)
    try:
        with pytest.raises(BuildError) as caught:
            binaries.ensure(
                progress=Progress("binaries", stream=shown), lock_timeout=1.0
            )
    finally:
        _end(holder)

    message = str(caught.value)
    assert f"another build (PID {holder.pid}) has held" in message
    assert f"or end PID {holder.pid} if it is stuck" in message
    assert "\n" not in message
    assert f"waiting for another build (PID {holder.pid})" in shown.getvalue()
    assert not (cache / "bin" / f"etcd-{ETCD_VERSION}").exists()


@pytest.mark.timeout(120)
def test_a_lock_released_while_waiting_is_taken_by_the_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    monkeypatch.setattr(binaries, "LOCK_POLL_SECONDS", 0.05)
    holder = _hold_build_lock(cache, seconds=1)
    try:
        with binaries._build_lock(Progress("binaries", quiet=True), timeout=60):
            lock_text = (cache / "bin" / ".lock").read_text()
        # It let go of the lock and ended by itself, not killed.
        holder_status = holder.wait(timeout=30)
    finally:
        _end(holder)

    assert holder_status == 0
    assert lock_text == f"{os.getpid()}\n"
    # Released, it names nobody.
    assert (cache / "bin" / ".lock").read_text() == ""


def _fake_go(folder: Path, script: str) -> Path:
    go = folder / "go"
    go.write_text(f"#!/bin/sh\n{script}\n")
    go.chmod(0o755)
    return go


@pytest.mark.parametrize(
    ("script", "says"),
    [
        pytest.param(None, "could not run", id="missing"),
        pytest.param("exec sleep 30", "did not answer within 0.5s", id="hangs"),
        pytest.param("echo nonsense", "env GOVERSION failed", id="not-go"),
    ],
)
def test_a_broken_go_is_a_one_line_prerequisite_error(
    tmp_path: Path, script: str | None, says: str
) -> None:
    go = tmp_path / "go" if script is None else _fake_go(tmp_path, script)

    with pytest.raises(PrerequisiteError) as caught:
        binaries.go_version(go, timeout=0.5)

    assert str(caught.value).startswith(f"{go} env GOVERSION")
    assert says in str(caught.value)
    assert "reinstall Go 1.24+" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("output", "says"),
    [
        pytest.param("hello there", "printed 'hello there' instead of JSON", id="text"),
        pytest.param("[1, 2]", "printed a JSON list, not an object", id="a-list"),
        pytest.param("", "printed 'nothing' instead of JSON", id="nothing"),
    ],
)
def test_go_printing_no_json_object_is_a_one_line_build_error(
    tmp_path: Path, output: str, says: str
) -> None:
    go = _fake_go(tmp_path, f"echo '{output}'" if output else "true")

    with pytest.raises(BuildError) as caught:
        binaries.read_upstream(go, binaries.ETCD, work=tmp_path)

    assert str(caught.value).startswith("go mod download -json go.etcd.io/etcd")
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_go_that_cannot_run_is_a_prerequisite_error(tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError, match="could not run"):
        binaries.read_upstream(tmp_path / "no-go", binaries.ETCD, work=tmp_path)


def test_a_long_command_shows_a_person_the_elapsed_time_and_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(binaries, "HEARTBEAT_SECONDS", 0.05)
    shown = tmp_path / "progress.txt"
    # The command prints one package, then waits (at most 10 s) for a heartbeat.
    script = (
        "echo pkg/one; i=0; "
        f"while ! grep -q '1 of at most 7' {shown} 2>/dev/null && [ $i -lt 200 ]; "
        "do sleep 0.05; i=$((i+1)); done"
    )

    with shown.open("w") as stream:
        binaries.run_logged(
            ["sh", "-c", script],
            cwd=tmp_path,
            log_path=tmp_path / "build.log",
            progress=Progress("binaries", stream=stream),
            what="demo",
            timeout=60,
            total=7,
        )

    assert re.search(
        r"^\[binaries\] demo: \dm\d\ds, 1 of at most 7 packages compiled$",
        shown.read_text(),
        re.M,
    )


def test_installing_replaces_an_old_folder_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    final = tmp_path / "etcd-v3.6.16"
    final.mkdir()
    (final / "etcd").write_text("old")
    staged = tmp_path / ".etcd-v3.6.16.tmp"
    staged.mkdir()
    (staged / "etcd").write_text("new")

    binaries._install(staged, final)

    assert (final / "etcd").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etcd-v3.6.16"]


# --- the real binaries ------------------------------------------------------


def _has_interpreter(path: Path) -> bool:
    """Tell whether an ELF64 file asks for a dynamic loader (PT_INTERP)."""
    with path.open("rb") as elf:
        header = elf.read(64)
        assert header[:4] == b"\x7fELF", f"{path} is not ELF"
        assert header[4] == 2, f"{path} is not 64-bit"
        phoff = struct.unpack_from("<Q", header, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        elf.seek(phoff)
        table = elf.read(phentsize * phnum)
    return any(
        struct.unpack_from("<I", table, i * phentsize)[0] == PT_INTERP
        for i in range(phnum)
    )


@pytest.fixture(scope="module")
def built() -> Binaries:
    if os.environ.get("HARNESS_BIN_DIR"):
        pytest.skip("HARNESS_BIN_DIR is set: the cache's builds are not in use")
    if not HAS_GO and binaries.find() is None:
        pytest.skip("Go is not installed and no binaries are cached")
    return binaries.ensure(progress=Progress("binaries", quiet=True))


def _output(*args: str | Path) -> str:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout + result.stderr


@pytest.mark.binaries
def test_kubectl_reports_the_kubernetes_version_it_was_built_from(
    built: Binaries,
) -> None:
    report = json.loads(_output(built.kubectl, "version", "--client", "-o", "json"))

    client = report["clientVersion"]
    assert client["gitVersion"] == KUBERNETES_VERSION
    assert (client["major"], client["minor"]) == ("1", "34")
    assert client["gitTreeState"] == "clean"
    assert "$Format" not in client["gitCommit"]


@pytest.mark.binaries
@pytest.mark.parametrize(
    "field",
    [
        pytest.param(name, id=name)
        for name in (
            "kube_apiserver",
            "kube_controller_manager",
            "kube_scheduler",
            "kubelet",
            "kube_proxy",
        )
    ],
)
def test_kubernetes_servers_report_their_version(built: Binaries, field: str) -> None:
    assert f"Kubernetes {KUBERNETES_VERSION}" in _output(
        getattr(built, field), "--version"
    )


@pytest.mark.binaries
def test_etcd_reports_its_version(built: Binaries) -> None:
    assert f"etcd Version: {ETCD_VERSION.removeprefix('v')}\n" in _output(
        built.etcd, "--version"
    )


@pytest.mark.binaries
def test_coredns_reports_its_version(built: Binaries) -> None:
    assert f"CoreDNS-{COREDNS_VERSION.removeprefix('v')}\n" in _output(
        built.coredns, "-version"
    )


@pytest.mark.binaries
@pytest.mark.parametrize(
    "field", [pytest.param(f.name, id=f.name) for f in fields(Binaries)]
)
def test_every_binary_is_statically_linked(built: Binaries, field: str) -> None:
    assert not _has_interpreter(getattr(built, field))


@pytest.mark.binaries
def test_a_second_ensure_reuses_the_cache_without_touching_it(
    built: Binaries,
) -> None:
    before = {
        f.name: getattr(built, f.name).stat().st_mtime_ns for f in fields(Binaries)
    }

    again = binaries.ensure(progress=Progress("binaries", quiet=True))

    assert again == built
    after = {
        f.name: getattr(again, f.name).stat().st_mtime_ns for f in fields(Binaries)
    }
    assert after == before
    assert binaries.find() == built


@pytest.mark.binaries
def test_each_build_records_its_versions_and_durations(built: Binaries) -> None:
    for component in binaries.COMPONENTS:
        record = json.loads(
            (binaries.component_dir(component) / "build.json").read_text()
        )
        assert record["version"] == component.version
        assert record["go_version"].startswith("go1.")
        assert record["seconds"]["total"] >= record["seconds"]["compile"] >= 0
