"""Usage per principal, UTC day and model: requests, images, device seconds, cost.

Metadata only (counts and seconds, never a prompt). Kept in Redis when
replicas share one (each day a hash that expires after the retention), else
in this process's memory (lost on restart). The daily device-seconds quota
reads the same ledger: one count, not two.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from store.redis import DEFAULT_PREFIX
from store.redis_client import connect, reachable

SECONDS_PER_DAY = 86400
METRICS = ("requests", "images", "device_seconds", "cost")


@dataclass(frozen=True, slots=True)
class Usage:
    """What one generation cost: the response's `usage`, the ledger's entry, the quota's unit."""

    device_seconds: float
    cost: float

    @classmethod
    def of(cls, device_seconds: float, price_per_second: float) -> Usage:
        # Cost is billed in device seconds times the model's price: what the service spends.
        seconds = round(device_seconds, 4)
        return cls(seconds, round(seconds * price_per_second, 6))

    def to_dict(self) -> dict[str, float]:
        return {"device_seconds": self.device_seconds, "cost": self.cost}


def day_of(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def seconds_to_next_day(now: float) -> int:
    return int(SECONDS_PER_DAY - now % SECONDS_PER_DAY) + 1


class UsageLedger(Protocol):
    async def record(self, principal_id: str, model: str, images: int, usage: Usage) -> None: ...
    async def device_seconds_today(self, principal_id: str) -> float: ...
    async def report(self, principal_id: str | None) -> list[dict[str, Any]]: ...
    async def close(self) -> None: ...


def _rows(counts: dict[tuple[str, str, str], dict[str, float]],
          principal_id: str | None) -> list[dict[str, Any]]:
    """Rows by (day, key, model), newest day first; only one principal's when given."""
    rows: list[dict[str, Any]] = []
    for (day, who, model), metrics in counts.items():
        if principal_id is None or who == principal_id:
            rows.append({"day": day, "key_id": who, "model": model,
                         "requests": int(metrics.get("requests", 0)),
                         "images": int(metrics.get("images", 0)),
                         "device_seconds": round(metrics.get("device_seconds", 0.0), 4),
                         "cost": round(metrics.get("cost", 0.0), 6)})
    rows.sort(key=lambda row: (row["key_id"], row["model"]))
    rows.sort(key=lambda row: row["day"], reverse=True)
    return rows


class MemoryUsageLedger:
    def __init__(self, clock: Callable[[], float], retention_days: int) -> None:
        self._clock = clock
        self._retention_days = retention_days
        self._counts: dict[tuple[str, str, str], dict[str, float]] = defaultdict(
            lambda: dict.fromkeys(METRICS, 0.0))

    async def record(self, principal_id: str, model: str, images: int, usage: Usage) -> None:
        now = self._clock()
        self._forget_before(now)
        counts = self._counts[(day_of(now), principal_id, model)]
        counts["requests"] += 1
        counts["images"] += images
        counts["device_seconds"] += usage.device_seconds
        counts["cost"] += usage.cost

    async def device_seconds_today(self, principal_id: str) -> float:
        today = day_of(self._clock())
        return sum(counts["device_seconds"] for (day, who, _), counts in self._counts.items()
                   if day == today and who == principal_id)

    async def report(self, principal_id: str | None) -> list[dict[str, Any]]:
        self._forget_before(self._clock())
        return _rows(self._counts, principal_id)

    async def close(self) -> None:
        return None

    def _forget_before(self, now: float) -> None:
        oldest = day_of(now - (self._retention_days - 1) * SECONDS_PER_DAY)
        for entry in [entry for entry in self._counts if entry[0] < oldest]:
            del self._counts[entry]


class RedisUsageLedger:
    """One hash per day, expiring after the retention; fields are [key id, model, metric]."""

    def __init__(self, url: str, clock: Callable[[], float], retention_days: int, *,
                 key_prefix: str = DEFAULT_PREFIX) -> None:
        self._client = connect(url)
        self._clock = clock
        self._retention_days = retention_days
        self._prefix = f"{key_prefix}usage:"

    async def record(self, principal_id: str, model: str, images: int, usage: Usage) -> None:
        now = self._clock()
        day = self._prefix + day_of(now)
        totals = f"{day}:device_seconds"

        def field(metric: str) -> str:
            return json.dumps([principal_id, model, metric])

        with reachable():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hincrby(day, field("requests"), 1)
                pipe.hincrby(day, field("images"), images)
                pipe.hincrbyfloat(day, field("device_seconds"), usage.device_seconds)
                pipe.hincrbyfloat(day, field("cost"), usage.cost)
                pipe.hincrbyfloat(totals, principal_id, usage.device_seconds)
                for key in (day, totals):
                    pipe.expire(key, self._retention_days * SECONDS_PER_DAY)
                await pipe.execute()

    async def device_seconds_today(self, principal_id: str) -> float:
        totals = f"{self._prefix}{day_of(self._clock())}:device_seconds"
        with reachable():
            used = await self._client.hget(totals, principal_id)
        return 0.0 if used is None else float(used)

    async def report(self, principal_id: str | None) -> list[dict[str, Any]]:
        now = self._clock()
        days = [day_of(now - back * SECONDS_PER_DAY) for back in range(self._retention_days)]
        with reachable():
            async with self._client.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(self._prefix + day)
                stored = await pipe.execute()
        counts: dict[tuple[str, str, str], dict[str, float]] = {}
        for day, fields in zip(days, stored, strict=True):
            for raw_field, value in fields.items():
                who, model, metric = json.loads(raw_field)
                counts.setdefault((day, who, model), {})[metric] = float(value)
        return _rows(counts, principal_id)

    async def close(self) -> None:
        await self._client.aclose()


def create_usage_ledger(*, redis_url: str | None, clock: Callable[[], float],
                        retention_days: int) -> UsageLedger:
    if redis_url:
        return RedisUsageLedger(redis_url, clock, retention_days)
    return MemoryUsageLedger(clock, retention_days)
