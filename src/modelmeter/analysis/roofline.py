"""Roofline latency model: predicted time per op, per module and for the model (layer 3).

Pure functions over `Counts` (layer 1) and a `Hardware` record (layer 2); no
tracing, no torch, nothing printed. Every figure here is an *estimate*.

Per op (see SEED-ERRATA point 5 for the seed's corrected model):

* ``t_compute = 2 x MACs / matrix peak + other FLOPs / vector rate``: matmuls,
  convolutions and attention products run on the matrix (tensor) units at the
  op's compute precision; elementwise, normalisation, softmax and reduction
  arithmetic runs on the vector units, which are far slower on GPUs (H100: 67
  vs 989 TFLOP/s for fp16), so one rate for both would hide softmax/norm cost.
* ``t_memory = (bytes read + bytes written) / memory bandwidth``, unfused: each
  op reads its inputs and writes its outputs once (the counts' convention).
* ``latency = max(t_compute, t_memory)``; the op is memory-bound when
  ``t_memory > t_compute``. Data ops (copies, gathers) have memory time only,
  views have neither, uncounted ops have memory time only and are flagged.
  Work with neither time (a view; modules like Flatten or Identity made of
  views) is bound by nothing: ``bound`` is ``'none'``, not ``'compute'``.

Precisions. The compute precision of an op is ``dtype`` when given, else its
traced dtype (float32 -> the 'fp32' peak). On GPUs with tensor cores fp32
matmul is costed at the fp32 (CUDA-core) rate, not tf32, because PyTorch
leaves TF32 off for fp32 matmul by default; pass ``dtype='tf32'`` for the
tensor-core rate. Ops traced at a different float dtype than the model
(fp32 norms or rotary tables inside an fp16 model) were upcast on purpose and
keep their own precision and bytes. Parameter bytes follow ``weights``
(int8, int4, nf4 with its block scales, fp8, ...; default ``dtype``, else as
traced): only ``OpCount.param_bytes_read`` is rescaled, by target bits over the
traced bits. A quantised ``weights`` follows the weight-only layout
(``count/quantization.py``): an op's parameter reads are rescaled by its
module's factor, so linear/conv weights shrink while embeddings, the output
head, norms and biases stay at the compute precision (16-bit for fp8 compute). Activation bytes are rescaled by the target itemsize over the
traced itemsize when ``dtype`` differs from the traced model dtype.

Totals:

* ``latency_s`` — sum of per-op maxima: no fusion, no overlap between ops;
* ``latency_module_s`` — the seed's module-level figure: per leaf module (or
  module at a depth) ``max(FLOPs / peak, (params + input + output) / bandwidth)``;
* ``latency_fused_s`` — ``max(total compute time, unavoidable bytes / bandwidth)``
  with unavoidable bytes = parameters read (at ``weights``) + buffers + model inputs
  + outputs: perfect fusion, the lower bound.

``efficiency`` (off by default) derates the matrix peak, e.g. by the MAMF
fraction (max achievable matmul FLOP/s over datasheet peak) from the hardware
database; ``efficiency='mamf'`` looks that fraction up.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import UserInputError
from ..core.precision import (
    ModuleWeights,
    Precision,
    QuantLayout,
    kept_precision,
    module_weights,
    param_size,
    parse_precision,
    precision_of_torch_dtype,
    quant_layout,
)
from ..core.results import Counts, ModuleCounts, OpCount
from ..count.engine import ancestors
from ..hardware import Hardware, mamf_efficiency
from .quant_activations import check_activations, default_weights

__all__ = [
    "LayerTime",
    "ModuleTime",
    "OpTime",
    "RooflineResult",
    "bound_of",
    "check_precisions",
    "roofline",
    "roofline_section",
]

COMPUTE, MEMORY, NO_WORK = "compute", "memory", "none"
_FLOAT_PREFIXES = ("float", "bfloat", "half", "double")


def bound_of(t_compute_s: float, t_memory_s: float) -> str:
    """'memory' or 'compute', whichever takes longer; 'none' when neither takes any time."""
    if t_compute_s <= 0 and t_memory_s <= 0:
        return NO_WORK  # a view computes and moves nothing: calling it compute-bound misleads
    return MEMORY if t_memory_s > t_compute_s else COMPUTE


@dataclass(frozen=True, slots=True)
class OpTime:
    """One op's predicted cost."""

    index: int
    op: str
    module: str
    category: str
    precision: str  # compute precision it was costed at
    flops: int  # 2 x MACs (matrix work)
    other_flops: int  # vector work
    bytes: float  # read + written, after precision rescaling
    param_bytes: float  # the parameter part of `bytes`
    t_compute_s: float
    t_memory_s: float
    flagged: bool = False  # uncounted op: its arithmetic is missing from t_compute

    @property
    def latency_s(self) -> float:
        return max(self.t_compute_s, self.t_memory_s)

    @property
    def bound(self) -> str:
        return bound_of(self.t_compute_s, self.t_memory_s)

    @property
    def intensity(self) -> float:
        """FLOP per byte moved (inf when nothing moves)."""
        work = self.flops + self.other_flops
        return work / self.bytes if self.bytes else float("inf")


