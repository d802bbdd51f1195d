"""Choosing a backend from settings."""

from pathlib import Path

import pytest

from store import (
    DiskStore,
    MemoryRetentionHolder,
    MemoryStore,
    RedisRetentionHolder,
    RedisStore,
    RetentionPolicy,
    create_retention_holder,
    create_store,
)


async def test_each_backend_says_what_it_is(tmp_path: Path) -> None:
    memory = create_store("memory", max_bytes=10)
    disk = create_store("disk", max_bytes=10, directory=tmp_path)
    redis = create_store("redis", max_bytes=10, redis_url="redis://127.0.0.1:1/0")

    assert isinstance(memory, MemoryStore) and isinstance(disk, DiskStore)
    assert isinstance(redis, RedisStore)
    assert [(s.backend, s.writes_to_disk) for s in (memory, disk, redis)] == [
        ("memory", False),
        ("disk", True),
        ("redis", False),
    ]
    for store in (memory, disk, redis):
        await store.close()


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("disk", r"needs a directory \(IMAGEGEN_STORE_DIR\)"),
        ("redis", r"needs a URL \(IMAGEGEN_REDIS_URL\)"),
        ("s3", "one of memory, disk, redis, not 's3'"),
        ("Memory", "one of memory, disk, redis, not 'Memory'"),
    ],
)
def test_a_bad_choice_is_one_clear_error_naming_the_setting(backend: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_store(backend, max_bytes=10)


def test_a_non_positive_budget_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        create_store("memory", max_bytes=0)


async def test_retention_is_shared_only_with_a_redis_url() -> None:
    policy = RetentionPolicy(default_ttl_seconds=60, max_ttl_seconds=60)
    own = create_retention_holder(policy)
    shared = create_retention_holder(policy, redis_url="redis://127.0.0.1:1/0")
    assert isinstance(own, MemoryRetentionHolder) and isinstance(shared, RedisRetentionHolder)
    assert own.current == shared.current == policy  # each starts from the given policy
    for holder in (own, shared):
        await holder.stop()  # a holder never started stops cleanly (a failed start-up)
