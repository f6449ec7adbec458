"""Progress of long steps, shown to the person at the terminal.

Steps print to standard error as they start and end, with the time they
took, so a user watching a cold build sees that it advances. This is not
logging: it is meant for a person and says nothing when ``quiet`` is set.
"""

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Print numbered steps of one long task and how long each took."""

    def __init__(
        self,
        task: str,
        *,
        total: int | None = None,
        stream: TextIO | None = None,
        quiet: bool = False,
    ) -> None:
        self.task = task
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self._done = 0

    def note(self, message: str) -> None:
        """Print one line about the task."""
        if not self.quiet:
            print(f"[{self.task}] {message}", file=self.stream, flush=True)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Announce a step, then print its outcome and duration."""
        self._done += 1
        counter = f"{self._done}/{self.total} " if self.total else ""
        self.note(f"{counter}{what} ...")
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self.note(f"{counter}{what}: failed after {time.monotonic() - start:.1f}s")
            raise
        self.note(f"{counter}{what}: done in {time.monotonic() - start:.1f}s")
