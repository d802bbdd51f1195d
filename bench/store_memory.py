"""Benchmark 5: process memory per stored artifact beyond its payload (memory store).

    python -m bench.store_memory [--count 100000] [--payload 2048]

Puts `count` artifacts of `payload` bytes (each a distinct bytes object, as
encoded images are) and reports, per artifact, the growth beyond the payload
itself, measured two ways: Python's allocator (tracemalloc, exact) and the
process RSS from /proc (what an operator sees). Goal: <= 1 KB.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc

from bench.harness import rss_bytes
from store.memory import MemoryStore


async def fill(store: MemoryStore, payloads: list[bytes]) -> None:
    for data in payloads:
        await store.put(data, "image/png", 3600)  # the token goes to the client, not kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--payload", type=int, default=2048)
    args = parser.parse_args()
    # Payloads exist before measuring: they are the encoder's output, not the store's cost.
    payloads = [i.to_bytes(8, "big") * (args.payload // 8) for i in range(args.count)]
    store = MemoryStore(max_bytes=2**40)
    gc.collect()
    rss_before = rss_bytes()
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    asyncio.run(fill(store, payloads))
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()
    # RSS is measured on a second, untraced fill (tracemalloc's own bookkeeping inflates RSS).
    second = MemoryStore(max_bytes=2**40)
    rss_mid = rss_bytes()
    asyncio.run(fill(second, payloads))
    gc.collect()
    rss_grown = rss_bytes() - rss_mid
    print(f"{args.count} artifacts of {args.payload} bytes "
          f"(payloads allocated beforehand; RSS before {rss_before / 2**20:.0f} MiB)")
    print(f"tracemalloc   {traced / args.count:8.0f} bytes per artifact beyond its payload"
          "   (goal <= 1024)")
    print(f"RSS           {rss_grown / args.count:8.0f} bytes per artifact beyond its payload")


if __name__ == "__main__":
    main()
