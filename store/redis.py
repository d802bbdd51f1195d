"""The shared backend of several replicas: artifacts in Redis, which expires them itself.

Layout, under a key prefix (default "imagegen:"):
  artifact:<id>  hash {data, type, created, expires, size, tag}, with PEXPIRE set to
                 the TTL (rounded up), so Redis drops it on time by itself;
  expiry         sorted set id -> expires_at, what a sweep walks;
  sizes          hash id -> size, so a sweep knows what to give back even after
                 Redis has dropped the artifact;
  bytes          the budget counter: bytes held across all replicas.
Every change to them is one Lua script, so the budget check and the increment
are atomic across replicas; the counter comes down when any replica sweeps (a
put that finds the store full sweeps first). Sweeps remove in bounded chunks.

Expiry is also checked on every read against the absolute expires_at, so
nothing is served late whatever Redis's own clock does; replicas should keep
NTP time, since each judges expiry by its own clock. The scripts build artifact
keys from ids, so this targets one Redis (or a primary with replicas), not
Redis Cluster. Run Redis with persistence off (--save '' --appendonly no) and
maxmemory-policy noeviction, or evictions would leave the counter high until a
sweep passes the evicted ids' expiry.
"""

import math
from collections.abc import Mapping
from typing import cast

from redis.exceptions import OutOfMemoryError

from store.artifact import Artifact, new_artifact
from store.base import DEFAULT_CLOCK, Clock, StoreStats, Swept
from store.errors import StoreFull
from store.redis_client import connect, reachable
from store.tokens import artifact_id, new_token

DEFAULT_PREFIX = "imagegen:"
SWEEP_CHUNK = 500  # ids per script call: bounds how long one call holds Redis

# KEYS: artifact, bytes, expiry, sizes
# ARGV: id, data, type, created, expires, size, px, max_bytes, tag
_PUT = """
local size = tonumber(ARGV[6])
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used + size > tonumber(ARGV[8]) then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'type', ARGV[3], 'created', ARGV[4],
           'expires', ARGV[5], 'size', ARGV[6], 'tag', ARGV[9])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('INCRBY', KEYS[2], size)
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], size)
return 1
"""

# KEYS: artifact, bytes, expiry, sizes   ARGV: id
_DELETE = """
local size = redis.call('HGET', KEYS[4], ARGV[1])
if not size then return 0 end
redis.call('DECRBY', KEYS[2], size)
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: bytes, expiry, sizes   ARGV: artifact key prefix, now, chunk
# Returns id, expires_at, id, expires_at...
_SWEEP = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'WITHSCORES',
                       'LIMIT', 0, tonumber(ARGV[3]))
local freed = 0
for i = 1, #due, 2 do
  local id = due[i]
  local size = redis.call('HGET', KEYS[3], id)
  if size then
    freed = freed + tonumber(size)
    redis.call('HDEL', KEYS[3], id)
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('DEL', ARGV[1] .. id)
end
if freed > 0 then redis.call('DECRBY', KEYS[1], freed) end
return due
"""

# KEYS: expiry   ARGV: artifact key prefix, lowest cap (absolute), general cap (absolute),
# general cap in ms from now, then tag, cap, cap in ms for each tag with its own cap.
# Lowers expiries above their cap to it; never raises one.
_SHORTEN = """
local caps = {}
for i = 5, #ARGV, 3 do caps[ARGV[i]] = {ARGV[i + 1], tonumber(ARGV[i + 2])} end
local over = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf', 'WITHSCORES')
local changed = 0
for i = 1, #over, 2 do
  local id = over[i]
  local key = ARGV[1] .. id
  local tag = redis.call('HGET', key, 'tag')
  local cap = caps[tag] or {ARGV[3], tonumber(ARGV[4])}
  if tonumber(over[i + 1]) > tonumber(cap[1]) then
    changed = changed + 1
    redis.call('ZADD', KEYS[1], cap[1], id)
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'expires', cap[1])
      local left = redis.call('PTTL', key)
      if left < 0 or left > cap[2] then redis.call('PEXPIRE', key, cap[2]) end
    end
  end
end
return changed
"""

_META_FIELDS = ("type", "created", "expires", "size", "tag")


