"""The multi-device training planner: layouts, memory per device, communication, time (layer 3, pure).

Input: a `TrainingProfile` (per-block costs traced once at micro-batch 1, see
`plan_profile.py`), a device and its links. Output: every layout of
tensor (tp), pipeline (pp), data (dp) and expert (ep) parallelism, ZeRO stage,
micro-batch, sequence parallelism and recomputation, each with its memory per
device, communication and step time; ranked, with the reason each one that
does not fit fails. Devices used = tp x pp x dp x ep.

Memory per device (the worst pipeline stage):

* model states, ZeRO (Rajbhandari et al., SC'20, "ZeRO: Memory Optimizations
  Toward Training Trillion Parameter Models", section 5): with w, g, k bytes
  per parameter for weights, gradients and optimizer state (mixed-precision
  AdamW: 2 + 2 + 12, the 12 being fp32 master weights, momentum and variance)
  and Psi parameters on the model-parallel shard, N data-parallel ranks:
  stage 0 (w + g + k) Psi; stage 1 (w + g) Psi + k Psi / N; stage 2
  w Psi + (g + k) Psi / N; stage 3 (w + g + k) Psi / N. Psi = block parameters
  / tp of the stage's blocks (+ embeddings on the first stage, the head on the
  last); expert parameters (module path containing `experts`) / (tp x ep),
  sharded over dp only, since the ep ranks hold different experts;
* activations: the bytes each block saves for backward (traced liveness of
  autograd's saved tensors) x micro-batch, / tp for the tensor-parallel part;
  the tensors of the hidden size (norm inputs, residuals) stay whole on every
  tp rank unless sequence parallelism splits them too (Korthikanti et al.
  2022, "Reducing Activation Recomputation in Large Transformer Models").
  With recomputation a block keeps only its input, and one block's saved set
  is rebuilt at a time. 1F1B (Narayanan et al. 2021, "Efficient Large-Scale
  Language Model Training on GPU Clusters Using Megatron-LM") keeps
  min(pp - s, m) micro-batches in flight on stage s, so the first stage holds pp;
  the interleaved schedule (vp model chunks per rank) is followed step by step in
  Megatron-LM's order (`interleaved_held`): 2 (pp - s - 1) + (vp - 1) pp warm-up
  chunk forwards, then one forward and one backward, each chunk holding 1/vp of the
  stage's blocks, the embeddings in rank 0's first chunk and the head in the last
  rank's last chunk.

Time per step (communication not overlapped with compute, which is what
Megatron-LM 2021 did: gradients reduced after the pipeline flush, tensor-parallel
collectives on the critical path; with `overlap_grad_reduce` the gradient
reduction runs under the last micro-batch's backward, as PyTorch DDP does, and
only what outlasts it stays exposed; every candidate says per term in
`comm_overlapped` and `comm_hidden_s`):

* compute of a block per micro-batch b on tp ranks: its traced ops costed by
  the roofline, sum of max(t_compute x b, t_weights + t_activations x b) / tp;
  backward likewise; recomputation adds one more forward;
* compute runs on tp ranks as sharded: matrix products and everything per head or
  per MLP column / tp; the ops on the residual stream (norms, residual adds) whole
  on every rank unless sequence parallelism splits them (`tp_replicated.py`);
* tensor parallelism: 2 all-reduces of the block's output per forward, 2 per
  backward (Megatron-LM's attention + MLP split; with sequence parallelism a
  reduce-scatter + all-gather pair, the same bus bytes); expert parallelism:
  2 all-to-alls (dispatch, combine) of the routed tokens per forward and backward;
* pipeline: (m + (pp - 1) / vp) x (stage time + 2 vp point-to-point sends of
  b x output / tp, Megatron-LM's scatter/gather optimisation); bubble
  (pp - 1) / (m vp) (vp = 1: plain 1F1B; Narayanan et al. 2021, section 2.2);
* data parallelism: ZeRO 0 one all-reduce of the gradients per step, stage 1 a
  reduce-scatter of them and an all-gather of the weights; stage 2 a reduce-scatter per
  micro-batch and an all-gather of the weights per step; stage 3 two all-gathers
  of the weights and a reduce-scatter of the gradients per micro-batch;
* the optimizer step: every model-state byte read and written once, at memory bandwidth.

Throughput: MFU = 3 x forward matrix FLOPs x samples / (devices x peak x step)
(model FLOPs, no recomputation: PaLM's convention, Chowdhery et al. 2022,
appendix B); HFU adds the recomputed forward (what Megatron-LM reports as
achieved TFLOP/s per GPU). Peak is the device's dense matrix peak at the
compute precision, never derated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from ..core.errors import UserInputError
from ..hardware import Hardware
from ..hardware.headroom import usable_memory_bytes
from ..hardware.interconnect import Interconnect
from .comm import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    P2P,
    REDUCE_SCATTER,
    collective_time,
    make_group,
)
from .memory import OPTIMIZER_STATES, STATE_BYTES

ZERO_STAGES = (0, 1, 2, 3)
MICRO_BATCHES = (1, 2, 4, 8, 16, 32)
# (t_compute, t_weights, t_activations, replicated) of one op at micro-batch 1 on one device;
# `replicated`: an op on the hidden-size tensors outside the sharded matmuls (norms, residual
# adds, dropout of the block output) that every tensor-parallel rank runs whole, unless
# sequence parallelism splits it along the sequence (Korthikanti et al. 2022, section 4.2.2).
OpCost = tuple[float, float, float, bool]


# ------------------------------------------------------------------ profile


@dataclass(frozen=True)
class Block:
    """One pipeline unit at micro-batch 1: a repeated block, or the parts before/after them."""

    path: str
    kind: int  # blocks with equal costs share a kind (their times are computed once)
    params: int
    expert_params: int
    fwd_flops: float  # matrix FLOPs (2 x MACs)
    bwd_flops: float
    fwd_ops: tuple[OpCost, ...]
    bwd_ops: tuple[OpCost, ...]
    saved_bytes: float  # saved for backward
    saved_hidden_bytes: float  # the part of the hidden size: whole on each tp rank without SP
    input_bytes: float  # what recomputation keeps
    output_bytes: float  # one message at its boundary (tp all-reduce, pp send)
    tp_all_reduces: int  # per forward pass
    moe: bool = False

    @property
    def dense_params(self) -> int:
        return self.params - self.expert_params


@dataclass(frozen=True)
class TrainingProfile:
    """Everything the planner needs about a model on a device, from one traced step."""

    model: str
    hardware: Hardware
    dtype: str  # compute / parameter precision of the traced step
    seq: int
    params: int
    first: Block  # before the first block: embeddings
    blocks: tuple[Block, ...]
    last: Block  # after the last block: final norm, head, loss
    peak_flops: float  # dense matrix peak at dtype (MFU's denominator, not derated)
    efficiency: float | None  # matrix-peak derating the op times were costed with
    heads: int | None = None  # tp must divide it when known
    experts: int | None = None  # ep must divide it when known
    top_k: int = 1  # experts per token (all-to-all volume)
    notes: tuple[str, ...] = ()

    @property
    def fwd_flops(self) -> float:
        return self.first.fwd_flops + self.last.fwd_flops + sum(b.fwd_flops for b in self.blocks)

    @property
    def expert_params(self) -> int:
        return self.first.expert_params + self.last.expert_params + sum(b.expert_params for b in self.blocks)


@dataclass(frozen=True)
class TrainSettings:
    global_batch: int  # sequences per optimizer step
    optimizer: str = "adamw"
    master_fp32: bool = False
    param_bytes: float = 2.0  # bytes per weight (the traced precision)
    # Gradients reduced bucket by bucket during the last micro-batch's backward (PyTorch DDP,
    # Megatron-LM's --overlap-grad-reduce) instead of after it (Megatron-LM 2021's local DDP).
    overlap_grad_reduce: bool = False

    @property
    def grad_bytes(self) -> float:
        return self.param_bytes

    @property
    def optimizer_bytes(self) -> float:
        """k of the ZeRO paper: fp32 optimizer state (+ fp32 master weights) per parameter."""
        master = STATE_BYTES if self.master_fp32 and self.param_bytes != STATE_BYTES else 0
        return OPTIMIZER_STATES[self.optimizer] * STATE_BYTES + master


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1
    zero: int = 0
    micro_batch: int = 1
    sp: bool = False  # sequence parallelism (with tp > 1)
    checkpoint: bool = False  # full recomputation of every block
    vp: int = 1  # model chunks per pipeline rank (Megatron-LM's interleaved 1F1B when > 1)

    @property
    def devices(self) -> int:
        return self.tp * self.pp * self.dp * self.ep


@dataclass(frozen=True)
class Fixed:
    """Dimensions the user fixed; None = search."""

    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    ep: int | None = None
    zero: int | None = None
    micro_batch: int | None = None
    sp: bool | None = None
    checkpoint: bool | None = None
    vp: int | None = None  # not searched: None = 1 (plain 1F1B)


FREE = Fixed()  # nothing fixed: search every dimension


@dataclass(frozen=True)
class Candidate:
    layout: Layout
    fits: bool
    memory_per_device_bytes: float
    model_states_bytes_per_device: float
    weight_bytes_per_device: float
    grad_bytes_per_device: float
    optimizer_bytes_per_device: float
    activation_bytes_per_device: float
    capacity_bytes: float | None
    worst_stage: int
    micro_batches: int
    compute_time_s: float
    comm_time_s: float
    comm: dict[str, float]  # per kind: seconds on the critical path per step
    bubble_fraction: float
    step_time_s: float
    tokens_per_s: float
    mfu: float
    hfu: float
    why_not: str | None = None
    bubble_time_s: float = 0.0  # (pp - 1) / vp pipeline slots of idle time per step
    optimizer_time_s: float = 0.0  # the optimizer step (every model-state byte read and written)
    # Per kind: whether it overlaps compute, and the seconds of it that ran under compute
    # (`comm` holds only what is left on the critical path).
    comm_overlapped: dict[str, bool] = field(default_factory=dict)
    comm_hidden: dict[str, float] = field(default_factory=dict)


COMM_KINDS = ("tensor_parallel", "expert_parallel", "pipeline", "data_parallel")


@dataclass(frozen=True)
class Plan:
    mode: str  # 'train' | 'infer'
    model: str
    hardware: str
    devices: int
    nodes: int
    candidates: tuple[Any, ...]  # Candidate or InferCandidate, fitting ones first, best first
    min_devices: int | None
    searched: int  # layouts evaluated
    settings: dict[str, Any]
    interconnect: dict[str, Any]
    assumptions: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def best(self) -> Any | None:
        return self.candidates[0] if self.candidates and self.candidates[0].fits else None


# ------------------------------------------------------------------ memory


def zero_model_states(psi: float, n: int, stage: int, w: float, g: float, k: float) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per device of `psi` parameters over `n` data-parallel ranks."""
    if stage not in ZERO_STAGES:
        raise UserInputError(f"--zero must be one of 0, 1, 2, 3, got {stage}")
    shard = psi / n
    return (
        shard * w if stage >= 3 else psi * w,
        shard * g if stage >= 2 else psi * g,
        shard * k if stage >= 1 else psi * k,
    )


