"""What only the encrypted disk backend promises."""

import asyncio
import os
import stat
import threading
from pathlib import Path

import pytest

from store import sealing
from store.disk import DiskStore
from tests.store.conftest import FakeClock

CANARY = b"CANARY-7f3a9c-do-not-store-in-plaintext"
PNG = "image/png"
WAIT = 10.0  # seconds: a guard against hanging, never a timing assertion


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


async def test_a_missing_directory_is_made_with_its_parents(tmp_path: Path, clock: FakeClock
                                                             ) -> None:
    nested = tmp_path / "a" / "b" / "artifacts"
    store = DiskStore(nested, max_bytes=10**6, clock=clock)
    token, _ = await store.put(b"x", PNG, 60)
    assert stat.S_IMODE(nested.stat().st_mode) == 0o700
    assert await store.get(token) is not None
    await store.close()


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


async def test_a_restart_removes_what_a_crash_mid_write_leaves(
    store: DiskStore, directory: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every name the writer uses, its temporary one included, is one start-up removes."""
    renames: list[tuple[str, str]] = []
    replace = os.replace

    def recording_replace(source: Path, target: Path) -> None:
        renames.append((Path(source).name, Path(target).name))
        replace(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    await store.put(b"x", PNG, 60)
    monkeypatch.undo()
    [(temporary, sealed)] = renames
    crashed = directory.parent / "crashed"
    crashed.mkdir()
    for name in (temporary, sealed):
        (crashed / name).write_bytes(b"left by a process that died")

    DiskStore(crashed, max_bytes=10**6, clock=clock)
    assert list(crashed.iterdir()) == []


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


class HeldWriter:
    """sealing.write_sealed held at the door until released, and reporting when it is done."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self._write = sealing.write_sealed

    def __call__(self, path: Path, key: bytearray, aad: bytes, data: bytes) -> None:
        self.entered.set()
        self.release.wait(WAIT)
        try:
            self._write(path, key, aad, data)
        finally:
            self.finished.set()


async def wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, WAIT), "the writer thread never got there"


async def test_a_cancelled_put_leaves_nothing(
    store: DiskStore, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = HeldWriter()
    monkeypatch.setattr(sealing, "write_sealed", writer)
    putting = asyncio.create_task(store.put(b"z" * 5_000, PNG, 60))
    await wait_for(writer.entered)  # the file is being written by the thread now
    putting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await putting
    writer.release.set()
    await wait_for(writer.finished)  # the sealed file exists now, unless already removed

    # The removal runs in a thread after the write: wait for it, but only so long.
    for _ in range(int(WAIT / 0.01)):
        if not list(directory.iterdir()):
            break
        await asyncio.sleep(0.01)
    assert list(directory.iterdir()) == []
    stats = await store.stats()
    assert (stats.count, stats.bytes) == (0, 0)
    await store.put(b"z" * (10**7), PNG, 60)  # the whole budget is free again


async def test_expiry_is_checked_again_after_the_threaded_read(
    store: DiskStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, artifact = await store.put(b"payload", PNG, 10)
    read_sealed = sealing.read_sealed

    def slow_read(path: Path, key: bytearray, aad: bytes) -> bytes | None:
        clock.tick(10)  # the artifact expires while its file is being read
        return read_sealed(path, key, aad)

    monkeypatch.setattr(sealing, "read_sealed", slow_read)
    assert await store.get(token) is None
    assert (await store.stats()).expired_total == 1


async def test_a_delete_during_the_threaded_read_wins(
    store: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, _ = await store.put(b"payload", PNG, 60)
    loop = asyncio.get_running_loop()
    read_sealed = sealing.read_sealed

    def read_while_deleted(path: Path, key: bytearray, aad: bytes) -> bytes | None:
        data = read_sealed(path, key, aad)
        asyncio.run_coroutine_threadsafe(store.delete(token), loop).result(WAIT)
        return data

    monkeypatch.setattr(sealing, "read_sealed", read_while_deleted)
    assert await store.get(token) is None


async def test_close_removes_every_file(store: DiskStore, directory: Path) -> None:
    await store.put(b"x", PNG, 60)
    await store.close()

    assert list(directory.iterdir()) == []
    stats = await store.stats()
    assert (stats.count, stats.bytes) == (0, 0)
