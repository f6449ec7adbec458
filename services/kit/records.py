"""The records of one kind a service keeps, as its routes reach them.

Each app keeps its store in ``app.extensions``, so that many apps in one
process (as in tests) hold records apart. ``Records`` names that key once and
answers an id the store lacks with the same 404 in every service.
"""

import logging
from dataclasses import dataclass
from typing import Generic, cast

from quart import Quart, Response

from services.kit.app import current_service
from services.kit.errors import NotFoundError
from services.kit.negotiation import see_other
from services.kit.stores import RecordT, Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Records(Generic[RecordT]):
    """One kind of record: what one is called, where they are listed and kept."""

    #: What one record is called in messages, such as ``item``.
    noun: str
    #: The URL that lists them, which the 404 of a missing one points to.
    listing: str
    #: The key of their store in ``app.extensions``.
    key: str

    def install(self, app: Quart, store: Store[RecordT]) -> None:
        """Keep these records of ``app`` in ``store``."""
        app.extensions[self.key] = store

    def store(self) -> Store[RecordT]:
        """Return the store of the current app."""
        return cast(Store[RecordT], current_service().extensions[self.key])

    def missing(self, record_id: int) -> NotFoundError:
        """Return the 404 of an id that no record has."""
        return NotFoundError(
            f"{self.noun} {record_id} does not exist; see {self.listing}"
        )

    async def find(self, record_id: int) -> RecordT:
        """Return the record with ``record_id`` or raise a 404."""
        record = await self.store().get(record_id)
        if record is None:
            raise self.missing(record_id)
        return record

    async def replace(self, record: RecordT) -> None:
        """Replace the record of the same id, or raise a 404."""
        if not await self.store().replace(record):
            raise self.missing(record.id)

    async def delete(self, record_id: int) -> Response:
        """Remove a record and answer 204, or raise a 404."""
        if not await self.store().delete(record_id):
            raise self.missing(record_id)
        logger.debug("%s %d deleted", self.noun, record_id)
        return Response(status=204)

    async def delete_from_page(self, record_id: int, *, then: str) -> Response:
        """Remove a record from its page and send the browser to ``then``."""
        if not await self.store().delete(record_id):
            raise self.missing(record_id)
        logger.debug("%s %d deleted from its page", self.noun, record_id)
        return see_other(then)
