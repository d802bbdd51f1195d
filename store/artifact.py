"""The metadata of one stored artifact."""

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Artifact:
    id: str  # sha256 hex of the token: the store key, safe to log and list
    content_type: str
    size: int  # payload bytes
    created_at: float  # unix seconds on the store's clock
    expires_at: float  # absolute, fixed at put time; only ever shortened
    # Opaque to the store (the service puts the model's name): lets an operator shorten
    # the lifetimes of one group, per its own retention policy.
    tag: str = ""

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.expires_at - now)

    def is_expired(self, now: float) -> bool:
        # Expired at expires_at itself, so a zero-length lifetime serves nothing.
        return now >= self.expires_at


def new_artifact(
    artifact_id: str, content_type: str, size: int, now: float, ttl_seconds: float, tag: str = ""
) -> Artifact:
    """Metadata for a put at now; the lifetime becomes an absolute expires_at once, here."""
    if not math.isfinite(ttl_seconds) or ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be a positive, finite number of seconds")
    if not content_type:
        raise ValueError("content_type must not be empty")
    return Artifact(artifact_id, content_type, size, now, now + ttl_seconds, tag)
