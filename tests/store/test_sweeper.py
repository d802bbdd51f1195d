"""The APScheduler sweeper, on a fake clock and on the real one."""

import asyncio
import time

from store.memory import MemoryStore
from store.sweeper import Sweeper
from tests.store.conftest import FakeClock


async def test_run_once_sweeps_and_records_the_lag(clock: FakeClock) -> None:
    store = MemoryStore(max_bytes=1000, clock=clock)
    await store.put(b"a", "image/png", 10)
    await store.put(b"b", "image/png", 12)
    await store.put(b"c", "image/png", 100)
    sweeper = Sweeper(store, interval_seconds=5, clock=clock)
    lags: list[float] = []
    sweeper.lag_observer = lags.append

    clock.tick(13)
    assert await sweeper.run_once() == 2
    assert sorted(lags) == [1.0, 3.0]
    assert (sweeper.swept_total, sweeper.last_sweep_at) == (2, clock.now)
    assert sweeper.last_max_lag_seconds == 3.0
    assert (await store.stats()).count == 1


async def test_the_scheduler_deletes_within_one_interval() -> None:
    store = MemoryStore(max_bytes=1000)
    token, artifact = await store.put(b"x", "image/png", 0.1)
    sweeper = Sweeper(store, interval_seconds=0.2)
    sweeper.start()
    try:
        deadline = artifact.expires_at + 0.2 + 0.15  # one interval, plus scheduling slack
        while (await store.stats()).count and time.time() < deadline:
            await asyncio.sleep(0.01)
        assert (await store.stats()).count == 0
        assert sweeper.swept_total == 1
        assert sweeper.last_max_lag_seconds <= 0.2 + 0.05
    finally:
        sweeper.shutdown()
    assert not sweeper.running
