"""LLM steps on this machine: calibrated TTFT/TPOT and a real prefill/decode run (layer 5).

* `predict_steps` traces the prefill of `prompt` tokens and one decode step
  with `prompt + gen // 2` tokens cached (the mean step of a linear-cost
  decode) as eager transformers runs them, counts them, and costs them twice:
  the roofline bound at the profile's peaks and the calibrated prediction
  (`analysis.predict`, this machine's per-op-class rates and dispatch costs).
  Unlike the `llm` view, these traces keep what eager transformers really does
  (the cache grows by `torch.cat`, all logits of the last position only), because
  they are compared with an eager run here.
* `measure_steps` builds the model on the CPU with random weights (only when
  the weights and cache fit in the memory the system reports available), then
  times, under `torch.inference_mode`: the prefill (TTFT: median of `runs`
  fresh prefills) and `gen` greedy decode steps after one of them (TPOT: their
  median), as optimum-benchmark's LLM runs do; tokens/s = batch / TPOT.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..core.errors import UserInputError

__all__ = ["LLMMeasurement", "StepPrediction", "measure_steps", "predict_steps", "steps_section"]


@dataclass(frozen=True)
class StepPrediction:
    ttft_bound_s: float
    ttft_predicted_s: float | None
    tpot_bound_s: float
    tpot_predicted_s: float | None


@dataclass(frozen=True)
class LLMMeasurement:
    ttft_s: float
    tpot_s: float
    tokens_per_s: float  # batch / TPOT: the steady decode rate
    prefill_runs: int
    decode_steps: int
    threads: int


def predict_steps(spec: Any, *, prompt: int, gen: int, batch: int, hw: Any, model: Any,
                  dtype: str = "fp32") -> StepPrediction:
    """Bound and calibrated prediction of one prefill and the mean decode step."""
    from ..analysis.predict import predict
    from ..analysis.roofline import roofline
    from ..count.engine import count_trace
    from .llm_trace import DecoderTracer

    tracer = DecoderTracer(spec, dtype=dtype)
    out = []
    for new, past in ((prompt, 0), (1, prompt + gen // 2)):
        counts = count_trace(tracer.trace_step(batch, new, past))
        roof = roofline(counts, hw)
        pred = predict(counts, roof, model) if model is not None else None
        out += [roof.latency_s, pred.predicted_latency_s if pred is not None else None]
    return StepPrediction(*out)


def check_fits(params: int, itemsize: int, kv_bytes: float, available: int | None) -> str | None:
    """Why the model cannot be run here (None when it fits in 80 % of the available memory)."""
    need = params * itemsize + kv_bytes
    if available is not None and need > 0.8 * available:
        return (f"not measured: the weights and KV cache need {need / 2**30:.1f} GiB, "
                f"{available / 2**30:.1f} GiB is available")
    return None


def measure_steps(spec: str, *, prompt: int, gen: int, batch: int, dtype: str = "fp32",
                  runs: int = 3) -> LLMMeasurement:
    """Prefill and decode timed on the CPU with random weights (see the module docstring)."""
    import torch
    from transformers import DynamicCache

    from ..hardware.detect import read_cpu_info
    from ..sources import resolve_model
    from .llm_trace import DecoderTracer

    meta = DecoderTracer(spec, dtype=dtype)
    params = meta.params
    itemsize = {"fp32": 4, "fp16": 2, "bf16": 2}.get(dtype, 4)
    layers = len(meta._cache_layout())
    k_shape, v_shape, _ = meta._cache_layout()[0]
    kv = batch * (prompt + gen) * layers * (k_shape[0] * k_shape[1] + v_shape[0] * v_shape[1]) * itemsize
    why = check_fits(params, itemsize, kv, read_cpu_info().memory_available_bytes)
    if why is not None:
        raise UserInputError(why)
    loaded = resolve_model(spec, device="cpu", dtype=dtype)
    module = loaded.module.eval()
    vocab = int((loaded.config or {}).get("vocab_size", 1000))
    gen_ids = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, prompt), generator=gen_ids)

    def prefill() -> tuple[Any, Any]:
        cache = DynamicCache()
        out = module(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        return out, cache

    with torch.inference_mode():
        out, cache = prefill()  # warm-up: allocations, kernel choice
        ttfts = []
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            out, cache = prefill()
            ttfts.append(time.perf_counter() - t0)
        token = out.logits[:, -1:].argmax(-1)
        steps = []
        for _ in range(gen):
            t0 = time.perf_counter()
            out = module(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1:].argmax(-1)
            steps.append(time.perf_counter() - t0)
    tpot = statistics.median(steps) if steps else float("nan")
    return LLMMeasurement(statistics.median(ttfts), tpot, batch / tpot, len(ttfts), len(steps),
                          torch.get_num_threads())


def steps_section(pred: StepPrediction, measured: LLMMeasurement | None, note: str | None,
                  conditions: dict[str, Any]) -> dict[str, Any]:
    """JSON for the `llm` section's `local` key: predictions, measurement, their ratios."""
    m = asdict(measured) if measured is not None else None
    ratio = {}
    if measured is not None:
        for key, got in (("ttft", measured.ttft_s), ("tpot", measured.tpot_s)):
            p = getattr(pred, f"{key}_predicted_s")
            ratio[f"{key}_prediction_error"] = p / got - 1 if p is not None and got > 0 else None
    return {**asdict(pred), "measured": m, **ratio, "note": note, "conditions": conditions,
            "method": ("eager transformers steps traced and costed: bound at the profile's peaks, "
                       "calibrated prediction from this machine's microbenchmarks; decode at "
                       "prompt + gen/2 cached tokens; measured with random weights, TTFT = median "
                       "prefill, TPOT = median decode step")}


def local_steps(spec: Any, *, prompt: int, gen: int, batch: int, hw: Any, dtype: str,
                measure: bool) -> dict[str, Any]:
    """`steps_section` for one batch: bound, calibrated prediction (profile 'local'), measurement if asked."""
    import torch

    from ..hardware.local import local_profile
    from ..hardware.plausible import InvalidProfile, warn_set_aside

    model = None
    if getattr(hw, "id", None) == "local":
        try:
            prof = local_profile(auto_calibrate=False)
        except InvalidProfile as exc:  # set aside: no calibrated prediction, said once
            warn_set_aside(exc)
            prof = None
        model = prof.model if prof is not None else None
    pred = predict_steps(spec, prompt=prompt, gen=gen, batch=batch, hw=hw, model=model, dtype=dtype)
    notes = []
    if model is None:
        notes.append("no calibrated prediction: it needs this machine's profile (--hardware local)")
    elif pred.ttft_predicted_s is None:
        notes.append(f"no calibrated prediction at {dtype}: the calibration measured fp32")
    measured = None
    if measure:
        try:
            measured = measure_steps(spec, prompt=prompt, gen=gen, batch=batch, dtype=dtype)
        except UserInputError as exc:
            notes.append(str(exc))
    conditions = {"batch": batch, "prompt": prompt, "gen": gen, "dtype": dtype,
                  "threads": torch.get_num_threads(), "hardware": getattr(hw, "id", None)}
    return steps_section(pred, measured, "; ".join(notes) or None, conditions)
