"""API keys, per-key limits and usage: who may generate, how much, and what it cost."""

from service.tenancy.errors import (
    KeyNotFound,
    KeyRejected,
    LimitExceeded,
    MissingKey,
    Quota,
    QuotaExceeded,
    RateLimited,
)
from service.tenancy.keys import ApiKey
from service.tenancy.limiter import Slot
from service.tenancy.principal import ANONYMOUS, ANONYMOUS_ID, DEMO_ID, Limits, Principal
from service.tenancy.tenancy import AUTH_MODES, Tenancy
from service.tenancy.usage import Usage

__all__ = [
    "ANONYMOUS",
    "ANONYMOUS_ID",
    "AUTH_MODES",
    "DEMO_ID",
    "ApiKey",
    "KeyNotFound",
    "KeyRejected",
    "LimitExceeded",
    "Limits",
    "MissingKey",
    "Principal",
    "Quota",
    "QuotaExceeded",
    "RateLimited",
    "Slot",
    "Tenancy",
    "Usage",
]
