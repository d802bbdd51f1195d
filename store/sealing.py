"""AES-GCM sealing of everything held on disk (artifact files, bulk records), and the
private directory they live in. Blocking: callers run it in a thread.

A sealed record is nonce || ciphertext+tag under a 256-bit key held only in
memory, with what the record is (an artifact id, a batch line) bound as
associated data, so a record moved elsewhere (or any edit) fails
authentication instead of decrypting to garbage. Keys are bytearrays, used
as they are (never copied into immutable bytes), so forget() wipes them.
"""

import os
import re
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def new_key() -> bytearray:
    # A bytearray, so forget() can overwrite it in place.
    return bytearray(AESGCM.generate_key(bit_length=256))


def forget(key: bytearray) -> None:
    """Overwrite a key in place (best effort: Python may have copied it, OpenSSL has freed its)."""
    key[:] = bytes(len(key))


class UnsafeDirectory(ValueError):
    """The directory is a symbolic link or belongs to another user."""


def prepare_directory(directory: Path, own_files: re.Pattern[str]) -> None:
    """Create the directory owner-only, and remove every file of ours a previous process left.

    Those files' keys died with that process, so they are unreadable anyway.
    Only names matching own_files go, so a misconfigured directory loses nothing else.
    """
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    if directory.is_symlink() or directory.stat().st_uid != os.getuid():
        raise UnsafeDirectory(f"{directory} must be a directory owned by this user")
    directory.chmod(DIRECTORY_MODE)
    remove_files(path for path in directory.iterdir() if own_files.fullmatch(path.name))


def seal(key: bytearray, aad: bytes, data: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def unseal(key: bytearray, aad: bytes, sealed: bytes) -> bytes | None:
    """The plaintext, or None when the record fails authentication (or is cut short)."""
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        # ValueError: a record too short to hold a nonce.
        return None


def write_sealed(path: Path, key: bytearray, aad: bytes, data: bytes) -> None:
    """Encrypt and write; the file appears under its name only once complete."""
    sealed = seal(key, aad, data)
    partial = path.with_suffix(".partial")
    fd = os.open(partial, _WRITE_FLAGS, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(sealed)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def read_sealed(path: Path, key: bytearray, aad: bytes) -> bytes | None:
    """The plaintext, or None when the file is gone or fails authentication."""
    try:
        sealed = path.read_bytes()
    except FileNotFoundError:
        return None
    return unseal(key, aad, sealed)


def remove_files(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
