"""Fixtures of the store suite: a fake clock, a throwaway Redis, stores of every backend."""

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from store import ArtifactStore, create_store

BACKENDS = ["memory", "disk"]


class FakeClock:
    """A clock tests tick by hand (cachetools style)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


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
    made: list[ArtifactStore] = []

    def make(max_bytes: int = 1_000_000) -> ArtifactStore:
        store = create_store(
            backend, max_bytes=max_bytes, clock=clock, directory=tmp_path / "artifacts"
        )
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
