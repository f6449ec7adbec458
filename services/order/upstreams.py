"""Calls to the catalog and customer services, bounded in time.

kube-proxy picks a pod per connection, not per request, so by default every
call opens a connection of its own (``UPSTREAM_KEEPALIVE=false``): a pooled
connection would pin all calls of this pod to one catalog pod. Each call is
bounded by ``UPSTREAM_TIMEOUT_SECONDS`` from start to end, whatever phase it
hangs in, and any failure becomes a 503 that names the service.
"""

import asyncio
import logging
from dataclasses import dataclass

import httpx

from services.kit import UpstreamError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upstream:
    """A service this one calls: its name and base URL."""

    name: str
    base_url: str


class Upstreams:
    """One HTTP client for the catalog and customer services."""

    def __init__(
        self,
        *,
        catalog: Upstream,
        customer: Upstream,
        timeout_seconds: float,
        keepalive: bool,
    ) -> None:
        self.catalog = catalog
        self.customer = customer
        self.timeout_seconds = timeout_seconds
        self.keepalive = keepalive
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Open the client; calls fail until this ran."""
        headers = {"Accept": "application/json"}
        if not self.keepalive:
            headers["Connection"] = "close"
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_seconds),
            limits=httpx.Limits(
                max_connections=100,
                max_keepalive_connections=20 if self.keepalive else 0,
            ),
            headers=headers,
            follow_redirects=False,
            # Pods need no proxy, and nothing should read the host's settings.
            trust_env=False,
        )

    async def close(self) -> None:
        """Close the client and its connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def get(self, upstream: Upstream, path: str) -> object | None:
        """Return the JSON that ``upstream`` answers at ``path``; None on a 404."""
        if self._client is None:
            raise RuntimeError("Upstreams.get() before start(); start the app first")
        url = f"{upstream.base_url}{path}"
        try:
            async with asyncio.timeout(self.timeout_seconds):
                response = await self._client.get(url)
        except (TimeoutError, httpx.TimeoutException) as e:
            logger.warning("%s did not answer %s in time", upstream.name, url)
            raise UpstreamError(
                f"the {upstream.name} service at {upstream.base_url} did not answer "
                f"within {self.timeout_seconds:g} s; try again later"
            ) from e
        except httpx.HTTPError as e:
            logger.warning("%s unreachable at %s: %s", upstream.name, url, e)
            raise UpstreamError(
                f"the {upstream.name} service cannot be reached at "
                f"{upstream.base_url}; try again later"
            ) from e
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            logger.warning(
                "%s answered %s with %d", upstream.name, url, response.status_code
            )
            raise UpstreamError(
                f"the {upstream.name} service answered {response.status_code}; "
                "try again later"
            )
        try:
            body: object = response.json()
        except (ValueError, RecursionError) as e:
            raise UpstreamError(
                f"the {upstream.name} service answered something that is not JSON"
            ) from e
        return body
