"""The APScheduler job that removes expired artifacts, and its deletion-lag metric."""

import logging
import time
from collections.abc import Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from store.base import ArtifactStore, Clock
from store.errors import StoreUnavailable

log = logging.getLogger(__name__)

# APScheduler logs every run at INFO; its lines name only the job, but the service
# keeps its logs to the metadata it chose.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

JOB_ID = "store-sweep"


class Sweeper:
    """Sweeps the store every interval_seconds in the running event loop.

    start() and shutdown() belong in the app lifespan. A sweep that runs long
    is never doubled (max_instances=1) and missed runs collapse into one
    (coalesce=True), so a slow store cannot pile sweeps up.
    """

    def __init__(
        self, store: ArtifactStore, interval_seconds: float, clock: Clock = time.time
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        self.store = store
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.swept_total = 0
        self.last_sweep_at: float | None = None
        self.last_max_lag_seconds = 0.0
        # Called with each swept artifact's lag (seconds past expiry), e.g. a Prometheus histogram.
        self.lag_observer: Callable[[float], None] | None = None
        self._scheduler: AsyncIOScheduler | None = None

    def start(self) -> None:
        """Schedule the job; call from inside the running event loop."""
        scheduler = AsyncIOScheduler()
        scheduler.add_job(
            self.run_once,
            "interval",
            seconds=self.interval_seconds,
            id=JOB_ID,
            max_instances=1,
            coalesce=True,
            # A run late by up to one interval still happens; later ones fold into the next.
            misfire_grace_time=max(1, round(self.interval_seconds)),
        )
        scheduler.start()
        self._scheduler = scheduler

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    async def run_once(self) -> int:
        """One sweep; returns how many artifacts it removed."""
        now = self.clock()
        try:
            swept = await self.store.sweep(now)
        except StoreUnavailable:
            log.warning("sweep skipped: store unavailable")
            return 0
        except Exception as exc:
            # Only the type: a message could carry anything.
            log.error("sweep failed: %s", type(exc).__name__)
            return 0
        lags = [max(0.0, now - item.expires_at) for item in swept]
        self.swept_total += len(swept)
        self.last_sweep_at = now
        self.last_max_lag_seconds = max(lags, default=0.0)
        if self.lag_observer is not None:
            for lag in lags:
                self.lag_observer(lag)
        return len(swept)
