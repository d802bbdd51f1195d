"""What only the Redis backend promises: Redis expires by itself, a budget shared by
replicas, fast failure when Redis is lost and recovery when it is back, and a
retention policy every replica sees."""

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from store import StoreFull, StoreUnavailable, redis_retention
from store.redis import RedisStore
from store.redis_retention import RedisRetentionHolder
from store.retention import RetentionPolicy
from tests.store.conftest import FakeClock, RedisServer, needs_redis

pytestmark = [pytest.mark.redis, needs_redis]
PNG = "image/png"
POLICY = RetentionPolicy(default_ttl_seconds=600, max_ttl_seconds=3600)
GUARD_SECONDS = 30  # against hanging only, never a timing assertion


def artifact_keys(url: str) -> list[bytes]:
    with redis.Redis.from_url(url) as client:
        return sorted(client.scan_iter(match="imagegen:artifact:*"))


async def test_redis_drops_the_artifact_by_itself(redis_url: str) -> None:
    store = RedisStore(redis_url, max_bytes=10_000)
    _, artifact = await store.put(b"x", PNG, 0.15)
    assert artifact_keys(redis_url) == [f"imagegen:artifact:{artifact.id}".encode()]

    await asyncio.sleep(0.3)
    assert artifact_keys(redis_url) == []  # no sweep ran: Redis expired it
    await store.close()


async def test_replicas_share_the_byte_budget(redis_url: str, clock: FakeClock) -> None:
    a = RedisStore(redis_url, max_bytes=1000, clock=clock)
    b = RedisStore(redis_url, max_bytes=1000, clock=clock)
    token, artifact = await a.put(b"a" * 600, PNG, 10)

    with pytest.raises(StoreFull):
        await b.put(b"b" * 600, PNG, 60)
    assert await b.get(token) == (artifact, b"a" * 600)  # any replica serves any URL

    clock.tick(10)
    await b.put(b"b" * 600, PNG, 60)  # b swept a's expired artifact to make room
    assert (await a.stats()).bytes == 600
    await a.close()
    await b.close()


async def test_shortening_lowers_redis_own_expiry(redis_url: str, clock: FakeClock) -> None:
    store = RedisStore(redis_url, max_bytes=10_000, clock=clock)
    _, artifact = await store.put(b"x", PNG, 3600)
    await store.shorten_all(30)

    with redis.Redis.from_url(redis_url) as client:
        left = client.pttl(f"imagegen:artifact:{artifact.id}")
    assert 29_000 < left <= 30_000
    await store.close()


async def test_nothing_expired_is_served_even_if_redis_still_holds_it(
    redis_url: str, clock: FakeClock
) -> None:
    store = RedisStore(redis_url, max_bytes=10_000, clock=clock)
    token, artifact = await store.put(b"x", PNG, 60)
    clock.tick(61)  # our clock says expired; Redis's real clock has not moved a minute

    assert len(artifact_keys(redis_url)) == 1
    assert await store.get(token) is None
    assert await store.head(token) is None
    await store.close()


@pytest.fixture
async def own_server() -> AsyncIterator[RedisServer]:
    """A server of this test's own, so stopping it disturbs no other test."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("field", ["type", "created", "expires", "size"])
async def test_an_artifact_missing_a_field_is_not_served(
    redis_url: str, clock: FakeClock, field: str
) -> None:
    """A hash edited by hand (or half-written): refused as unknown, never half-read."""
    store = RedisStore(redis_url, max_bytes=10_000, clock=clock)
    token, _ = await store.put(b"x", PNG, 60)
    [key] = artifact_keys(redis_url)
    with redis.Redis.from_url(redis_url) as client:
        client.hdel(key, field)

    assert await store.get(token) is None
    assert await store.head(token) is None
    await store.close()


async def test_redis_out_of_memory_is_a_full_store(
    own_server: RedisServer, clock: FakeClock
) -> None:
    """Redis's own maxmemory (noeviction) refuses the write: the store is full, not broken."""
    store = RedisStore(own_server.url, max_bytes=10**9, clock=clock)
    with redis.Redis.from_url(own_server.url) as client:
        client.config_set("maxmemory", 1)
    with pytest.raises(StoreFull):
        await store.put(b"x" * 1000, PNG, 60)
    await store.close()


