"""Build the configured backend."""

from pathlib import Path

from store.base import DEFAULT_CLOCK, ArtifactStore, Clock
from store.disk import DiskStore
from store.memory import MemoryStore
from store.redis import RedisStore
from store.redis_retention import RedisRetentionHolder
from store.retention import MemoryRetentionHolder, RetentionHolder, RetentionPolicy

BACKENDS = ("memory", "disk", "redis")


def create_store(
    backend: str,
    *,
    max_bytes: int,
    clock: Clock = DEFAULT_CLOCK,
    directory: Path | None = None,
    redis_url: str | None = None,
) -> ArtifactStore:
    """A store of the named backend; a clear ValueError for a bad combination."""
    if backend == "memory":
        return MemoryStore(max_bytes=max_bytes, clock=clock)
    if backend == "disk":
        if directory is None:
            raise ValueError("the disk store needs a directory (IMAGEGEN_STORE_DIR)")
        return DiskStore(directory, max_bytes=max_bytes, clock=clock)
    if backend == "redis":
        if not redis_url:
            raise ValueError("the redis store needs a URL (IMAGEGEN_REDIS_URL)")
        return RedisStore(redis_url, max_bytes=max_bytes, clock=clock)
    raise ValueError(f"store backend must be one of {', '.join(BACKENDS)}, not {backend!r}")


def create_retention_holder(
    policy: RetentionPolicy, *, redis_url: str | None = None
) -> RetentionHolder:
    """Shared through Redis when a URL is given (replicas), else this process's own."""
    if redis_url:
        return RedisRetentionHolder(redis_url, policy)
    return MemoryRetentionHolder(policy)
