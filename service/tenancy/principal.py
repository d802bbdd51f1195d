"""Who is calling: a principal (an API key, the demo page, or anyone when auth is off).

Jobs, batches, adapters and idempotency keys are owned by `Principal.id`;
limits and usage are counted per id. The id is never a secret: it is what
logs and usage reports carry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

# With IMAGEGEN_AUTH=none every caller is this one principal (the local tool).
ANONYMOUS_ID = "anonymous"
# With keys on, the demo page's visitors act as this built-in principal.
DEMO_ID = "demo"


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-principal limits; None means unlimited. ValueError names a bad one."""

    requests_per_minute: int | None = None
    max_concurrent: int | None = None
    device_seconds_per_day: float | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            whole = field.name != "device_seconds_per_day"
            kinds = (int,) if whole else (int, float)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)
                                      or not 0 < value < 2**53):
                kind = "integer" if whole else "number"
                raise ValueError(f"{field.name} must be a positive {kind}")

    @classmethod
    def parse(cls, text: str) -> Limits:
        """'requests_per_minute=10,max_concurrent=1' (IMAGEGEN_DEMO_LIMITS)."""
        values: dict[str, float | int] = {}
        known = {field.name for field in fields(cls)}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, raw = part.partition("=")
            name = name.strip()
            if not sep or name not in known:
                raise ValueError(f"unknown limit {name!r}; use {', '.join(sorted(known))}")
            try:
                values[name] = float(raw) if name == "device_seconds_per_day" else int(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number") from None
        return cls(**values)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, float | int | None]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    limits: Limits = Limits()
    # The models this principal may use; None: every model.
    models: frozenset[str] | None = None
    # An API key's stored hash: every replica derives the key's webhook secret from it,
    # the same after a restart. Never shown (repr) and not part of equality.
    key_hash: str | None = dataclasses.field(default=None, repr=False, compare=False)

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


ANONYMOUS = Principal(ANONYMOUS_ID)
