"""The encrypted disk backend: artifacts on disk, readable only by this process.

Each file is sealed with its own key (store.sealing) held only in this
process's memory, so the files die with the process: start-up removes what a
previous process left. Removal drops (overwrites) the key first, then unlinks
the file, so a file that outlives its removal is already unreadable. Disk work
runs in threads; the event loop never blocks on it.
"""

import asyncio
import os
import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from store import sealing
from store.artifact import Artifact, new_artifact
from store.base import DEFAULT_CLOCK, Clock, StoreStats, Swept
from store.catalog import Catalog
from store.errors import StoreUnavailable
from store.tokens import artifact_id, new_token

# Only names this store writes are ever removed, so a misconfigured directory
# (a home directory, say) loses nothing else.
_OWN_FILE = re.compile(r"[0-9a-f]{64}(\.partial)?")


class DiskStore:
    backend = "disk"
    writes_to_disk = True

    def __init__(self, directory: Path, *, max_bytes: int, clock: Clock = DEFAULT_CLOCK) -> None:
        self._catalog: Catalog[bytearray] = Catalog(max_bytes)
        self._clock = clock
        self.max_bytes = max_bytes
        self.directory = directory
        # Start-up, before serving: blocking here is fine.
        sealing.prepare_directory(directory, _OWN_FILE)

    async def put(
        self, data: bytes, content_type: str, ttl_seconds: float, tag: str = ""
    ) -> tuple[str, Artifact]:
        now = self._clock()
        token = new_token()
        artifact = new_artifact(artifact_id(token), content_type, len(data), now, ttl_seconds, tag)
        if not self._catalog.fits(artifact.size):
            await self.sweep(now)  # expired artifacts make room; live ones never
        self._catalog.reserve(artifact.size)
        key = sealing.new_key()
        path = self._path(artifact.id)
        writing = asyncio.ensure_future(
            asyncio.to_thread(sealing.write_sealed, path, key, artifact.id.encode(), data)
        )
        try:
            # Shielded: a cancelled caller must not leave the thread's file behind unnoticed.
            await asyncio.shield(writing)
        except BaseException as exc:
            self._catalog.release(artifact.size)
            sealing.forget(key)
            writing.add_done_callback(partial(_remove_after, path))
            if isinstance(exc, OSError):
                raise StoreUnavailable("the store directory cannot be written") from exc
            raise
        self._catalog.insert(artifact, key)
        return token, artifact

    async def get(self, token: str) -> tuple[Artifact, bytes] | None:
        found = artifact_id(token)
        entry = self._catalog.lookup(found, self._clock())
        if entry is None:
            return None
        key = entry[1]
        data = await asyncio.to_thread(sealing.read_sealed, self._path(found), key, found.encode())
        if data is None:
            await self._remove(found)  # tampered, swapped or lost: unreadable for good
            return None
        # Look again: the artifact may have expired, been shortened or deleted during the read.
        current = self._catalog.lookup(found, self._clock())
        if current is None or current[1] is not key:
            return None
        return current[0], data

    async def head(self, token: str) -> Artifact | None:
        entry = self._catalog.lookup(artifact_id(token), self._clock())
        return None if entry is None else entry[0]

    async def delete(self, token: str) -> bool:
        return await self._remove(artifact_id(token))

    async def sweep(self, now: float | None = None) -> list[Swept]:
        removed = self._catalog.pop_expired(self._clock() if now is None else now)
        await self._drop([artifact for artifact, _ in removed], [key for _, key in removed])
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
        return self.directory.is_dir() and os.access(self.directory, os.W_OK | os.X_OK)

    async def close(self) -> None:
        removed = self._catalog.clear()
        await self._drop([artifact for artifact, _ in removed], [key for _, key in removed])

    async def _remove(self, found: str) -> bool:
        entry = self._catalog.pop(found)
        if entry is None:
            return False
        await self._drop([entry[0]], [entry[1]])
        return True

    async def _drop(self, artifacts: list[Artifact], keys: list[bytearray]) -> None:
        """Keys first, then files: a file is unreadable before it is unlinked."""
        for key in keys:
            sealing.forget(key)
        if artifacts:
            paths = [self._path(artifact.id) for artifact in artifacts]
            await asyncio.to_thread(sealing.remove_files, paths)

    def _path(self, found: str) -> Path:
        return self.directory / found


def _remove_after(path: Path, writing: "asyncio.Future[None]") -> None:
    """Once an abandoned write finishes, remove whatever it left (no key exists for it)."""
    asyncio.get_running_loop().run_in_executor(None, sealing.remove_files, [path])
