"""Calibrated prediction and roofline bound against measured CPU latency for the shipped presets.

Uses this machine's profile as every command does (`hardware.local.local_profile`:
the cached one for this CPU, thread count and torch version, else the short
calibration, which is refused under load unless ``--force``). Threads: the
command default (physical cores the load leaves free), or ``--threads``.

For each preset and batch size: the roofline bound (`roofline`, every op at the
peaks) and the calibrated prediction (`analysis.predict`), then a plain timed
loop (warm-up, the median of the calls under `torch.inference_mode`). Prints
predicted/measured, the bound/measured and, at the end, the median and worst
|predicted/measured - 1| and whether the bound stayed at or under the
measurement, with the load average before and after.

Run: ``python benchmarks/bench_roofline.py [--runs 7] [--batches 1 8] [--force]``
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch

from modelmeter import api
from modelmeter.analysis.predict import predict
from modelmeter.analysis.roofline import roofline
from modelmeter.hardware.local import choose_threads, local_profile, stderr_progress

PRESETS = (("resnet50", {}), ("mobilenet-v2", {}), ("vit-base", {}), ("bert-base", {"seq": 128}),
           ("gpt2", {"seq": 128}), ("tinyllama", {"seq": 32}))


def measure(module, args, kwargs, runs: int, budget_s: float = 20.0) -> float:
    with torch.inference_mode():
        t0 = time.perf_counter()
        module(*args, **kwargs)  # warm-up, and the size of one call
        one = time.perf_counter() - t0
        for _ in range(2 if one < 1.0 else 0):
            module(*args, **kwargs)
        runs = max(3, min(runs, math.ceil(budget_s / max(one, 1e-6))))
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            module(*args, **kwargs)
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--models", nargs="+", default=[n for n, _ in PRESETS])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--force", action="store_true", help="keep a calibration made under load")
    opts = ap.parse_args()
    threads = opts.threads or choose_threads()
    torch.set_num_threads(threads)
    load_start = os.getloadavg()[0]
    prof = local_profile(progress=stderr_progress(), refuse=not opts.force)
    hw, model = prof.hardware, prof.model
    c = model.conditions
    print(f"profile {prof.key} ({'calibrated now' if prof.calibrated_now else 'cached'}; calibrated under "
          f"load {c.get('load_average')}): matmul fp32 {hw.peak_flops.get('fp32', 0) / 1e9:.1f} GFLOP/s, "
          f"vector {hw.vector_flops.get('fp32', 0) / 1e9:.1f} GFLOP/s, bandwidth "
          f"{hw.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s; torch {torch.__version__}, {threads} threads; "
          f"{os.cpu_count()} CPUs, load average {load_start:.2f} at start")
    print(f"{'model':<13}{'batch':>5} {'bound ms':>10} {'pred ms':>10} {'meas ms':>10} {'pred/meas':>9} "
          f"{'bound/meas':>10}  largest predicted classes")
    errors: list[float] = []
    over = []
    for name, extra in PRESETS:
        if name not in opts.models:
            continue
        for batch in opts.batches:
            a = api.analyse(name, batch=batch, device="cpu", **extra)
            r = roofline(a.counts, hw)
            p = predict(a.counts, r, model)
            module = a.loaded.module.eval()
            t = measure(module, a.loaded.args, a.loaded.kwargs, opts.runs)
            pred = p.predicted_latency_s if p is not None else float("nan")
            errors.append(abs(pred / t - 1))
            if r.latency_s > t:
                over.append(f"{name} b{batch}")
            top = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in
                            sorted((p.by_class if p else {}).items(), key=lambda kv: -kv[1])[:3])
            print(f"{name:<13}{batch:>5} {r.latency_s * 1e3:>10.2f} {pred * 1e3:>10.2f} {t * 1e3:>10.2f} "
                  f"{pred / t:>9.2f} {r.latency_s / t:>10.2f}  {top}", flush=True)
            del a, module
    print(f"median |predicted/measured - 1| = {statistics.median(errors):.2f}, worst {max(errors):.2f}; "
          f"bound above measured: {', '.join(over) or 'none'}; load average at end "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
