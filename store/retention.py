"""How long artifacts live: default and maximum TTL, per-model overrides, bulk retention.

Changed at run time by operators; each change is one audit log line.
"""

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

audit_log = logging.getLogger("imagegen.audit")

DEFAULT_BATCH_RETENTION_SECONDS = 3600.0
# The range of a lifetime: under a second every URL is dead on arrival; a year is plenty,
# and far inside what an expiry time and an HTTP Expires date can carry (year 9999).
MIN_LIFETIME_SECONDS = 1.0
MAX_LIFETIME_SECONDS = 365 * 86400.0
_POLICY_FIELDS = ("default_ttl_seconds", "max_ttl_seconds", "models", "batch_retention_seconds")
_MODEL_FIELDS = ("default_ttl_seconds", "max_ttl_seconds")


class TTLRejected(ValueError):
    """A requested ttl_seconds outside what the policy allows (a 4xx naming ttl_seconds)."""


@dataclass(frozen=True, slots=True)
class ModelRetention:
    default_ttl_seconds: float
    max_ttl_seconds: float


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    default_ttl_seconds: float
    max_ttl_seconds: float
    models: dict[str, ModelRetention] = field(default_factory=dict)
    batch_retention_seconds: float = DEFAULT_BATCH_RETENTION_SECONDS

    def __post_init__(self) -> None:
        self.validate()  # an invalid policy never exists

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        _check_pair("", self.default_ttl_seconds, self.max_ttl_seconds)
        for name, limits in self.models.items():
            _check_pair(f"models.{name}.", limits.default_ttl_seconds, limits.max_ttl_seconds)
        _check_lifetime("batch_retention_seconds", self.batch_retention_seconds)

    def for_model(self, model: str) -> ModelRetention:
        """The model's limits: its override, else the policy-wide ones."""
        limits = self.models.get(model)
        if limits is None:
            return ModelRetention(self.default_ttl_seconds, self.max_ttl_seconds)
        return limits

    def ttl_for(self, model: str, requested: float | None) -> float:
        """The TTL of a new artifact; a request may only shorten the model's default."""
        default = self.for_model(model).default_ttl_seconds
        if requested is None:
            return default
        if not (math.isfinite(requested) and 1 <= requested <= default):
            raise TTLRejected(f"ttl_seconds must be between 1 and {default:g} for this model")
        return float(requested)

    def to_dict(self) -> dict[str, Any]:
        return {
            "default_ttl_seconds": self.default_ttl_seconds,
            "max_ttl_seconds": self.max_ttl_seconds,
            "models": {
                name: {
                    "default_ttl_seconds": limits.default_ttl_seconds,
                    "max_ttl_seconds": limits.max_ttl_seconds,
                }
                for name, limits in self.models.items()
            },
            "batch_retention_seconds": self.batch_retention_seconds,
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], base: "RetentionPolicy | None" = None
    ) -> "RetentionPolicy":
        """Parse the API shape; fields missing from data come from base (a partial update).

        Unknown fields are refused, so a typo never silently keeps the old value.
        """
        if not isinstance(data, Mapping):
            raise ValueError("retention policy must be a JSON object")
        _refuse_unknown("", data, _POLICY_FIELDS)
        fallback = base.to_dict() if base is not None else {}
        merged = {
            "models": {},
            "batch_retention_seconds": DEFAULT_BATCH_RETENTION_SECONDS,
            **fallback,
            **data,
        }
        default = _number(merged, "default_ttl_seconds", "")
        maximum = _number(merged, "max_ttl_seconds", "")
        models_data = merged["models"]
        if not isinstance(models_data, Mapping):
            raise ValueError("models must be an object of model name to limits")
        models = {
            str(name): _model_from_dict(str(name), entry, default, maximum)
            for name, entry in models_data.items()
        }
        return cls(
            default_ttl_seconds=default,
            max_ttl_seconds=maximum,
            models=models,
            batch_retention_seconds=_number(merged, "batch_retention_seconds", ""),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "RetentionPolicy":
        return cls.from_dict(json.loads(text))


class RetentionHolder(Protocol):
    """The live policy; a change applies to new artifacts at once."""

    @property
    def current(self) -> RetentionPolicy: ...

    async def get(self) -> RetentionPolicy: ...

    async def set(self, policy: RetentionPolicy, actor: str) -> RetentionPolicy:
        """Replace the policy, write one audit line, return the old one."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class MemoryRetentionHolder:
    """The policy of a single process."""

    def __init__(self, policy: RetentionPolicy) -> None:
        self._policy = policy

    @property
    def current(self) -> RetentionPolicy:
        return self._policy

    async def get(self) -> RetentionPolicy:
        return self._policy

    async def set(self, policy: RetentionPolicy, actor: str) -> RetentionPolicy:
        old, self._policy = self._policy, policy
        log_change(old, policy, actor)
        return old

    async def start(self) -> None:
        """Nothing to start; present so every holder has the same lifecycle."""

    async def stop(self) -> None:
        """Nothing to stop."""


def log_change(old: RetentionPolicy, new: RetentionPolicy, actor: str) -> None:
    """The one audit line of a retention change: who, and the values before and after."""
    audit_log.info(
        "retention changed by %s: old=%s new=%s",
        actor,
        old.to_json(),
        new.to_json(),
        # "fields" is what the JSON log lines carry beside the message (as other audit lines).
        extra={"fields": {"actor": actor}},
    )


def _check_pair(prefix: str, default: float, maximum: float) -> None:
    _check_lifetime(f"{prefix}default_ttl_seconds", default)
    _check_lifetime(f"{prefix}max_ttl_seconds", maximum)
    if default > maximum:
        raise ValueError(
            f"{prefix}default_ttl_seconds ({default:g}) must not exceed "
            f"{prefix}max_ttl_seconds ({maximum:g})"
        )


def _check_lifetime(name: str, value: float) -> None:
    if not (isinstance(value, int | float)
            and MIN_LIFETIME_SECONDS <= value <= MAX_LIFETIME_SECONDS):
        raise ValueError(f"{name} must be between {MIN_LIFETIME_SECONDS:g} and "
                         f"{MAX_LIFETIME_SECONDS:g} seconds")


def _refuse_unknown(prefix: str, data: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in data:
        if key not in known:
            raise ValueError(f"{prefix}{key} is not a retention field")


def _number(data: Mapping[str, Any], key: str, prefix: str) -> float:
    name = f"{prefix}{key}"
    if key not in data:
        raise ValueError(f"{name} is required")
    value = data[key]
    # bool is an int subclass; true is not a duration.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds")
    return float(value)


def _model_from_dict(name: str, entry: Any, default: float, maximum: float) -> ModelRetention:
    prefix = f"models.{name}."
    if not isinstance(entry, Mapping):
        raise ValueError(f"models.{name} must be an object")
    _refuse_unknown(prefix, entry, _MODEL_FIELDS)
    merged = {"default_ttl_seconds": default, "max_ttl_seconds": maximum, **entry}
    return ModelRetention(
        default_ttl_seconds=_number(merged, "default_ttl_seconds", prefix),
        max_ttl_seconds=_number(merged, "max_ttl_seconds", prefix),
    )
