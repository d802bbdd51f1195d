"""The contract every artifact store backend implements."""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from store.artifact import Artifact

Clock = Callable[[], float]
DEFAULT_CLOCK: Clock = time.time


@dataclass(frozen=True, slots=True)
class StoreStats:
    count: int  # artifacts held (Redis: including expired ones not yet swept)
    bytes: int  # payload bytes counted against the budget
    max_bytes: int
    expired_total: int  # reads refused because the artifact had expired
    swept_total: int  # artifacts removed by sweeps


class Swept(NamedTuple):
    """One artifact removed by a sweep, with the expiry it was removed for."""

    artifact_id: str
    expires_at: float


class ArtifactStore(Protocol):
    backend: str  # "memory" | "disk" | "redis"
    writes_to_disk: bool
    max_bytes: int

    async def put(
        self, data: bytes, content_type: str, ttl_seconds: float, tag: str = ""
    ) -> tuple[str, Artifact]:
        """Store data for ttl_seconds; return the new capability token and the metadata."""
        ...

    async def get(self, token: str) -> tuple[Artifact, bytes] | None:
        """The artifact, or None when unknown or expired (checked on every read)."""
        ...

    async def head(self, token: str) -> Artifact | None:
        """Metadata only; None when unknown or expired."""
        ...

    async def delete(self, token: str) -> bool:
        """Remove now; False when there was nothing to remove."""
        ...

    async def sweep(self, now: float | None = None) -> list[Swept]:
        """Remove everything expired at now; return what was removed, with its expiry."""
        ...

    async def shorten_all(
        self,
        max_ttl_seconds: float,
        now: float | None = None,
        by_tag: Mapping[str, float] | None = None,
    ) -> int:
        """Cap live lifetimes at now + max_ttl_seconds, or now + by_tag[tag] for an artifact
        whose tag is listed; never extend one. Return how many changed."""
        ...

    async def stats(self) -> StoreStats: ...

    async def ping(self) -> bool:
        """Readiness: True when the backend can serve."""
        ...

    async def close(self) -> None: ...