def stage_split(n_blocks: int, pp: int) -> list[range]:
    """Contiguous blocks per pipeline stage, as even as possible (earlier stages get the extra)."""
    base, extra = divmod(n_blocks, pp)
    out, start = [], 0
    for s in range(pp):
        size = base + (1 if s < extra else 0)
        out.append(range(start, start + size))
        start += size
    return out


def _stage_units(profile: TrainingProfile, stages: list[range], s: int) -> list[Block]:
    units = [profile.blocks[i] for i in stages[s]]
    if s == 0:
        units.insert(0, profile.first)
    if s == len(stages) - 1:
        units.append(profile.last)
    return units


def _block_activations(b: Block, layout: Layout, mb: int) -> float:
    """Saved bytes per micro-batch of one unit on one tp rank, without recomputation."""
    tp = layout.tp
    hidden = b.saved_hidden_bytes / (tp if layout.sp else 1)
    return mb * ((b.saved_bytes - b.saved_hidden_bytes) / tp + hidden)


@lru_cache(maxsize=4096)
def interleaved_held(pp: int, stage: int, m: int, vp: int) -> tuple[tuple[int, ...], ...]:
    """Megatron-LM's interleaved schedule on pipeline rank `stage`, step by step: after each
    forward, how many micro-batches each of its vp model chunks holds activations for.

    The order is that of Megatron-LM's schedules.py (Narayanan et al. 2021): forward k runs
    chunk (k mod (pp vp)) // pp, backward k the mirror chunk vp - 1 - that; the rank first
    runs min(2 (pp - stage - 1) + (vp - 1) pp, m vp) warm-up forwards (all of them when
    m = pp), then one forward and one backward at a time. Chunk 0 of rank 0 holds the
    embeddings, chunk vp - 1 of the last rank the head: they hold different counts.
    """
    total = m * vp
    warmup = total if m == pp else min(2 * (pp - stage - 1) + (vp - 1) * pp, total)

    def chunk(k: int, forward: bool) -> int:
        c = (k % (pp * vp)) // pp
        return c if forward else vp - 1 - c

    held = [0] * vp
    states: list[tuple[int, ...]] = []
    backward = 0
    for k in range(total):
        held[chunk(k, True)] += 1
        states.append(tuple(held))
        if k >= warmup:
            held[chunk(backward, False)] -= 1
            backward += 1
    return tuple(dict.fromkeys(states))