@dataclass(frozen=True, slots=True)
class _Times:
    flops: float = 0.0  # matrix + vector FLOPs
    bytes: float = 0.0
    t_compute_s: float = 0.0
    t_memory_s: float = 0.0
    latency_s: float = 0.0  # sum of op maxima

    @property
    def bound(self) -> str:
        return bound_of(self.t_compute_s, self.t_memory_s)

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")


@dataclass(frozen=True, slots=True)
class ModuleTime(_Times):
    """One module, inclusive of its submodules: sums over its ops."""

    path: str = ""
    type: str = ""
    depth: int = 0


@dataclass(frozen=True, slots=True)
class LayerTime(_Times):
    """One unit of the seed's module-level figure (a leaf module, or ops owned by a parent)."""

    path: str = ""
    type: str = ""
    kind: str = "module"  # 'module': seed bytes; 'own ops': a parent's own ops, unfused bytes
    seed_latency_s: float = 0.0  # max(t_compute, seed bytes / bandwidth)


@dataclass(frozen=True)
class RooflineResult:
    hardware: Hardware
    phase: str
    precision: str  # compute precision of the model (matrix peak key)
    activations: str  # precision activations are costed at
    weights: str  # precision parameter bytes are costed at
    efficiency: float | None
    peak_flops: float  # matrix peak at `precision`, after efficiency
    vector_flops: float
    bandwidth_bytes_per_s: float
    ridge_point: float  # FLOP/byte where matmul turns compute-bound (peak / bandwidth)
    latency_s: float
    latency_module_s: float
    latency_fused_s: float
    t_compute_s: float
    t_memory_s: float
    flops: float  # matrix + vector FLOPs
    bytes: float  # unfused, after rescaling
    unavoidable_bytes: float
    ops: tuple[OpTime, ...]
    modules: tuple[ModuleTime, ...]
    layers: tuple[LayerTime, ...]
    uncounted_ops: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())
    # The weight-only layout when `weights` is quantised (None otherwise).
    quantization: QuantLayout | None = None

    @property
    def bound(self) -> str:
        return bound_of(self.t_compute_s, self.t_memory_s)

    def top(self, bound: str, n: int = 5) -> list[LayerTime]:
        """The `n` layers bound by `bound` ('memory'|'compute') that take longest."""
        rows = [r for r in self.layers if r.bound == bound and r.latency_s > 0]
        return sorted(rows, key=lambda r: -r.latency_s)[:n]


# ------------------------------------------------------------------ precisions


def _bits(p: Precision) -> float:
    """Storage bits per element including block scales (nf4: 4 + 32/64)."""
    n = 1 << 20
    return param_size(n, p).total_bytes * 8 / n


