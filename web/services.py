"""Everything a route needs, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from imagegen.encode import Encoder
from imagegen.engine import Engine
from store import ArtifactStore, Clock
from store.retention import RetentionHolder
from store.sweeper import Sweeper
from web.metrics import Metrics
from web.settings import Settings


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: Engine
    store: ArtifactStore
    retention: RetentionHolder
    sweeper: Sweeper
    encoder: Encoder
    metrics: Metrics
    clock: Clock
    default_model: str
    draining: bool = False
    # Long-lived per-app state of other surfaces (jobs, batches) hangs here.
    extras: dict[str, object] = field(default_factory=dict)