def _stage_memory(profile: TrainingProfile, settings: TrainSettings, layout: Layout,
                  units: list[Block], stage: int, m: int) -> tuple[float, float, float, float]:
    """(weights, grads, optimizer, activations) bytes on one device of pipeline stage `stage`."""
    w, g, k = settings.param_bytes, settings.grad_bytes, settings.optimizer_bytes
    dense = sum(u.dense_params for u in units) / layout.tp
    experts = sum(u.expert_params for u in units) / (layout.tp * layout.ep)
    dw, dg, dk = zero_model_states(dense, layout.dp * layout.ep, layout.zero, w, g, k)
    ew, eg, ek = zero_model_states(experts, layout.dp, layout.zero, w, g, k)
    mb, pp, vp = layout.micro_batch, layout.pp, layout.vp
    per_unit: list[float] = []  # bytes one micro-batch leaves in each unit until its backward
    transient = 0.0
    for u in units:
        full = _block_activations(u, layout, mb)
        if layout.checkpoint and u.tp_all_reduces:
            per_unit.append(mb * u.input_bytes / (layout.tp if layout.sp else 1))
            transient = max(transient, full)  # one block's saved set, rebuilt in its backward
        else:
            per_unit.append(full)
    if vp == 1:  # 1F1B: stage s holds min(pp - s, m) micro-batches
        return dw + ew, dg + eg, dk + ek, sum(per_unit) * min(pp - stage, m) + transient
    # Interleaved: the blocks split evenly over the chunks; the embeddings ride in the first
    # rank's chunk 0, the head in the last rank's last chunk.
    first = per_unit[0] if units and units[0] is profile.first else 0.0
    last = per_unit[-1] if units and units[-1] is profile.last else 0.0
    per_chunk = (sum(per_unit) - first - last) / vp
    act = max(sum(n * per_chunk for n in held) + held[0] * first + held[-1] * last
              for held in interleaved_held(pp, stage, m, vp))
    return dw + ew, dg + eg, dk + ek, act + transient


