"""AES-GCM sealing of one artifact file: the blocking work a thread does for the disk store.

A file is nonce || ciphertext+tag under a per-artifact 256-bit key held only
in memory, with the artifact id bound as associated data, so a file renamed to
another id (or any edit) fails authentication instead of decrypting to garbage.
"""

import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
FILE_MODE = 0o600
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def new_key() -> bytearray:
    # A bytearray, so forget() can overwrite it in place.
    return bytearray(AESGCM.generate_key(bit_length=256))


def forget(key: bytearray) -> None:
    """Overwrite a key in place (best effort: Python may have copied it, OpenSSL has freed its)."""
    key[:] = bytes(len(key))


def write_sealed(path: Path, key: bytearray, aad: bytes, data: bytes) -> None:
    """Encrypt and write; the file appears under its name only once complete."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = nonce + AESGCM(key).encrypt(nonce, data, aad)
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
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except (FileNotFoundError, InvalidTag, ValueError):
        # ValueError: a file too short to hold a nonce.
        return None


def remove_files(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
