"""The LLM view priced by the GPU performance model, and served under a request rate (layer 3).

`llm.py` prices prefill and decode at the roofline bound. This prices the same
traced per-op cost vectors with `hardware.gpumodel`:

* a layer's weight GEMM by its (tokens, N, K): tile and wave quantisation and
  the K ramp at the step's M = tokens, or its bytes at achievable bandwidth
  when larger (a decode step's GEMMs are bandwidth-bound);
* fused attention at FlashAttention's published rate, other products at the
  best-shape matmul rate; vector ops at the vector rate; every op's bytes at
  the achievable bandwidth (size ramp on its weight and activation bytes);
* every op at least one kernel launch of the runtime (`eager`: one host launch
  per traced op; `graphs`: CUDA-graph replay; `fused`: graph replay with the
  elementwise ops between two matrix products fused into one kernel that takes
  as long as the slowest of them, as a serving engine's fused kernels do).

A decode step's cost grows with the cache length L; each op's time
``max(compute(L), memory(L), launch)`` is summed exactly over L = P ... P+G-2.

**Serving** (`served`): requests arriving at `rate` per second with in-flight
(continuous) batching reach a steady concurrency C = rate x (TTFT + (G - 1) x
ITL(C)) (Little's law), solved by fixed-point iteration; ITL is the decode step
at batch C (interpolated between integer batches); TTFT = half a running
iteration (the wait to be scheduled) + the iteration that carries the prompt's
prefill beside the running batch's decode tokens. Beyond the rate the device can
serve, there is no steady state and the result says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..hardware.gpumodel import PREDICTION, GpuModel
from .llm import LLMCosts, _at_decode, _Coster, _sum_linear
from .llm_steps import ACT, KV_READ, KV_WRITE, MATMUL, VECTOR, WEIGHT, OpKey

__all__ = ["FUSED", "RUNTIMES", "GpuLLMFigures", "ServedFigures", "gpu_llm_figures", "predicted_view", "served"]

FUSED = "fused"
_LAUNCH_RUNTIME = {"eager": "eager", "graphs": "graphs", FUSED: "graphs"}
RUNTIMES = tuple(_LAUNCH_RUNTIME)


@dataclass(frozen=True)
class GpuLLMFigures:
    batch: int
    prefill_s: float  # TTFT of a request alone
    tpot_s: float  # mean decode step
    kernels_prefill: int
    kernels_decode: int


@dataclass(frozen=True)
class ServedFigures:
    rate_per_s: float
    concurrency: float | None  # None: the rate exceeds what the device serves (no steady state)
    ttft_s: float | None
    itl_s: float | None
    output_tokens_per_s: float | None


class _GpuCoster:
    def __init__(self, costs: LLMCosts, coster: _Coster, gpu: GpuModel, tp: int, runtime: str) -> None:
        self.costs, self.coster, self.tp = costs, coster, tp
        self.gpu = gpu
        self.runtime = runtime
        self.launch = gpu.launch_s[_LAUNCH_RUNTIME[runtime]]
        # Matrix products end a fused run of elementwise ops (a traced op with matrix FLOPs).
        self.matrix_ops = {k for k, (a, b) in costs.prefill.items() if a[MATMUL] or b[MATMUL]}
        self.matrix_ops |= {k for k, c in costs.decode.items() if any(x[MATMUL] for x in c)}

    def lines(self, key: OpKey, v: tuple[float, ...], tokens: float) -> tuple[float, float]:
        """(compute, memory) seconds of one cost vector on the GPU model."""
        c = self.coster
        info = self.costs.info[key]
        prec = c.prec[key]
        matrix_prec = c.matrix if prec == c.dtype else prec
        t_c = 0.0
        if not info.memory_only:
            if v[MATMUL]:
                if info.gemm_nk is not None:
                    n, k = info.gemm_nk
                    n = n if info.replicated else max(1, math.ceil(n / self.tp))
                    eff, _ = self.gpu.efficiency(1, max(1, round(tokens)), n, k, matrix_prec)
                    rate = self.gpu.matmul_rate(matrix_prec) * eff
                elif "attention" in info.op:
                    peak = self.gpu.peak_flops.get(matrix_prec) or self.gpu.peak_flops.get("fp32", 0.0)
                    rate = peak * self.gpu.attention_fraction * self.gpu.sustained_compute
                else:
                    rate = self.gpu.matmul_rate(matrix_prec)
                t_c += v[MATMUL] / rate if rate else 0.0
            if v[VECTOR]:
                t_c += v[VECTOR] / c.rate(prec, "vector")
        share = c.expert_share(key, tokens)
        nbytes = c.bytes(key, v, share)
        # The size ramp by the bytes that do not grow with the cache (a line in L stays a line).
        steady = c.weight_bytes(key, v, share) + v[ACT] * c.act_scale
        return t_c, nbytes / self.gpu.bandwidth(steady if steady > 0 else nbytes)

    def op_time(self, key: OpKey, v: tuple[float, ...], tokens: float) -> float:
        return max(*self.lines(key, v, tokens), self.launch)

    def combine(self, times: dict[OpKey, float]) -> float:
        """Sum per op; `fused`: a run of non-matrix ops costs its slowest member once."""
        if self.runtime != FUSED:
            return sum(times.values())
        total = run = 0.0
        for key, t in times.items():
            if key in self.matrix_ops:
                total += run + t
                run = 0.0
            else:
                run = max(run, t)
        return total + run


def _envelope_sum(lines: list[tuple[float, float]], start: int, n: int) -> float:
    """Exact sum over L = start ... start + n - 1 of max over lines a + b L."""
    if n <= 0:
        return 0.0
    cuts = {start, start + n}
    for i, (a1, b1) in enumerate(lines):
        for a2, b2 in lines[i + 1:]:
            if b1 != b2:
                x = (a2 - a1) / (b1 - b2)
                if start < x < start + n and math.isfinite(x):
                    cuts.add(math.ceil(x))
    edges = sorted(cuts)
    total = 0.0
    for lo, hi in zip(edges, edges[1:], strict=False):
        if hi <= lo:
            continue
        mid = (lo + hi - 1) / 2
        a, b = max(lines, key=lambda ln: ln[0] + ln[1] * mid)
        total += _sum_linear(a, b, lo, hi - lo)
    return total


def gpu_llm_figures(costs: LLMCosts, coster: _Coster, gpu: GpuModel, batch: int, *, tp: int = 1,
                    runtime: str = "eager") -> GpuLLMFigures:
    """Prefill (TTFT alone) and mean decode step of `batch` sequences on the GPU model."""
    g = _GpuCoster(costs, coster, gpu, tp, runtime)
    p = costs.prompt
    prefill: dict[OpKey, float] = {}
    for key, line in costs.prefill.items():
        v = tuple(a + b * batch for a, b in zip(*line, strict=True))
        if any(v[i] for i in (MATMUL, VECTOR, WEIGHT, ACT, KV_READ, KV_WRITE)):
            prefill[key] = g.op_time(key, v, batch * p)
    n = max(costs.gen - 1, 1)
    decode: dict[OpKey, float] = {}
    for key, c in costs.decode.items():
        cap = costs.op_cap(key)
        grow = n if cap is None else min(n, max(cap - p, 0))
        lo = g.lines(key, _at_decode(c, batch, 0), batch)
        hi = g.lines(key, _at_decode(c, batch, 1), batch)
        lines = [(lo[0], hi[0] - lo[0]), (lo[1], hi[1] - lo[1]), (g.launch, 0.0)]
        total = _envelope_sum(lines, p, grow)
        if n - grow:
            total += (n - grow) * max(a + b * cap for a, b in lines)  # type: ignore[operator]
        decode[key] = total / n
    return GpuLLMFigures(batch, g.combine(prefill), g.combine(decode), len(prefill), len(decode))


def served(step_at: Any, prefill_s: float, rate: float, gen: int, *, max_concurrency: float) -> ServedFigures:
    """Steady in-flight batching at `rate` requests/s (module docstring). `step_at(C)`: the decode
    step at concurrency C; `prefill_s`: one request's prefill."""
    conc = 1.0
    for _ in range(200):
        itl = step_at(conc)
        ttft = 0.5 * itl + prefill_s + itl
        new = rate * (ttft + (gen - 1) * itl)
        if new > max_concurrency:
            return ServedFigures(rate, None, None, None, None)
        if abs(new - conc) < 1e-6 * max(conc, 1.0):
            conc = new
            break
        conc = new
    itl = step_at(conc)
    ttft = 0.5 * itl + prefill_s + itl
    return ServedFigures(rate, conc, ttft, itl, rate * gen)