async def test_a_lost_redis_fails_fast_and_recovers(
    own_server: RedisServer, clock: FakeClock
) -> None:
    store = RedisStore(own_server.url, max_bytes=10_000, clock=clock)
    token, artifact = await store.put(b"x", PNG, 600)
    own_server.stop()

    for call in (store.get(token), store.put(b"y", PNG, 60), store.delete(token), store.sweep()):
        with pytest.raises(StoreUnavailable):
            await call
    assert await store.ping() is False

    own_server.start()  # empty: persistence is off, so what it held is gone
    assert await store.ping() is True
    assert await store.get(token) is None
    token, artifact = await store.put(b"z", PNG, 60)
    assert await store.get(token) == (artifact, b"z")
    await store.close()


async def test_a_hung_redis_fails_instead_of_waiting(clock: FakeClock) -> None:
    """A server that accepts connections and never answers: every call ends in
    StoreUnavailable. How soon is the client's timeouts, checked as settings rather than
    with a stopwatch (redis-py alone would give up only after about ten seconds)."""
    with socket.create_server(("127.0.0.1", 0)) as hung:
        port = hung.getsockname()[1]
        store = RedisStore(f"redis://127.0.0.1:{port}/0", max_bytes=10_000, clock=clock)
        for call in (store.get("token"), store.put(b"y", PNG, 60), store.sweep()):
            task = asyncio.ensure_future(call)
            done, _ = await asyncio.wait({task}, timeout=GUARD_SECONDS)
            if not done:
                task.cancel()
                pytest.fail("a call waited on a hung Redis instead of failing")
            assert isinstance(task.exception(), StoreUnavailable)
        settings = store._client.connection_pool.connection_kwargs
        assert 0 < settings["socket_timeout"] <= 1
        assert 0 < settings["socket_connect_timeout"] <= 1
        await store.close()


