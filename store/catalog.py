"""The in-process index shared by the memory and disk backends.

Entries keyed by artifact id, each with a payload (the bytes themselves, or a
disk file's key), an expiry min-heap so a sweep costs O(k log n) for k expired
among n, and the byte budget. Heap entries are deleted lazily: a heap entry
whose expiry no longer matches its artifact (deleted or shortened) is skipped
when it surfaces.
"""

import dataclasses
import heapq
from collections.abc import Mapping
from typing import Generic, TypeVar

from store.artifact import Artifact
from store.base import StoreStats
from store.errors import StoreFull

P = TypeVar("P")

# Rebuild the heap when stale entries outnumber live ones by this much, so
# deletes cannot grow it without bound (amortised O(1) per delete).
_COMPACT_SLACK = 1024


class Catalog(Generic[P]):
    __slots__ = (
        "_entries",
        "_heap",
        "_held",
        "_reserved",
        "expired_total",
        "max_bytes",
        "swept_total",
    )

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._entries: dict[str, tuple[Artifact, P]] = {}
        self._heap: list[tuple[float, str]] = []
        self._held = 0  # bytes of the entries
        self._reserved = 0  # bytes of puts in flight
        self.expired_total = 0
        self.swept_total = 0

    def fits(self, size: int) -> bool:
        return self._held + self._reserved + size <= self.max_bytes

    def reserve(self, size: int) -> None:
        """Claim budget before a put's first await, so concurrent puts cannot overshoot."""
        if not self.fits(size):
            raise StoreFull(f"store is full ({self._held} of {self.max_bytes} bytes in use)")
        self._reserved += size

    def release(self, size: int) -> None:
        """Give back a reservation whose put failed."""
        self._reserved -= size

    def insert(self, artifact: Artifact, payload: P) -> None:
        """Add an artifact whose size was reserved."""
        self._reserved -= artifact.size
        self._held += artifact.size
        self._entries[artifact.id] = (artifact, payload)
        heapq.heappush(self._heap, (artifact.expires_at, artifact.id))

    def lookup(self, artifact_id: str, now: float) -> tuple[Artifact, P] | None:
        entry = self._entries.get(artifact_id)
        if entry is None:
            return None
        if entry[0].is_expired(now):
            self.expired_total += 1
            return None
        return entry

    def pop(self, artifact_id: str) -> tuple[Artifact, P] | None:
        entry = self._entries.pop(artifact_id, None)
        if entry is not None:
            self._held -= entry[0].size
            if len(self._heap) > 2 * len(self._entries) + _COMPACT_SLACK:
                self._rebuild_heap()
        return entry

    def pop_expired(self, now: float) -> list[tuple[Artifact, P]]:
        removed: list[tuple[Artifact, P]] = []
        while self._heap and self._heap[0][0] <= now:
            expires_at, artifact_id = heapq.heappop(self._heap)
            entry = self._entries.get(artifact_id)
            if entry is None or entry[0].expires_at != expires_at:
                continue  # stale: deleted or shortened since it was pushed
            del self._entries[artifact_id]
            self._held -= entry[0].size
            removed.append(entry)
        self.swept_total += len(removed)
        return removed

    def shorten_all(
        self, max_ttl_seconds: float, now: float, by_tag: Mapping[str, float] | None = None
    ) -> int:
        """Cap lifetimes at now + the tag's or the general limit (O(n): an operator action)."""
        by_tag = by_tag or {}
        changed = 0
        for artifact_id, (artifact, payload) in self._entries.items():
            cap = now + by_tag.get(artifact.tag, max_ttl_seconds)
            if artifact.expires_at > cap:
                shortened = dataclasses.replace(artifact, expires_at=cap)
                self._entries[artifact_id] = (shortened, payload)
                changed += 1
        if changed:
            self._rebuild_heap()
        return changed

    def clear(self) -> list[tuple[Artifact, P]]:
        removed = list(self._entries.values())
        self._entries.clear()
        self._heap.clear()
        self._held = 0
        return removed

    def stats(self) -> StoreStats:
        return StoreStats(
            count=len(self._entries),
            bytes=self._held,
            max_bytes=self.max_bytes,
            expired_total=self.expired_total,
            swept_total=self.swept_total,
        )

    def _rebuild_heap(self) -> None:
        self._heap = [(a.expires_at, i) for i, (a, _) in self._entries.items()]
        heapq.heapify(self._heap)
