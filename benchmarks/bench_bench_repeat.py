"""Repeatability of `modelmeter bench`: two consecutive runs agree at the median.

Each pair runs ``modelmeter bench MODEL --device cpu --json FILE`` twice, one
after the other, each in a fresh process (as a user would), and compares the
p50 latency of each batch size. Goal: the two medians within 5 % of each other.

A harness cannot be steadier than the machine under it, so the same run also
measures the machine's own run-to-run difference: right after each pair of
`modelmeter bench` runs, two fresh processes build the same model and time it
with a bare ``perf_counter_ns`` loop (same warm-up, same timed seconds, same
threads and allocator policy, no modelmeter code on the timed path). Both
differences are printed pair by pair; the verdict is on `modelmeter bench`
alone, the control says how much of a miss the machine explains.

Run: ``python benchmarks/bench_bench_repeat.py [--pairs 3] [--model resnet50] [--batch 1]
[--min-time 2] [--threads N] [--malloc retain|default]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 0.05

# The control: what a careful user would write by hand around the same model.
_BARE_LOOP = """
import statistics, sys, time
import torch
from modelmeter.measure.allocator import retain_freed_memory
from modelmeter.sources import resolve_model

model, batch, min_time, warmup, threads, malloc = sys.argv[1:7]
if threads != "-":
    torch.set_num_threads(int(threads))
if malloc == "retain":
    retain_freed_memory()
loaded = resolve_model(model, batch=None if batch == "-" else int(batch), device="cpu")
module, args, kwargs = loaded.module.eval(), loaded.args, loaded.kwargs
def call():
    with torch.inference_mode():
        module(*args, **kwargs)
clock = time.perf_counter_ns
end = clock() + int(float(warmup) * 1e9)
call()
while clock() < end:
    call()
samples = []
deadline = clock() + int(float(min_time) * 1e9)
while True:
    t0 = clock()
    call()
    t1 = clock()
    samples.append(t1 - t0)
    if len(samples) >= 10 and t1 >= deadline:
        break
print(statistics.median(samples) * 1e-9)
"""


def bench_run(args: argparse.Namespace, out: Path) -> tuple[float, bool]:
    """p50 (s) of the first batch from one fresh `modelmeter bench` process, and its noisy flag."""
    cmd = [sys.executable, "-m", "modelmeter.cli.main", "bench", args.model, "--device", "cpu",
           "--min-time", str(args.min_time), "--malloc", args.malloc, "--json", str(out)]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    measured = json.loads(out.read_text())["measured"]
    args.conditions = measured["conditions"]
    row = measured["sweep"][0]
    return row["latency_s"]["p50"], bool(row["noisy"])


def bare_run(args: argparse.Namespace) -> float:
    """p50 (s) from one fresh process timing the same model with a bare loop."""
    cmd = [sys.executable, "-c", _BARE_LOOP, args.model, str(args.batch or "-"), str(args.min_time),
           "0.5", str(args.threads or "-"), args.malloc]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def difference(a: float, b: float) -> float:
    return abs(a - b) / min(a, b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=None, help="default: the model's own")
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--malloc", choices=("retain", "default"), default="retain")
    parser.add_argument("--pairs", type=int, default=3, help="pairs of consecutive runs")
    args = parser.parse_args()

    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            flagged = [bench_run(args, Path(tmp) / f"run{i}-{k}.json") for k in (1, 2)]
            bare = [bare_run(args) for _ in (1, 2)]
            rows.append(([p50 for p50, _ in flagged], bare, [noisy for _, noisy in flagged]))
    c = args.conditions
    print(f"modelmeter bench {args.model} --device cpu --min-time {args.min_time:g} "
          f"--malloc {args.malloc}{f' --batch {args.batch}' if args.batch else ''}: "
          f"{c['device_name']}, {c['threads']} threads, torch {c['torch_version']}, "
          f"batch {c['batch']}; {args.pairs} pairs in {time.perf_counter() - started:.0f} s")
    print(f"{'pair':>4} {'bench run 1':>12} {'bench run 2':>12} {'difference':>10} {'noisy':>11}   "
          f"{'bare loop 1':>12} {'bare loop 2':>12} {'difference':>10}")
    for i, ((r1, r2), (b1, b2), noisy) in enumerate(rows, 1):
        print(f"{i:>4} {r1 * 1e3:>9.2f} ms {r2 * 1e3:>9.2f} ms {difference(r1, r2):>10.2%} "
              f"{'/'.join(str(x) for x in noisy):>11}   "
              f"{b1 * 1e3:>9.2f} ms {b2 * 1e3:>9.2f} ms {difference(b1, b2):>10.2%}")
    bench_diffs = [difference(*runs) for runs, _, _ in rows]
    bare_diffs = [difference(*bare) for _, bare, _ in rows]
    within = sum(d <= GOAL for d in bench_diffs)
    print(f"modelmeter bench: {within}/{len(rows)} pairs within {GOAL:.0%} "
          f"(median difference {statistics.median(bench_diffs):.2%}, largest {max(bench_diffs):.2%})")
    print(f"bare loop (the machine itself): {sum(d <= GOAL for d in bare_diffs)}/{len(rows)} pairs "
          f"within {GOAL:.0%} (median difference {statistics.median(bare_diffs):.2%}, "
          f"largest {max(bare_diffs):.2%})")
    verdict = "within" if within == len(rows) else "OUTSIDE"
    print(f"verdict: every pair of modelmeter bench runs {verdict} the {GOAL:.0%} goal")
    return 0 if within == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
