"""The APScheduler sweeper, on a fake clock and on the real one."""

import asyncio
import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest

from store.disk import DiskStore
from store.memory import MemoryStore
from store.redis import RedisStore
from store.sweeper import JOB_ID, Sweeper
from tests.store.conftest import FakeClock, RedisServer


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


@pytest.mark.parametrize("interval", [0, -1])
def test_the_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match="interval_seconds"):
        Sweeper(MemoryStore(max_bytes=1000), interval_seconds=interval)


async def test_a_fresh_sweeper_has_swept_nothing_and_a_sweep_of_nothing_lags_nothing(
    clock: FakeClock,
) -> None:
    sweeper = Sweeper(MemoryStore(max_bytes=1000, clock=clock), interval_seconds=0.5, clock=clock)
    assert (sweeper.swept_total, sweeper.last_sweep_at, sweeper.last_max_lag_seconds) == (
        0, None, 0.0)
    assert not sweeper.running

    assert await sweeper.run_once() == 0
    assert (sweeper.swept_total, sweeper.last_sweep_at, sweeper.last_max_lag_seconds) == (
        0, clock.now, 0.0)


async def test_swept_at_its_expiry_lags_zero_and_totals_add_up(clock: FakeClock) -> None:
    store = MemoryStore(max_bytes=1000, clock=clock)
    sweeper = Sweeper(store, interval_seconds=5, clock=clock)  # no lag observer
    await store.put(b"a", "image/png", 10)
    await store.put(b"b", "image/png", 20)

    clock.tick(10)  # exactly at the first expiry
    assert await sweeper.run_once() == 1
    assert sweeper.last_max_lag_seconds == 0.0
    clock.tick(12)
    assert await sweeper.run_once() == 1
    assert (sweeper.swept_total, sweeper.last_max_lag_seconds) == (2, 2.0)


async def test_an_unreachable_store_skips_the_sweep(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A lost Redis: the sweep is skipped with a warning, and nothing counts as swept."""
    never_started = RedisServer()
    store = RedisStore(never_started.url, max_bytes=1000, clock=clock)
    sweeper = Sweeper(store, interval_seconds=5, clock=clock)
    with caplog.at_level(logging.WARNING, logger="store.sweeper"):
        assert await sweeper.run_once() == 0
    assert [r.getMessage() for r in caplog.records] == ["sweep skipped: store unavailable"]
    assert (sweeper.swept_total, sweeper.last_sweep_at) == (0, None)
    await store.close()


async def test_a_failing_sweep_logs_only_the_error_type(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A disk sweep whose file cannot be unlinked (here a directory took its place)."""
    store = DiskStore(tmp_path / "artifacts", max_bytes=1000, clock=clock)
    _, artifact = await store.put(b"a", "image/png", 10)
    path = store.directory / artifact.id
    path.unlink()
    path.mkdir()
    (path / "inside").write_bytes(b"x")
    sweeper = Sweeper(store, interval_seconds=5, clock=clock)

    clock.tick(10)
    with caplog.at_level(logging.WARNING, logger="store.sweeper"):
        assert await sweeper.run_once() == 0
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "sweep failed: IsADirectoryError"
    assert record.exc_info is None  # a traceback would quote the path and the message
    assert (sweeper.swept_total, sweeper.last_sweep_at) == (0, None)
    await store.close()


@pytest.mark.parametrize(("interval", "grace"), [(0.2, 1), (5, 5), (2.6, 3)])
async def test_a_late_run_still_happens_within_one_interval(interval: float, grace: int) -> None:
    sweeper = Sweeper(MemoryStore(max_bytes=1000), interval_seconds=interval)
    sweeper.start()
    try:
        assert sweeper.running
        assert sweeper._scheduler is not None
        job = sweeper._scheduler.get_job(JOB_ID)
        assert job.misfire_grace_time == grace
    finally:
        sweeper.shutdown()
    assert not sweeper.running
    sweeper.shutdown()  # a second shutdown is harmless
