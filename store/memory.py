"""The default backend: artifacts in this process's memory, nothing on disk."""

from collections.abc import Mapping

from store.artifact import Artifact, new_artifact
from store.base import DEFAULT_CLOCK, Clock, StoreStats, Swept
from store.catalog import Catalog
from store.tokens import artifact_id, new_token


class MemoryStore:
    """All calls come from one event loop; no method awaits, so none interleave."""

    backend = "memory"
    writes_to_disk = False

    def __init__(self, *, max_bytes: int, clock: Clock = DEFAULT_CLOCK) -> None:
        self._catalog: Catalog[bytes] = Catalog(max_bytes)
        self._clock = clock
        self.max_bytes = max_bytes

    async def put(
        self, data: bytes, content_type: str, ttl_seconds: float, tag: str = ""
    ) -> tuple[str, Artifact]:
        now = self._clock()
        token = new_token()
        artifact = new_artifact(artifact_id(token), content_type, len(data), now, ttl_seconds, tag)
        if not self._catalog.fits(artifact.size):
            self._catalog.pop_expired(now)  # expired artifacts make room; live ones never
        self._catalog.reserve(artifact.size)
        self._catalog.insert(artifact, bytes(data))
        return token, artifact

    async def get(self, token: str) -> tuple[Artifact, bytes] | None:
        return self._catalog.lookup(artifact_id(token), self._clock())

    async def head(self, token: str) -> Artifact | None:
        entry = self._catalog.lookup(artifact_id(token), self._clock())
        return None if entry is None else entry[0]

    async def delete(self, token: str) -> bool:
        return self._catalog.pop(artifact_id(token)) is not None

    async def sweep(self, now: float | None = None) -> list[Swept]:
        removed = self._catalog.pop_expired(self._clock() if now is None else now)
        return [Swept(a.id, a.expires_at) for a, _ in removed]

    async def shorten_all(
        self,
        max_ttl_seconds: float,
        now: float | None = None,
        by_tag: Mapping[str, float] | None = None,
    ) -> int:
        now = self._clock() if now is None else now
        return self._catalog.shorten_all(max_ttl_seconds, now, by_tag)

    async def stats(self) -> StoreStats:
        return self._catalog.stats()

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._catalog.clear()