def predicted_view(costs: LLMCosts, hw: Any, gpu: GpuModel, *, weights: str, kv_dtype: str,
                   activations: str | None, batches: tuple[int, ...], max_batch: int | None,
                   runtime: str, rate: float | None = None, ttft_target_s: float | None = None,
                   tpot_target_s: float | None = None) -> dict[str, Any]:
    """The `llm.predicted` section: per batch TTFT, TPOT and tokens/s on the GPU model; served
    figures at `rate`; the largest batch (within memory) meeting the TTFT / TPOT targets."""
    coster = _Coster(costs, hw, weights, kv_dtype, activations)

    @cache
    def figures(batch: int) -> GpuLLMFigures:
        return gpu_llm_figures(costs, coster, gpu, batch, runtime=runtime)

    def row(batch: int) -> dict[str, Any]:
        f = figures(batch)
        e2e = f.prefill_s + (costs.gen - 1) * f.tpot_s
        return {"batch": batch, "ttft_s": f.prefill_s, "tpot_s": f.tpot_s, "e2e_s": e2e,
                "tokens_per_s": batch * costs.gen / e2e, "decode_tokens_per_s": batch / f.tpot_s,
                "kernels_prefill": f.kernels_prefill, "kernels_decode": f.kernels_decode}

    out: dict[str, Any] = {"prediction": PREDICTION, "runtime": runtime, "model": gpu.describe(),
                           "batches": [row(b) for b in batches]}
    if ttft_target_s is not None or tpot_target_s is not None:
        out["target"] = _under_target(figures, max_batch, ttft_target_s, tpot_target_s)
    if rate is not None:
        def step_at(c: float) -> float:
            lo = max(1, math.floor(c))
            return figures(lo).tpot_s + (figures(lo + 1).tpot_s - figures(lo).tpot_s) * (c - lo)

        s = served(step_at, figures(1).prefill_s, rate, costs.gen,
                   max_concurrency=float(max_batch) if max_batch else 4096.0)
        out["served"] = {"rate_per_s": rate, "concurrency": s.concurrency, "ttft_s": s.ttft_s,
                         "itl_s": s.itl_s, "output_tokens_per_s": s.output_tokens_per_s,
                         "saturated": s.concurrency is None,
                         "method": "in-flight batching at steady state: concurrency by Little's law; TTFT = "
                                   "half a running step + the step carrying the prefill beside the batch's "
                                   "decode tokens"}
    return out


def _under_target(figures: Any, max_batch: int | None, ttft: float | None, tpot: float | None) -> dict[str, Any]:
    """The largest batch whose predicted TTFT and TPOT both meet their targets (both grow with
    the batch), searched up to the memory limit (or 4096 when memory is unknown)."""
    limit = max_batch if max_batch else 4096

    def ok(b: int) -> bool:
        f = figures(b)
        return (ttft is None or f.prefill_s <= ttft) and (tpot is None or f.tpot_s <= tpot)

    best = 0
    lo, hi = 1, max(limit, 0)
    while lo <= hi:
        mid = (lo + hi) // 2
        if ok(mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return {"ttft_target_s": ttft, "tpot_target_s": tpot, "max_batch": best, "memory_max_batch": max_batch}
