"""API keys: minted once, kept only as a SHA-256 hash, checked in constant time.

A key reads `ig_<16 hex id>_<43 chars>`: the id finds the record, the rest
is 256 random bits. Only `sha256(key)` is stored, in Redis when the service
shares a Redis store (every replica reads it on each request, so a
revocation applies everywhere at once) or else in a keys file written
atomically with mode 0600 (re-read when it changes, so `imagegen keys`
works beside a running server).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from service.tenancy.errors import KeyNotFound, KeyRejected, MissingKey
from service.tenancy.principal import Limits, Principal
from store.redis import DEFAULT_PREFIX
from store.redis_client import connect, reachable

log = logging.getLogger(__name__)

KEY_PREFIX = "ig_"
ID_HEX_CHARS = 16
SECRET_BYTES = 32  # 256 bits
FILE_FORMAT_VERSION = 1


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def mint_key() -> tuple[str, str]:
    """A new (key id, key); the key is shown to the operator once and never stored."""
    hex_id = secrets.token_hex(ID_HEX_CHARS // 2)
    return f"key_{hex_id}", f"{KEY_PREFIX}{hex_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def key_id_of(key: str) -> str | None:
    """The id a presented key claims; None when it is not shaped like one of ours."""
    hex_id = key[len(KEY_PREFIX):len(KEY_PREFIX) + ID_HEX_CHARS]
    if (not key.startswith(KEY_PREFIX) or len(hex_id) != ID_HEX_CHARS
            or key[len(KEY_PREFIX) + ID_HEX_CHARS:len(KEY_PREFIX) + ID_HEX_CHARS + 1] != "_"
            or any(c not in "0123456789abcdef" for c in hex_id)):
        return None
    return f"key_{hex_id}"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    key_hash: str
    created_at: float
    models: tuple[str, ...] | None = None
    expires_at: float | None = None
    limits: Limits = Limits()
    revoked_at: float | None = None

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(hash_key(key), self.key_hash)

    def check(self, now: float) -> None:
        """KeyRejected when revoked or expired."""
        if self.revoked_at is not None:
            raise KeyRejected("key_revoked", self.id)
        if self.expires_at is not None and now >= self.expires_at:
            raise KeyRejected("key_expired", self.id)

    def principal(self) -> Principal:
        models = None if self.models is None else frozenset(self.models)
        return Principal(self.id, self.limits, models, key_hash=self.key_hash)

    def public(self) -> dict[str, Any]:
        """What an operator may see again: everything but the hash."""
        return {"id": self.id, "name": self.name, "created_at": self.created_at,
                "models": None if self.models is None else list(self.models),
                "expires_at": self.expires_at, **self.limits.to_dict(),
                "revoked_at": self.revoked_at}

    def to_record(self) -> dict[str, Any]:
        return {**self.public(), "sha256": self.key_hash}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ApiKey:
        models = record.get("models")
        return cls(
            id=str(record["id"]), name=str(record["name"]), key_hash=str(record["sha256"]),
            created_at=float(record["created_at"]),
            models=None if models is None else tuple(str(m) for m in models),
            expires_at=record.get("expires_at"),
            limits=Limits(record.get("requests_per_minute"), record.get("max_concurrent"),
                          record.get("device_seconds_per_day")),
            revoked_at=record.get("revoked_at"),
        )


class KeyStore(Protocol):
    """Where key records live; every method may raise StoreUnavailable (Redis)."""

    async def add(self, key: ApiKey) -> None: ...
    async def get(self, key_id: str) -> ApiKey | None: ...
    async def all(self) -> list[ApiKey]: ...
    async def revoke(self, key_id: str, now: float) -> ApiKey: ...
    async def close(self) -> None: ...


async def authenticate(keys: KeyStore, presented: str | None, now: float) -> ApiKey:
    """The key record behind a presented key: MissingKey (401) or KeyRejected (403)."""
    if not presented:
        raise MissingKey()
    key_id = key_id_of(presented)
    record = None if key_id is None else await keys.get(key_id)
    # The hash comparison runs in constant time; an unknown id answers like a wrong key.
    if record is None or not record.matches(presented):
        raise MissingKey()
    record.check(now)
    return record


class FileKeyStore:
    """Key hashes in a JSON file: atomic replace, mode 0600, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: dict[str, ApiKey] = {}
        self._version: tuple[int, int, int] | None = None
        self._refresh()  # a broken file stops start-up here, with its path named

    async def add(self, key: ApiKey) -> None:
        def change(keys: dict[str, ApiKey]) -> None:
            keys[key.id] = key

        self._update(change)

    async def get(self, key_id: str) -> ApiKey | None:
        self._refresh_quietly()
        return self._keys.get(key_id)

    async def all(self) -> list[ApiKey]:
        self._refresh_quietly()
        return sorted(self._keys.values(), key=lambda k: k.created_at)

    async def revoke(self, key_id: str, now: float) -> ApiKey:
        revoked: list[ApiKey] = []

        def change(keys: dict[str, ApiKey]) -> None:
            key = keys.get(key_id)
            if key is None:
                raise KeyNotFound()
            keys[key_id] = replace(key, revoked_at=key.revoked_at or now)
            revoked.append(keys[key_id])

        self._update(change)
        return revoked[0]

    async def close(self) -> None:
        return None

    def _refresh(self) -> None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._keys, self._version = {}, None
            return
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if version == self._version:
            return
        try:
            document = json.loads(self.path.read_bytes())
            keys = [ApiKey.from_record(record) for record in document["keys"]]
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(f"the keys file {self.path} cannot be read") from None
        self._keys = {key.id: key for key in keys}
        self._version = version

    def _refresh_quietly(self) -> None:
        try:
            self._refresh()
        except ValueError:
            # Someone broke the file by hand: keep serving the keys last read.
            log.warning("keys file unreadable; using the keys last read")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time, across processes (the server and `imagegen keys`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path.with_name(self.path.name + ".lock")
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _update(self, change: Callable[[dict[str, ApiKey]], None]) -> None:
        with self._locked():
            self._refresh()
            keys = dict(self._keys)
            change(keys)
            self._write(keys)
            self._refresh()

    def _write(self, keys: dict[str, ApiKey]) -> None:
        document = {"version": FILE_FORMAT_VERSION,
                    "keys": [key.to_record() for key in keys.values()]}
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(json.dumps(document, indent=1).encode())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)  # readers see the old file or the new, never half
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class RedisKeyStore:
    """Key hashes in one Redis hash, read on every request: no replica caches a revoked key."""

    def __init__(self, url: str, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._client = connect(url)
        self._hash = f"{key_prefix}keys"

    async def add(self, key: ApiKey) -> None:
        with reachable():
            await self._client.hset(self._hash, key.id, json.dumps(key.to_record()))

    async def get(self, key_id: str) -> ApiKey | None:
        with reachable():
            stored = await self._client.hget(self._hash, key_id)
        return None if stored is None else ApiKey.from_record(json.loads(stored))

    async def all(self) -> list[ApiKey]:
        with reachable():
            stored = await self._client.hvals(self._hash)
        return sorted((ApiKey.from_record(json.loads(s)) for s in stored),
                      key=lambda k: k.created_at)

    async def revoke(self, key_id: str, now: float) -> ApiKey:
        key = await self.get(key_id)
        if key is None:
            raise KeyNotFound()
        revoked = replace(key, revoked_at=key.revoked_at or now)
        await self.add(revoked)
        return revoked

    async def close(self) -> None:
        await self._client.aclose()


def default_keys_file() -> Path:
    """Where keys are kept without IMAGEGEN_KEYS_FILE: the user's state directory."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "imagegen" / "keys.json"


def create_key_store(*, redis_url: str | None, keys_file: Path | None) -> KeyStore:
    """Redis when the service's store is Redis (pass its URL), else the keys file."""
    if redis_url:
        return RedisKeyStore(redis_url)
    return FileKeyStore(keys_file or default_keys_file())
