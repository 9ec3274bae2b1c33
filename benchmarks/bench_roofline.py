"""Roofline prediction against measured CPU latency for the shipped vision/text presets.

Uses the calibrated 'local' profile (calibrating and saving it first when none
exists, as `modelmeter hardware calibrate` does). For each preset and batch
size: predict with `roofline(counts, local)` (real fp32 weights, device cpu),
measure a plain timed loop (warm-up, then the median of N calls under
`torch.inference_mode`), and print both with their ratio. One profiled call
per configuration splits the measured time into matrix work (conv/matmul) and
everything else, beside the predicted split, to show what dominates the error.

Run: ``python benchmarks/bench_roofline.py [--runs 10] [--batches 1 8]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from modelmeter import api
from modelmeter.analysis.roofline import roofline
from modelmeter.hardware import calibrate, load_local_profile, save_local_profile

PRESETS = (("resnet50", {}), ("mobilenet-v2", {}), ("vit-base", {}), ("bert-base", {"seq": 128}))
_MATRIX = ("conv", "mm", "matmul", "linear", "bmm", "scaled_dot_product", "flash", "mkldnn")


def local_hardware():
    hw = load_local_profile()
    if hw is None:
        print("no local profile: calibrating (about a minute)...")
        hw, result = calibrate("cpu")
        save_local_profile(hw, result.to_dict())
    return hw


def measure(module, args, kwargs, runs: int, warmup: int = 3) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            module(*args, **kwargs)
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            module(*args, **kwargs)
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def measured_matrix_share(module, args, kwargs) -> float:
    """Share of self CPU time spent in matrix kernels, from one profiled call."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        module(*args, **kwargs)
    total = matrix = 0.0
    for ev in prof.key_averages():
        total += ev.self_cpu_time_total
        if any(k in ev.key for k in _MATRIX):
            matrix += ev.self_cpu_time_total
    return matrix / total if total else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    opts = ap.parse_args()
    hw = local_hardware()
    print(f"local: matmul fp32 {hw.peak_flops.get('fp32', 0) / 1e9:.1f} GFLOP/s, vector fp32 "
          f"{hw.vector_flops.get('fp32', 0) / 1e9:.1f} GFLOP/s, bandwidth "
          f"{hw.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s, ridge {hw.ridge_point('fp32'):.1f} FLOP/B; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    head = (f"{'model':<13}{'batch':>5} {'pred ms':>9} {'fused ms':>9} {'meas ms':>9} {'pred/meas':>9}"
            f" {'bound':>7} {'pred matrix%':>12} {'meas matrix%':>12} {'pred matrix/meas matrix':>23}")
    print(head)
    errors = []
    for name, extra in PRESETS:
        for batch in opts.batches:
            a = api.analyse(name, batch=batch, device="cpu", **extra)
            r = roofline(a.counts, hw)
            module = a.loaded.module.eval()
            t = measure(module, a.loaded.args, a.loaded.kwargs, opts.runs)
            share = measured_matrix_share(module, a.loaded.args, a.loaded.kwargs)
            pred_matrix = sum(o.latency_s for o in r.ops if o.category == "contraction")
            ratio = r.latency_s / t
            errors.append(abs(ratio - 1))
            print(f"{name:<13}{batch:>5} {r.latency_s * 1e3:>9.2f} {r.latency_fused_s * 1e3:>9.2f} "
                  f"{t * 1e3:>9.2f} {ratio:>9.2f} {r.bound:>7} {pred_matrix / r.latency_s:>12.0%} "
                  f"{share:>12.0%} {pred_matrix / (share * t) if share else float('nan'):>23.2f}")
    print(f"median |predicted/measured - 1| = {statistics.median(errors):.2f}")


if __name__ == "__main__":
    main()
