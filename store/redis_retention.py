"""The retention policy shared by replicas through Redis.

The policy is JSON under one key; a change is written and PUBLISHed in one
transaction, so every replica's follower applies it at once and all converge
on the last write. The follower subscribes before it reads, so no change falls
between the two, and re-reads the key whenever its connection is re-established
(and every few seconds besides), so a change published while it was
disconnected is not missed.
The first replica to start seeds the key; after that Redis's policy wins over
each replica's start-up settings, so a restart never undoes an operator's change.
"""

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from store.redis import DEFAULT_PREFIX
from store.redis_client import connect, reachable
from store.retention import RetentionPolicy, log_change

log = logging.getLogger(__name__)

RESYNC_SECONDS = 5.0  # safety net behind PUBLISH for changes missed while disconnected
RETRY_SECONDS = 0.5
START_WAIT_SECONDS = 2.0  # start() waits this long for Redis before going on with its own policy


class RedisRetentionHolder:
    def __init__(
        self, url: str, initial: RetentionPolicy, *, key_prefix: str = DEFAULT_PREFIX
    ) -> None:
        self._policy = initial
        self._client = connect(url)
        self._key = f"{key_prefix}retention"
        self._channel = f"{key_prefix}retention"
        self._synced = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None
        self._reconnected = False
        self._lost = False  # so an outage is logged once, not every retry

    @property
    def current(self) -> RetentionPolicy:
        return self._policy

    async def get(self) -> RetentionPolicy:
        return self._policy

    async def set(self, policy: RetentionPolicy, actor: str) -> RetentionPolicy:
        """Write, publish, apply; StoreUnavailable when Redis is down (nothing changes)."""
        text = policy.to_json()
        old = self._policy  # before awaiting: our own follower may apply the change first
        with reachable():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._key, text)
                pipe.publish(self._channel, text)
                await pipe.execute()
        self._policy = policy
        log_change(old, policy, actor)
        return old

    async def start(self) -> None:
        self._follower = asyncio.create_task(self._follow(), name="retention-follower")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced.wait(), START_WAIT_SECONDS)

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        await self._client.aclose()

    async def _follow(self) -> None:
        while True:
            try:
                await self._listen()
            except (RedisError, OSError):
                if not self._lost:
                    log.warning("retention follower lost redis; retrying")
                    self._lost = True
                await asyncio.sleep(RETRY_SECONDS)

    async def _listen(self) -> None:
        async with self._client.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            # redis-py re-subscribes by itself after a reconnect; this tells us to re-read.
            pubsub.connection.register_connect_callback(self._on_reconnect)
            await self._sync()
            self._synced.set()
            if self._lost:
                log.info("retention follower reached redis again")
                self._lost = False
            loop = asyncio.get_running_loop()
            next_sync = loop.time() + RESYNC_SECONDS
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    self._apply(message["data"])
                if self._reconnected or loop.time() >= next_sync:
                    self._reconnected = False
                    await self._sync()
                    next_sync = loop.time() + RESYNC_SECONDS

    def _on_reconnect(self, _connection: object) -> None:
        self._reconnected = True

    async def _sync(self) -> None:
        """Seed the key if no replica has, then adopt what it holds."""
        await self._client.set(self._key, self._policy.to_json(), nx=True)
        stored = await self._client.get(self._key)
        if stored is not None:
            self._apply(stored)

    def _apply(self, text: bytes | str) -> None:
        try:
            policy = RetentionPolicy.from_json(text)
        except (ValueError, TypeError):
            # Someone wrote a bad policy by hand: keep serving the last good one.
            log.warning("ignored an invalid retention policy in redis")
            return
        if policy != self._policy:
            self._policy = policy
            log.info("retention policy updated from redis")
