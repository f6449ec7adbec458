"""The harness's exceptions: one base, one subclass per kind of failure.

Every message names the offending value and what to do about it, so that the
CLI can print it as the one line a user sees.
"""


class HarnessError(Exception):
    """Base of every failure the harness reports to its user."""


class UsageError(HarnessError):
    """An option or argument has a value the harness cannot use."""


class PrerequisiteError(HarnessError):
    """Something the machine must have is missing: a tool, a package, root."""


class BuildError(HarnessError):
    """Building a binary or an image failed."""


class CommandError(HarnessError):
    """An external tool exited non-zero; carries the end of its output."""

    def __init__(self, message: str, *, output_tail: str = "") -> None:
        super().__init__(message)
        self.output_tail = output_tail

    def __str__(self) -> str:
        base = super().__str__()
        if not self.output_tail:
            return base
        return f"{base}\n--- end of output ---\n{self.output_tail}"
