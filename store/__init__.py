"""Ephemeral artifacts: TTL-bound storage keyed by a hash of a capability token.

Knows nothing of models or HTTP.
"""

from store.artifact import Artifact
from store.base import ArtifactStore, Clock, StoreStats, Swept
from store.errors import StoreFull, StoreUnavailable
from store.factory import BACKENDS, create_store
from store.memory import MemoryStore
from store.tokens import artifact_id, new_token

__all__ = [
    "BACKENDS",
    "Artifact",
    "ArtifactStore",
    "Clock",
    "MemoryStore",
    "StoreFull",
    "StoreStats",
    "StoreUnavailable",
    "Swept",
    "artifact_id",
    "create_store",
    "new_token",
]
