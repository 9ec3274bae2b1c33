"""Overhead of modelmeter's timer against a bare perf_counter loop, measured in one run.

For each fixed matmul workload, trials alternate between

* the harness: ``measure_latency(lambda: torch.mm(a, b))`` — its p50;
* a bare loop: ``t0 = perf_counter_ns(); torch.mm(a, b); t1 = ...`` inlined,
  no callable indirection — the median of its per-call samples;

and the overhead is ``median(harness p50) / median(bare p50) - 1`` over the
trials. Alternating keeps slow drifts (frequency, other processes) from
landing on one side only. Goal: under 2 % on the main workload.

Then, the issue's second goal: two consecutive runs of
``modelmeter bench resnet50 --device cpu`` agree within 5 % at the median;
``bench_bench_repeat.py`` runs them (``--repeat-pairs`` pairs, each beside a
bare-loop control of the machine; 0 skips) and prints both medians.
Exit status 1 when either goal is missed.

Run: ``python benchmarks/bench_harness.py [--trials 5] [--seconds 1.0] [--threads 1] [--repeat-pairs 1]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


GOAL = 0.02


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--sizes", default="256,64", help="matmul sizes; the first is the goal")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (1 is steadier on a busy machine)")
    parser.add_argument("--repeat-pairs", type=int, default=1,
                        help="pairs of consecutive `modelmeter bench resnet50` runs (0: skip)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.machine()}, {args.trials} alternating trials x {args.seconds:g} s each side")
    print(f"{'workload':>16} {'harness p50':>14} {'bare p50':>14} {'overhead':>9}")
    overheads = []
    for size in (int(s) for s in args.sizes.split(",")):
        r = bench(size, args.trials, args.seconds)
        overheads.append(r["overhead"])
        print(f"{'mm ' + str(size) + 'x' + str(size):>16} {r['harness_p50_s'] * 1e6:>11.2f} µs "
              f"{r['bare_p50_s'] * 1e6:>11.2f} µs {r['overhead']:>+8.2%}")
    ok = overheads[0] < GOAL
    print(f"overhead on the main workload {overheads[0]:+.2%}: {'within' if ok else 'OUTSIDE'} "
          f"the {GOAL:.0%} goal")
    if args.repeat_pairs > 0:
        print()
        repeat = [sys.executable, str(Path(__file__).with_name("bench_bench_repeat.py")),
                  "--pairs", str(args.repeat_pairs)]
        if args.threads is not None:
            repeat += ["--threads", str(args.threads)]
        ok = subprocess.run(repeat).returncode == 0 and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
