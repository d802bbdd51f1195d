"""What only the memory backend promises: small overhead, a sweep that does not scan."""

import time
import tracemalloc

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


async def test_sweep_cost_follows_the_expired_not_the_held(clock: FakeClock) -> None:
    store = MemoryStore(max_bytes=10**9, clock=clock)
    for _ in range(10):
        await store.put(b"x", "image/png", 1)
    for _ in range(50_000):
        await store.put(b"x", "image/png", 3600)

    started = time.perf_counter()
    assert sum(1 for a, _ in store._catalog._entries.values() if a.is_expired(clock.now)) == 0
    scan = time.perf_counter() - started

    clock.tick(2)
    started = time.perf_counter()
    swept = await store.sweep()
    elapsed = time.perf_counter() - started
    assert len(swept) == 10
    assert elapsed < scan / 5  # ten heap pops, not a pass over 50k entries


async def test_deleted_entries_do_not_accumulate_in_the_heap(clock: FakeClock) -> None:
    store = MemoryStore(max_bytes=10**9, clock=clock)
    for _ in range(5000):
        token, _ = await store.put(b"x", "image/png", 3600)
        await store.delete(token)

    assert len(store._catalog._heap) <= 1024 + 1