def _is_float(dtype: str) -> bool:
    return dtype.replace("torch.", "").startswith(_FLOAT_PREFIXES)


def _model_dtype(counts: Counts, phase: str) -> str:
    """The traced dtype of the model: the one most parameter bytes (else MACs) were read in."""
    weight: dict[str, float] = defaultdict(float)
    for o in counts.ops:
        if o.phase == phase and _is_float(o.dtype):
            weight[o.dtype] += o.param_bytes_read or o.macs * 1e-9
    return max(weight, key=lambda k: weight[k]) if weight else "float32"


def check_precisions(hw: Hardware, dtype: str | None, weights: str | None = None, *,
                     weights_option: bool = True) -> None:
    """Fail fast (before a trace) when `hw` has no matrix peak for the compute precision.

    For a quantised `dtype` the message points at weight-only quantisation: `--weights`
    when the command has that option (`weights_option`: roofline, llm, plan), else the
    commands that do (report, compare and bench have none; a hint must not name it).
    """
    if weights is not None:
        parse_precision(weights)
    if dtype is None:
        return
    p = parse_precision(dtype)
    try:
        hw.peak_flops_for(p.name, "matmul")
    except UserInputError as exc:
        hint = ""
        if (not p.is_float or p.name == "fp8") and weights_option:
            hint = f" (for weight-only quantisation keep --dtype fp16/bf16 and pass --weights {p.name})"
        elif not p.is_float or p.name == "fp8":
            hint = (f" (weight-only {p.name} is a what-if of `modelmeter roofline MODEL --dtype fp16 "
                    f"--weights {p.name}` and of `modelmeter llm`)")
        raise UserInputError(f"{exc}{hint}") from exc


def _efficiency(hw: Hardware, precision: str, efficiency: float | str | None) -> float | None:
    if efficiency is None:
        return None
    if efficiency == "mamf":
        rows = mamf_efficiency()["by_precision"].get(precision, {})
        if hw.id not in rows:
            have = ", ".join(sorted({d for r in mamf_efficiency()["by_precision"].values() for d in r}))
            raise UserInputError(
                f"no measured MAMF efficiency for {hw.id} at {precision}; measured devices: {have}; "
                "pass a number in (0, 1] instead"
            )
        return float(rows[hw.id]["fraction_of_peak"])
    value = float(efficiency)
    if not 0 < value <= 1:
        raise UserInputError(f"efficiency must be in (0, 1], got {efficiency}")
    return value


# -------------------------------------------------------------------- the model


