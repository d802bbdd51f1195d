"""Benchmark 4: time to sweep k expired artifacts among n live ones, n from 1e3 to 1e6.

    python -m bench.sweep [--max-n 1000000] [--k 10 100 1000]

The memory store (the disk store shares its catalog) on a fake clock: n
artifacts that stay live, then for each k, k more that expire; the clock
moves past their expiry and one sweep removes exactly them. Sweeping pops an
expiry heap, so its cost should follow k (and log n), not n.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from store.memory import MemoryStore

PAYLOAD = b"x" * 16
LIVE_TTL = 10**9


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def sweep_costs(n: int, ks: list[int], repeat: int) -> dict[int, float]:
    """Best-of-`repeat` seconds to sweep k expired among n live, for each k."""
    clock = Clock()
    store = MemoryStore(max_bytes=2**40, clock=clock)
    for _ in range(n):
        await store.put(PAYLOAD, "image/png", LIVE_TTL)
    costs = {}
    for k in ks:
        best = float("inf")
        for _ in range(repeat):
            for _ in range(k):
                await store.put(PAYLOAD, "image/png", 1)
            clock.now += 2
            started = time.perf_counter()
            removed = await store.sweep()
            best = min(best, time.perf_counter() - started)
            assert len(removed) == k
        costs[k] = best
    assert (await store.stats()).count == n
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-n", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [n for n in (10**3, 10**4, 10**5, 10**6) if n <= args.max_n]
    print("milliseconds to sweep k expired among n live (memory store; best of "
          f"{args.repeat})")
    print(f"{'n live':>10}" + "".join(f"{f'k={k}':>12}" for k in args.k)
          + "".join(f"{f'us/item k={k}':>16}" for k in args.k))
    for n in sizes:
        costs = asyncio.run(sweep_costs(n, args.k, args.repeat))
        print(f"{n:>10}" + "".join(f"{costs[k] * 1000:>12.3f}" for k in args.k)
              + "".join(f"{costs[k] / k * 1e6:>16.2f}" for k in args.k))


if __name__ == "__main__":
    main()
