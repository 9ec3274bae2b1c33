"""Start-up of `modelmeter count resnet50` against a bare `import torch, transformers`.

Whole processes, interleaved in the same run (the machine is shared: a load spike hits
both sides alike), median of N each. Also times `import torch, transformers,
transformers.modeling_utils`: building any transformers model (the resnet50 preset is
built from its transformers config) needs that module, so it is the floor a count of a
transformers model can reach without changing transformers itself.

    python benchmarks/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "bare import torch, transformers": "import torch, transformers",
    "import + transformers.modeling_utils": "import torch, transformers, transformers.modeling_utils",
    "modelmeter count resnet50": (
        "import sys; sys.argv = ['modelmeter', 'count', 'resnet50'];"
        " from modelmeter.cli.main import main; main()"
    ),
}


def run_once(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeats):
        for name, code in CASES.items():  # interleaved: each round runs every case once
            times[name].append(run_once(code))
    base = statistics.median(times["bare import torch, transformers"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:40s} median {median:6.2f} s  {median / base:5.2f}x bare import")


if __name__ == "__main__":
    main()