def roofline(
    counts: Counts,
    hw: Hardware,
    *,
    dtype: str | None = None,
    weights: str | None = None,
    phase: str = "forward",
    efficiency: float | str | None = None,
    input_bytes: float | None = None,
    module_depth: int | None = None,
    activations: str | None = None,
) -> RooflineResult:
    """Predict latency of one `phase` of `counts` on `hw` (see the module docstring).

    `input_bytes`: bytes of the model's inputs for the fused bound (the root
    module's recorded input bytes when None; kwargs inputs may be missing there).
    `module_depth`: the units of `latency_module_s` are the modules at that depth
    (and shallower leaves) instead of the leaf modules.
    """
    act = check_activations(hw, activations)
    weights = default_weights(act, weights)
    check_precisions(hw, dtype, weights)
    if hw.memory_bandwidth_bytes_per_s <= 0:
        raise UserInputError(f"{hw.id} has no memory bandwidth figure")
    bw = hw.memory_bandwidth_bytes_per_s
    model_dtype = _model_dtype(counts, phase)
    traced = precision_of_torch_dtype(model_dtype)
    compute = parse_precision(dtype) if dtype is not None else traced
    w_prec = parse_precision(weights) if weights is not None else compute
    # Quantised activations (analysis/quant_activations.py): matrix products at their peak.
    matrix = act or compute
    eff = _efficiency(hw, matrix.name, efficiency)
    notes: list[str] = []

    rates: dict[tuple[str, str], float] = {}

    def rate(prec: str, op_class: str) -> float:
        key = (prec, op_class)
        if key not in rates:
            try:
                r = hw.peak_flops_for(prec, op_class)
            except UserInputError:
                if prec in (compute.name, matrix.name):
                    raise
                # An upcast op (fp32 norm in a bf16 model) on a device with no such
                # rate (TPU): cost it at the model's precision, and say so.
                notes.append(f"{hw.id} has no {op_class} rate for {prec}; those ops costed at {compute.name}")
                r = hw.peak_flops_for(compute.name, op_class)
            if op_class == "matmul" and eff is not None:
                r *= eff
            rates[key] = r
        return rates[key]

    peak = rate(matrix.name, "matmul")
    vector = rate(compute.name, "vector")
    act_scale = (compute.bits / traced.bits) if dtype is not None else 1.0
    if act is not None:
        act_scale = act.bits / traced.bits
    # A quantised weights precision: the weight-only layout (hand-made counts without
    # their parameters fall back to every parameter at that precision).
    layout: QuantLayout | None = None
    owned: dict[str, ModuleWeights] | None = None
    keep = kept_precision(compute)
    if w_prec.quantised and counts.weights:
        layout = quant_layout(counts.weights, w_prec, kept=keep)
        owned = module_weights(counts.weights, w_prec, kept=keep)

    ops: list[OpTime] = []
    for o in counts.ops:
        if o.phase != phase:
            continue
        scale = None
        if owned is not None:
            mw = owned.get(o.module)
            own_bits = precision_of_torch_dtype(o.dtype).bits if _is_float(o.dtype) else None
            scale = mw.scale if mw else (keep.bits / own_bits if own_bits else 1.0)
        ops.append(_op_time(o, model_dtype, compute, w_prec, act_scale, bw, rate, scale, matrix))
    if not ops and counts.ops:
        raise UserInputError(f"no {phase!r} ops in these counts; trace with backward=True for 'backward'")

    modules = _module_times(counts.modules, ops)
    layers = _layers(counts.modules, ops, compute, w_prec,
                     dtype is not None or weights is not None,
                     act_scale, bw, module_depth, _inclusive(owned) if owned is not None else None)

    root = next((m for m in counts.modules if m.path == ""), None)
    t = counts.totals
    # Weights the pass never reads (an embedding table beyond the gathered rows) are avoidable.
    read_traced = sum(o.param_bytes_read for o in counts.ops if o.phase == phase)
    if layout is not None:
        param_bytes = min(layout.total_bytes, sum(x.param_bytes for x in ops))
    else:
        param_bytes = param_size(t.params, w_prec).total_bytes if (weights or dtype) else t.param_bytes
        if t.params:
            param_bytes *= min(1.0, read_traced / (t.params * traced.bits / 8))
    io = (input_bytes if input_bytes is not None else (root.input_bytes if root else 0))
    io += root.output_bytes if root else 0
    unavoidable = param_bytes + t.buffer_bytes + io * act_scale
    t_compute = sum(x.t_compute_s for x in ops)
    t_memory = sum(x.t_memory_s for x in ops)
    uncounted = tuple(sorted({x.op for x in ops if x.flagged}))
    if uncounted:
        notes.append(f"{len(uncounted)} op kind(s) without a formula costed by memory only: {', '.join(uncounted)}")
    return RooflineResult(
        hardware=hw, phase=phase, precision=matrix.name,
        activations=act.name if act is not None else compute.name if dtype is not None else traced.name,
        weights=w_prec.name,
        efficiency=eff, peak_flops=peak, vector_flops=vector, bandwidth_bytes_per_s=bw,
        ridge_point=peak / bw,
        latency_s=sum(x.latency_s for x in ops),
        latency_module_s=sum(x.seed_latency_s for x in layers),
        latency_fused_s=max(t_compute, unavoidable / bw),
        t_compute_s=t_compute, t_memory_s=t_memory,
        flops=sum(x.flops + x.other_flops for x in ops), bytes=sum(x.bytes for x in ops),
        unavoidable_bytes=unavoidable, ops=tuple(ops), modules=modules, layers=layers,
        uncounted_ops=uncounted, notes=tuple(dict.fromkeys(notes)), quantization=layout,
    )


