"""Repeatability of `modelmeter bench`: two consecutive runs agree at the median.

Runs ``modelmeter bench MODEL --device cpu --json FILE`` twice, one after the
other, each in a fresh process (as a user would), and compares the p50 latency
of each batch size. Goal: the two medians within 5 % of each other.

Run: ``python benchmarks/bench_bench_repeat.py [--model resnet50] [--batch 1] [--min-time 2]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

GOAL = 0.05


def one_run(args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, "-m", "modelmeter.cli.main", "bench", args.model, "--device", "cpu",
           "--min-time", str(args.min_time), "--json", str(out)]
    if args.batch:
        cmd += ["--batch", args.batch]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["measured"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", default=None, help="e.g. 1,8 (default: the model's own)")
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(args, Path(tmp) / f"run{i}.json") for i in (1, 2)]
    c = runs[0]["conditions"]
    print(f"modelmeter bench {args.model} --device cpu --min-time {args.min_time:g}"
          f"{' --batch ' + args.batch if args.batch else ''}: {c['device_name']}, "
          f"{c['threads']} threads, torch {c['torch_version']}")
    print(f"{'batch':>6} {'run 1 p50':>12} {'run 2 p50':>12} {'difference':>11} {'noisy':>11}")
    worst = 0.0
    for a, b in zip(runs[0]["sweep"], runs[1]["sweep"], strict=True):
        p1, p2 = a["latency_s"]["p50"], b["latency_s"]["p50"]
        diff = abs(p2 - p1) / min(p1, p2)
        worst = max(worst, diff)
        print(f"{a['batch']:>6} {p1 * 1e3:>9.3f} ms {p2 * 1e3:>9.3f} ms {diff:>10.2%} "
              f"{str(a['noisy']) + '/' + str(b['noisy']):>11}")
    verdict = "within" if worst <= GOAL else "OUTSIDE"
    print(f"largest difference {worst:.2%}: {verdict} the {GOAL:.0%} goal")
    return 0 if worst <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
