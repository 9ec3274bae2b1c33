"""Overhead of modelmeter's timer against a bare perf_counter loop, measured in one run.

For each fixed matmul workload, trials alternate between

* the harness: ``measure_latency(lambda: torch.mm(a, b))`` — its p50;
* a bare loop: ``t0 = perf_counter_ns(); torch.mm(a, b); t1 = ...`` inlined,
  no callable indirection — the median of its per-call samples;

and the overhead is ``median(harness p50) / median(bare p50) - 1`` over the
trials. Alternating keeps slow drifts (frequency, other processes) from
landing on one side only. Goal: under 2 % on the main workload.

Run: ``python benchmarks/bench_harness.py [--trials 5] [--seconds 1.0] [--threads 1]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from modelmeter.measure.timer import measure_latency


def bare_loop_p50(a: torch.Tensor, b: torch.Tensor, seconds: float, warmup_s: float) -> float:
    clock = time.perf_counter_ns
    end = clock() + int(warmup_s * 1e9)
    while clock() < end:
        torch.mm(a, b)
    samples: list[int] = []
    deadline = clock() + int(seconds * 1e9)
    while True:
        t0 = clock()
        torch.mm(a, b)
        t1 = clock()
        samples.append(t1 - t0)
        if len(samples) >= 10 and t1 >= deadline:
            break
    return statistics.median(samples) * 1e-9


def bench(n: int, trials: int, seconds: float) -> dict[str, float]:
    torch.manual_seed(0)
    a, b = torch.randn(n, n), torch.randn(n, n)
    harness, bare = [], []
    for _ in range(trials):
        stats = measure_latency(lambda: torch.mm(a, b), min_time_s=seconds, warmup_s=0.2)
        harness.append(stats.p50_s)
        bare.append(bare_loop_p50(a, b, seconds, warmup_s=0.2))
    h, m = statistics.median(harness), statistics.median(bare)
    return {"n": n, "harness_p50_s": h, "bare_p50_s": m, "overhead": h / m - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--sizes", default="256,64", help="matmul sizes; the first is the goal")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (1 is steadier on a busy machine)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.machine()}, {args.trials} alternating trials x {args.seconds:g} s each side")
    print(f"{'workload':>16} {'harness p50':>14} {'bare p50':>14} {'overhead':>9}")
    for size in (int(s) for s in args.sizes.split(",")):
        r = bench(size, args.trials, args.seconds)
        print(f"{'mm ' + str(size) + 'x' + str(size):>16} {r['harness_p50_s'] * 1e6:>11.2f} µs "
              f"{r['bare_p50_s'] * 1e6:>11.2f} µs {r['overhead']:>+8.2%}")


if __name__ == "__main__":
    main()