async def test_a_retention_change_reaches_every_replica(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imagegen.audit")
    caplog.set_level(logging.INFO, logger="store.redis_retention")
    one = RedisRetentionHolder(redis_url, POLICY)
    two = RedisRetentionHolder(redis_url, RetentionPolicy(10, 20))  # its own start-up settings
    await one.start()
    await two.start()
    assert two.current == POLICY  # the first replica seeded the shared policy

    changed = RetentionPolicy(default_ttl_seconds=30, max_ttl_seconds=60)
    started = time.monotonic()
    await one.set(changed, actor="admin")
    assert one.current == changed  # at once where it was made
    while two.current != changed and time.monotonic() - started < GUARD_SECONDS:
        await asyncio.sleep(0.01)

    assert two.current == changed  # pushed to the other replica, not only readable there
    assert await two.get() == changed
    followers = [(r.levelno, r.getMessage()) for r in caplog.records
                 if r.name == "store.redis_retention"]
    # two adopted the seeded policy, then the change (one's own follower may have applied
    # the change before set() did); nothing went wrong on the way
    assert set(followers) == {(logging.INFO, "retention policy updated from redis")}
    assert len(followers) >= 2
    audit = [r for r in caplog.records if r.name == "imagegen.audit"]
    assert len(audit) == 1  # logged where the change was made, not once per replica
    assert "admin" in audit[0].getMessage()  # who made it
    await one.stop()
    await two.stop()


async def test_a_retention_follower_resyncs_when_redis_returns(own_server: RedisServer) -> None:
    holder = RedisRetentionHolder(own_server.url, POLICY)
    await holder.start()
    own_server.stop()
    own_server.start()  # empty: persistence is off

    async with asyncio.timeout(2):  # the follower re-reads and seeds the empty Redis again
        while not await holder._client.exists("imagegen:retention"):
            await asyncio.sleep(0.05)
    other = RedisRetentionHolder(own_server.url, POLICY)
    await other.start()
    changed = RetentionPolicy(default_ttl_seconds=5, max_ttl_seconds=5)
    await other.set(changed, actor="admin")
    async with asyncio.timeout(1):  # and listens again
        while holder.current != changed:
            await asyncio.sleep(0.01)
    await holder.stop()
    await other.stop()


async def test_a_retention_change_needs_redis(own_server: RedisServer) -> None:
    holder = RedisRetentionHolder(own_server.url, POLICY)
    await holder.start()
    own_server.stop()

    with pytest.raises(StoreUnavailable):
        await holder.set(RetentionPolicy(1, 2), actor="admin")
    assert holder.current == POLICY
    await holder.stop()


def retention_log(caplog: pytest.LogCaptureFixture, level: int, about: str = "") -> list[str]:
    """The follower's messages at level, those containing about."""
    return [r.getMessage() for r in caplog.records
            if r.name == "store.redis_retention" and r.levelno == level
            and about in r.getMessage()]


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait for what a background task does; the guard only stops a hang."""
    async with asyncio.timeout(GUARD_SECONDS):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


async def test_a_replica_started_before_redis_serves_its_own_policy_then_joins(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Start-up does not wait for Redis for long; each outage is one warning however many
    retries it takes, and one line when Redis is back; the follower rejoins every time."""
    caplog.set_level(logging.INFO, logger="store.redis_retention")
    server = RedisServer()  # not running yet
    holder = RedisRetentionHolder(server.url, POLICY)
    attempts = 0
    listen = holder._listen

    async def counted_listen() -> None:  # observes the follower's attempts, changes nothing
        nonlocal attempts
        attempts += 1
        await listen()

    holder._listen = counted_listen  # type: ignore[method-assign]
    try:
        async with asyncio.timeout(GUARD_SECONDS):
            await holder.start()  # gives up waiting for Redis, keeps its own policy
        assert holder.current == POLICY
        for outage in (1, 2):
            seen = attempts
            await eventually(lambda seen=seen: attempts >= seen + 3, "the follower retries")
            assert retention_log(caplog, logging.WARNING) == [
                "retention follower lost redis; retrying"] * outage
            assert retention_log(caplog, logging.INFO, "follower") == [
                "retention follower reached redis again"] * (outage - 1)
            server.start()  # empty: the follower seeds it with its policy, and listens
            await eventually(lambda outage=outage: retention_log(caplog, logging.INFO, "follower")
                             == ["retention follower reached redis again"] * outage,
                             "the follower is back")
            with redis.Redis.from_url(server.url) as client:
                assert RetentionPolicy.from_json(client.get("imagegen:retention")) == POLICY
            other = RedisRetentionHolder(server.url, POLICY)
            changed = RetentionPolicy(default_ttl_seconds=outage, max_ttl_seconds=60)
            await other.set(changed, actor="admin")
            await eventually(lambda changed=changed: holder.current == changed,
                             "the change reaches it")
            await other.stop()
            await holder.set(POLICY, actor="admin")
            server.stop()
    finally:
        server.stop()
        await holder.stop()
    await holder.stop()  # stopping twice is harmless


async def test_an_invalid_policy_in_redis_is_ignored(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone writes a bad policy by hand: every replica keeps serving the last good one."""
    caplog.set_level(logging.INFO, logger="store.redis_retention")
    holder = RedisRetentionHolder(redis_url, POLICY)
    await holder.start()
    with redis.Redis.from_url(redis_url) as client:
        for bad in (b"{not json", b'{"default_ttl_seconds": 0, "max_ttl_seconds": 5}'):
            client.publish("imagegen:retention", bad)
        await eventually(lambda: len(retention_log(caplog, logging.WARNING)) == 2,
                         "both were read")
        assert holder.current == POLICY
        assert retention_log(caplog, logging.WARNING) == [
            "ignored an invalid retention policy in redis"] * 2
        changed = RetentionPolicy(default_ttl_seconds=5, max_ttl_seconds=5)
        client.publish("imagegen:retention", changed.to_json())
    await eventually(lambda: holder.current == changed, "a good one still applies")
    assert retention_log(caplog, logging.INFO) == ["retention policy updated from redis"]
    await holder.stop()


async def test_a_change_missed_by_the_subscription_is_read_within_the_resync_interval(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy written while a replica was not listening (no message reaches it) is
    adopted by the periodic re-read, even while no message arrives at all."""
    monkeypatch.setattr(redis_retention, "RESYNC_SECONDS", 0.2)
    holder = RedisRetentionHolder(redis_url, POLICY)
    await holder.start()
    changed = RetentionPolicy(default_ttl_seconds=7, max_ttl_seconds=7)
    with redis.Redis.from_url(redis_url) as client:
        client.set("imagegen:retention", changed.to_json())  # written, never published
    await eventually(lambda: holder.current == changed, "the re-read adopts it")
    await holder.stop()
