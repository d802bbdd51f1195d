"""Every long-lived component of one service instance, typed, started and stopped in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from imagegen.adapters import AdapterCatalog
from imagegen.encode import Encoder
from imagegen.engine import Engine
from imagegen.model_manager import OFFLOAD_DEVICE, ModelEvents
from imagegen.pipelines.base import TextToImagePipeline
from imagegen.registry import (
    EMBEDDED_MODEL_NAME,
    load_adapters,
    load_devices,
    load_pipeline,
    load_specs,
)
from service.bulk.runner import BulkRunner
from service.jobs.runner import JobRunner
from service.metrics import Metrics
from service.settings import Settings, SettingsError
from service.tenancy import Limits, Tenancy
from service.tenancy.principal import ANONYMOUS_ID
from service.webhooks import (
    AddressPolicy,
    WebhookDeliverer,
    Webhooks,
    WebhookSecrets,
    parse_allow,
)
from store import ArtifactStore, Clock, create_retention_holder, create_store
from store.retention import RetentionHolder, RetentionPolicy
from store.sealing import UnsafeDirectory
from store.sweeper import Sweeper

log = logging.getLogger("imagegen.service")

# Wraps each loaded pipeline; tests use it to inject faults a CPU cannot produce.
PipelineWrapper = Callable[[str, TextToImagePipeline], TextToImagePipeline]
# At shutdown, deliveries still pending get one last try within this time.
WEBHOOK_DRAIN_SECONDS = 10.0


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: Engine
    store: ArtifactStore
    retention: RetentionHolder
    sweeper: Sweeper
    encoder: Encoder
    metrics: Metrics
    tenancy: Tenancy
    clock: Clock
    default_model: str
    webhooks: Webhooks
    # Built on this container (they run the one generation path with it): see open_services.
    jobs: JobRunner = field(init=False)
    bulk: BulkRunner = field(init=False)
    draining: bool = False
    _housekeeping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start in dependency order: the policy, the devices, what runs on them, what sweeps."""
        await self.retention.start()
        self.engine.start()
        await self.bulk.start()
        self.sweeper.start()
        self.webhooks.start()
        self._housekeeping = asyncio.create_task(self._keep_house())

    async def stop(self) -> None:
        """Drain in reverse: refuse new work, stop bulk between lines, let queued and running
        requests finish (jobs store their results), then let go of storage."""
        self.draining = True
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            await asyncio.gather(self._housekeeping, return_exceptions=True)
        await self.bulk.stop()
        await asyncio.to_thread(self.engine.stop)
        await self.jobs.stop()
        # After the devices: notices of the work that just finished go out too.
        await self.webhooks.stop(WEBHOOK_DRAIN_SECONDS)
        self.sweeper.shutdown()
        await self.retention.stop()
        await self.store.close()
        await self.tenancy.close()
        self.encoder.shutdown()

    async def change_retention(self, policy: RetentionPolicy, actor: str,
                               apply_to_existing: bool) -> int:
        """Set the policy (one audit line); with apply_to_existing, cap live lifetimes by it,
        each model's by its own default: images, and the job records that show them.
        Returns how many images were shortened."""
        await self.retention.set(policy, actor)
        if not apply_to_existing:
            return 0
        now = self.clock()
        by_model = {name: limits.default_ttl_seconds for name, limits in policy.models.items()}
        shortened = await self.store.shorten_all(policy.default_ttl_seconds, now, by_model)
        self.jobs.shorten(lambda model: policy.for_model(model).default_ttl_seconds, now)
        return shortened

    async def _keep_house(self) -> None:
        """Forget expired job records, uploaded adapters and batches, every sweep interval.

        (Reads check expiry themselves; this frees what nobody reads again.)
        """
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            now = self.clock()
            self.jobs.purge(now)
            self.engine.adapters.sweep()
            try:
                await self.bulk.sweep(now)
            except OSError as exc:
                # Type only; the next sweep retries (the keys are already gone).
                log.error("batch sweep failed", extra={"error_type": type(exc).__name__})