# ------------------------------------------------------------------ time


class _Timer:
    """Block times per (kind, phase, micro-batch, tp, sp), computed once."""

    def __init__(self) -> None:
        self.cache: dict[tuple[int, str, int, int, bool], float] = {}

    def __call__(self, b: Block, phase: str, mb: int, tp: int, sp: bool = False) -> float:
        key = (b.kind, phase, mb, tp, sp)
        if key not in self.cache:
            ops = b.fwd_ops if phase == "fwd" else b.bwd_ops
            sharded = sum(max(tc * mb, tw + ta * mb) for tc, tw, ta, rep in ops if not rep)
            whole = sum(max(tc * mb, tw + ta * mb) for tc, tw, ta, rep in ops if rep)
            self.cache[key] = sharded / tp + whole / (tp if sp else 1)
        return self.cache[key]


def evaluate(profile: TrainingProfile, settings: TrainSettings, layout: Layout, net: Interconnect | None,
             capacity: float | None, timer: _Timer | None = None) -> Candidate:
    """Memory, communication and time of one layout (see the module docstring)."""
    timer = timer or _Timer()
    tp, pp, dp, ep, mb, vp = layout.tp, layout.pp, layout.dp, layout.ep, layout.micro_batch, layout.vp
    replicas = dp * ep
    m = settings.global_batch // (replicas * mb)
    stages = stage_split(len(profile.blocks), pp)
    groups = _groups(layout, net)
    comm = dict.fromkeys(COMM_KINDS, 0.0)
    worst = (-1.0, 0, (0.0, 0.0, 0.0, 0.0))
    stage_compute, stage_tp, stage_ep, dp_time, dp_total, states_max = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    for s in range(pp):
        units = _stage_units(profile, stages, s)
        parts = _stage_memory(profile, settings, layout, units, s, m)
        total = sum(parts)
        if total > worst[0]:
            worst = (total, s, parts)
        states_max = max(states_max, sum(parts[:3]))
        compute = backward = tpc = epc = 0.0
        for u in units:
            f, bwd = timer(u, "fwd", mb, tp, layout.sp), timer(u, "bwd", mb, tp, layout.sp)
            recompute = f if layout.checkpoint and u.tp_all_reduces else 0.0
            compute += f + bwd + recompute
            backward += bwd + recompute
            passes = 3 if layout.checkpoint and u.tp_all_reduces else 2
            msg = u.output_bytes * mb
            tpc += passes * u.tp_all_reduces * collective_time(ALL_REDUCE, msg, groups["tp"]) if tp > 1 else 0.0
            if u.moe and ep > 1:
                epc += passes * 2 * collective_time(ALL_TO_ALL, msg * profile.top_k / tp, groups["ep"])
        stage_compute = max(stage_compute, compute)
        stage_tp, stage_ep = max(stage_tp, tpc), max(stage_ep, epc)
        exposed, whole = _dp_time(units, settings, layout, m, groups, backward)
        dp_time, dp_total = max(dp_time, exposed), max(dp_total, whole)
    p2p = 0.0
    if pp > 1:
        # Both sends of a micro-batch at each of the vp chunk boundaries a rank has.
        p2p = 2 * vp * collective_time(P2P, profile.blocks[0].output_bytes * mb / tp, groups["pp"])
    idle = (pp - 1) / vp  # the bubble, in slots (Narayanan et al. 2021: (p - 1) / (m v) of the step)
    slots = m + idle
    per_slot = stage_compute + stage_tp + stage_ep + p2p
    comm["tensor_parallel"] = slots * stage_tp
    comm["expert_parallel"] = slots * stage_ep
    comm["pipeline"] = slots * p2p
    comm["data_parallel"] = dp_time
    hidden = dict.fromkeys(COMM_KINDS, 0.0)
    hidden["data_parallel"] = dp_total - dp_time
    overlapped = dict.fromkeys(COMM_KINDS, False)
    overlapped["data_parallel"] = settings.overlap_grad_reduce and dp_total > 0
    optimizer = 2 * states_max / profile.hardware.memory_bandwidth_bytes_per_s
    step = slots * per_slot + dp_time + optimizer
    samples = settings.global_batch
    devices = layout.devices
    model_flops = 3 * profile.fwd_flops * samples
    recompute = sum(b.fwd_flops for b in profile.blocks) * samples if layout.checkpoint else 0.0
    denom = devices * profile.peak_flops * step
    memory, s_worst, (wb, gb, ob, act) = worst
    fits = capacity is None or memory <= capacity
    return Candidate(
        layout=layout, fits=fits, memory_per_device_bytes=memory,
        model_states_bytes_per_device=wb + gb + ob, weight_bytes_per_device=wb,
        grad_bytes_per_device=gb, optimizer_bytes_per_device=ob, activation_bytes_per_device=act,
        capacity_bytes=capacity, worst_stage=s_worst, micro_batches=m,
        compute_time_s=slots * stage_compute + optimizer, comm_time_s=sum(comm.values()), comm=comm,
        bubble_fraction=(pp - 1) / (m * vp), step_time_s=step,
        tokens_per_s=samples * profile.seq / step, mfu=model_flops / denom,
        hfu=(model_flops + recompute) / denom,
        why_not=None if fits else _why_not(memory, capacity, wb, gb, ob, act, s_worst),
        bubble_time_s=idle * per_slot, optimizer_time_s=optimizer,
        comm_overlapped=overlapped, comm_hidden=hidden,
    )


