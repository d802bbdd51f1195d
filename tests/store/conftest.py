"""Fixtures of the store suite: a fake clock, a throwaway Redis, stores of every backend."""

import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis

from store import ArtifactStore, create_store
from tests.components import missing, which

REDIS_SERVER = which("redis-server")
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"
)
BACKENDS = ["memory", "disk", pytest.param("redis", marks=[pytest.mark.redis, needs_redis])]


class FakeClock:
    """A clock tests tick by hand (cachetools style)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class RedisServer:
    """A redis-server on a free loopback port, persistence off, that tests may stop and restart."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self._process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def flush(self) -> None:
        with redis.Redis(port=self.port) as client:
            client.flushall()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        missing("redis-server (apt-get install redis-server)")
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


MakeStore = Callable[..., ArtifactStore]


@pytest.fixture(params=BACKENDS)
async def make_store(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[MakeStore]:
    """Build stores of the parametrized backend on the fake clock; close them after the test."""
    backend: str = request.param
    url = request.getfixturevalue("redis_url") if backend == "redis" else None
    made: list[ArtifactStore] = []

    def make(max_bytes: int = 1_000_000) -> ArtifactStore:
        store = create_store(
            backend,
            max_bytes=max_bytes,
            clock=clock,
            directory=tmp_path / "artifacts",
            redis_url=url,
        )
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