def initial_policy(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(
        default_ttl_seconds=float(settings.ttl),
        max_ttl_seconds=float(settings.max_ttl),
        models={},
        batch_retention_seconds=float(settings.batch_retention),
    )


def load_engine(settings: Settings, metrics: Metrics, wrap: PipelineWrapper | None,
                clock: Clock) -> Engine:
    """Load every model and its registered adapters (blocking: start-up only)."""
    specs = load_specs(settings.models)
    metrics.models_known(specs)
    # Into CPU RAM; each device's worker moves what fits its budget onto the device.
    weights: Mapping[str, TextToImagePipeline] = {
        name: load_pipeline(spec, OFFLOAD_DEVICE) for name, spec in specs.items()}
    adapters = AdapterCatalog(clock)
    for name, spec in specs.items():
        load_adapters(spec, weights[name], adapters)
    pipelines = weights
    if wrap is not None:
        pipelines = {name: wrap(name, pipeline) for name, pipeline in weights.items()}
    return Engine(specs, pipelines, settings.queue_size, on_micro_batch=metrics.micro_batch_done,
                  micro_batch_wait=settings.batch_wait, devices=load_devices(settings.models),
                  weights=weights,
                  events=ModelEvents(loaded=metrics.model_loaded, evicted=metrics.model_evicted),
                  on_compile=metrics.compiled, adapters=adapters)


def create_tenancy(settings: Settings, clock: Clock) -> Tenancy:
    return Tenancy.create(
        auth=settings.auth, demo_enabled=settings.demo == "on",
        demo_limits=Limits.parse(settings.demo_limits), redis_url=settings.shared_redis_url,
        keys_file=settings.keys_file, usage_retention_days=settings.usage_retention_days,
        # A lease outlives any request that holds it (deadline plus grace), not much more.
        lease_seconds=2 * settings.request_timeout + 30, clock=clock)


def open_webhooks(settings: Settings, metrics: Metrics) -> Webhooks:
    policy = AddressPolicy(parse_allow(settings.webhook_allow))
    deliverer = WebhookDeliverer(policy, retry_seconds=settings.webhook_retry_seconds,
                                 observer=metrics)
    # With auth off there is one principal, and the operator may choose its secret.
    preset = ({ANONYMOUS_ID: settings.webhook_secret}
              if settings.auth == "none" and settings.webhook_secret is not None else {})
    return Webhooks(policy, WebhookSecrets(preset), deliverer)


async def open_services(settings: Settings, clock: Clock,
                        wrap_pipeline: PipelineWrapper | None = None) -> Services:
    """Build every component (models load in a thread); nothing runs until start()."""
    metrics = Metrics()
    engine = await asyncio.to_thread(load_engine, settings, metrics, wrap_pipeline,
                                     clock)
    return assemble(settings, clock, engine, metrics)


def assemble(settings: Settings, clock: Clock, engine: Engine, metrics: Metrics) -> Services:
    """Every component around a loaded engine (tests pass one with a fake device)."""
    try:
        store = create_store(settings.store, max_bytes=settings.store_max_bytes, clock=clock,
                             directory=settings.store_dir, redis_url=settings.redis_url)
    except UnsafeDirectory:
        raise SettingsError("IMAGEGEN_STORE_DIR must be a directory owned by this user") from None
    # Replicas sharing a Redis store share the policy too: a change on one applies on all.
    retention = create_retention_holder(initial_policy(settings),
                                        redis_url=settings.shared_redis_url)
    sweeper = Sweeper(store, settings.sweep_interval, clock)
    sweeper.lag_observer = metrics.deletion_lag.observe
    services = Services(settings=settings, engine=engine, store=store, retention=retention,
                        sweeper=sweeper, encoder=Encoder(), metrics=metrics,
                        tenancy=create_tenancy(settings, clock), clock=clock,
                        default_model=EMBEDDED_MODEL_NAME,
                        webhooks=open_webhooks(settings, metrics))
    services.jobs = JobRunner(services)
    services.bulk = BulkRunner(services)
    return services
