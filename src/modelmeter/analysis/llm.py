"""The LLM inference view: prefill and decode, KV cache, tokens/s, what fits (layer 3).

Two stages, so one set of traces serves every hardware and precision question:

1. `fit_llm_costs` fits how each op's cost grows from a decoder's meta traces
   (`pipeline/llm_trace.py` traces them at `trace_points`, `llm_steps.py`
   costs each). Prefill of P tokens is traced at batch 1 and 2: every op is
   `a + b·B`. A decode step with L cached tokens is traced at
   batch 1 and 2 and at two cache lengths: every op is bilinear,
   `c0 + c1·B + c2·L + c3·B·L` (attention grows with L, the rest does not;
   both grow with B but the weights do not). A fifth decode trace at
   (B=3, a third L) checks the fit: `fit_max_rel_error` is its largest
   relative miss over FLOPs and each byte part. Nothing is assumed linear
   without that check.
2. `llm_estimate` costs each op on a `Hardware` with the roofline's conventions
   (`analysis/roofline.py`): ``t_compute = matrix FLOPs / matrix peak + vector
   FLOPs / vector rate``, ``t_memory = bytes / bandwidth``, step time = sum of
   per-op ``max(t_compute, t_memory)`` (no fusion, no overlap). Bytes are
   weights at `weights` (with block scales), KV cache at `kv_dtype`,
   activations as traced at `dtype`. A quantised `weights` (int8, int4, nf4,
   fp8) follows the weight-only layout (`count/quantization.py`): the blocks'
   linear weights at `weights`, the embedding, `lm_head` and norms at `dtype`;
   each op's weight reads take the bytes per element of the module it runs in.

Generation of G tokens: the prefill produces the first token (TTFT = prefill
time); G - 1 decode steps follow, at cache lengths L = P ... P + G - 2, each
per-op maximum summed exactly over that range. TPOT is their mean (for G = 1,
the step at L = P, which is reported but not spent); e2e = TTFT + (G - 1) x TPOT;
tokens/s = B x G / e2e in total, G / e2e per sequence.

Memory for batch B: weights + KV cache for P + G tokens per sequence +
the larger of the prefill and decode activation peaks (trace liveness, the
cache excluded). Every time here is an *estimate*; FLOPs, bytes and KV sizes
are *counted* from the traces.

Sliding window W (Mistral's config): transformers' `DynamicCache` keeps the
whole context, but window-aware runtimes (vLLM, transformers' own sliding
cache layers) keep W tokens and a decode step attends to W keys. So the
traces stay full-context (the fit is linear in L there) and the estimate caps
the cache length at L = W - 1 for decode steps and the cache at W tokens per
sequence for memory; prefill keeps the traced cost (SDPA computes the whole
P x P product and masks it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.attention import attention_setting
from ..core.errors import UserInputError
from ..core.events import ExpertGroup
from ..core.lists import parse_batch_sizes
from ..core.precision import (
    QuantLayout,
    WeightTensor,
    kept_precision,
    module_weights,
    param_size,
    parse_precision,
    precision_of_torch_dtype,
    quant_layout,
)
from ..count.moe import BALANCED, expected_touched
from ..formulas import decoder_dims, decoder_flops_per_token, kv_cache_bytes
from ..hardware import Hardware, get_hardware
from ..hardware.headroom import usable_memory_bytes
from .llm_steps import (
    ACT,
    EXPERT,
    FIELDS,
    KV_READ,
    KV_WRITE,
    MATMUL,
    VECTOR,
    WEIGHT,
    OpInfo,
    OpKey,
    StepCosts,
)
from .quant_activations import check_activations

__all__ = [
    "BatchFigures",
    "LLMCosts",
    "LLMResult",
    "PhaseFigures",
    "DecoderFacts",
    "llm_estimate",
    "llm_section",
    "fit_llm_costs",
    "parse_batches",
    "trace_points",
]

COMPUTE, MEMORY = "compute", "memory"
_SWEEP_LIMIT = 1 << 14
Vec = tuple[float, ...]


# ------------------------------------------------------------------ stage 1


@dataclass(frozen=True)
class LLMCosts:
    """Hardware-independent: per-op cost models fitted from the traces."""

    model: str
    config: dict[str, Any]
    dtype: str  # activation / compute precision the traces ran in
    prompt: int
    gen: int
    params: int
    info: dict[OpKey, OpInfo]
    prefill: dict[OpKey, tuple[Vec, Vec]]  # v(B) = a + b·B
    decode: dict[OpKey, tuple[Vec, Vec, Vec, Vec]]  # v(B, L) = c0 + c1·B + c2·L + c3·B·L
    kv_elems_per_token: float  # per sequence token, all layers, K and V (counted)
    prefill_peak: tuple[float, float]  # activation peak bytes = a + b·B
    decode_peak: tuple[float, float]
    fit_max_rel_error: float
    traces: int
    uncounted: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    # Keys one token attends to at most (the config's sliding window); None = whole context.
    sliding_window: int | None = None
    # Every parameter, classified for the weight-only layout of quantised `weights`.
    weights: tuple[WeightTensor, ...] = ()
    # Decoder layers the window applies to (gpt-oss alternates); None = every layer (Mistral).
    windowed_layers: tuple[int, ...] | None = None
    kv_elems_per_token_windowed: float = 0.0  # the part of kv_elems_per_token in windowed layers
    active_params: int | None = None  # what one token uses (routed experts: top_k of E)
    expert_groups: tuple[tuple[int, int], ...] = ()  # (experts, top_k) of each routed group
    attention: str = "flash"  # the SDPA kernel the traces assumed (trace/attention.py)

    @property
    def cache_cap(self) -> int | None:
        """Cached tokens a decode step reads at most: the window less the new token."""
        return self.sliding_window - 1 if self.sliding_window else None

    def cached_tokens(self, tokens: int) -> int:
        """Tokens per sequence a window-aware cache holds after `tokens` tokens (windowed layers)."""
        return min(tokens, self.sliding_window) if self.sliding_window else tokens

    def op_cap(self, key: OpKey) -> int | None:
        """The cache length one op's decode cost stops growing at, or None (full attention)."""
        if self.sliding_window is None:
            return None
        if self.windowed_layers is None or self.info[key].layer in self.windowed_layers:
            return self.cache_cap
        return None

    def kv_elems_per_sequence(self, tokens: int) -> float:
        """Cache elements one sequence holds after `tokens` tokens: windowed layers keep W."""
        windowed = self.kv_elems_per_token_windowed if self.sliding_window else 0.0
        return (self.kv_elems_per_token - windowed) * tokens + windowed * self.cached_tokens(tokens)

    def experts_touched(self, tokens: float) -> float:
        """Mean over routed groups of the expected distinct experts `tokens` tokens reach (balanced)."""
        if not self.expert_groups:
            return 0.0
        return sum(expected_touched(e, k, tokens) for e, k in self.expert_groups) / len(self.expert_groups)


