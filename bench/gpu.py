"""Benchmark 6: full-size SD 1.5 (512) and SDXL (1024) UNets, random weights: service vs raw.

    python -m bench.gpu                  # on an NVIDIA GPU: fp16, 20 steps
    python -m bench.gpu --dtype bfloat16
    python -m bench.gpu --toy            # toy-size models on the CPU (what CI runs)
    python -m bench.gpu --arch sdxl      # one architecture per call keeps it under 10 min

Each architecture is written once to a temporary directory (random weights,
the published configs) and served from there through a models.toml, so the
service loads it the way it loads a real model: `imagegen serve` in its own
process, the stable-diffusion pipeline family, the queue, dynamic batching,
PNG encoding and the store. Raw is the same directory loaded in this process
and called in a warm loop. Latency at batch 1 is measured alternately (one
sequential client); throughput at the best raw batch size B is the service
with B concurrent one-image clients against raw calls of B images.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx
import torch

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

GUIDANCE = 7.5


def models_file(directory: Path, name: str, model_dir: Path, size: int, dtype: str,
                steps: int, max_batch: int) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(
        f'[models.{name}]\npath = "{model_dir}"\nfamily = "stable-diffusion"\n'
        f'dtype = "{dtype}"\nsizes = ["{size}x{size}"]\ndefault_steps = {steps}\n'
        f"max_batch = {max_batch}\nmax_n = {max_batch}\n")
    return path


def raw_images_per_second(pipeline: TextToImagePipeline, batch: int, rounds: int,
                          call: tuple[int, int, int, float]) -> float:
    started = time.perf_counter()
    for index in range(rounds):
        raw_call(pipeline, batch, *call, seed=index * batch)
    return rounds * batch / (time.perf_counter() - started)


def bench_architecture(architecture: str, args: argparse.Namespace, workdir: Path,
                       env: dict[str, str]) -> None:
    dtype = "float32" if args.toy else args.dtype
    size = random_sd.native_size(architecture, args.toy)
    model_dir = random_sd.build(architecture, workdir, toy=args.toy,
                                dtype=getattr(torch, dtype))
    name = f"{architecture}-random"
    toml = models_file(workdir, name, model_dir, size, dtype, args.steps, max(args.batches))
    pipeline = load_pipeline(load_specs(toml)[name])
    call = (size, size, args.steps, GUIDANCE)
    body = generation_body(*call, model=name, output_format=args.output_format)
    for batch in args.batches:  # warm every shape (kernels, allocator) once
        raw_call(pipeline, batch, *call)
    release_cached_memory()
    raw_latency: list[float] = []
    service_latency: list[float] = []
    with imagegen_server("--models", str(toml), env=env) as (url, _), \
            httpx.Client(base_url=url, timeout=600) as client:
        service_call(client, body)
        closed_loop(url, body, max(args.batches), max(args.batches))  # warm its batch shapes
        for index in range(args.rounds):
            raw_latency.append(raw_call(pipeline, 1, *call, seed=index))
            service_latency.append(service_call(client, {**body, "seed": index}))
        raw = {b: raw_images_per_second(pipeline, b, args.rounds, call) for b in args.batches}
        best = max(raw, key=raw.__getitem__)
        release_cached_memory()  # the server's biggest batches must not meet this cache
        totals = batch_totals(url)
        service = closed_loop(url, body, best, best * args.rounds)
        served = batch_totals(url) - totals
    device = pipeline.device.type
    print(f"\n{architecture} (random weights) {size}x{size}, {args.steps} steps, {dtype}, "
          f"{device}, output {args.output_format}")
    print(f"  batch 1 latency   raw {median(raw_latency) * 1000:9.1f} ms   "
          f"service {median(service_latency) * 1000:9.1f} ms   "
          f"service/raw {median(service_latency) / median(raw_latency):.3f}")
    for batch in args.batches:
        print(f"  raw batch {batch:<2}       {raw[batch]:8.3f} images/s")
    print(f"  service, {best} clients {service.images_per_second:8.3f} images/s "
          f"(mean batch {served.mean_batch:.2f})")
    print(f"  service / raw best (batch {best})  {service.images_per_second / raw[best]:.3f}   "
          f"service / raw batch 1  {service.images_per_second / raw[1]:.3f}")
    del pipeline
    release_cached_memory()


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
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batches", type=int, nargs="+")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--output-format", default="png", choices=["png", "webp", "jpeg"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    args = parser.parse_args()
    if not args.toy and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible: run with --toy for the CPU-size check")
    args.steps = args.steps or (2 if args.toy else 20)
    args.batches = args.batches or ([1, 2] if args.toy else [1, 2, 4, 8])
    args.rounds = args.rounds or (2 if args.toy else 5)
    env = use_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="imagegen-bench-") as workdir:
        for architecture in args.arch:
            bench_architecture(architecture, args, Path(workdir), env)


if __name__ == "__main__":
    main()