def _inclusive(owned: dict[str, ModuleWeights]) -> dict[str, float]:
    """Module path -> parameter bytes of it and its submodules under the layout."""
    out: dict[str, float] = defaultdict(float)
    for path, mw in owned.items():
        for anc in ancestors(path):
            out[anc] += mw.bytes
    return out


def _op_time(o: OpCount, model_dtype: str, compute: Precision, weights: Precision,
             act_scale: float, bw: float, rate: Any, weight_scale: float | None = None,
             matrix: Precision | None = None) -> OpTime:
    at_model = o.dtype == model_dtype or not _is_float(o.dtype)
    prec = compute.name if at_model else precision_of_torch_dtype(o.dtype).name
    # Matrix products at the model's precision run at `matrix` (quantised activations).
    matrix_prec = (matrix or compute).name if at_model else prec
    if o.category == "view":
        return OpTime(o.index, o.op, o.module, o.category, prec, 0, 0, 0.0, 0.0, 0.0, 0.0)
    own_bits = precision_of_torch_dtype(o.dtype).bits if _is_float(o.dtype) else None
    params = float(o.param_bytes_read)
    if weight_scale is not None:
        params *= weight_scale  # the weight-only layout: this module's own factor
    elif own_bits and params:
        params *= _bits(weights) / own_bits
    acts = float(o.bytes_read - o.param_bytes_read + o.bytes_written)
    if at_model:
        acts *= act_scale
    moved = params + acts
    t_compute = 0.0
    if o.category in ("contraction", "other"):
        if o.macs:
            t_compute += o.flops / rate(matrix_prec, "matmul")
        if o.other_flops:
            t_compute += o.other_flops / rate(prec, "vector")
    return OpTime(o.index, o.op, o.module, o.category, prec, o.flops, o.other_flops, moved, params,
                  t_compute, moved / bw, flagged=o.category == "uncounted")


def _sum(rows: list[OpTime]) -> dict[str, float]:
    return {
        "flops": float(sum(r.flops + r.other_flops for r in rows)),
        "bytes": sum(r.bytes for r in rows),
        "t_compute_s": sum(r.t_compute_s for r in rows),
        "t_memory_s": sum(r.t_memory_s for r in rows),
        "latency_s": sum(r.latency_s for r in rows),
    }


def _module_times(modules: tuple[ModuleCounts, ...], ops: list[OpTime]) -> tuple[ModuleTime, ...]:
    by_path: dict[str, list[OpTime]] = defaultdict(list)
    for o in ops:
        for anc in ancestors(o.module):
            by_path[anc].append(o)
    return tuple(ModuleTime(path=m.path, type=m.type, depth=m.depth, **_sum(by_path.get(m.path, [])))
                 for m in modules)


