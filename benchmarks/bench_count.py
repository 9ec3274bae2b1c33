"""Count speed against PyTorch's own FlopCounterMode, measured in the same run.

Prints: full `count` of llama3-8b (seq 2048, meta device) divided by
FlopCounterMode alone on the same model (goal <= 1.5x), then llama3-70b's
full count time and the process's peak memory (it must complete on a 2-core,
24 GiB machine).

    python benchmarks/bench_count.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from modelmeter.count import count_trace
from modelmeter.sources import resolve_model
from modelmeter.trace import trace_model


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    loaded = resolve_model("llama3-8b", seq=2048)

    def ours() -> None:
        trace = trace_model(loaded.module, loaded.args, loaded.kwargs)
        count_trace(trace)

    def theirs() -> None:
        with torch.no_grad(), FlopCounterMode(display=False):
            loaded.module(*loaded.args, **loaded.kwargs)

    ours()  # warm-up both paths once (lazy imports, kernels' first-call costs)
    theirs()
    ours_best, ours_median = best_of(ours, args.repeats)
    fcm_best, fcm_median = best_of(theirs, args.repeats)
    print(f"llama3-8b seq 2048 (meta): modelmeter count {ours_median:.3f} s (best {ours_best:.3f}), "
          f"FlopCounterMode {fcm_median:.3f} s (best {fcm_best:.3f})")
    print(f"ratio count / FlopCounterMode (median) = {ours_median / fcm_median:.2f}x (goal <= 1.5x)")

    import modelmeter

    start = time.perf_counter()
    report = modelmeter.count("llama3-70b", seq=2048)
    elapsed = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"llama3-70b seq 2048 (meta): build+trace+count {elapsed:.2f} s, "
          f"params {report.totals['params']:,}, MACs {report.totals['macs'] / 1e12:.2f} T, "
          f"process peak RSS {peak_gib:.2f} GiB")


if __name__ == "__main__":
    main()
