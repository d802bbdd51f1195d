"""service/tenancy without HTTP: limits, keys, slots and the usage ledger, in memory and Redis."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.tenancy import Limits, Principal, QuotaExceeded, RateLimited, Usage
from service.tenancy.keys import FileKeyStore, key_id_of, mint_key
from service.tenancy.limiter import Limiter
from service.tenancy.tenancy import Tenancy, new_api_key
from service.tenancy.usage import MemoryUsageLedger, RedisUsageLedger
from tests.helpers import FakeClock
from tests.test_replicas import RedisServer, free_port

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="needs redis-server")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def test_demo_limits_parse_and_bad_ones_name_the_limit() -> None:
    assert Limits.parse("requests_per_minute=5, max_concurrent=2,device_seconds_per_day=1.5") \
        == Limits(5, 2, 1.5)
    assert Limits.parse("") == Limits()
    for text, named in [("requests_per_minute=0", "requests_per_minute"),
                        ("max_concurrent=x", "max_concurrent"),
                        ("colour=red", "colour"), ("requests_per_minute", "requests_per_minute")]:
        with pytest.raises(ValueError, match=named):
            Limits.parse(text)


def test_a_minted_key_names_its_id_and_nothing_else_passes_for_one() -> None:
    key_id, key = mint_key()
    assert key_id_of(key) == key_id
    assert key_id_of("ig_" + "g" * 16 + "_x") is None
    assert key_id_of("ig_0123456789abcdef") is None
    assert key_id_of("sk-" + key[3:]) is None
    assert mint_key()[1] != key


def test_a_key_record_matches_its_key_only() -> None:
    record, key = new_api_key(name="n", limits=Limits(), now=100.0)
    assert record.matches(key)
    assert not record.matches(key[:-1] + ("0" if key[-1] != "0" else "1"))
    assert key not in str(record.to_record())


async def test_the_keys_file_is_rewritten_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "keys.json"
    store = FileKeyStore(path)
    first, _ = new_api_key(name="a", limits=Limits(), now=1.0)
    await store.add(first)
    second, _ = new_api_key(name="b", limits=Limits(max_concurrent=1), now=2.0)
    # Another process (the CLI) adds a key; this store sees it on its next read.
    await FileKeyStore(path).add(second)

    assert [key.name for key in await store.all()] == ["a", "b"]
    assert (await store.get(second.id)) == second
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in path.parent.iterdir()) == ["keys.json", "keys.json.lock"]


async def test_the_memory_ledger_counts_by_day_and_forgets_after_its_retention() -> None:
    clock = FakeClock(1_800_000_000.0 - 1_800_000_000.0 % 86400 + 3600)  # 01:00 UTC
    ledger = MemoryUsageLedger(clock, retention_days=2)
    await ledger.record("k", "m", 2, Usage.of(1.5, 2.0))
    await ledger.record("k", "m", 1, Usage.of(0.5, 2.0))
    await ledger.record("other", "m", 1, Usage.of(9.0, 1.0))

    assert await ledger.device_seconds_today("k") == 2.0
    (row,) = await ledger.report("k")
    assert (row["requests"], row["images"], row["device_seconds"], row["cost"]) == (2, 3, 2.0, 4.0)

    clock.tick(86400)  # the next day: a new row, and the quota starts again
    assert await ledger.device_seconds_today("k") == 0.0
    await ledger.record("k", "m", 1, Usage.of(1.0, 1.0))
    assert [row["requests"] for row in await ledger.report("k")] == [1, 2]

    clock.tick(86400)  # two days on: the first day is past the retention
    assert [row["requests"] for row in await ledger.report("k")] == [1]
    assert len(await ledger.report(None)) == 1


async def test_a_quota_is_checked_against_the_days_use() -> None:
    clock = FakeClock()
    tenancy = Tenancy.create(auth="keys", demo_enabled=False, demo_limits=Limits(),
                             redis_url=None, keys_file=None, usage_retention_days=1,
                             lease_seconds=10, clock=clock)
    principal = Principal("key_x", Limits(device_seconds_per_day=2.0))
    await tenancy.admit(principal, "m")
    await tenancy.record(principal, "m", 1, Usage.of(2.0, 1.0))

    with pytest.raises(QuotaExceeded) as refused:
        await tenancy.admit(principal, "m")
    assert refused.value.quota.name == "device_seconds"
    await tenancy.close()


@needs_redis
async def test_slots_and_rates_are_shared_by_every_limiter_on_one_redis(
    redis_server: RedisServer
) -> None:
    first, second = (Limiter(redis_server.url, lease_seconds=60) for _ in range(2))
    principal = Principal("key_shared", Limits(requests_per_minute=3, max_concurrent=2))
    try:
        held = [await first.take_slot(principal), await second.take_slot(principal)]
        with pytest.raises(RateLimited):
            await first.take_slot(principal)
        await held[0].release()
        await held[0].release()  # twice is harmless: one slot came back, not two
        held.append(await second.take_slot(principal))
        with pytest.raises(RateLimited):
            await second.take_slot(principal)

        for limiter in (first, second, first):
            await limiter.hit(principal)
        with pytest.raises(RateLimited) as refused:
            await second.hit(principal)
        assert refused.value.quota.name == "requests"
        assert 1 <= refused.value.retry_after <= 60
    finally:
        for slot in held:
            await slot.release()
        await first.close()
        await second.close()


@needs_redis
async def test_the_redis_ledger_is_one_ledger_for_every_replica(
    redis_server: RedisServer
) -> None:
    clock = FakeClock()
    writer = RedisUsageLedger(redis_server.url, clock, retention_days=31)
    reader = RedisUsageLedger(redis_server.url, clock, retention_days=31)
    try:
        await writer.record("key_r", "shapes", 4, Usage.of(0.25, 2.0))
        await reader.record("key_r", "shapes", 1, Usage.of(0.75, 2.0))

        (row,) = await reader.report("key_r")
        assert (row["requests"], row["images"], row["device_seconds"], row["cost"]) == (
            2, 5, 1.0, 2.0)
        assert await writer.device_seconds_today("key_r") == 1.0
        ttl = redis_server.client.ttl(f"imagegen:usage:{row['day']}")
        assert 30 * 86400 < ttl <= 31 * 86400
    finally:
        await writer.close()
        await reader.close()
