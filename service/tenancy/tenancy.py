"""Tenancy: who is calling, what they may do right now, and what they have used.

One component built in the app's lifespan; the web layer asks it for the
caller's principal, and the generation path asks it to admit a generation
and to record its usage. No HTTP here: failures are domain errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.tenancy.errors import KeyRejected, Quota, QuotaExceeded
from service.tenancy.keys import (
    ApiKey,
    KeyStore,
    authenticate,
    create_key_store,
    hash_key,
    mint_key,
)
from service.tenancy.limiter import Limiter, Slot
from service.tenancy.principal import ANONYMOUS, DEMO_ID, Limits, Principal
from service.tenancy.usage import (
    SECONDS_PER_DAY,
    Usage,
    UsageLedger,
    create_usage_ledger,
    seconds_to_next_day,
)

AUTH_MODES = ("none", "keys")
MAX_NAME_CHARS = 100


def parse_time(text: str) -> float:
    """ISO 8601 ('2026-12-31T00:00:00Z'; UTC when no zone is given) -> Unix time."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError("expires_at must be a Unix time or an ISO 8601 date and time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def new_api_key(
    *, name: object, models: object = None, expires_at: object = None, limits: Limits,
    now: float, known_models: Collection[str] | None = None,
) -> tuple[ApiKey, str]:
    """Validate what an operator asked for and mint the key; ValueError names the field."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise ValueError(f"name must be 1 to {MAX_NAME_CHARS} printable characters")
    scope: tuple[str, ...] | None = None
    if models is not None:
        if (not isinstance(models, list) or not models
                or not all(isinstance(m, str) and m for m in models)):
            raise ValueError("models must be a non-empty list of model names")
        unknown = [m for m in models if known_models is not None and m not in known_models]
        if unknown:
            raise ValueError(f"models names an unknown model: {unknown[0]!r}")
        scope = tuple(dict.fromkeys(models))
    if isinstance(expires_at, str):
        expires_at = parse_time(expires_at)
    if expires_at is not None:
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float) or not (
                math.isfinite(expires_at)):
            raise ValueError("expires_at must be a Unix time or an ISO 8601 date and time")
        if expires_at <= now:
            raise ValueError("expires_at must be in the future")
        expires_at = float(expires_at)
    key_id, key = mint_key()
    return ApiKey(id=key_id, name=name, key_hash=hash_key(key), created_at=now, models=scope,
                  expires_at=expires_at, limits=limits), key


class Tenancy:
    def __init__(self, keys: KeyStore, limiter: Limiter, usage: UsageLedger,
                 clock: Callable[[], float], *, keys_required: bool,
                 demo: Principal | None) -> None:
        self.keys = keys
        self.limiter = limiter
        self.usage = usage
        self.clock = clock
        self.keys_required = keys_required
        # The principal the demo page acts as; None when the demo is off.
        self.demo = demo

    @classmethod
    def create(cls, *, auth: str, demo_enabled: bool, demo_limits: Limits,
               redis_url: str | None, keys_file: Path | None, usage_retention_days: int,
               lease_seconds: float, clock: Callable[[], float]) -> Tenancy:
        """Shared through Redis when redis_url is given (replicas), else this process's."""
        keys_required = auth == "keys"
        demo = None
        if demo_enabled:
            demo = Principal(DEMO_ID, demo_limits) if keys_required else ANONYMOUS
        return cls(create_key_store(redis_url=redis_url, keys_file=keys_file),
                   Limiter(redis_url, lease_seconds),
                   create_usage_ledger(redis_url=redis_url, clock=clock,
                                       retention_days=usage_retention_days),
                   clock, keys_required=keys_required, demo=demo)

    async def principal_for(self, presented: str | None, *, demo_visitor: bool = False
                            ) -> Principal:
        """The caller: MissingKey (401), KeyRejected (403), StoreUnavailable (503)."""
        if not self.keys_required:
            return ANONYMOUS
        if presented is None and demo_visitor and self.demo is not None:
            return self.demo
        record = await authenticate(self.keys, presented, self.clock())
        return record.principal()

    async def count_request(self, principal: Principal) -> None:
        """One more request this minute; RateLimited when over."""
        await self.limiter.hit(principal)

    async def admit(self, principal: Principal, model: str) -> None:
        """May this principal generate with this model now? KeyRejected / QuotaExceeded."""
        if not principal.may_use(model):
            raise KeyRejected("model_not_allowed")
        quota = principal.limits.device_seconds_per_day
        if quota is None:
            return
        used = await self.usage.device_seconds_today(principal.id)
        if used >= quota:
            wait = seconds_to_next_day(self.clock())
            raise QuotaExceeded(
                f"Daily quota reached: {quota:g} device seconds per day. "
                f"It renews in {wait} seconds (00:00 UTC).",
                Quota("device_seconds", quota, SECONDS_PER_DAY, 0, wait))

    async def take_slot(self, principal: Principal) -> Slot:
        """One of the principal's concurrent slots (RateLimited when all are taken)."""
        return await self.limiter.take_slot(principal)

    async def record(self, principal: Principal, model: str, images: int, usage: Usage) -> None:
        await self.usage.record(principal.id, model, images, usage)

    async def issue_key(self, *, name: object, models: object = None,
                        expires_at: object = None, limits: Limits,
                        known_models: Collection[str] | None = None) -> tuple[ApiKey, str]:
        record, key = new_api_key(name=name, models=models, expires_at=expires_at,
                                  limits=limits, now=self.clock(), known_models=known_models)
        await self.keys.add(record)
        return record, key

    async def revoke_key(self, key_id: str) -> ApiKey:
        return await self.keys.revoke(key_id, self.clock())

    async def list_keys(self) -> Sequence[ApiKey]:
        return await self.keys.all()

    async def usage_report(self, principal_id: str | None) -> list[dict[str, Any]]:
        return await self.usage.report(principal_id)

    async def close(self) -> None:
        await self.limiter.close()
        await self.usage.close()
        await self.keys.close()

