"""Benchmark: the training planner against Megatron-LM's published runs, beside Calculon's precedent.

The rows are the ones `modelmeter validate` ships (the package's `pipeline/validation_rows.json`,
each with its source): Narayanan et al. 2021 Table 1 (achieved TFLOP/s per A100, the recomputed
forward counted; micro-batch, interleaving and DDP from the authors' run_table_1.sh) and
Korthikanti et al. 2022 Table 5 (iteration time on A100-80GB, full recomputation). Each row is
planned with its layout fixed as it ran, the model traced as that release ran it
(`modelmeter.sources.megatron_gpt`, two blocks on meta, the second repeated).

Three time models side by side, in the same run:

* `shape` — the GPU performance model the planner uses by default (`hardware/gpumodel.py`):
  GEMMs by M, N, K with tile and wave quantisation, K ramp, achievable bandwidth;
* `calculon` — Calculon's size-dependent efficiency table (calculon-ai/calculon @ caa4b11,
  systems/a100_80g.json): a GEMM at 0.95 of peak from 128 GFLOP, 0.90 from 16, 0.60 from 1,
  0.10 below; other ops at 0.90 / 0.75 / 0.60 / 0.30 of HBM bandwidth by size (100 / 10 / 1 MB);
  the nearest published precedent for a shape-dependent planner rate;
* `mamf` — the roofline at the matrix peak x MAMF (0.869), the planner's former default.

Then per row where the shape model's step goes (compute, tp / pp / dp communication, bubble,
optimizer).

    python benchmarks/bench_plan.py
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_CALCULON_GEMM = ((128e9, 0.95), (16e9, 0.90), (1e9, 0.60), (0.0, 0.10))
_CALCULON_MEM = ((100e6, 0.90), (10e6, 0.75), (1e6, 0.60), (0.0, 0.30))


def _step(table: tuple[tuple[float, float], ...], x: float) -> float:
    return next(f for at_least, f in table if x >= at_least)


def calculon_model(hw):
    """A GpuModel whose kernels follow Calculon's A100 tables instead of the shape model."""
    from modelmeter.hardware.gpumodel import GpuModel, gpu_model

    class Calculon(GpuModel):
        def gemm_s(self, batch, m, n, k, precision, nbytes):
            flops = 2.0 * batch * m * n * k
            peak = self.peak_flops.get(precision, 0.0)
            return max(flops / (peak * _step(_CALCULON_GEMM, flops)), self.memory_s(nbytes, launch=False))

        def attention_s(self, batch_heads, q_len, kv_len, flops, precision, nbytes):
            peak = self.peak_flops.get(precision, 0.0)
            return max(flops / (peak * _step(_CALCULON_GEMM, flops)), self.memory_s(nbytes, launch=False))

        def bandwidth(self, nbytes):
            return self.bandwidth_bytes_per_s * _step(_CALCULON_MEM, nbytes)

        def launch(self):
            return 0.0

    fields = {f.name: getattr(gpu_model(hw), f.name) for f in dataclasses.fields(GpuModel)}
    return Calculon(**fields)


def main() -> None:
    from modelmeter.analysis.plan import Fixed, TrainSettings, plan_training
    from modelmeter.hardware import get_hardware
    from modelmeter.hardware.gpumodel import gpu_model
    from modelmeter.hardware.interconnect import get_interconnect
    from modelmeter.pipeline import validate as v

    hw = get_hardware("a100-sxm-80gb")
    net = get_interconnect(hw.id)
    rows = [r for r in v.shipped_rows() if r["table"] in ("megatron-2021", "korthikanti-2022")]
    models = {"shape": gpu_model(hw), "calculon": calculon_model(hw), "mamf": None}
    start = time.perf_counter()
    print("Megatron-LM on A100-80GB: published vs planned with each time model (error = predicted / published - 1)")
    print(f"{'table':17} {'row':>8} {'published':>10} | " + " ".join(f"{k:>16}" for k in models)
          + " | shape model's step: compute tp pp dp bubble optim")
    errors = {(t, k): [] for t in ("megatron-2021", "korthikanti-2022") for k in models}
    for row in rows:
        cells, shares = [], ""
        for name, gpu in models.items():
            profile = v._train_profile(row, hw, gpu)
            if gpu is None:  # the former default: the roofline at MAMF-derated peak
                from modelmeter.analysis.plan_profile import build_profile

                trace, fwd, bwd = v._gpt_trace("2021", row["model"]["hidden"], row["model"]["heads"],
                                               row["model"]["vocab"], row["model"]["seq"])
                base = build_profile(trace, fwd, bwd, hw, model="gpt", seq=row["model"]["seq"], efficiency=0.869,
                                     config={"hidden_size": row["model"]["hidden"]})
                block = base.blocks[-1]
                profile = dataclasses.replace(base, blocks=(block,) * row["model"]["layers"])
            lay = row["layout"]
            settings = TrainSettings(global_batch=row["global_batch"], master_fp32=True, param_bytes=2,
                                     overlap_grad_reduce=lay["overlap_grad_reduce"])
            fixed = Fixed(tp=lay["tp"], pp=lay["pp"], dp=lay["dp"], ep=1, zero=0, sp=False,
                          checkpoint=True, micro_batch=lay["micro_batch"], vp=lay["vp"])
            devices = lay["tp"] * lay["pp"] * lay["dp"]
            best = plan_training(profile, settings, devices=devices, nodes=max(1, devices // 8), net=net,
                                 fixed=fixed).best
            value = best.hfu * 312e12 / 1e12 if row["metric"] == "tflops_per_gpu_hfu" else best.step_time_s
            err = value / row["published"] - 1
            errors[(row["table"], name)].append(abs(err))
            cells.append(f"{value:>8.4g} {err:+7.1%}")
            if name == "shape":
                step = best.step_time_s
                comm = best.comm
                compute = step - sum(comm.values()) - best.bubble_time_s - best.optimizer_time_s
                parts = (compute, comm["tensor_parallel"], comm["pipeline"], comm["data_parallel"],
                         best.bubble_time_s, best.optimizer_time_s)
                shares = " ".join(f"{x / step:.0%}" for x in parts)
        print(f"{row['table']:17} {row['label']:>8} {row['published']:>10.4g} | " + " ".join(cells) + f" | {shares}")
    for table in ("megatron-2021", "korthikanti-2022"):
        print(f"{table}: median |error| " + ", ".join(
            f"{k} {statistics.median(errors[(table, k)]):.1%} (worst {max(errors[(table, k)]):.1%})" for k in models))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
