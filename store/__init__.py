"""Ephemeral artifacts: TTL-bound storage keyed by a hash of a capability token.

Knows nothing of models or HTTP.
"""

from store.artifact import Artifact
from store.base import ArtifactStore, Clock, StoreStats, Swept
from store.disk import DiskStore
from store.errors import StoreFull, StoreUnavailable
from store.factory import BACKENDS, create_retention_holder, create_store
from store.memory import MemoryStore
from store.redis import RedisStore
from store.redis_retention import RedisRetentionHolder
from store.retention import (
    MemoryRetentionHolder,
    ModelRetention,
    RetentionHolder,
    RetentionPolicy,
    TTLRejected,
)
from store.sweeper import Sweeper
from store.tokens import artifact_id, new_token

__all__ = [
    "BACKENDS",
    "Artifact",
    "ArtifactStore",
    "Clock",
    "DiskStore",
    "MemoryRetentionHolder",
    "MemoryStore",
    "ModelRetention",
    "RedisRetentionHolder",
    "RedisStore",
    "RetentionHolder",
    "RetentionPolicy",
    "StoreFull",
    "StoreStats",
    "StoreUnavailable",
    "Sweeper",
    "Swept",
    "TTLRejected",
    "artifact_id",
    "create_retention_holder",
    "create_store",
    "new_token",
]
