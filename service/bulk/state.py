"""One batch's state: counts, timings and an estimate of time left; never its content.

And one line of a batch as it is sealed on disk until it runs.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from imagegen.adapters import AdapterChoice
from service.bulk.files import BatchFiles
from service.generation import GenerationInput
from service.tenancy import ANONYMOUS, Principal
from service.webhooks import Subscription


class BatchStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


ENDED = frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELED})


@dataclass(frozen=True, slots=True)
class BulkLine:
    """One validated line: the client's id for it and the generation it asks for."""

    custom_id: str
    gen: GenerationInput  # its seed fixed at submission, so it runs as validated

    def to_json(self) -> bytes:
        return json.dumps({"custom_id": self.custom_id, "gen": dataclasses.asdict(self.gen)},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BulkLine:
        """A line this process sealed (authenticated, so it is what to_json wrote)."""
        item = json.loads(raw)
        fields = item["gen"]
        loras = tuple(AdapterChoice(**choice) for choice in fields.pop("loras"))
        return cls(item["custom_id"], GenerationInput(**fields, loras=loras))


def new_batch_id() -> str:
    # 192 bits from secrets: the id is the capability to read and cancel the batch.
    return "batch_" + secrets.token_urlsafe(24)


@dataclass(eq=False, slots=True)
class Batch:
    id: str
    files: BatchFiles
    total: int
    base_url: str  # where its image URLs point
    created_at: float  # the app clock
    expires_at: float  # created_at + batch retention, fixed once
    status: BatchStatus = BatchStatus.QUEUED
    done: int = 0  # lines that succeeded
    failed: int = 0  # lines that failed
    started_at: float | None = None
    finished_at: float | None = None
    line_seconds: float = 0.0  # wall seconds spent on the lines so far
    cancel_requested: bool = False
    webhook: Subscription | None = None
    # Whose batch it is (another principal gets 404); its lines are admitted and counted as its.
    owner: Principal = ANONYMOUS

    @property
    def processed(self) -> int:
        return self.done + self.failed

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def count(self, succeeded: bool, seconds: float) -> None:
        if succeeded:
            self.done += 1
        else:
            self.failed += 1
        self.line_seconds += seconds

    def finish(self, now: float) -> None:
        if self.cancel_requested:
            self.status = BatchStatus.CANCELED
        elif self.done == 0 and self.failed > 0:
            self.status = BatchStatus.FAILED
        else:
            self.status = BatchStatus.COMPLETED
        self.finished_at = now

    def eta_seconds(self) -> float | None:
        """Time left at the mean pace so far; None until one line has run."""
        if self.ended:
            return 0.0
        if self.processed == 0:
            return None
        return round(self.line_seconds / self.processed * (self.total - self.processed), 3)

    def notice(self) -> dict[str, Any]:
        """What a webhook notice says of the batch: ids, status, counts, where its output is."""
        return {"id": self.id, "status": str(self.status),
                "counts": {"total": self.total, "done": self.done, "failed": self.failed},
                "output_url": f"{self.base_url}/v1/batches/{self.id}/output",
                "expires_at": self.expires_at}

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "status": str(self.status),
            "counts": {"total": self.total, "done": self.done, "failed": self.failed},
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "expires_at": self.expires_at,
            "eta_seconds": self.eta_seconds(),
            **({} if self.webhook is None else {"webhook": self.webhook.view()}),
        }