@dataclass(frozen=True)
class DecoderFacts:
    """What the costing needs from the built decoder besides its traces (`pipeline/llm_trace.py`)."""

    name: str
    config: dict[str, Any]
    params: int  # tied parameters once
    active_params: int  # what one token uses (routed experts: top_k of E)
    weights: tuple[WeightTensor, ...]  # classified for the weight-only layout
    expert_groups: tuple[ExpertGroup, ...]
    attention: str  # the SDPA kernel the traces assumed


Point = tuple[int, int, int]  # (batch, new tokens per sequence, cached tokens before the step)


def trace_points(prompt: int, gen: int) -> tuple[Point, ...]:
    """The 7 steps `fit_llm_costs` fits: prefill at B = 1, 2; decode at B in {1, 2} x two
    cache lengths; the check at (B = 3, a third length)."""
    l1, l2 = prompt, prompt + max(gen, 2)
    return ((1, prompt, 0), (2, prompt, 0), *((b, 1, length) for b in (1, 2) for length in (l1, l2)),
            (3, 1, prompt + max(gen, 2) // 2 + 1))


def check_lengths(name: str, config: dict[str, Any], prompt: int, gen: int) -> None:
    """A model with learned positions cannot run past them (before any trace)."""
    dims = decoder_dims(config)
    if dims.learned_positions and prompt + gen > dims.learned_positions:
        raise UserInputError(
            f"{name} has learned positions for {dims.learned_positions} tokens; "
            f"prompt + gen = {prompt + gen}: lower `prompt` or `gen`", field=("prompt", "gen"))


def fit_llm_costs(decoder: DecoderFacts, steps: Mapping[Point, StepCosts], *, prompt: int, gen: int,
                  dtype: str) -> LLMCosts:
    """Fit the per-op cost models from the steps traced at `trace_points(prompt, gen)`."""
    config = decoder.config
    notes: list[str] = []
    window, windowed_layers = _sliding_window(config)
    if window is not None and prompt + gen > window:
        which = ("" if windowed_layers is None else
                 f" in its {len(windowed_layers)} sliding-window layers (the others attend to everything)")
        notes.append(
            f"sliding window of {window} tokens applied as window-aware runtimes do{which}: a decode step "
            f"attends to at most {window} keys and the KV cache holds at most {window} tokens per "
            "sequence; prefill attention is costed over the whole prompt, as SDPA computes it")
    groups = decoder.expert_groups
    if groups:
        notes.append(
            "routing: " + BALANCED + ": each token goes to top_k experts chosen uniformly; a step of T "
            "tokens reads the weights of E·(1 − (1 − k/E)^T) experts per MoE layer on average (batch 1 "
            "decode: k; large batches: nearly all E); routed-expert FLOPs do not depend on the routing")
    if config.get("kv_lora_rank"):
        notes.append(
            "multi-head latent attention: the KV cache holds the compressed latent (kv_lora_rank + "
            "qk_rope_head_dim per token and layer); attention is costed as transformers runs it, "
            "decompressing the cached latent through kv_b_proj every step (engines that absorb "
            "kv_b_proj into the query and output projections do fewer FLOPs at long contexts)")

    first, second, c11, c12, c21, c22, last = trace_points(prompt, gen)
    p1, p2, check = steps[first], steps[second], steps[last]
    l1, l2 = c11[2], c12[2]
    corners = {(b, length): steps[(b, 1, length)] for b in (1, 2) for length in (l1, l2)}
    check_b, check_l = last[0], last[2]

    keys = list(dict.fromkeys([*p1.ops, *p2.ops]))
    prefill = {k: _line(_get(p1, k), _get(p2, k)) for k in keys}
    dkeys = list(dict.fromkeys(k for s in (*corners.values(), check) for k in s.ops))
    decode = {k: _bilinear(*(_get(corners[c], k) for c in ((1, l1), (1, l2), (2, l1), (2, l2))), l1, l2)
              for k in dkeys}
    info = {**{k: s.info[k] for s in (p1, p2) for k in s.ops},
            **{k: s.info[k] for s in (*corners.values(), check) for k in s.ops}}
    fields = range(len(FIELDS))
    predicted = [sum(_at_decode(decode[k], check_b, check_l)[i] for k in dkeys) for i in fields]
    measured = [sum(v[i] for v in check.ops.values()) for i in fields]
    error = max((abs(p - m) / m for p, m in zip(predicted, measured, strict=True) if m), default=0.0)
    if error > 1e-3:
        notes.append(f"decode cost is not bilinear in (batch, cache length) for this model: the fit "
                     f"misses a check trace by {error:.1%}; figures between traced points are approximate")
    if p1.kv_elems_per_token != corners[(1, l1)].kv_elems_per_token:
        notes.append("prefill and decode append different KV sizes per token; decode's is used")
    uncounted = tuple(sorted({u for s in (p1, p2, *corners.values()) for u in s.uncounted}))
    return LLMCosts(
        model=decoder.name, config=config, dtype=dtype, prompt=prompt, gen=gen,
        params=decoder.params, info=info, prefill=prefill, decode=decode,
        kv_elems_per_token=corners[(1, l1)].kv_elems_per_token,
        prefill_peak=_line_scalar(p1.peak_activation_bytes, p2.peak_activation_bytes),
        decode_peak=_line_scalar(corners[(1, l2)].peak_activation_bytes,
                                 corners[(2, l2)].peak_activation_bytes),
        fit_max_rel_error=error, traces=len(steps), uncounted=uncounted, notes=tuple(notes),
        sliding_window=window, weights=decoder.weights, windowed_layers=windowed_layers,
        kv_elems_per_token_windowed=_windowed_kv(corners[(1, l1)], windowed_layers),
        active_params=decoder.active_params,
        expert_groups=tuple((g.experts, g.top_k) for g in groups),
        attention=decoder.attention,
    )


def _sliding_window(config: dict[str, Any]) -> tuple[int | None, tuple[int, ...] | None]:
    """(window, layers it applies to: None = all) from `sliding_window` and `layer_types`."""
    window = config.get("sliding_window")
    if not (isinstance(window, int) and not isinstance(window, bool) and window > 1):
        return None, None
    if config.get("use_sliding_window") is False:
        return None, None
    types = config.get("layer_types")
    if isinstance(types, list) and types:
        layers = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
        return (window, layers) if layers else (None, None)
    return window, None


def _windowed_kv(step: StepCosts, layers: tuple[int, ...] | None) -> float:
    """Cache elements per token appended in the windowed layers (all of them when None)."""
    if layers is None:
        return step.kv_elems_per_token
    chosen = sum(n for layer, n in step.kv_written_by_layer.items() if layer in layers)
    return chosen / (step.batch * step.new_tokens)


def _get(step: StepCosts, key: OpKey) -> Vec:
    return step.ops.get(key, (0.0,) * len(FIELDS))


def _line(v1: Vec, v2: Vec) -> tuple[Vec, Vec]:
    b = tuple(y - x for x, y in zip(v1, v2, strict=True))
    return tuple(x - s for x, s in zip(v1, b, strict=True)), b


def _line_scalar(y1: float, y2: float) -> tuple[float, float]:
    return y1 - (y2 - y1), y2 - y1


def _bilinear(v11: Vec, v12: Vec, v21: Vec, v22: Vec, l1: int, l2: int) -> tuple[Vec, Vec, Vec, Vec]:
    """Coefficients of c0 + c1·B + c2·L + c3·B·L through the corners B in {1, 2}, L in {l1, l2}."""
    d = l2 - l1
    c0, c1, c2, c3 = [], [], [], []
    for a, b, c, e in zip(v11, v12, v21, v22, strict=True):
        s1, s2 = (b - a) / d, (e - c) / d  # slope in L at B = 1 and B = 2
        i1, i2 = a - s1 * l1, c - s2 * l1  # intercept at L = 0
        c3.append(s2 - s1)
        c2.append(s1 - (s2 - s1))
        c1.append(i2 - i1)
        c0.append(i1 - (i2 - i1))
    return tuple(c0), tuple(c1), tuple(c2), tuple(c3)


def _at_decode(c: tuple[Vec, Vec, Vec, Vec], batch: int, length: float) -> Vec:
    return tuple(c0 + c1 * batch + (c2 + c3 * batch) * length
                 for c0, c1, c2, c3 in zip(*c, strict=True))


# ------------------------------------------------------------------ stage 2


@dataclass(frozen=True)
class PhaseFigures:
    """One step of a phase (decode: the mean over the generated tokens)."""

    flops: float  # matrix + vector
    weight_bytes: float
    kv_bytes: float  # cache read + written
    activation_bytes: float
    t_compute_s: float
    t_memory_s: float
    time_s: float  # sum of per-op max(t_compute, t_memory)

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes + self.activation_bytes

    @property
    def bound(self) -> str:
        return MEMORY if self.t_memory_s > self.t_compute_s else COMPUTE

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else math.inf


@dataclass(frozen=True)
class BatchFigures:
    batch: int
    prefill: PhaseFigures
    decode: PhaseFigures
    ttft_s: float
    tpot_s: float
    e2e_s: float
    tokens_per_s: float  # all sequences, generated tokens over e2e
    tokens_per_s_per_seq: float
    decode_tokens_per_s: float  # batch / TPOT: the steady decode rate
    kv_cache_bytes: float  # prompt + gen tokens for every sequence
    activation_bytes: float  # peak, prefill or decode
    memory_bytes: float  # weights + KV cache + activations
    fits: bool | None  # None: the device's memory is unknown
    # MoE: expected distinct routed experts one decode step reads per MoE layer (None: dense).
    experts_read_per_layer: float | None = None


@dataclass(frozen=True)
class LLMResult:
    costs: LLMCosts
    hardware: Hardware
    weights: str
    kv_dtype: str
    peak_flops: float
    vector_flops: float
    bandwidth_bytes_per_s: float
    weight_bytes: float
    kv_cache_bytes_per_token: float  # counted from the traces, at kv_dtype
    kv_cache_bytes_per_token_closed_form: float
    batches: tuple[BatchFigures, ...]
    max_batch: int | None  # None: memory unknown; 0: the weights alone do not fit
    sweep: tuple[BatchFigures, ...]  # powers of two for the plot
    notes: tuple[str, ...]
    # The weight-only layout behind weight_bytes when `weights` is quantised.
    quantization: QuantLayout | None = None
    activations: str = ""  # precision of activation bytes and matrix products ('' = the traced dtype)


class _Coster:
    """Per-op time of cost vectors at one hardware and precision setting."""

    def __init__(self, costs: LLMCosts, hw: Hardware, weights: str, kv_dtype: str,
                 activations: str | None = None) -> None:
        self.hw = hw
        # Quantised activations (analysis/quant_activations.py): matrix products of the
        # model-precision ops at that precision's peak, activation bytes at its width.
        self.matrix = activations or costs.dtype
        self.act_scale = (parse_precision(activations).bits / parse_precision(costs.dtype).bits
                          if activations else 1.0)
        self.bw = hw.memory_bandwidth_bytes_per_s
        if self.bw <= 0:
            raise UserInputError(f"{hw.id} has no memory bandwidth figure")
        self.dtype = costs.dtype
        n = max(costs.params, 1)
        self.weight_b = param_size(n, weights).total_bytes / n  # block scales included
        # Weight-only layout: bytes per weight element of the module each op runs in
        # (a module owning no parameters reads kept tensors: a tied head, rotary buffers).
        self.weight_b_of: dict[OpKey, float] = {}
        p = parse_precision(weights)
        if p.quantised and costs.weights:
            keep = kept_precision(parse_precision(costs.dtype))
            owned = module_weights(costs.weights, p, kept=keep)
            self.weight_b_of = {
                k: owned[i.module].bytes_per_element if i.module in owned else keep.bits / 8
                for k, i in costs.info.items()
            }
        self.kv_b = parse_precision(kv_dtype).bits / 8
        self.rates: dict[tuple[str, str], float] = {}
        self.prec = {k: self._precision(i.dtype) for k, i in costs.info.items()}
        self.memory_only = {k: i.memory_only for k, i in costs.info.items()}
        self.groups = {k: (i.experts, i.top_k) for k, i in costs.info.items() if i.experts}

    def expert_share(self, key: OpKey, tokens: float) -> float:
        """Share of a routed group's weights a step of `tokens` tokens reads (balanced routing)."""
        if key not in self.groups:
            return 1.0
        experts, top_k = self.groups[key]
        return expected_touched(experts, top_k, tokens) / experts

    def _precision(self, dtype: str) -> str:
        # Ops upcast on purpose (fp32 rotary/softmax in an fp16 model) keep their precision.
        if dtype.startswith(("float", "bfloat", "half")):
            own = precision_of_torch_dtype(dtype).name
            if own != self.dtype:
                return own
        return self.dtype

    def rate(self, prec: str, op_class: str) -> float:
        key = (prec, op_class)
        if key not in self.rates:
            self.rates[key] = self.hw.peak_flops_for(prec, op_class)
        return self.rates[key]

    def times(self, key: OpKey, v: Vec, tokens: float) -> tuple[float, float]:
        """(t_compute, t_memory) of a cost vector for a step of `tokens` tokens.

        Linear in the vector, so it maps lines in L to lines (the expert share is fixed by tokens).
        """
        t_c = 0.0
        if not self.memory_only[key]:
            prec = self.prec[key]
            if v[MATMUL]:
                t_c += v[MATMUL] / self.rate(self.matrix if prec == self.dtype else prec, "matmul")
            if v[VECTOR]:
                t_c += v[VECTOR] / self.rate(prec, "vector")
        return t_c, self.bytes(key, v, self.expert_share(key, tokens)) / self.bw

    def weight_bytes(self, key: OpKey, v: Vec, share: float) -> float:
        """Weight bytes one step reads: dense weights plus the touched share of routed experts,
        each at its own stored width (quantised or kept 16-bit)."""
        return (v[WEIGHT] + v[EXPERT] * share) * self.weight_b_of.get(key, self.weight_b)

    def bytes(self, key: OpKey, v: Vec, share: float) -> float:
        return self.weight_bytes(key, v, share) + (v[KV_READ] + v[KV_WRITE]) * self.kv_b + v[ACT] * self.act_scale

    def phase(self, vectors: dict[OpKey, Vec], tokens: float, time_s: float | None = None,
              t_c: float | None = None, t_m: float | None = None) -> PhaseFigures:
        tc = tm = total = 0.0
        flops = w = kv = act = 0.0
        for key, v in vectors.items():
            c, m = self.times(key, v, tokens)
            tc, tm, total = tc + c, tm + m, total + max(c, m)
            flops += v[MATMUL] + v[VECTOR]
            w += self.weight_bytes(key, v, self.expert_share(key, tokens))
            kv += (v[KV_READ] + v[KV_WRITE]) * self.kv_b
            act += v[ACT] * self.act_scale
        return PhaseFigures(flops, w, kv, act, tc if t_c is None else t_c, tm if t_m is None else t_m,
                            total if time_s is None else time_s)


def _sum_linear(a: float, b: float, start: int, n: int) -> float:
    """sum of a + b·L for L = start ... start + n - 1."""
    return n * a + b * (n * start + n * (n - 1) / 2)


def _sum_max(a1: float, b1: float, a2: float, b2: float, start: int, n: int) -> float:
    """sum of max(a1 + b1·L, a2 + b2·L) for L = start ... start + n - 1, exactly."""
    if n <= 0:
        return 0.0
    if b1 == b2:
        return _sum_linear(max(a1, a2), b1, start, n)
    if b1 < b2:  # let line 1 be the steeper: it wins for L >= the crossing
        a1, b1, a2, b2 = a2, b2, a1, b1
    crossing = (a2 - a1) / (b1 - b2)
    if not math.isfinite(crossing):  # slopes differing by a denormal: the lines never cross here
        k = n if crossing > 0 else 0
    else:
        k = min(max(math.ceil(crossing) - start, 0), n)  # steps where line 2 wins
    return _sum_linear(a2, b2, start, k) + _sum_linear(a1, b1, start + k, n - k)


def _figures(costs: LLMCosts, coster: _Coster, batch: int, memory: float | None,
             weight_bytes: float, kv_b: float) -> BatchFigures:
    p = costs.prompt
    prefill_vecs = {k: tuple(a + b * batch for a, b in zip(*line, strict=True))
                    for k, line in costs.prefill.items()}
    prefill = coster.phase(prefill_vecs, tokens=batch * p)
    steps = costs.gen - 1
    n = max(steps, 1)  # G = 1: report the one step at L = P, spend none
    decode_vecs = {}
    total = tc_sum = tm_sum = 0.0
    for key, c in costs.decode.items():
        # Steps at L = P ... P + n - 1; in a sliding-window layer L stops growing at the cap:
        # `grow` steps on the line, then `flat` steps at L = cap.
        cap = costs.op_cap(key)
        grow = n if cap is None else min(n, max(cap - p, 0))
        flat = n - grow
        decode_vecs[key] = _at_decode(c, batch, (_sum_linear(0, 1, p, grow) + flat * (cap or 0)) / n)
        # Each op's cost is a line in L at this batch (one token per sequence): intercept and slope.
        lo = coster.times(key, _at_decode(c, batch, 0), batch)
        hi = coster.times(key, _at_decode(c, batch, 1), batch)
        (ca, cb), (ma, mb) = (lo[0], hi[0] - lo[0]), (lo[1], hi[1] - lo[1])
        total += _sum_max(ca, cb, ma, mb, p, grow)
        tc_sum += _sum_linear(ca, cb, p, grow)
        tm_sum += _sum_linear(ma, mb, p, grow)
        if flat:
            at_cap = (ca + cb * cap, ma + mb * cap)  # type: ignore[operator]
            total += flat * max(at_cap)
            tc_sum += flat * at_cap[0]
            tm_sum += flat * at_cap[1]
    decode = coster.phase(decode_vecs, tokens=batch, time_s=total / n, t_c=tc_sum / n, t_m=tm_sum / n)
    ttft, tpot = prefill.time_s, decode.time_s
    e2e = ttft + steps * tpot
    kv_total = batch * costs.kv_elems_per_sequence(p + costs.gen) * kv_b
    act = max(_line_at(costs.prefill_peak, batch), _line_at(costs.decode_peak, batch))
    need = weight_bytes + kv_total + act
    return BatchFigures(
        batch=batch, prefill=prefill, decode=decode, ttft_s=ttft, tpot_s=tpot, e2e_s=e2e,
        tokens_per_s=batch * costs.gen / e2e, tokens_per_s_per_seq=costs.gen / e2e,
        decode_tokens_per_s=batch / tpot, kv_cache_bytes=kv_total, activation_bytes=act,
        memory_bytes=need, fits=None if memory is None else need <= memory,
        experts_read_per_layer=costs.experts_touched(batch) if costs.expert_groups else None,
    )


def _line_at(line: tuple[float, float], batch: int) -> float:
    return line[0] + line[1] * batch


def _max_batch(costs: LLMCosts, memory: float, weight_bytes: float, kv_per_seq: float) -> int:
    """Largest B with weights + B x KV per sequence + activation peak(B) <= memory."""
    free = memory - weight_bytes
    best = None
    for a, b in (costs.prefill_peak, costs.decode_peak):
        per = kv_per_seq + b
        bound = math.floor((free - a) / per) if per > 0 else _SWEEP_LIMIT
        best = bound if best is None else min(best, bound)
    return max(int(best or 0), 0)


def llm_estimate(
    costs: LLMCosts,
    hardware: Hardware | str,
    *,
    batches: tuple[int, ...] | list[int] = (1,),
    weights: str | None = None,
    kv_dtype: str | None = None,
    max_batch: bool = False,
    activations: str | None = None,
) -> LLMResult:
    """Cost the traced steps on `hardware` for each batch size (see the module docstring).

    `weights`/`kv_dtype` default to the traced dtype. `max_batch=True` adds the
    largest batch that fits the device's memory to the batches reported.
    """
    hw = get_hardware(hardware) if isinstance(hardware, str) else hardware
    act = check_activations(hw, activations)
    # With quantised activations, weights and KV cache default to their precision (W8A8, fp8).
    weights = parse_precision(weights).name if weights else act.name if act else costs.dtype
    kv_dtype = parse_precision(kv_dtype).name if kv_dtype else act.name if act else costs.dtype
    wanted = parse_batches(batches)
    coster = _Coster(costs, hw, weights, kv_dtype, act.name if act else None)
    peak = coster.rate(coster.matrix, "matmul")
    vector = coster.rate(costs.dtype, "vector")
    layout = None
    if parse_precision(weights).quantised and costs.weights:
        layout = quant_layout(costs.weights, weights, kept=kept_precision(parse_precision(costs.dtype)))
    weight_bytes = layout.total_bytes if layout else param_size(costs.params, weights).total_bytes
    kv_per_token = costs.kv_elems_per_token * coster.kv_b
    closed = kv_cache_bytes(costs.config, 1, coster.kv_b)
    memory = usable_memory_bytes(hw)  # less the runtime's headroom (hardware/headroom.py)
    notes = list(costs.notes)
    limit: int | None = None
    if memory is None:
        notes.append(f"{hw.id} has no memory size in the database: fit and max batch unknown")
    else:
        limit = _max_batch(costs, memory, weight_bytes,
                           costs.kv_elems_per_sequence(costs.prompt + costs.gen) * coster.kv_b)
        if weight_bytes > memory:
            notes.append(
                f"the weights alone ({weight_bytes / 1e9:.1f} GB at {weights}) exceed the "
                f"{memory / 1e9:.1f} GB usable on {hw.id}: nothing fits on one device; figures assume it did"
            )
        elif limit == 0:
            notes.append(f"not even batch 1 fits {hw.id}'s memory with its KV cache and activations")
    if max_batch and limit:
        wanted = tuple(dict.fromkeys([*wanted, limit]))
    if costs.uncounted:
        notes.append(f"ops without a formula, costed by memory only: {', '.join(costs.uncounted)}")
    rows = tuple(_figures(costs, coster, b, memory, weight_bytes, coster.kv_b) for b in wanted)
    top = max([*wanted, limit or 1, 1])
    sweep_sizes = [1 << i for i in range(15) if 1 << i <= min(2 * top, _SWEEP_LIMIT)]
    sweep = tuple(_figures(costs, coster, b, memory, weight_bytes, coster.kv_b) for b in sweep_sizes)
    return LLMResult(
        costs=costs, hardware=hw, weights=weights, kv_dtype=kv_dtype, peak_flops=peak,
        vector_flops=vector, bandwidth_bytes_per_s=coster.bw, weight_bytes=weight_bytes,
        kv_cache_bytes_per_token=kv_per_token, kv_cache_bytes_per_token_closed_form=closed,
        batches=rows, max_batch=limit, sweep=sweep, notes=tuple(dict.fromkeys(notes)),
        quantization=layout, activations=act.name if act else costs.dtype,
    )


def parse_batches(batches: Any) -> tuple[int, ...]:
    """'1,8,32' or a sequence of ints -> distinct positive batch sizes, in order (`core.lists`)."""
    return parse_batch_sizes(batches)


# ------------------------------------------------------------------- JSON


def _phase_dict(p: PhaseFigures) -> dict[str, Any]:
    return {"flops": p.flops, "bytes": p.bytes, "weight_bytes": p.weight_bytes, "kv_bytes": p.kv_bytes,
            "activation_bytes": p.activation_bytes, "intensity": p.intensity,
            "t_compute_s": p.t_compute_s, "t_memory_s": p.t_memory_s, "time_s": p.time_s,
            "bound": p.bound}


def _batch_dict(b: BatchFigures) -> dict[str, Any]:
    return {"batch": b.batch, "prefill": _phase_dict(b.prefill), "decode": _phase_dict(b.decode),
            "ttft_s": b.ttft_s, "tpot_s": b.tpot_s, "e2e_s": b.e2e_s, "tokens_per_s": b.tokens_per_s,
            "tokens_per_s_per_seq": b.tokens_per_s_per_seq, "decode_tokens_per_s": b.decode_tokens_per_s,
            "kv_cache_bytes": b.kv_cache_bytes, "activation_bytes": b.activation_bytes,
            "memory_bytes": b.memory_bytes, "fits": b.fits,
            **({"experts_read_per_layer": b.experts_read_per_layer}
               if b.experts_read_per_layer is not None else {})}


def _moe_settings(c: LLMCosts) -> dict[str, Any]:
    """Routing and expert counts of a mixture-of-experts model (nothing for a dense one)."""
    if not c.expert_groups:
        return {}
    experts, top_k = c.expert_groups[0]
    return {"routing": BALANCED, "experts": experts, "top_k": top_k, "moe_layers": len(c.expert_groups)}


def llm_section(result: LLMResult) -> dict[str, Any]:
    """The report's `llm` section (base units). Top-level phase figures are the first batch's."""
    c, hw = result.costs, result.hardware
    first = result.batches[0]
    return {
        "model": c.model,
        "hardware": hw.id,
        "hardware_detail": {
            "name": hw.name, "source": hw.source, "memory_bytes": hw.memory_bytes,
            "memory_bandwidth_bytes_per_s": result.bandwidth_bytes_per_s,
            "peak_flops": result.peak_flops, "vector_flops": result.vector_flops,
        },
        "settings": {"prompt": c.prompt, "gen": c.gen, "batches": [b.batch for b in result.batches],
                     "dtype": c.dtype, "weights": result.weights, "kv_dtype": result.kv_dtype,
                     "activations": result.activations or c.dtype,
                     "attention": attention_setting(None if c.attention == "flash" else c.attention,
                                                    c.attention),
                     "sliding_window": c.sliding_window,
                     **({"sliding_window_layers": list(c.windowed_layers)}
                        if c.sliding_window and c.windowed_layers is not None else {}),
                     **_moe_settings(c)},
        "params": c.params,
        "active_params": c.active_params if c.active_params is not None else c.params,
        "weight_bytes": result.weight_bytes,
        **({"weight_bytes_naive": result.quantization.naive_bytes,
            "quantization": result.quantization.to_dict()} if result.quantization else {}),
        "kv_cache_bytes_per_token": result.kv_cache_bytes_per_token,
        "kv_cache_bytes_per_token_closed_form": result.kv_cache_bytes_per_token_closed_form,
        "closed_form_decode_flops_per_token": decoder_flops_per_token(c.config, c.prompt + 1),
        "max_batch": result.max_batch,
        "prefill": _phase_dict(first.prefill),
        "decode": _phase_dict(first.decode),
        "ttft_s": first.ttft_s,
        "tpot_s": first.tpot_s,
        "e2e_s": first.e2e_s,
        "tokens_per_s": first.tokens_per_s,
        "batches": [_batch_dict(b) for b in result.batches],
        "sweep": [{"batch": b.batch, "tokens_per_s": b.tokens_per_s, "tpot_s": b.tpot_s,
                   "memory_bytes": b.memory_bytes, "fits": b.fits,
            **({"experts_read_per_layer": b.experts_read_per_layer}
               if b.experts_read_per_layer is not None else {})} for b in result.sweep],
        "fit": {"traces": c.traces, "decode_max_rel_error": c.fit_max_rel_error},
        "notes": list(result.notes),
        "method": ("FLOPs, bytes and KV sizes counted from meta traces of prefill and decode "
                   "(decode fitted bilinear in batch and cache length, checked by a fifth trace); "
                   "times estimated: roofline, per op max(matrix FLOPs/peak + vector FLOPs/rate, "
                   "bytes/bandwidth), summed; KV cache appended in place and read once per step"),
    }
