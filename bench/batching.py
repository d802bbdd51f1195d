"""Benchmark 2: 8 concurrent clients: service throughput / raw throughput at its best batch.

    python -m bench.batching [--clients 8] [--requests 48] [--rounds 3] [--size 128] [--steps 20]

Raw: the pipeline in this process, called in a warm loop at each batch size.
Service: a real `imagegen serve` process; `--clients` clients each send one
image per request and the next request as soon as the last returns, so the
service must form batches from concurrent requests itself. Raw and service
alternate in rounds (each round starts the service from an idle device).
Goal: >= 0.9 of raw at its best batch size; the ratio to raw batch 1 shows
what batching buys. `--server-arg=--batch-wait=0` turns the gather wait off.
"""

from __future__ import annotations

import argparse
import time

from bench.harness import (
    BatchTotals,
    LoadResult,
    batch_totals,
    closed_loop,
    generation_body,
    imagegen_server,
    raw_call,
    use_threads,
)
from imagegen.pipelines.base import TextToImagePipeline
from imagegen.registry import embedded_spec, load_pipeline


def raw_seconds(pipeline: TextToImagePipeline, batch: int, images: int,
                call: tuple[int, int, int, float]) -> tuple[int, float]:
    """(images made, seconds) for about `images` images at `batch` images per call."""
    calls = max(1, images // batch)
    started = time.perf_counter()
    for index in range(calls):
        raw_call(pipeline, batch, *call, seed=index * batch)
    return calls * batch, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra `imagegen serve` argument (repeatable)")
    args = parser.parse_args()
    env = use_threads(args.threads)
    spec = embedded_spec()
    pipeline = load_pipeline(spec)
    call = (args.size, args.size, args.steps, spec.default_guidance)
    chunk = max(args.clients, args.requests // args.rounds)
    raw = {b: [0, 0.0] for b in args.batches}
    service = LoadResult(0, 0.0)
    served = BatchTotals(0, 0, 0)
    for batch in args.batches:  # warm every shape once
        raw_call(pipeline, batch, *call)
    with imagegen_server(*args.server_arg, env=env) as (url, _):
        body = generation_body(*call)
        closed_loop(url, body, args.clients, args.clients)  # warm-up
        # Raw and service alternate in rounds, so a machine that slows down or
        # speeds up meanwhile weighs on both alike.
        for _ in range(args.rounds):
            for batch in args.batches:
                images, seconds = raw_seconds(pipeline, batch, chunk, call)
                raw[batch][0] += images
                raw[batch][1] += seconds
            totals = batch_totals(url)
            result = closed_loop(url, body, args.clients, chunk)
            served = served + (batch_totals(url) - totals)
            service = LoadResult(service.images + result.images,
                                 service.seconds + result.seconds)
    rate = {b: images / seconds for b, (images, seconds) in raw.items()}
    best = max(rate, key=rate.__getitem__)
    print(f"embedded model, {args.size}x{args.size}, {args.steps} steps, "
          f"{args.threads} torch thread(s), {args.rounds} alternating rounds")
    for batch in args.batches:
        print(f"raw batch {batch:<3}        {rate[batch]:7.2f} images/s")
    print(f"service, {args.clients} clients  {service.images_per_second:7.2f} images/s "
          f"({service.images} images, mean batch {served.mean_batch:.2f}, "
          f"device busy {served.device_seconds / service.seconds:.0%} of the time)")
    print(f"service / raw best (batch {best})  {service.images_per_second / rate[best]:.3f}"
          "   (goal >= 0.9)")
    print(f"service / raw batch 1      {service.images_per_second / rate[1]:.3f}")


if __name__ == "__main__":
    main()
