"""One typed settings object, read from IMAGEGEN_* env vars and overridden by CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from service.tenancy import AUTH_MODES, Limits
from service.webhooks.addresses import parse_allow
from service.webhooks.signing import secret_key


class SettingsError(ValueError):
    """A bad setting; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    models: Path | None = None
    ttl: int = 3600
    max_ttl: int = 86400
    sweep_interval: float = 5.0
    admin_token: str | None = None
    store: str = "memory"
    store_dir: Path | None = None
    store_max_bytes: int = 512 * 1024 * 1024
    redis_url: str | None = None
    queue_size: int = 32
    # Seconds requests queued behind a busy device wait for compatible ones to join their batch.
    batch_wait: float = 0.02
    batch_retention: int = 3600
    # Encrypted bulk inputs and outputs; default: a private dir under the temp root.
    batch_dir: Path | None = None
    public_url: str | None = None
    # Hard caps on what a client may send.
    max_body_bytes: int = 16 * 1024 * 1024
    # Seconds a client has to send its request's headers, and its body: slower is a 408.
    client_timeout: float = 60.0
    # Requests receiving a body at once (a burst of small ones must fit), and the bytes
    # held for them; beyond either, a 503.
    max_receiving_bodies: int = 256
    max_buffered_body_bytes: int = 128 * 1024 * 1024
    request_timeout: float = 120.0
    log_level: str = "INFO"
    # "keys": every /v1 call needs an API key (see service/tenancy); "none": a local tool.
    auth: str = "none"
    # Key hashes when the store is not Redis; default: the user's state directory.
    keys_file: Path | None = None
    # With keys on, the demo page acts as the built-in "demo" principal, or is "off".
    demo: str = "on"
    demo_limits: str = "requests_per_minute=10,max_concurrent=1,device_seconds_per_day=600"
    usage_retention_days: int = 31
    # Webhooks: the signing secret when auth is off (whsec_..., env only: a flag would show
    # in `ps`), networks allowed besides public addresses (comma-separated CIDRs), and how
    # long a delivery is retried.
    webhook_secret: str | None = None
    webhook_allow: str = ""
    webhook_retry_seconds: float = 600.0

    @staticmethod
    def env_name(field_name: str) -> str:
        return "IMAGEGEN_" + field_name.upper()

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Env vars first, then explicit overrides (CLI flags, tests); validated."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = environ.get(cls.env_name(field.name))
            if raw is not None and raw != "":
                values[field.name] = _convert(field.name, str(field.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    @property
    def shared_redis_url(self) -> str | None:
        """Replicas share state (policy, keys, limits, usage) through Redis when it is the store."""
        return self.redis_url if self.store == "redis" else None

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def validate(self) -> None:
        def positive(name: str) -> None:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{self.env_name(name)} must be greater than 0")

        for name in ("ttl", "max_ttl", "sweep_interval", "store_max_bytes", "queue_size",
                     "batch_retention", "max_body_bytes", "request_timeout", "client_timeout",
                     "max_receiving_bodies", "max_buffered_body_bytes", "usage_retention_days",
                     "webhook_retry_seconds"):
            positive(name)
        if not 0 <= self.batch_wait <= 1:
            raise SettingsError("IMAGEGEN_BATCH_WAIT must be between 0 and 1 (seconds)")
        if not 0 < self.port < 65536:
            raise SettingsError("IMAGEGEN_PORT must be between 1 and 65535")
        if self.max_buffered_body_bytes < self.max_body_bytes:
            raise SettingsError("IMAGEGEN_MAX_BUFFERED_BODY_BYTES must be at least "
                                "IMAGEGEN_MAX_BODY_BYTES")
        if self.ttl > self.max_ttl:
            raise SettingsError("IMAGEGEN_TTL must not exceed IMAGEGEN_MAX_TTL")
        if self.store not in ("memory", "disk", "redis"):
            raise SettingsError("IMAGEGEN_STORE must be one of memory, disk, redis")
        if self.store == "disk" and self.store_dir is None:
            raise SettingsError("IMAGEGEN_STORE_DIR is required when IMAGEGEN_STORE=disk")
        if self.store == "redis" and not self.redis_url:
            raise SettingsError("IMAGEGEN_REDIS_URL is required when IMAGEGEN_STORE=redis")
        if self.models is not None and not self.models.is_file():
            raise SettingsError("IMAGEGEN_MODELS must name an existing models.toml file")
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise SettingsError("IMAGEGEN_PUBLIC_URL must be an absolute http(s) URL")
        if self.auth not in AUTH_MODES:
            raise SettingsError("IMAGEGEN_AUTH must be none or keys")
        if self.demo not in ("on", "off"):
            raise SettingsError("IMAGEGEN_DEMO must be on or off")
        try:
            Limits.parse(self.demo_limits)
        except ValueError as exc:
            raise SettingsError(f"IMAGEGEN_DEMO_LIMITS: {exc}") from None
        try:
            parse_allow(self.webhook_allow)
        except ValueError as exc:
            raise SettingsError(f"IMAGEGEN_WEBHOOK_ALLOW: {exc}") from None
        if self.webhook_secret is not None:
            try:
                secret_key(self.webhook_secret)
            except ValueError as exc:  # the message never quotes the secret
                raise SettingsError(f"IMAGEGEN_WEBHOOK_SECRET: {exc}") from None
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError("IMAGEGEN_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")


def _convert(name: str, type_name: str, raw: str) -> Any:
    env = Settings.env_name(name)
    try:
        if "int" in type_name:
            return int(raw)
        if "float" in type_name:
            return float(raw)
    except ValueError:
        kind = "an integer" if "int" in type_name else "a number"
        raise SettingsError(f"{env} must be {kind}") from None
    if "Path" in type_name:
        return Path(raw)
    return raw
