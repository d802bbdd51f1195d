"""The Redis client settings shared by the Redis store and retention holder.

Short timeouts so a request that needs a lost Redis fails in about a second
(503) rather than hanging; one immediate retry so a pooled connection that
died with a restarted server is replaced transparently.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store.errors import StoreUnavailable

SOCKET_TIMEOUT_SECONDS = 0.5
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def connect(url: str) -> Redis:
    """A client for url; it connects lazily and reconnects by itself."""
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), retries=1),
        decode_responses=False,
    )


@contextmanager
def reachable() -> Iterator[None]:
    """Turn a lost connection into StoreUnavailable (a 503 in the web layer)."""
    try:
        yield
    except UNREACHABLE as exc:
        raise StoreUnavailable("redis is unreachable") from exc
