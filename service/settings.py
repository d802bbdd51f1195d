"""One typed settings object, read from IMAGEGEN_* env vars and overridden by CLI flags.

Each setting is declared once, with its help; its env var and flag follow from its name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from service.tenancy import AUTH_MODES, Limits
from service.webhooks.addresses import parse_allow
from service.webhooks.signing import secret_key
from store.factory import BACKENDS


class SettingsError(ValueError):
    """A bad setting; the message is one line naming it."""


def setting(default: Any, help: str, *, flag: bool = True) -> Any:
    """Declare a setting: its env var is IMAGEGEN_<NAME>; its flag --<name> unless flag=False
    (secrets: a flag would show in `ps`). `imagegen serve` builds its flags from these."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True, slots=True)
class Option:
    """How one setting is given: its env var, its command-line flag (if any), its help."""

    name: str
    env: str
    flag: str | None
    help: str


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = setting("127.0.0.1", "address to bind")
    port: int = setting(8000, "port")
    models: Path | None = setting(None, "models.toml (default: the embedded model only)")
    ttl: int = setting(3600, "default image TTL, seconds")
    max_ttl: int = setting(86400, "maximum image TTL, seconds")
    sweep_interval: float = setting(5.0, "seconds between sweeps of expired images")
    admin_token: str | None = setting(None, "bearer token of the admin routes", flag=False)
    store: str = setting("memory", "memory | disk | redis")
    store_dir: Path | None = setting(None, "directory of the disk store")
    store_max_bytes: int = setting(512 * 1024 * 1024, "byte budget of the image store")
    redis_url: str | None = setting(None, "redis://host:port/db of the redis store")
    queue_size: int = setting(32, "queue slots per device and lane")
    batch_wait: float = setting(
        0.02, "seconds requests queued behind a busy device wait for compatible ones to join "
        "their micro-batch")
    batch_retention: int = setting(3600, "bulk batch retention, seconds")
    batch_dir: Path | None = setting(
        None, "directory of encrypted bulk inputs and outputs (default: a private one under "
        "the temporary directory)")
    public_url: str | None = setting(None, "base of image URLs, behind a proxy")
    max_body_bytes: int = setting(16 * 1024 * 1024, "largest request body, bytes")
    max_lora_bytes: int = setting(
        64 * 1024 * 1024, "largest uploaded LoRA adapter (POST /v1/loras), bytes; it is held "
        "in memory while it lives")
    client_timeout: float = setting(
        60.0, "seconds a client has to send its request's headers, and its body (else 408)")
    max_receiving_bodies: int = setting(
        256, "requests receiving a body at once (beyond it, 503)")
    max_buffered_body_bytes: int = setting(
        128 * 1024 * 1024, "bytes held for bodies being received (beyond it, 503)")
    max_job_records: int = setting(
        10_000, "job records held at once, canceled ones too until they expire (beyond, 429)")
    request_timeout: float = setting(120.0, "seconds a generation may take")
    log_level: str = setting("INFO", "DEBUG | INFO | WARNING | ERROR")
    auth: str = setting("none", "none | keys: every /v1 call needs an API key")
    keys_file: Path | None = setting(
        None, "API key hashes when the store is not redis (default: the user's state "
        "directory)")
    demo: str = setting("on", "on | off: with keys on, the demo page acts as the built-in "
                        "demo principal, or is off")
    demo_limits: str = setting(
        "requests_per_minute=10,max_concurrent=1,device_seconds_per_day=600",
        "limits of the demo principal")
    usage_retention_days: int = setting(31, "days of usage records kept")
    webhook_secret: str | None = setting(
        None, "webhook signing secret (whsec_...) when auth is off", flag=False)
    webhook_allow: str = setting(
        "", "comma-separated CIDRs webhooks may call besides public addresses")
    webhook_retry_seconds: float = setting(600.0, "how long a webhook delivery is retried")

    @classmethod
    def options(cls) -> list[Option]:
        """Every setting's env var and flag, in declaration order."""
        return [Option(f.name, cls.env_name(f.name),
                       "--" + f.name.replace("_", "-") if f.metadata["flag"] else None,
                       f.metadata["help"]) for f in fields(cls)]

    @staticmethod
    def env_name(field_name: str) -> str:
        return "IMAGEGEN_" + field_name.upper()

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Env vars first, then explicit overrides (CLI flags as text, tests); validated."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for option in fields(cls):
            raw = environ.get(cls.env_name(option.name))
            if raw is not None and raw != "":
                values[option.name] = _convert(cls.env_name(option.name), str(option.type), raw)
        types = {option.name: str(option.type) for option in fields(cls)}
        for name, value in overrides.items():
            if isinstance(value, str) and name in types:
                value = _convert("--" + name.replace("_", "-"), types[name], value)
            if value is not None:
                values[name] = value
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
                     "max_receiving_bodies", "max_buffered_body_bytes", "max_job_records",
                     "usage_retention_days", "webhook_retry_seconds", "max_lora_bytes"):
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
        if self.store not in BACKENDS:
            raise SettingsError(f"IMAGEGEN_STORE must be one of {', '.join(BACKENDS)}")
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


def _convert(source: str, type_name: str, raw: str) -> Any:
    """Text from an env var or a flag as the field's type; the error names its source."""
    try:
        if "int" in type_name:
            return int(raw)
        if "float" in type_name:
            return float(raw)
    except ValueError:
        kind = "an integer" if "int" in type_name else "a number"
        raise SettingsError(f"{source} must be {kind}") from None
    if "Path" in type_name:
        return Path(raw)
    return raw
