"""AES-GCM sealing and the private directory: round trips, and refusal of any tampering."""

import os
import re
import stat
from pathlib import Path

import pytest

from store import sealing

AAD = b"artifact-id"
OURS = re.compile(r"[0-9a-f]{4}(\.partial)?")


def test_a_sealed_record_opens_only_with_its_key_and_its_associated_data() -> None:
    key = sealing.new_key()
    sealed = sealing.seal(key, AAD, b"payload")

    assert len(key) == 32  # AES-256
    assert sealing.unseal(key, AAD, sealed) == b"payload"
    assert b"payload" not in sealed
    assert len(sealed) == sealing.NONCE_BYTES + len(b"payload") + 16  # nonce, text, tag
    assert sealing.unseal(sealing.new_key(), AAD, sealed) is None  # another key
    assert sealing.unseal(key, b"other-id", sealed) is None  # moved to another record
    assert sealing.seal(key, AAD, b"payload") != sealed  # a fresh nonce each time


def test_every_edited_byte_and_every_cut_is_refused() -> None:
    key = sealing.new_key()
    sealed = sealing.seal(key, AAD, b"payload")

    for index in range(len(sealed)):
        edited = bytearray(sealed)
        edited[index] ^= 0x01
        assert sealing.unseal(key, AAD, bytes(edited)) is None, index
    for length in range(len(sealed)):
        assert sealing.unseal(key, AAD, sealed[:length]) is None, length


def test_a_forgotten_key_is_zeroed_in_place() -> None:
    key = sealing.new_key()
    sealed = sealing.seal(key, AAD, b"payload")
    same = key

    sealing.forget(key)

    assert same is key and key == bytearray(32)
    assert sealing.unseal(key, AAD, sealed) is None


def test_a_file_round_trip_and_a_missing_file(tmp_path: Path) -> None:
    key = sealing.new_key()
    path = tmp_path / "abcd"
    sealing.write_sealed(path, key, AAD, b"payload")

    assert sealing.read_sealed(path, key, AAD) == b"payload"
    assert stat.S_IMODE(path.stat().st_mode) == sealing.FILE_MODE == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["abcd"]  # no temporary left behind
    path.unlink()
    assert sealing.read_sealed(path, key, AAD) is None


def test_removing_files_already_gone_is_not_an_error(tmp_path: Path) -> None:
    """A removal may race another (a sweep and a delete, or someone cleaning up)."""
    present, gone = tmp_path / "abcd", tmp_path / "ef01"
    present.write_bytes(b"x")

    sealing.remove_files([gone, present, gone])

    assert list(tmp_path.iterdir()) == []


def test_the_directory_is_made_owner_only_and_cleared_of_our_files(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)  # whatever the umask made of it
    for name in ("abcd", "ef01.partial", "notes.txt", "abcd.bak"):
        (directory / name).write_bytes(b"left behind")

    sealing.prepare_directory(directory, OURS)

    assert stat.S_IMODE(directory.stat().st_mode) == sealing.DIRECTORY_MODE == 0o700
    assert sorted(p.name for p in directory.iterdir()) == ["abcd.bak", "notes.txt"]
    sealing.prepare_directory(directory, OURS)  # a second start finds it ready
    assert sorted(p.name for p in directory.iterdir()) == ["abcd.bak", "notes.txt"]


def test_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "abcd").write_bytes(b"someone else's")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)

    with pytest.raises(sealing.UnsafeDirectory, match="link"):
        sealing.prepare_directory(link, OURS)
    assert [p.name for p in real.iterdir()] == ["abcd"]  # nothing removed through the link


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a directory to another user")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir()
    (directory / "abcd").write_bytes(b"theirs")
    os.chown(directory, 4242, 4242)

    with pytest.raises(sealing.UnsafeDirectory, match="theirs"):
        sealing.prepare_directory(directory, OURS)
    assert [p.name for p in directory.iterdir()] == ["abcd"]
