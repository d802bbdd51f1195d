"""What only the memory backend promises: small overhead, a sweep that does not scan."""

import tracemalloc

import pytest

from store.catalog import Catalog
from store.memory import MemoryStore
from tests.store.conftest import FakeClock

PAYLOAD = 100


async def test_overhead_per_artifact_is_under_a_kilobyte(clock: FakeClock) -> None:
    store = MemoryStore(max_bytes=10**9, clock=clock)
    tokens = []
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(2000):
        tokens.append((await store.put(b"x" * PAYLOAD, "image/png", 60))[0])
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()

    token_size = len(tokens[0]) + 49  # the caller's token strings are not the store's
    per_artifact = (after - before) / len(tokens) - PAYLOAD - token_size
    assert per_artifact < 1024


class CountingEntries(dict):  # type: ignore[type-arg]
    """The catalog's entry table, counting every entry a sweep touches."""

    touched = 0

    def get(self, key, default=None):  # type: ignore[no-untyped-def]
        self.touched += 1
        return super().get(key, default)

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        self.touched += 1
        return super().__getitem__(key)

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.touched += len(self)
        return super().__iter__()

    def items(self):  # type: ignore[no-untyped-def]
        self.touched += len(self)
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        self.touched += len(self)
        return super().values()


async def test_sweep_cost_follows_the_expired_not_the_held(clock: FakeClock) -> None:
    """A count, not a stopwatch (bench/sweep.py times it): a sweep touches the expired only."""
    store = MemoryStore(max_bytes=10**9, clock=clock)
    for _ in range(10):
        await store.put(b"x", "image/png", 1)
    for _ in range(5_000):
        await store.put(b"x", "image/png", 3600)
    entries = CountingEntries(store._catalog._entries)
    store._catalog._entries = entries

    assert await store.sweep() == []
    assert entries.touched == 0
    clock.tick(2)
    assert len(await store.sweep()) == 10
    assert entries.touched <= 10 * 2  # a lookup (and a removal) per expired artifact
    assert len(entries) == 5_000


async def test_deleted_entries_do_not_accumulate_in_the_heap(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted entries stay in the heap until it is rebuilt: rarely (amortised O(1) a delete),
    and before they outnumber the live ones by more than the slack."""
    store = MemoryStore(max_bytes=10**9, clock=clock)
    for _ in range(1000):
        await store.put(b"x", "image/png", 3600)
    catalog = store._catalog
    rebuilds = 0
    rebuild = Catalog._rebuild_heap

    def counting_rebuild(self: Catalog[bytes]) -> None:
        nonlocal rebuilds
        rebuilds += 1
        rebuild(self)

    monkeypatch.setattr(Catalog, "_rebuild_heap", counting_rebuild)
    largest = 0
    for _ in range(10_000):
        token, _ = await store.put(b"x", "image/png", 3600)
        await store.delete(token)
        largest = max(largest, len(catalog._heap))

    assert largest <= 2 * 1000 + 1024 + 1  # live entries twice over, plus the slack
    assert 1 <= rebuilds <= 10_000 // 1024 + 1  # once per ~1024 deletes, not on every one


async def test_close_keeps_nothing(clock: FakeClock) -> None:
    store = MemoryStore(max_bytes=10, clock=clock)
    token, _ = await store.put(b"x" * 10, "image/png", 60)
    await store.close()

    assert await store.get(token) is None
    stats = await store.stats()
    assert (stats.count, stats.bytes) == (0, 0)
