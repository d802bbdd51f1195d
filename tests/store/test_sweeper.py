"""The APScheduler sweeper, on a fake clock and on the real one."""

import asyncio
import time
from datetime import timedelta

from store.memory import MemoryStore
from store.sweeper import JOB_ID, Sweeper
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


async def test_the_scheduler_runs_the_sweep_every_interval() -> None:
    """Real APScheduler, no stopwatch: the job is scheduled at the interval, never doubled,
    and it does sweep. (Lag is measured on the fake clock above; "within one interval"
    follows from the trigger, which a loaded machine cannot make flaky.)"""
    store = MemoryStore(max_bytes=1000)
    await store.put(b"x", "image/png", 0.05)
    sweeper = Sweeper(store, interval_seconds=0.2)
    sweeper.start()
    try:
        assert sweeper._scheduler is not None
        job = sweeper._scheduler.get_job(JOB_ID)
        assert job.trigger.interval == timedelta(seconds=0.2)
        assert (job.max_instances, job.coalesce) == (1, True)
        guard = time.monotonic() + 30  # against hanging only
        while sweeper.swept_total == 0 and time.monotonic() < guard:
            await asyncio.sleep(0.01)
        assert (await store.stats()).count == 0
        assert sweeper.swept_total == 1
    finally:
        sweeper.shutdown()
    assert not sweeper.running
