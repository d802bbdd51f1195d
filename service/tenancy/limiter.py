"""Per-principal request rate and concurrent generations, in Redis when replicas share one.

The rate is the `limits` package's moving window (memory, or a Lua script in
Redis: one atomic check-and-record, so a burst split across replicas is held
to the limit). Concurrency is a set of leases: in Redis a sorted set whose
scores are lease ends, taken by one Lua script, so a replica that dies
holding a lease frees it when the lease runs out.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections import Counter
from typing import Protocol

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import Redis

from service.tenancy.errors import Quota, RateLimited
from service.tenancy.principal import Principal
from store.errors import StoreUnavailable
from store.redis import DEFAULT_PREFIX
from store.redis_client import connect, reachable

# A refused concurrent request may try again this soon; nothing tells when a slot frees.
CONCURRENCY_RETRY_SECONDS = 1

# KEYS[1]: the principal's lease set. ARGV: lease id, lease seconds, limit.
# The server's clock decides lease ends, so replicas' clocks need not agree.
ACQUIRE_LEASE = """
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_s)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now_s + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""


class Leases(Protocol):
    async def acquire(self, principal_id: str, limit: int) -> str | None: ...
    async def release(self, principal_id: str, lease: str) -> None: ...


class MemoryLeases:
    def __init__(self) -> None:
        self._held: Counter[str] = Counter()

    async def acquire(self, principal_id: str, limit: int) -> str | None:
        if self._held[principal_id] >= limit:
            return None
        self._held[principal_id] += 1
        return principal_id

    async def release(self, principal_id: str, lease: str) -> None:
        self._held[principal_id] -= 1
        if self._held[principal_id] <= 0:
            del self._held[principal_id]


class RedisLeases:
    def __init__(self, client: Redis, lease_seconds: float, *,
                 key_prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._acquire = self._client.register_script(ACQUIRE_LEASE)
        self._lease_seconds = lease_seconds
        self._prefix = f"{key_prefix}leases:"

    async def acquire(self, principal_id: str, limit: int) -> str | None:
        lease = secrets.token_hex(8)
        with reachable():
            taken = await self._acquire(keys=[self._prefix + principal_id],
                                        args=[lease, self._lease_seconds, limit])
        return lease if taken == 1 else None

    async def release(self, principal_id: str, lease: str) -> None:
        with reachable():
            await self._client.zrem(self._prefix + principal_id, lease)


class Slot:
    """A held concurrent slot; release() is safe to call more than once."""

    def __init__(self, leases: Leases | None, principal_id: str, lease: str | None) -> None:
        self._leases = leases
        self._principal_id = principal_id
        self._lease = lease

    async def release(self) -> None:
        leases, lease, self._lease = self._leases, self._lease, None
        if leases is None or lease is None:
            return
        # A lost Redis keeps the lease until it runs out; the request's outcome stands.
        with contextlib.suppress(StoreUnavailable):
            await leases.release(self._principal_id, lease)


class Limiter:
    """Requests per minute and concurrent generations of each principal."""

    def __init__(self, redis_url: str | None, lease_seconds: float) -> None:
        self._storage: Storage
        self._leases: Leases
        self._redis: Redis | None = None
        if redis_url:
            # Our client (short timeouts, one retry), lent to `limits` through its pool too.
            self._redis = connect(redis_url)
            self._storage = RedisStorage(
                "async+" + redis_url, implementation="redispy", wrap_exceptions=True,
                key_prefix=f"{DEFAULT_PREFIX}limits",
                connection_pool=self._redis.connection_pool)  # type: ignore[arg-type]
            self._leases = RedisLeases(self._redis, lease_seconds)
        else:
            self._storage = MemoryStorage()
            self._leases = MemoryLeases()
        self._window = MovingWindowRateLimiter(self._storage)

    async def hit(self, principal: Principal) -> None:
        """Count one request; RateLimited (nothing counted) when the minute's are used up."""
        per_minute = principal.limits.requests_per_minute
        if per_minute is None:
            return
        item = RateLimitItemPerMinute(per_minute)
        try:
            if await self._window.hit(item, principal.id):
                return
            stats = await self._window.get_window_stats(item, principal.id)
        except StorageError:
            raise StoreUnavailable("redis is unreachable") from None
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"Rate limit reached: {per_minute} requests per minute. "
            f"Retry in {reset} seconds.",
            Quota("requests", per_minute, 60, stats.remaining, reset))

    async def take_slot(self, principal: Principal) -> Slot:
        """One of the principal's concurrent slots, until released; RateLimited when all are
        taken. A generation holds it from admission until the device is done with it."""
        limit = principal.limits.max_concurrent
        if limit is None:
            return Slot(None, principal.id, None)
        lease = await self._leases.acquire(principal.id, limit)
        if lease is None:
            raise RateLimited(
                f"Too many concurrent requests: at most {limit} at a time for this key.",
                Quota("concurrency", limit, None, 0, CONCURRENCY_RETRY_SECONDS))
        return Slot(self._leases, principal.id, lease)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
        elif isinstance(self._storage, MemoryStorage) and self._storage.timer is not None:
            self._storage.timer.cancel()  # its expiry task would outlive the event loop
