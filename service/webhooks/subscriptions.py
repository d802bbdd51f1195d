"""A job's or batch's webhook: which events it wants, the notices, their attempts.

A notice's body is thin, `{"type": "job.completed", "timestamp", "data": {...}}`,
with what the caller gives as data (ids, status, image URLs, seed, usage) and
never a prompt or an input. Progress notices go out at most once a second.
Attempts are kept with the subscription, in memory only, for the owner's record.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from service.tenancy.principal import Principal
from service.webhooks.addresses import AddressPolicy
from service.webhooks.delivery import Attempt, Delivery, WebhookDeliverer

EVENTS = ("started", "progress", "completed")
DEFAULT_EVENTS = ("completed",)
PROGRESS_INTERVAL_SECONDS = 1.0
# A long job's progress notices must not grow its record without bound.
MAX_KEPT_ATTEMPTS = 50


class SecretSource(Protocol):
    def secret_for(self, principal: Principal) -> str: ...


@dataclass(eq=False, slots=True)
class Subscription:
    kind: str  # "job" | "batch": the prefix of every notice's type
    url: str
    events: frozenset[str]
    secret: str
    attempts: deque[Attempt] = field(default_factory=lambda: deque(maxlen=MAX_KEPT_ATTEMPTS))
    last_progress: float = float("-inf")

    def view(self) -> dict[str, object]:
        """What the owner's record shows: the events asked for and every attempt so far."""
        return {"events": sorted(self.events),
                "deliveries": [attempt.view() for attempt in self.attempts]}


class Webhooks:
    """Subscribes (checking the URL) and sends notices through the deliverer."""

    def __init__(self, policy: AddressPolicy, secret_source: SecretSource,
                 deliverer: WebhookDeliverer,
                 monotonic: Callable[[], float] = time.monotonic,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.secrets = secret_source
        self.deliverer = deliverer
        self.monotonic = monotonic
        self.clock = clock

    def start(self) -> None:
        self.deliverer.start()

    async def stop(self, drain_seconds: float) -> None:
        await self.deliverer.stop(drain_seconds)

    async def subscribe(self, kind: str, url: str, events: Iterable[str],
                        principal: Principal) -> Subscription:
        """A subscription for `principal`'s job or batch; WebhookRefused for a URL not called."""
        wanted = frozenset(events)
        unknown = wanted.difference(EVENTS)
        if unknown:
            raise ValueError(f"unknown webhook events: {sorted(unknown)}")
        await self.policy.resolve(url)
        return Subscription(kind=kind, url=url, events=wanted or frozenset(DEFAULT_EVENTS),
                            secret=self.secrets.secret_for(principal))

    def notify(self, subscription: Subscription, event: str, data: dict[str, object]) -> bool:
        """Send `event` if the subscription wants it now; True when a notice was queued.

        Call on the event loop; it only queues.
        """
        if event not in subscription.events:
            return False
        if event == "progress":
            now = self.monotonic()
            if now - subscription.last_progress < PROGRESS_INTERVAL_SECONDS:
                return False
            subscription.last_progress = now
        notice_type = f"{subscription.kind}.{event}"
        timestamp = datetime.fromtimestamp(self.clock(), UTC).isoformat()
        body = json.dumps({"type": notice_type, "timestamp": timestamp, "data": data},
                          separators=(",", ":")).encode()
        self.deliverer.send(subscription, Delivery(
            webhook_id="msg_" + secrets.token_urlsafe(18), event=notice_type,
            url=subscription.url, body=body, secret=subscription.secret,
            on_attempt=subscription.attempts.append))
        return True
