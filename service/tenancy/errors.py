"""Domain errors of keys and limits; web/errors.py's table gives them 401/403/404/429."""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import ServiceError


class MissingKey(ServiceError):
    """No API key was presented, or one that was never issued (401)."""

    code = "invalid_api_key"
    message = "A valid API key is required: send 'Authorization: Bearer <key>'."


class KeyRejected(ServiceError):
    """A real key that may not do this: revoked, expired, or out of scope (403)."""

    REJECTIONS = {
        "key_revoked": ("This API key has been revoked.", None),
        "key_expired": ("This API key has expired.", None),
        "model_not_allowed": ("This API key may not use this model.", "model"),
    }

    def __init__(self, code: str, key_id: str | None = None) -> None:
        message, param = self.REJECTIONS[code]
        super().__init__(message, param)
        self.code = code
        self.key_id = key_id  # for the log line: which real key was refused


class KeyNotFound(ServiceError):
    """No key with this id (admin routes, 404)."""

    code = "key_not_found"
    message = "No API key has this id."


@dataclass(frozen=True, slots=True)
class Quota:
    """One limit as the IETF RateLimit headers describe it."""

    name: str  # "requests", "concurrency" or "device_seconds"
    limit: float
    window_seconds: int | None  # None: not a window (concurrency)
    remaining: float
    reset_seconds: int


class LimitExceeded(ServiceError):
    """Over a limit (429); the quota says which, and until when."""

    def __init__(self, message: str, quota: Quota) -> None:
        super().__init__(message)
        self.quota = quota
        self.retry_after = max(1, quota.reset_seconds)


class RateLimited(LimitExceeded):
    code = "rate_limited"


class QuotaExceeded(LimitExceeded):
    code = "quota_exceeded"