def _groups(layout: Layout, net: Interconnect | None) -> dict[str, Any]:
    if net is None:
        return {}
    tp, dp, ep = layout.tp, layout.dp, layout.ep
    return {
        "tp": make_group(tp, 1, net),
        "ep": make_group(ep, tp, net),
        "dp_dense": make_group(dp * ep, tp, net),
        "dp_expert": make_group(dp, tp * ep, net),
        "pp": make_group(2, tp * dp * ep, net),
    }


def _dp_time(units: list[Block], settings: TrainSettings, layout: Layout, m: int,
             groups: dict[str, Any], backward: float) -> tuple[float, float]:
    """(exposed, total) data-parallel communication of one stage per step, by ZeRO stage
    (module docstring); `backward`: one micro-batch's backward on the stage (recomputation
    included), the window an overlapped gradient reduction runs under."""
    if layout.dp * layout.ep <= 1 or not groups:
        return 0.0, 0.0
    per_step = per_microbatch = gathers = 0.0  # gradient reductions once / per micro-batch; weight gathers
    for params, group in ((sum(u.dense_params for u in units) / layout.tp, groups["dp_dense"]),
                          (sum(u.expert_params for u in units) / (layout.tp * layout.ep), groups["dp_expert"])):
        if not params or group.size <= 1:
            continue
        grads, weights = params * settings.grad_bytes, params * settings.param_bytes
        if layout.zero == 0:
            per_step += collective_time(ALL_REDUCE, grads, group)
        elif layout.zero == 1:  # reduce-scatter of the gradients, all-gather of the updated weights
            per_step += collective_time(REDUCE_SCATTER, grads, group)
            gathers += collective_time(ALL_GATHER, weights, group)
        elif layout.zero == 2:
            per_microbatch += collective_time(REDUCE_SCATTER, grads, group)
            gathers += collective_time(ALL_GATHER, weights, group)
        else:
            per_microbatch += collective_time(REDUCE_SCATTER, grads, group)
            gathers += m * 2 * collective_time(ALL_GATHER, weights, group)
    total = per_step + m * per_microbatch + gathers
    if not settings.overlap_grad_reduce:
        return total, total
    # Only the gradient reductions overlap (the weight gathers feed the next compute), and
    # at most for as long as the backward they follow runs.
    exposed = max(0.0, per_step - backward) + m * max(0.0, per_microbatch - backward) + gathers
    return exposed, total


def _why_not(memory: float, capacity: float | None, w: float, g: float, o: float, act: float,
             stage: int) -> str:
    terms = {"weights": w, "gradients": g, "optimizer states": o, "activations": act}
    biggest = max(terms, key=lambda k: terms[k])
    over = memory - (capacity or 0)
    return (f"needs {memory / 1e9:.1f} GB per device on stage {stage}, {over / 1e9:.1f} GB over "
            f"{(capacity or 0) / 1e9:.1f} GB usable; largest term: {biggest} {terms[biggest] / 1e9:.1f} GB "
            f"(weights {w / 1e9:.1f} + gradients {g / 1e9:.1f} + optimizer {o / 1e9:.1f} "
            f"+ activations {act / 1e9:.1f} GB)")


# ------------------------------------------------------------------ search


