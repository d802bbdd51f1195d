"""Benchmark 6: full-size SD 1.5 (512) and SDXL (1024) UNets, random weights: service vs raw,
eager vs compiled.

    python -m bench.gpu --arch sd15                     # on an NVIDIA GPU: fp16, 20 steps
    python -m bench.gpu --arch sdxl --steps 30 --compile  # eager, then compiled (compile = true)
    python -m bench.gpu --dtype bfloat16
    python -m bench.gpu --toy [--compile]               # toy-size models on the CPU (what CI runs)

Each architecture is written once to a temporary directory (random weights,
the published configs) and served from there through a models.toml, so the
service loads it the way it loads a real model: `imagegen serve` in its own
process, the stable-diffusion pipeline family, the queue, dynamic batching,
PNG encoding and the store. Raw is the same directory loaded in this process
and called in a warm loop. Latency at batch 1 is measured alternately (one
sequential client); throughput at the best raw batch size B is the service
with B concurrent one-image clients against raw calls of B images, and again
with 2B clients, which keep a full batch waiting whenever the device frees.

With --compile the raw pipeline is measured eager first, then compiled (the
models.toml speed settings: regional torch.compile, batch buckets = --batches,
every bucket compiled before timing), and the service runs compiled: it warms
up every bucket before /readyz turns true, and its imagegen_recompiles_total
must stay 0. Each run ends with markdown table rows for docs/performance.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch
from prometheus_client.parser import text_string_to_metric_families

from bench import random_sd
from bench.harness import (
    batch_totals,
    closed_loop,
    generation_body,
    imagegen_server,
    median,
    raw_call,
    service_call,
    use_threads,
)
from imagegen.pipelines.base import TextToImagePipeline
from imagegen.registry import load_pipeline, load_specs
from imagegen.speed import compilations

GUIDANCE = 7.5
TABLE_HEADER = ("| arch | size, steps | mode | raw b1 s | service b1 s | service/raw b1 "
                "| raw best img/s (batch) | service img/s | service/raw best | compile s "
                "| recompiles |\n|---|---|---|---|---|---|---|---|---|---|---|")


def models_file(directory: Path, name: str, model_dir: Path, size: int, dtype: str,
                steps: int, batches: list[int], compiled: bool) -> Path:
    path = directory / f"{name}-{'compiled' if compiled else 'eager'}.toml"
    speed = f"compile = true\nbatch_buckets = {sorted(batches)}\n" if compiled else ""
    path.write_text(
        f'[models.{name}]\npath = "{model_dir}"\nfamily = "stable-diffusion"\n'
        f'dtype = "{dtype}"\nsizes = ["{size}x{size}"]\ndefault_steps = {steps}\n'
        f"max_batch = {max(batches)}\nmax_n = {max(batches)}\n{speed}")
    return path


@dataclass
class RawFigures:
    """One pipeline in this process: batch-1 latencies, images/s per batch, compile time."""

    compile_seconds: float
    compiled_when_warm: int  # the process's compilation count once warm
    latency: list[float] = field(default_factory=list)
    images_per_second: dict[int, float] = field(default_factory=dict)

    @property
    def recompiles(self) -> int:
        return compilations.total - self.compiled_when_warm

    @property
    def best(self) -> int:
        return max(self.images_per_second, key=self.images_per_second.__getitem__)


def warm(pipeline: TextToImagePipeline, batches: list[int],
         call: tuple[int, int, int, float]) -> RawFigures:
    """Call every batch size once (kernels, allocator; a compiled model compiles here)."""
    started = time.perf_counter()
    for batch in batches:
        raw_call(pipeline, batch, *call)
    return RawFigures(time.perf_counter() - started, compilations.total)


def raw_throughput(pipeline: TextToImagePipeline, figures: RawFigures, batches: list[int],
                   rounds: int, call: tuple[int, int, int, float]) -> None:
    for batch in batches:
        started = time.perf_counter()
        for index in range(rounds):
            raw_call(pipeline, batch, *call, seed=index * batch)
        figures.images_per_second[batch] = rounds * batch / (time.perf_counter() - started)


def recompiles_of(url: str) -> float:
    text = httpx.get(url + "/metrics").text
    return next((sample.value for family in text_string_to_metric_families(text)
                 for sample in family.samples if sample.name == "imagegen_recompiles_total"),
                0.0)


def bench_architecture(architecture: str, args: argparse.Namespace, workdir: Path,
                       env: dict[str, str]) -> list[str]:
    dtype = "float32" if args.toy else args.dtype
    size = random_sd.native_size(architecture, args.toy)
    model_dir = random_sd.build(architecture, workdir, toy=args.toy,
                                dtype=getattr(torch, dtype))
    name = f"{architecture}-random"
    call = (size, size, args.steps, GUIDANCE)

    def pipeline_for(compiled: bool) -> tuple[Path, TextToImagePipeline]:
        toml = models_file(workdir, name, model_dir, size, dtype, args.steps, args.batches,
                           compiled)
        return toml, load_pipeline(load_specs(toml)[name])

    eager: RawFigures | None = None
    if args.compile:  # eager alone first; the service then runs compiled beside its raw twin
        _, pipeline = pipeline_for(compiled=False)
        eager = warm(pipeline, args.batches, call)
        eager.latency = [raw_call(pipeline, 1, *call, seed=i) for i in range(args.rounds)]
        raw_throughput(pipeline, eager, args.batches, args.rounds, call)
        del pipeline
        release_cached_memory()
    toml, pipeline = pipeline_for(compiled=args.compile)
    raw = warm(pipeline, args.batches, call)
    release_cached_memory()
    body = generation_body(*call, model=name, output_format=args.output_format)
    service_latency: list[float] = []
    with imagegen_server("--models", str(toml), env=env) as (url, _), \
            httpx.Client(base_url=url, timeout=600) as client:
        service_call(client, body)
        closed_loop(url, body, max(args.batches), max(args.batches))  # warm its batch shapes
        for index in range(args.rounds):
            raw.latency.append(raw_call(pipeline, 1, *call, seed=index))
            service_latency.append(service_call(client, {**body, "seed": index}))
        raw_throughput(pipeline, raw, args.batches, args.rounds, call)
        best = raw.best
        release_cached_memory()  # the server's biggest batches must not meet this cache
        totals = batch_totals(url)
        service = closed_loop(url, body, best, best * args.rounds)
        served = batch_totals(url) - totals
        # B closed-loop clients leave the device idle while results travel back and the
        # next requests arrive; 2B keep a full batch waiting: the service's own overhead.
        totals = batch_totals(url)
        saturated = closed_loop(url, body, 2 * best, 2 * best * args.rounds)
        saturated_served = batch_totals(url) - totals
        service_recompiles = recompiles_of(url)
    device = pipeline.device.type
    mode = "compiled" if args.compile else "eager"
    print(f"\n{architecture} (random weights) {size}x{size}, {args.steps} steps, {dtype}, "
          f"{device}, output {args.output_format}, {mode}")
    print(f"  batch 1 latency   raw {median(raw.latency) * 1000:9.1f} ms   "
          f"service {median(service_latency) * 1000:9.1f} ms   "
          f"service/raw {median(service_latency) / median(raw.latency):.3f}")
    for batch in args.batches:
        print(f"  raw batch {batch:<2}       {raw.images_per_second[batch]:8.3f} images/s")
    print(f"  service, {best} clients {service.images_per_second:8.3f} images/s "
          f"(mean batch {served.mean_batch:.2f})")
    print(f"  service / raw best (batch {best})  "
          f"{service.images_per_second / raw.images_per_second[best]:.3f}   "
          f"service / raw batch 1  {service.images_per_second / raw.images_per_second[1]:.3f}")
    print(f"  service, {2 * best} clients {saturated.images_per_second:8.3f} images/s "
          f"(mean batch {saturated_served.mean_batch:.2f}), "
          f"{saturated.images_per_second / raw.images_per_second[best]:.3f} of raw best")
    if eager is not None:
        print(f"  eager: batch 1 latency {median(eager.latency) * 1000:9.1f} ms, best "
              f"{eager.images_per_second[eager.best]:.3f} images/s (batch {eager.best})")
        print(f"  compiled / eager speed-up: batch 1 latency "
              f"{median(eager.latency) / median(raw.latency):.3f}x, best batch "
              f"{raw.images_per_second[raw.best] / eager.images_per_second[eager.best]:.3f}x; "
              f"compile + warm-up {raw.compile_seconds:.1f} s")
        print(f"  recompiles after warm-up: raw {raw.recompiles}, "
              f"service {service_recompiles:.0f}")
    rows = [table_row(architecture, size, args.steps, mode, raw, median(service_latency),
                      service.images_per_second, service_recompiles)]
    if eager is not None:
        rows.insert(0, table_row(architecture, size, args.steps, "eager (raw only)", eager,
                                 None, None, 0))
    del pipeline
    release_cached_memory()
    return rows


def table_row(architecture: str, size: int, steps: int, mode: str, raw: RawFigures,
              service_latency: float | None, service_rate: float | None,
              service_recompiles: float) -> str:
    best = raw.best
    latency = median(raw.latency)
    rate = raw.images_per_second[best]
    cells = [architecture, f"{size}x{size}, {steps}", mode, f"{latency:.3f}",
             "" if service_latency is None else f"{service_latency:.3f}",
             "" if service_latency is None else f"{service_latency / latency:.3f}",
             f"{rate:.2f} ({best})",
             "" if service_rate is None else f"{service_rate:.2f}",
             "" if service_rate is None else f"{service_rate / rate:.3f}",
             f"{raw.compile_seconds:.0f}" if mode == "compiled" else "",
             "" if service_latency is None else f"{raw.recompiles} / {service_recompiles:.0f}"]
    return "| " + " | ".join(cells) + " |"


def release_cached_memory() -> None:
    """Both processes share one GPU: hand this one's cached blocks back to the driver."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy", action="store_true", help="toy-size models, CPU is enough")
    parser.add_argument("--arch", nargs="+", default=list(random_sd.ARCHITECTURES),
                        choices=random_sd.ARCHITECTURES)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--compile", action="store_true",
                        help="measure eager, then compiled (raw and the service)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batches", type=int, nargs="+")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--output-format", default="png", choices=["png", "webp", "jpeg"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    args = parser.parse_args()
    if not args.toy and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible: run with --toy for the CPU-size check")
    args.steps = args.steps or (2 if args.toy else 20)
    args.batches = sorted(set(args.batches or ([1, 2] if args.toy else [1, 2, 4, 8])) | {1})
    args.rounds = args.rounds or (2 if args.toy else 5)
    env = use_threads(args.threads)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="imagegen-bench-") as workdir:
        for architecture in args.arch:
            rows += bench_architecture(architecture, args, Path(workdir), env)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    dtype = "float32" if args.toy else args.dtype
    print(f"\nFor docs/performance.md ({time.strftime('%Y-%m-%d')}, {device}, {dtype}; "
          "recompiles after warm-up: raw / service):")
    print(TABLE_HEADER)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
