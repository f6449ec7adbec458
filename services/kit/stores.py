"""Where a service keeps its records: in memory now, behind a small interface.

Each pod holds its own copy, seeded identically at start, which is all the
experiments need: they count requests, not data. The routes talk to the
``Store`` protocol only, so a database can replace ``MemoryStore`` later
without touching them.
"""

from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar


class Record(Protocol):
    """Anything stored has an integer id."""

    @property
    def id(self) -> int:
        """Return the id the store gave the record."""
        ...


RecordT = TypeVar("RecordT", bound=Record)


class Store(Protocol[RecordT]):
    """The operations the routes need, asynchronous so a database fits."""

    async def all(self) -> list[RecordT]:
        """Return every record, in the order of their ids."""
        ...

    async def get(self, record_id: int) -> RecordT | None:
        """Return the record with ``record_id``, or None."""
        ...

    async def add(self, build: Callable[[int], RecordT]) -> RecordT:
        """Store the record ``build`` makes from a fresh id, and return it."""
        ...

    async def replace(self, record: RecordT) -> bool:
        """Replace the record of the same id; False when there is none."""
        ...

    async def delete(self, record_id: int) -> bool:
        """Remove the record with ``record_id``; False when there is none."""
        ...


# TODO: a shared database would keep the pods of a service consistent; with
# MemoryStore each pod has its own copy, so a write reaches only the pod that
# served it and later reads through the Service may not see it.
class MemoryStore(Generic[RecordT]):
    """Records in a dict, ids counted from 1 in the order they were added."""

    def __init__(self, seed: Iterable[Callable[[int], RecordT]] = ()) -> None:
        self._records: dict[int, RecordT] = {}
        self._last_id = 0
        for build in seed:
            self._put_new(build)

    def _put_new(self, build: Callable[[int], RecordT]) -> RecordT:
        self._last_id += 1
        record = build(self._last_id)
        self._records[record.id] = record
        return record

    async def all(self) -> list[RecordT]:
        """Return every record, in the order of their ids."""
        return [self._records[key] for key in sorted(self._records)]

    async def get(self, record_id: int) -> RecordT | None:
        """Return the record with ``record_id``, or None."""
        return self._records.get(record_id)

    async def add(self, build: Callable[[int], RecordT]) -> RecordT:
        """Store the record ``build`` makes from a fresh id, and return it."""
        return self._put_new(build)

    async def replace(self, record: RecordT) -> bool:
        """Replace the record of the same id; False when there is none."""
        if record.id not in self._records:
            return False
        self._records[record.id] = record
        return True

    async def delete(self, record_id: int) -> bool:
        """Remove the record with ``record_id``; False when there is none."""
        return self._records.pop(record_id, None) is not None
