"""Tests of harness.commands: running tools, their failures, timeouts and mounts."""

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from harness import commands
from harness.errors import CommandError, PrerequisiteError

#: How long a killed process may take to vanish from the process table.
GONE_WITHIN_SECONDS = 10.0


def _running(pid: int) -> bool:
    """Tell whether ``pid`` is a live process (a zombie counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state is the first field after the ")" that ends the command name.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pid: int) -> bool:
    """Wait, within a bound, for ``pid`` to end; tell whether it did."""
    deadline = time.monotonic() + GONE_WITHIN_SECONDS
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _pids(text: str) -> list[int]:
    return [int(word) for word in text.split() if word.isdigit()]


def test_a_tool_that_succeeds_returns_its_status_and_both_streams() -> None:
    done = commands.run(["sh", "-c", "echo out; echo err >&2"], timeout=30)

    assert done.returncode == 0
    assert done.stdout == "out\n"
    assert done.stderr == "err\n"
    assert done.args == ("sh", "-c", "echo out; echo err >&2")


def test_input_text_reaches_the_tool() -> None:
    done = commands.run(["tr", "a-z", "A-Z"], timeout=30, input_text="quiet\n")

    assert done.stdout == "QUIET\n"


def test_a_failing_tool_raises_with_its_status_and_the_end_of_its_output() -> None:
    script = "for i in $(seq 1 40); do echo line-$i; done; echo broken >&2; exit 3"

    with pytest.raises(CommandError) as caught:
        commands.run(["sh", "-c", script], timeout=30)

    assert str(caught.value).startswith("sh -c ")
    assert "exited with status 3" in str(caught.value)
    shown = caught.value.output_tail.splitlines()
    assert "line-40" in shown
    assert "broken" in shown
    # Only the tail: the first lines are left out.
    assert "line-1" not in shown
    assert len(shown) <= commands.TAIL_LINES


def test_a_failing_tool_without_check_returns_its_status() -> None:
    done = commands.run(["sh", "-c", "exit 7"], timeout=30, check=False)

    assert done.returncode == 7


def test_a_tool_logging_to_a_file_fails_with_the_end_of_that_file(
    tmp_path: Path,
) -> None:
    log = tmp_path / "tool.log"

    with pytest.raises(CommandError) as caught:
        commands.run(["sh", "-c", "echo to-the-log; exit 1"], timeout=30, log_file=log)

    assert "to-the-log" in caught.value.output_tail
    assert log.read_text() == "to-the-log\n"


def test_a_tool_that_cannot_start_is_a_command_error_naming_it(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-tool"

    with pytest.raises(CommandError, match=f"^{missing} could not be started"):
        commands.run([missing], timeout=30)


@pytest.mark.timeout(60)
def test_a_timeout_kills_the_tool_and_every_process_of_its_group() -> None:
    # The shell starts one sleep in the background and becomes the other.
    script = "sleep 60 & echo $!; echo $$; exec sleep 60"

    with pytest.raises(CommandError) as caught:
        commands.run(["sh", "-c", script], timeout=2)

    pids = _pids(caught.value.output_tail)
    assert "did not finish within 2s and was killed" in str(caught.value)
    assert len(pids) == 2
    assert all(_gone(pid) for pid in pids), pids


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("script", "says"),
    [
        pytest.param(
            "setsid sh -c 'echo $$; exec sleep 30' & wait",
            "did not finish within 2s and was killed; a process that left its group",
            id="tool-still-running",
        ),
        pytest.param(
            "setsid sh -c 'echo $$; exec sleep 30' & echo parent-done",
            "ended, but a process it started held its output past 2s",
            id="tool-already-ended",
        ),
    ],
)
def test_a_process_that_escapes_the_group_with_the_output_open_does_not_hang_the_call(
    script: str, says: str
) -> None:
    escaped: list[int] = []
    try:
        with pytest.raises(CommandError) as caught:
            commands.run(["sh", "-c", script], timeout=2)
        escaped = _pids(caught.value.output_tail)

        assert says in str(caught.value)
        assert len(escaped) == 1
        # The call came back while the escaped process still held the pipe.
        assert _running(escaped[0])
    finally:
        for pid in escaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert all(_gone(pid) for pid in escaped)


def test_the_tail_keeps_only_the_last_lines() -> None:
    text = "\n".join(f"l{i}" for i in range(10)) + "\n\n"

    assert commands.tail(text, lines=3) == "l7\nl8\nl9"


def test_a_command_line_is_described_as_a_shell_would_quote_it() -> None:
    assert commands.describe(["echo", "a b", Path("/x")]) == "echo 'a b' /x"


def test_a_missing_tool_names_the_debian_package_that_provides_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(PrerequisiteError, match="install the Debian package buildah"):
        commands.require("buildah", package="buildah")
