"""What only the encrypted disk backend promises."""

import asyncio
import stat
from pathlib import Path

import pytest

from store import sealing
from store.disk import DiskStore
from tests.store.conftest import FakeClock

CANARY = b"CANARY-7f3a9c-do-not-store-in-plaintext"
PNG = "image/png"


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
async def store(directory: Path, clock: FakeClock):
    store = DiskStore(directory, max_bytes=10**7, clock=clock)
    yield store
    await store.close()


def all_bytes(directory: Path) -> bytes:
    return b"".join(p.name.encode() + p.read_bytes() for p in directory.rglob("*") if p.is_file())


async def test_no_plaintext_reaches_the_directory(store: DiskStore, directory: Path) -> None:
    token, _ = await store.put(CANARY * 100, PNG, 60)
    await store.put(CANARY, PNG, 60)

    on_disk = all_bytes(directory)
    assert on_disk  # something was written...
    assert CANARY not in on_disk and CANARY[:16] not in on_disk  # ...and none of it readable
    assert token.encode() not in on_disk
    assert (await store.get(token))[1] == CANARY * 100  # type: ignore[index]


async def test_directory_and_files_are_owner_only(store: DiskStore, directory: Path) -> None:
    _, artifact = await store.put(b"x", PNG, 60)

    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / artifact.id).stat().st_mode) == 0o600
    assert [p.name for p in directory.iterdir()] == [artifact.id]


async def test_swapped_files_fail_authentication(store: DiskStore, directory: Path) -> None:
    token_a, a = await store.put(b"A" * 50, PNG, 60)
    token_b, b = await store.put(b"B" * 50, PNG, 60)
    path_a, path_b = directory / a.id, directory / b.id
    sealed_a, sealed_b = path_a.read_bytes(), path_b.read_bytes()
    path_a.write_bytes(sealed_b)
    path_b.write_bytes(sealed_a)

    assert await store.get(token_a) is None
    assert await store.get(token_b) is None
    assert list(directory.iterdir()) == []  # unreadable files are removed
    assert (await store.stats()).count == 0


async def test_a_tampered_file_is_refused(store: DiskStore, directory: Path) -> None:
    token, artifact = await store.put(b"payload", PNG, 60)
    path = directory / artifact.id
    sealed = bytearray(path.read_bytes())
    sealed[-1] ^= 1
    path.write_bytes(bytes(sealed))

    assert await store.get(token) is None


async def test_a_restart_removes_what_the_last_process_left(
    directory: Path, clock: FakeClock
) -> None:
    first = DiskStore(directory, max_bytes=10**6, clock=clock)
    await first.put(b"x", PNG, 60)
    await first.put(b"y", PNG, 60)
    (directory / "notes.txt").write_text("not ours")
    assert len(list(directory.iterdir())) == 3

    second = DiskStore(directory, max_bytes=10**6, clock=clock)

    assert [p.name for p in directory.iterdir()] == ["notes.txt"]  # only the store's own files
    assert (await second.stats()).count == 0
    await second.close()


async def test_the_key_is_dropped_before_the_file(
    store: DiskStore, directory: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    deleted_token, deleted = await store.put(b"x", PNG, 60)
    _, expiring = await store.put(b"y", PNG, 10)
    keys = {i: entry[1] for i, entry in store._catalog._entries.items()}
    seen: list[tuple[str, bool, bool]] = []
    remove_files = sealing.remove_files

    def checking_remove(paths: list[Path]) -> None:
        for path in paths:
            seen.append((path.name, path.exists(), not any(keys[path.name])))
        remove_files(paths)

    monkeypatch.setattr(sealing, "remove_files", checking_remove)
    await store.delete(deleted_token)
    clock.tick(10)
    await store.sweep()

    # Each file still existed when its removal began, and its key was already zeroed.
    assert seen == [(deleted.id, True, True), (expiring.id, True, True)]
    assert list(directory.iterdir()) == []


async def test_a_cancelled_put_leaves_nothing(store: DiskStore, directory: Path) -> None:
    putting = asyncio.create_task(store.put(b"z" * 5_000_000, PNG, 60))
    await asyncio.sleep(0.001)  # in the writer thread now
    putting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await putting

    for _ in range(100):
        if not list(directory.iterdir()):
            break
        await asyncio.sleep(0.01)
    assert list(directory.iterdir()) == []
    stats = await store.stats()
    assert (stats.count, stats.bytes) == (0, 0)
    await store.put(b"z" * (10**7), PNG, 60)  # the whole budget is free again


async def test_close_removes_every_file(store: DiskStore, directory: Path) -> None:
    await store.put(b"x", PNG, 60)
    await store.close()

    assert list(directory.iterdir()) == []