def _layers(modules: tuple[ModuleCounts, ...], ops: list[OpTime], compute: Precision,
            weights: Precision, rescale_params: bool, act_scale: float, bw: float,
            depth: int | None = None, layout_bytes: dict[str, float] | None = None) -> tuple[LayerTime, ...]:
    """Partition the ops into the seed's units: leaf modules (or modules at `depth`).

    An op whose module has no selected ancestor-or-self (a parent's own ops, such
    as attention's score/value products next to its q/k/v projections) joins a
    group of that parent's own ops, costed with its unfused bytes: the seed has
    no module-level byte figure for part of a module.
    """
    paths = {m.path for m in modules}
    parents = {p.rpartition(".")[0] for p in paths if p}
    if depth is None:
        selected = {p for p in paths if p not in parents}
    else:
        selected = {m.path for m in modules if m.depth == depth or (m.depth < depth and m.path not in parents)}
    info = {m.path: m for m in modules}
    groups: dict[tuple[str, str], list[OpTime]] = defaultdict(list)
    for o in ops:
        unit = next((a for a in reversed(ancestors(o.module)) if a in selected), None)
        groups[(unit, "module") if unit is not None else (o.module, "own ops")].append(o)
    out = []
    for (path, kind), rows in groups.items():
        s = _sum(rows)
        m = info.get(path)
        if kind == "module" and m is not None:
            if layout_bytes is not None:
                p_bytes = layout_bytes.get(path, 0.0)
            else:
                p_bytes = param_size(m.params, weights).total_bytes if rescale_params else float(m.param_bytes)
            seed_bytes = p_bytes + (m.input_bytes + m.output_bytes) * act_scale
        else:
            seed_bytes = s["bytes"]
        seed = max(s["t_compute_s"], seed_bytes / bw)
        out.append(LayerTime(path=path, type=m.type if m else "", kind=kind, seed_latency_s=seed, **s))
    return tuple(sorted(out, key=lambda r: min(o.index for o in groups[(r.path, r.kind)])))


# ------------------------------------------------------------------------- JSON


def _layer_dict(r: LayerTime) -> dict[str, Any]:
    return {"path": r.path, "type": r.type, "kind": r.kind, "flops": r.flops, "bytes": r.bytes,
            "intensity": _finite(r.intensity), "t_compute_s": r.t_compute_s,
            "t_memory_s": r.t_memory_s, "latency_s": r.latency_s, "bound": r.bound}


def _finite(x: float) -> float | None:
    return None if x == float("inf") else x


def roofline_section(result: RooflineResult, depth: int | None = None, top: int = 5) -> dict[str, Any]:
    """The report's `roofline` section (base units); `depth` limits the module rows."""
    hw = result.hardware
    return {
        "hardware": hw.id,
        "hardware_detail": {
            "name": hw.name, "kind": hw.kind, "source": hw.source,
            "memory_bandwidth_bytes_per_s": hw.memory_bandwidth_bytes_per_s,
            "peak_flops": result.peak_flops, "vector_flops": result.vector_flops,
        },
        "phase": result.phase,
        "precision": result.precision,
        "activations": result.activations,
        "weights": result.weights,
        **({"quantization": result.quantization.to_dict()} if result.quantization else {}),
        "efficiency": result.efficiency,
        "ridge_point": result.ridge_point,
        "latency_s": result.latency_s,
        "latency_module_s": result.latency_module_s,
        "latency_fused_s": result.latency_fused_s,
        "t_compute_s": result.t_compute_s,
        "t_memory_s": result.t_memory_s,
        "bound": result.bound,
        "flops": result.flops,
        "bytes": result.bytes,
        "unavoidable_bytes": result.unavoidable_bytes,
        "modules": [
            {"path": m.path, "type": m.type, "depth": m.depth, "flops": m.flops, "bytes": m.bytes,
             "intensity": _finite(m.intensity), "t_compute_s": m.t_compute_s,
             "t_memory_s": m.t_memory_s, "latency_s": m.latency_s, "bound": m.bound}
            for m in result.modules if depth is None or m.depth <= depth
        ],
        "top_memory_bound": [_layer_dict(r) for r in result.top(MEMORY, top)],
        "top_compute_bound": [_layer_dict(r) for r in result.top(COMPUTE, top)],
        "uncounted_ops": list(result.uncounted_ops),
        "notes": list(result.notes),
        "method": ("estimated: roofline, per op max(2*MACs/matrix peak + other FLOPs/vector rate, "
                   "unfused bytes/bandwidth), summed; latency_module_s: seed module-level; "
                   "latency_fused_s: perfect-fusion lower bound"),
    }