class RedisStore:
    backend = "redis"
    writes_to_disk = False  # Redis's own persistence is the operator's to switch off

    def __init__(
        self,
        url: str,
        *,
        max_bytes: int,
        clock: Clock = DEFAULT_CLOCK,
        key_prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._clock = clock
        self._client = connect(url)
        self._artifact_prefix = f"{key_prefix}artifact:"
        self._bytes_key = f"{key_prefix}bytes"
        self._expiry_key = f"{key_prefix}expiry"
        self._sizes_key = f"{key_prefix}sizes"
        self._put = self._client.register_script(_PUT)
        self._delete = self._client.register_script(_DELETE)
        self._sweep = self._client.register_script(_SWEEP)
        self._shorten = self._client.register_script(_SHORTEN)
        self._expired_total = 0
        self._swept_total = 0

    async def put(
        self, data: bytes, content_type: str, ttl_seconds: float, tag: str = ""
    ) -> tuple[str, Artifact]:
        now = self._clock()
        token = new_token()
        artifact = new_artifact(artifact_id(token), content_type, len(data), now, ttl_seconds, tag)
        if not await self._try_put(artifact, data, ttl_seconds):
            await self.sweep(now)  # expired artifacts make room; live ones never
            if not await self._try_put(artifact, data, ttl_seconds):
                raise StoreFull(f"store is full ({self.max_bytes} bytes across all replicas)")
        return token, artifact

    async def get(self, token: str) -> tuple[Artifact, bytes] | None:
        found = artifact_id(token)
        with reachable():
            reply = await self._client.hmget(self._key(found), "data", *_META_FIELDS)
        fields = cast("list[bytes | None]", reply)  # decode_responses is off
        data, meta = fields[0], fields[1:]
        if data is None:
            return None
        artifact = self._live(found, meta)
        return None if artifact is None else (artifact, data)

    async def head(self, token: str) -> Artifact | None:
        found = artifact_id(token)
        with reachable():
            meta = await self._client.hmget(self._key(found), *_META_FIELDS)
        return self._live(found, cast("list[bytes | None]", meta))

    async def delete(self, token: str) -> bool:
        found = artifact_id(token)
        with reachable():
            removed = await self._delete(keys=self._keys_of(found), args=[found])
        return bool(removed)

    async def sweep(self, now: float | None = None) -> list[Swept]:
        at = repr(self._clock() if now is None else now)
        swept: list[Swept] = []
        with reachable():
            while True:
                reply = await self._sweep(
                    keys=[self._bytes_key, self._expiry_key, self._sizes_key],
                    args=[self._artifact_prefix, at, SWEEP_CHUNK],
                )
                swept += [
                    Swept(reply[i].decode(), float(reply[i + 1])) for i in range(0, len(reply), 2)
                ]
                if len(reply) < 2 * SWEEP_CHUNK:
                    break
        self._swept_total += len(swept)
        return swept

    async def shorten_all(
        self,
        max_ttl_seconds: float,
        now: float | None = None,
        by_tag: Mapping[str, float] | None = None,
    ) -> int:
        now = self._clock() if now is None else now
        by_tag = by_tag or {}
        lowest = min([max_ttl_seconds, *by_tag.values()])
        args: list[str | int] = [self._artifact_prefix, repr(now + lowest),
                                 repr(now + max_ttl_seconds), _milliseconds(max_ttl_seconds)]
        for tag, seconds in by_tag.items():
            args += [tag, repr(now + seconds), _milliseconds(seconds)]
        with reachable():
            changed = await self._shorten(keys=[self._expiry_key], args=args)
        return int(changed)

    async def stats(self) -> StoreStats:
        with reachable():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zcard(self._expiry_key)
                pipe.get(self._bytes_key)
                count, used = await pipe.execute()
        return StoreStats(
            count=int(count),
            bytes=int(used or 0),
            max_bytes=self.max_bytes,
            expired_total=self._expired_total,
            swept_total=self._swept_total,
        )

    async def ping(self) -> bool:
        try:
            with reachable():
                return bool(await self._client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        # The artifacts belong to every replica: closing one leaves them to expire.
        await self._client.aclose()

    async def _try_put(self, artifact: Artifact, data: bytes, ttl_seconds: float) -> bool:
        args: list[bytes | str | int] = [
            artifact.id,
            data,
            artifact.content_type,
            repr(artifact.created_at),
            repr(artifact.expires_at),
            artifact.size,
            _milliseconds(ttl_seconds),
            self.max_bytes,
            artifact.tag,
        ]
        with reachable():
            try:
                return bool(await self._put(keys=self._keys_of(artifact.id), args=args))
            except OutOfMemoryError:  # Redis's maxmemory reached (its "OOM" reply)
                raise StoreFull("redis is out of memory") from None

    def _live(self, found: str, meta: list[bytes | None]) -> Artifact | None:
        """The artifact from its stored fields, or None when missing or expired by our clock."""
        content_type, created, expires, size, tag = meta
        if content_type is None or created is None or expires is None or size is None:
            return None
        artifact = Artifact(found, content_type.decode(), int(size), float(created),
                            float(expires), (tag or b"").decode())
        if artifact.is_expired(self._clock()):
            self._expired_total += 1
            return None
        return artifact

    def _key(self, found: str) -> str:
        return f"{self._artifact_prefix}{found}"

    def _keys_of(self, found: str) -> list[str]:
        return [self._key(found), self._bytes_key, self._expiry_key, self._sizes_key]


def _milliseconds(seconds: float) -> int:
    # Rounded up: Redis must never drop an artifact before its expires_at.
    return max(1, math.ceil(seconds * 1000))