def _divisors(n: int) -> list[int]:
    """The divisors of n, ascending, from the pairs (d, n / d) with d up to the square root."""
    small, large = [], []
    d = 1
    while d * d <= n:
        if n % d == 0:
            small.append(d)
            if d * d != n:
                large.append(n // d)
        d += 1
    return small + large[::-1]


def layouts(profile: TrainingProfile, settings: TrainSettings, devices: int, per_node: int,
            fixed: Fixed = FREE) -> Iterator[Layout]:
    """Every valid layout on exactly `devices` devices (tp within a node)."""
    has_experts = profile.expert_params > 0
    for tp in _divisors(devices):
        if tp > per_node or (fixed.tp is not None and tp != fixed.tp):
            continue
        if profile.heads and profile.heads % tp:
            continue
        for pp in _divisors(devices // tp):
            if pp > max(1, len(profile.blocks)) or (fixed.pp is not None and pp != fixed.pp):
                continue
            for ep in _divisors(devices // (tp * pp)):
                if fixed.ep is not None and ep != fixed.ep:
                    continue
                if ep > 1 and (not has_experts or (profile.experts and profile.experts % ep)):
                    continue
                dp = devices // (tp * pp * ep)
                if fixed.dp is not None and dp != fixed.dp:
                    continue
                vp = fixed.vp or 1
                if vp > 1 and (pp == 1 or len(profile.blocks) % (pp * vp)):
                    continue
                yield from _variants(settings, fixed, tp, pp, dp, ep, vp)


def _variants(settings: TrainSettings, fixed: Fixed, tp: int, pp: int, dp: int, ep: int,
              vp: int = 1) -> Iterator[Layout]:
    replicas = dp * ep
    if settings.global_batch % replicas:
        return
    per_replica = settings.global_batch // replicas
    mbs = [fixed.micro_batch] if fixed.micro_batch is not None else [b for b in MICRO_BATCHES if b <= per_replica]
    zeros = [fixed.zero] if fixed.zero is not None else list(ZERO_STAGES)
    sps = [fixed.sp] if fixed.sp is not None else ([False, True] if tp > 1 else [False])
    ckpts = [fixed.checkpoint] if fixed.checkpoint is not None else [False, True]
    for mb in mbs:
        if per_replica % mb:
            continue
        if vp > 1 and (per_replica // mb) % pp:
            continue  # Megatron-LM's interleaved schedule needs the micro-batches divisible by pp
        for zero in zeros:
            # DeepSpeed refuses ZeRO-2/3 with pipeline parallelism (gradients and weights are
            # partitioned across the very micro-batches a pipeline keeps in flight).
            if pp > 1 and zero >= 2:
                continue
            for sp in sps:
                if sp and tp == 1:
                    continue
                for ck in ckpts:
                    yield Layout(tp, pp, dp, ep, zero, mb, sp, ck, vp)


def check_fixed(fixed: Fixed, devices: int, per_node: int, blocks: int | None = None) -> None:
    """A fixed layout that cannot run on `devices` devices: one clear line."""
    for name in ("tp", "pp", "dp", "ep", "micro_batch", "vp"):
        value = getattr(fixed, name)
        if value is not None and value < 1:
            raise UserInputError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if fixed.zero is not None and (isinstance(fixed.zero, bool) or fixed.zero not in ZERO_STAGES):
        raise UserInputError(f"--zero must be one of 0, 1, 2, 3, got {fixed.zero}")
    product = 1
    for name in ("tp", "pp", "dp", "ep"):
        product *= getattr(fixed, name) or 1
    if devices % product:
        raise UserInputError(f"the fixed layout needs a multiple of {product} devices "
                             f"(tp x pp x dp x ep); --devices is {devices}")
    if all(getattr(fixed, n) is not None for n in ("tp", "pp", "dp", "ep")) and product != devices:
        raise UserInputError(f"tp x pp x dp x ep = {product} but --devices is {devices}")
    if fixed.tp is not None and fixed.tp > per_node:
        raise UserInputError(f"--tp {fixed.tp} exceeds the {per_node} devices of a node: "
                             "tensor parallelism stays within a node")
    if blocks is not None and fixed.pp is not None and fixed.pp > blocks:
        raise UserInputError(f"--pp {fixed.pp} exceeds the model's {blocks} blocks")
    if fixed.pp is not None and fixed.pp > 1 and fixed.zero is not None and fixed.zero >= 2:
        raise UserInputError("ZeRO stage 2/3 does not combine with pipeline parallelism (DeepSpeed "
                             "refuses it): use --zero 0 or 1 with --pp > 1")
    if fixed.sp and fixed.tp == 1:
        raise UserInputError("sequence parallelism splits activations across tensor-parallel ranks: "
                             "it needs --tp > 1")
    _check_interleaving(fixed, blocks)


def _check_interleaving(fixed: Fixed, blocks: int | None) -> None:
    """What Megatron-LM asserts before it runs the interleaved schedule."""
    vp = fixed.vp or 1
    if vp == 1:
        return
    if fixed.pp is None or fixed.pp == 1:
        raise UserInputError(f"--vp {vp} interleaves model chunks over pipeline stages: fix --pp > 1 with it")
    if blocks is not None and blocks % (fixed.pp * vp):
        raise UserInputError(f"--pp {fixed.pp} x --vp {vp} must divide the model's {blocks} blocks "
                             "(each chunk holds the same number)")


def rank(candidates: list[Candidate]) -> list[Candidate]:
    """Fitting first, fastest step first; then the rest by least memory."""
    return sorted(candidates, key=lambda c: (not c.fits, c.step_time_s if c.fits else c.memory_per_device_bytes,
                                             c.memory_per_device_bytes))


def plan_training(profile: TrainingProfile, settings: TrainSettings, *, devices: int, nodes: int,
                  net: Interconnect | None, fixed: Fixed = FREE, limit: int = 50) -> Plan:
    """Search the layouts on `devices` devices; `min_devices`: the fewest that fit at all."""
    if settings.global_batch < 1:
        raise UserInputError(f"--global-batch must be a positive integer, got {settings.global_batch}")
    per_node = net.devices_per_node if net is not None else 1
    if devices > 1 and net is None:
        raise UserInputError(f"no interconnect figures for {profile.hardware.id}: plan it on one device")
    check_fixed(fixed, devices, per_node, len(profile.blocks))
    if (fixed.ep or 1) > 1 and profile.expert_params == 0:
        raise UserInputError(f"--ep {fixed.ep}: {profile.model} has no experts (no module under an 'experts' "
                             "path); expert parallelism splits a mixture of experts")
    capacity = usable_memory_bytes(profile.hardware)  # less the runtime's headroom
    timer = _Timer()
    found = [evaluate(profile, settings, lay, net, capacity, timer)
             for lay in layouts(profile, settings, devices, per_node, fixed)]
    if not found:
        interleaved = (", and (--vp) the micro-batches per step divisible by pp"
                       if (fixed.vp or 1) > 1 else "")
        raise UserInputError(
            f"no layout of {devices} devices matches: tp within a node of {per_node}, tp dividing the "
            f"{profile.heads or '?'} heads, pp at most {len(profile.blocks)} blocks, and dp x ep x "
            f"micro-batch dividing --global-batch {settings.global_batch}{interleaved}")
    ranked = rank(found)
    shown = _shown(ranked, limit)
    return Plan(
        mode="train", model=profile.model, hardware=profile.hardware.id, devices=devices, nodes=nodes,
        candidates=tuple(shown),
        min_devices=_min_devices(profile, settings, net, capacity, fixed, per_node),
        searched=len(found),
        settings={"global_batch": settings.global_batch, "seq": profile.seq, "optimizer": settings.optimizer,
                  "master_fp32": settings.master_fp32, "dtype": profile.dtype,
                  "overlap_grad_reduce": settings.overlap_grad_reduce,
                  "bytes_per_param": {"weights": settings.param_bytes, "gradients": settings.grad_bytes,
                                      "optimizer": settings.optimizer_bytes},
                  "efficiency": profile.efficiency},
        interconnect=net.to_dict() if net is not None else {},
        assumptions=TRAIN_ASSUMPTIONS, notes=profile.notes + _overlap_note(settings, found),
    )


def _overlap_note(settings: TrainSettings, found: list[Candidate]) -> tuple[str, ...]:
    if settings.overlap_grad_reduce and all(c.layout.dp * c.layout.ep == 1 for c in found):
        return ("--overlap-grad-reduce: no layout here has data parallelism (dp x ep = 1), so there is "
                "no gradient reduction to overlap",)
    return ()


TRAIN_ASSUMPTIONS = (
    "model states per ZeRO stage (Rajbhandari et al. 2020): weights, gradients and optimizer bytes "
    "per parameter as listed in settings.bytes_per_param",
    "activations: tensors the traced step saves for backward x micro-batch; / tp for the sharded part, "
    "hidden-size tensors whole per tp rank unless sequence parallelism; 1F1B keeps pp micro-batches "
    "in flight on the first stage (interleaved, vp chunks per rank: per chunk as Megatron-LM's schedule "
    "orders its forwards and backwards, the embeddings in the first chunk, the head in the last)",
    "compute: traced ops costed by the roofline (matrix peak x settings.efficiency, memory-bound ops at "
    "HBM bandwidth), scaled linearly with micro-batch",
    "communication is not overlapped with compute (comm_overlapped: Megatron-LM 2021 runs tensor-parallel "
    "all-reduces synchronously and the data-parallel reduction after the pipeline flush), except, with "
    "settings.overlap_grad_reduce, the gradient reduction, under the last micro-batch's backward and at "
    "no cost to it (SM and memory contention not modelled); ring or tree per NCCL's cost model, at the "
    "NVLink bandwidth NCCL's topology model assumes",
    "tensor parallelism splits matrix products and attention heads; norms and residual adds run whole on "
    "every tp rank unless sequence parallelism splits them",
    "tensor parallelism: 2 all-reduces of a block's output per forward and per backward pass (+2 with "
    "recomputation); rank order tp, then ep and dp, then pp",
    "MFU: 3 x forward matrix FLOPs (PaLM); HFU adds the recomputed forward (Megatron-LM's TFLOP/s)",
)


def _shown(ranked: list[Candidate], limit: int) -> list[Any]:
    """The fitting candidates (up to `limit`), then per layout (tp, pp, dp, ep, zero) without a fit
    its smallest variant, so every reason a layout fails is shown once."""
    fitting = [c for c in ranked if c.fits][:limit]
    fit_layouts = {_key(c.layout) for c in ranked if c.fits}
    seen: set[tuple[int, ...]] = set()
    rejected = []
    for c in ranked:
        k = _key(c.layout)
        if c.fits or k in fit_layouts or k in seen:
            continue
        seen.add(k)
        rejected.append(c)
    return fitting + rejected[:limit]


def _key(layout: Any) -> tuple[int, ...]:
    return (layout.tp, layout.pp, layout.dp, layout.ep, getattr(layout, "zero", 0))


def _device_counts(limit: int = 1 << 16) -> Iterator[int]:
    n = 1
    while n <= limit:
        yield n
        n *= 2


def _min_devices(profile: TrainingProfile, settings: TrainSettings, net: Interconnect | None,
                 capacity: float | None, fixed: Fixed, per_node: int) -> int | None:
    """Fewest devices (a power of two) with a layout that fits; the user's fixed
    micro-batch, ZeRO stage, recomputation and SP still apply, the parallel degrees are searched
    (and the schedule is plain 1F1B: interleaving needs pp > 1 and only adds activations)."""
    if capacity is None:
        return None
    free = replace(fixed, tp=None, pp=None, dp=None, ep=None, vp=None)
    for n in _device_counts():
        if n > 1 and net is None:
            return None
        if any(_memory_only(profile, settings, lay, capacity)
               for lay in layouts(profile, settings, n, per_node, free)):
            return n
    return None


def _memory_only(profile: TrainingProfile, settings: TrainSettings, layout: Layout, capacity: float) -> bool:
    m = settings.global_batch // (layout.dp * layout.ep * layout.micro_batch)
    stages = stage_split(len(profile.blocks), layout.pp)
    for s in range(layout.pp):
        units = _stage_units(profile, stages, s)
        if sum(_stage_memory(profile, settings, layout, units, s, m)) > capacity:
            return False
    return True


# ------------------------------------------------------------------ JSON


def candidate_dict(c: Candidate) -> dict[str, Any]:
    lay = c.layout
    return {
        "tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "ep": lay.ep, "zero": lay.zero,
        "micro_batch": lay.micro_batch, "sequence_parallel": lay.sp, "checkpoint": lay.checkpoint,
        "virtual_stages": lay.vp,
        "devices": lay.devices, "micro_batches": c.micro_batches,
        "memory_per_device_bytes": c.memory_per_device_bytes,
        "model_states_bytes_per_device": c.model_states_bytes_per_device,
        "weight_bytes_per_device": c.weight_bytes_per_device,
        "grad_bytes_per_device": c.grad_bytes_per_device,
        "optimizer_bytes_per_device": c.optimizer_bytes_per_device,
        "activation_bytes_per_device": c.activation_bytes_per_device,
        "capacity_bytes": c.capacity_bytes, "worst_stage": c.worst_stage,
        "compute_time_s": c.compute_time_s, "comm_time_s": c.comm_time_s, "comm_s": dict(c.comm),
        "bubble_fraction": c.bubble_fraction, "step_time_s": c.step_time_s,
        "tokens_per_s": c.tokens_per_s, "mfu": c.mfu, "hfu": c.hfu, "fits": c.fits, "why_not": c.why_not,
        "bubble_time_s": c.bubble_time_s, "optimizer_time_s": c.optimizer_time_s,
        "comm_overlapped": dict(c.comm_overlapped), "comm_hidden_s": dict(c.comm_hidden),
    }


def plan_section(plan: Plan, candidate_to_dict: Any = None) -> dict[str, Any]:
    """The report's `plan` section (base units)."""
    to_dict = candidate_to_dict or candidate_dict
    cands = [to_dict(c) for c in plan.candidates]
    best = plan.best
    return {
        "mode": plan.mode,
        "model": plan.model,
        "hardware": plan.hardware,
        "devices": plan.devices,
        "nodes": plan.nodes,
        "settings": plan.settings,
        "interconnect": plan.interconnect,
        "candidates": cands,
        "best": cands[0] if best is not None else None,
        "min_devices": plan.min_devices,
        "searched": plan.searched,
        "fitting": sum(1 for c in plan.candidates if c.fits),
        "assumptions": list(plan.assumptions),
        "notes": list(plan.notes),
        "method": ("estimated: per-block FLOPs, bytes and saved activations counted from one traced "
                   "training step (or the LLM view's prefill/decode traces); times from the roofline and "
                   "NCCL-style collective models over sourced link bandwidths"),
    }


def check_positive(value: int | None, name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserInputError(f"--{name} must be a positive integer, got {value!r}")


def check_flag(value: bool | None, name: str, optional: bool = False) -> None:
    """A switch given from Python: True or False (or None where None means 'search')."""
    if not (isinstance(value, bool) or (optional and value is None)):
        raise UserInputError(f"--{name} is a switch: True or False{' or None' if optional else ''}, "
                             f"got {value!r}")


__all__ = [
    "FREE", "Block", "Candidate", "Fixed", "Layout", "Plan", "TrainSettings", "TrainingProfile",
    "candidate_dict", "check_fixed", "check_flag", "check_positive", "evaluate", "layouts",
    "plan_section", "plan_training", "rank", "stage_split", "zero_model_states",
]
