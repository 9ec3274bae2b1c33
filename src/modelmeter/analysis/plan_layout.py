"""The training planner's model of one layout: memory per device, communication, time (layer 3, pure).

`plan.py` searches the layouts; this prices one. See `plan.py`'s docstring for the
formulas (ZeRO model states, activations per pipeline schedule, compute by the roofline
or the GPU performance model, collectives, bubble, optimizer step, MFU / HFU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..core.errors import UserInputError
from ..hardware import Hardware
from ..hardware.gpumodel import GpuModel
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
from .plan_gpu import GpuOp

ZERO_STAGES = (0, 1, 2, 3)
MICRO_BATCHES = (1, 2, 4, 8, 16, 32)
# (t_compute, t_weights, t_activations, replicated) of one op at micro-batch 1 on one device;
# `replicated`: an op on the hidden-size tensors outside the sharded matmuls (norms, residual
# adds, dropout of the block output) that every tensor-parallel rank runs whole, unless
# sequence parallelism splits it along the sequence (Korthikanti et al. 2022, section 4.2.2).
# The fifth element: the op's shape for the GPU performance model (`plan_gpu.py`), None when
# the profile is priced by the roofline alone.
OpCost = tuple[float, float, float, bool, "GpuOp | None"]


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
    # The GPU performance model the ops are priced with (None: the roofline, linear in b / tp).
    gpu: GpuModel | None = None

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
    # Tensor-parallel collectives overlapped with the GEMMs they feed (Megatron-Core's
    # --tp-comm-overlap with Transformer Engine): only what outlasts a stage's compute stays.
    overlap_tp_comm: bool = False

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
    """Block times per (kind, phase, micro-batch, tp, sp), computed once: by the GPU performance
    model when the profile has one (each op re-shaped to the layout), else by the roofline."""

    def __init__(self, gpu: GpuModel | None = None) -> None:
        self.gpu = gpu
        self.cache: dict[tuple[int, str, int, int, bool], float] = {}

    def __call__(self, b: Block, phase: str, mb: int, tp: int, sp: bool = False) -> float:
        key = (b.kind, phase, mb, tp, sp)
        if key not in self.cache:
            ops = b.fwd_ops if phase == "fwd" else b.bwd_ops
            if self.gpu is not None and all(op[4] is not None for op in ops):
                gpu = self.gpu
                self.cache[key] = sum(op[4].seconds(gpu, mb, tp, op[3], sp) for op in ops)  # type: ignore[union-attr]
            else:
                sharded = sum(max(tc * mb, tw + ta * mb) for tc, tw, ta, rep, _ in ops if not rep)
                whole = sum(max(tc * mb, tw + ta * mb) for tc, tw, ta, rep, _ in ops if rep)
                self.cache[key] = sharded / tp + whole / (tp if sp else 1)
        return self.cache[key]


def evaluate(profile: TrainingProfile, settings: TrainSettings, layout: Layout, net: Interconnect | None,
             capacity: float | None, timer: _Timer | None = None) -> Candidate:
    """Memory, communication and time of one layout (see the module docstring)."""
    timer = timer or _Timer(profile.gpu)
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
    tp_exposed = max(0.0, stage_tp - stage_compute) if settings.overlap_tp_comm else stage_tp
    per_slot = stage_compute + tp_exposed + stage_ep + p2p
    comm["tensor_parallel"] = slots * tp_exposed
    comm["expert_parallel"] = slots * stage_ep
    comm["pipeline"] = slots * p2p
    comm["data_parallel"] = dp_time
    hidden = dict.fromkeys(COMM_KINDS, 0.0)
    hidden["data_parallel"] = dp_total - dp_time
    hidden["tensor_parallel"] = slots * (stage_tp - tp_exposed)
    overlapped = dict.fromkeys(COMM_KINDS, False)
    overlapped["data_parallel"] = settings.overlap_grad_reduce and dp_total > 0
    overlapped["tensor_parallel"] = settings.overlap_tp_comm and stage_tp > 0
    optimizer = (profile.gpu.memory_s(2 * states_max) if profile.gpu is not None
                 else 2 * states_max / profile.hardware.memory_bandwidth_bytes_per_s)
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


def _memory_only(profile: TrainingProfile, settings: TrainSettings, layout: Layout, capacity: float) -> bool:
    m = settings.global_batch // (layout.dp * layout.ep * layout.micro_batch)
    stages = stage_split(len(profile.blocks), layout.pp)
    for s in range(layout.pp):
        units = _stage_units(profile, stages, s)
        if sum(_stage_memory(profile, settings, layout, units, s, m)) > capacity:
            return False
    return True
