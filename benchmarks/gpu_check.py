"""One short GPU check: calibrate on CUDA, then predicted vs measured for a few models.

1. The short calibration on the device (`hardware.local.short_calibration`):
   cuBLAS matmul, elementwise and STREAM bandwidth for the roofline's peaks,
   then the per-op-class microbenchmarks (GEMM shapes, convolutions, SDPA,
   elementwise, normalisation, reductions, copies and the launch overhead of a
   tiny op), timed with CUDA events.
2. resnet50 (batch 1 and 8), gpt2 (prefill of 128 tokens) and gpt2's
   single-token step (one token, no KV cache: the weight-bound part of a
   decode step), each counted on meta, bounded by the roofline, predicted by
   the calibrated model and timed with `measure.timer.measure_latency`.
3. One table: bound, prediction, measurement, predicted/measured; with ``--hardware ID``
   (the database id of the card, e.g. ``h100-sxm``) also the shape-aware GPU performance
   model's prediction from its sourced constants (`hardware/gpumodel.py`), per case and,
   per op class, the largest misses, so a run on a lent GPU checks that model too.

``--dry`` runs the same logic with tiny models and a minimal calibration, so
that the script is tested on a CPU (``--device cpu --dry``) in seconds.
Nothing is saved: the check leaves the user's profiles alone.

Run: ``python benchmarks/gpu_check.py [--device cuda] [--dry]``
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from typing import Any

import torch

from modelmeter import api
from modelmeter.analysis.gpu_predict import gpu_predict
from modelmeter.analysis.predict import predict
from modelmeter.analysis.roofline import roofline
from modelmeter.hardware import get_hardware
from modelmeter.hardware.calibration import CalibrationSettings
from modelmeter.hardware.gpumodel import gpu_model
from modelmeter.hardware.local import short_calibration
from modelmeter.measure.timer import measure_latency

DRY_SETTINGS = CalibrationSettings(repeats=1, min_sample_s=0.0005, matmul_sizes=(64,), matmul_target_s=0.0,
                                   stream_bytes_per_array=2**20, budget_s=1.0, precisions=("fp32",))


def calibrate(device: str, dry: bool) -> tuple[Any, Any]:
    if dry:  # tiny cases only: the logic, not the numbers
        hw, model, _ = short_calibration(device, refuse=False, settings=DRY_SETTINGS, microbench_budget_s=0.0)
    else:
        hw, model, _ = short_calibration(device, refuse=False)
    return hw, model


def _tiny_cnn() -> tuple[Any, tuple]:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    return net, (torch.randn(2, 3, 16, 16),)


def _tiny_mlp() -> tuple[Any, tuple]:
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.LayerNorm(64),
                              torch.nn.Linear(64, 32))
    return net, (torch.randn(1, 32),)


def cases(dry: bool) -> Iterator[tuple[str, Any]]:
    """(label, Analysis) per model: counted on cpu tensors, moved to the device by `run_case`."""
    if dry:
        for label, build in (("tiny cnn", _tiny_cnn), ("tiny mlp (decode-like)", _tiny_mlp)):
            net, args = build()
            yield label, api.analyse(net.eval(), args)
        return
    for label, name, extra in (("resnet50 b1", "resnet50", {"batch": 1}),
                               ("resnet50 b8", "resnet50", {"batch": 8}),
                               ("gpt2 prefill 128", "gpt2", {"batch": 1, "seq": 128}),
                               ("gpt2 1-token step", "gpt2", {"batch": 1, "seq": 1})):
        yield label, api.analyse(name, device="cpu", **extra)


def run_case(analysis: Any, device: str, hw: Any, model: Any, dry: bool, gpu_hw: Any = None) -> dict[str, float]:
    counts = analysis.counts
    bound = roofline(counts, hw)
    pred = predict(counts, bound, model)
    shape = math.nan
    if gpu_hw is not None:
        events = {e.index: e for e in analysis.trace.events}
        shape = gpu_predict(events, counts, roofline(counts, gpu_hw), gpu_model(gpu_hw)).predicted_latency_s
    module = analysis.loaded.module.eval().to(device)
    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in analysis.loaded.args)
    kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in analysis.loaded.kwargs.items()}

    def call() -> None:
        with torch.inference_mode():
            module(*args, **kwargs)

    timing = dict(min_time_s=0.05, min_iters=3, warmup_s=0.0, warmup_iters=1) if dry else {}
    lat = measure_latency(call, device=device, **timing)
    predicted = pred.predicted_latency_s if pred is not None else math.nan
    return {"bound_s": bound.latency_s, "predicted_s": predicted, "measured_s": lat.p50_s,
            "ratio": predicted / lat.p50_s, "gpu_model_s": shape, "gpu_model_ratio": shape / lat.p50_s}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dry", action="store_true", help="tiny models and a minimal calibration (tests)")
    ap.add_argument("--hardware", help="database id of this GPU: also the GPU shape model's prediction")
    opts = ap.parse_args(argv)
    gpu_hw = get_hardware(opts.hardware) if opts.hardware else None
    hw, model = calibrate(opts.device, opts.dry)
    print(f"{opts.device}: {hw.name}; matmul fp32 {hw.peak_flops['fp32'] / 1e12:.3g} TFLOP/s, bandwidth "
          f"{hw.memory_bandwidth_bytes_per_s / 1e9:.4g} GB/s, launch overhead "
          f"{model.classes['elementwise'].overhead_s * 1e6:.1f} us")
    print(f"{'case':<24}{'bound ms':>10}{'pred ms':>10}{'meas ms':>10}{'pred/meas':>10}"
          + (f"{'shape ms':>10}{'shape/meas':>11}" if gpu_hw else ""))
    rows = []
    for label, analysis in cases(opts.dry):
        r = run_case(analysis, opts.device, hw, model, opts.dry, gpu_hw)
        rows.append({"case": label, **r})
        print(f"{label:<24}{r['bound_s'] * 1e3:>10.3f}{r['predicted_s'] * 1e3:>10.3f}"
              f"{r['measured_s'] * 1e3:>10.3f}{r['ratio']:>10.2f}"
              + (f"{r['gpu_model_s'] * 1e3:>10.3f}{r['gpu_model_ratio']:>11.2f}" if gpu_hw else ""), flush=True)
    errors = sorted(abs(r["ratio"] - 1) for r in rows)
    print(f"median |predicted/measured - 1| = {errors[len(errors) // 2]:.2f}, worst {errors[-1]:.2f}")
    return rows


if __name__ == "__main__":
    main()
