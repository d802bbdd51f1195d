"""Prometheus metrics of one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
# Image fetches take well under a millisecond; generations seconds.
REQUEST_BUCKETS = (0.001, 0.005, 0.025, *LATENCY_BUCKETS)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LAG_BUCKETS = (0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("imagegen_queue_depth", "Requests waiting for a device",
                                 registry=r)
        self.batch_size = Histogram("imagegen_batch_size", "Images per pipeline call",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.device_seconds = Histogram("imagegen_batch_device_seconds",
                                        "Device time per pipeline call",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.request_seconds = Histogram(
            "imagegen_request_seconds",
            "Latency of every request, by route template, method and status",
            ["route", "method", "status"], buckets=REQUEST_BUCKETS, registry=r)
        self._request_seconds_by_key: dict[tuple[str, str, int], Histogram] = {}
        self.images = Counter("imagegen_images_generated", "Images generated", ["model"],
                              registry=r)
        self.store_bytes = Gauge("imagegen_store_bytes", "Payload bytes in the store",
                                 registry=r)
        self.store_count = Gauge("imagegen_store_artifacts", "Artifacts in the store",
                                 registry=r)
        self.expired_reads = Gauge("imagegen_store_expired_reads",
                                   "Reads refused because the artifact had expired", registry=r)
        self.swept = Gauge("imagegen_store_swept", "Artifacts removed by the sweeper",
                           registry=r)
        self.deletion_lag = Histogram("imagegen_deletion_lag_seconds",
                                      "Time from expiry to physical removal",
                                      buckets=LAG_BUCKETS, registry=r)
        self.model_loads = Counter("imagegen_model_loads", "Models moved into device memory",
                                   ["model"], registry=r)
        self.model_evictions = Counter("imagegen_model_evictions",
                                       "Models moved out of device memory to CPU RAM",
                                       ["model"], registry=r)
        self.model_load_seconds = Histogram("imagegen_model_load_seconds",
                                            "Time to move a model into device memory",
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.model_eviction_seconds = Histogram("imagegen_model_eviction_seconds",
                                                "Time to move a model out to CPU RAM",
                                                buckets=LATENCY_BUCKETS, registry=r)
        self.warmup_compiles = Counter("imagegen_warmup_compiles",
                                       "torch.compile compilations during warm-up", registry=r)
        self.recompiles = Counter("imagegen_recompiles",
                                  "torch.compile compilations after warm-up (should stay 0)",
                                  registry=r)
        self.webhook_attempts = Counter("imagegen_webhook_attempts",
                                        "Webhook delivery attempts, by result", ["result"],
                                        registry=r)
        self.webhook_deliveries = Counter("imagegen_webhook_deliveries",
                                          "Webhook deliveries ended, by outcome", ["outcome"],
                                          registry=r)

    def webhook_attempted(self, result: str) -> None:
        """One delivery attempt: its status class (2xx...) or timeout/network/refused."""
        self.webhook_attempts.labels(result=result).inc()

    def webhook_finished(self, outcome: str) -> None:
        """A delivery ended: delivered, gone, rejected, refused, expired or dropped."""
        self.webhook_deliveries.labels(outcome=outcome).inc()

    def micro_batch_done(self, images: int, device_seconds: float) -> None:
        """Called from a worker thread; prometheus_client is thread-safe."""
        self.batch_size.observe(images)
        self.device_seconds.observe(device_seconds)

    def models_known(self, models: Iterable[str]) -> None:
        """Every model's load and eviction series exists from the start, at 0."""
        for model in models:
            self.model_loads.labels(model=model)
            self.model_evictions.labels(model=model)

    def model_loaded(self, model: str, seconds: float) -> None:
        self.model_loads.labels(model=model).inc()
        self.model_load_seconds.observe(seconds)

    def model_evicted(self, model: str, seconds: float) -> None:
        self.model_evictions.labels(model=model).inc()
        self.model_eviction_seconds.observe(seconds)

    def compiled(self, after_warm_up: bool) -> None:
        (self.recompiles if after_warm_up else self.warmup_compiles).inc()

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """Every request; the labelled child is kept, as labels() is slow per call."""
        key = (route, method, status)
        child = self._request_seconds_by_key.get(key)
        if child is None:
            child = self.request_seconds.labels(route, method, status)
            self._request_seconds_by_key[key] = child
        child.observe(seconds)

    def images_generated(self, model: str, count: int) -> None:
        self.images.labels(model=model).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
