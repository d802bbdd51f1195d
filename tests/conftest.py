"""Shared fixtures (helpers live in tests/helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import torch

from tests.components import pytest_runtest_makereport  # noqa: F401  (a hook: CI fails skips)
from tests.helpers import running_app

# pytester runs the hook above on a suite of its own (tests/test_components.py).
pytest_plugins = ["pytester"]

# Tests run many tiny generations beside other threads (encoders, servers): one
# intra-op thread avoids oversubscribing a small machine, which costs up to 10x.
torch.set_num_threads(1)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with running_app() as c:
        yield c


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random-weight diffusers directory per family, built once per test session."""
    from tests import tiny_families

    root = tmp_path_factory.mktemp("families")
    return {kind: tiny_families.build(kind, root / kind) for kind in tiny_families.KINDS}
