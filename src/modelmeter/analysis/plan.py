"""The multi-device training planner: the search over layouts, and the plan it returns (layer 3, pure).

One layout is priced in `plan_layout.py`; this module enumerates them, ranks them and
writes the plan. The model, in full:

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
from dataclasses import replace
from typing import Any

from ..core.errors import UserInputError
from ..hardware.headroom import usable_memory_bytes
from ..hardware.interconnect import Interconnect
from .plan_layout import (
    COMM_KINDS,
    FREE,
    MICRO_BATCHES,
    ZERO_STAGES,
    Block,
    Candidate,
    Fixed,
    Layout,
    OpCost,
    Plan,
    TrainingProfile,
    TrainSettings,
    _memory_only,
    _Timer,
    evaluate,
    interleaved_held,
    stage_split,
    zero_model_states,
)

__all__ = [
    "COMM_KINDS", "FREE", "Block", "Candidate", "Fixed", "Layout", "OpCost", "Plan", "TrainSettings",
    "TrainingProfile", "candidate_dict", "check_fixed", "evaluate",
    "interleaved_held", "layouts", "plan_section", "plan_training", "rank", "stage_split",
    "zero_model_states",
]


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
    timer = _Timer(profile.gpu)
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
                  "efficiency": profile.efficiency,
                  "prediction": "gpu-shape-model/1" if profile.gpu is not None else "roofline",
                  **({"gpu_model": profile.gpu.describe()} if profile.gpu is not None else {})},
        interconnect=net.to_dict() if net is not None else {},
        assumptions=_assumptions(profile), notes=profile.notes + _overlap_note(settings, found),
    )


def _overlap_note(settings: TrainSettings, found: list[Candidate]) -> tuple[str, ...]:
    if settings.overlap_grad_reduce and all(c.layout.dp * c.layout.ep == 1 for c in found):
        return ("--overlap-grad-reduce: no layout here has data parallelism (dp x ep = 1), so there is "
                "no gradient reduction to overlap",)
    return ()


def _assumptions(profile: TrainingProfile) -> tuple[str, ...]:
    """The planner's assumptions, its compute line replaced by the GPU model's when it priced the ops."""
    if profile.gpu is None:
        return TRAIN_ASSUMPTIONS
    return tuple(GPU_ASSUMPTION if a.startswith("compute:") else a for a in TRAIN_ASSUMPTIONS)


GPU_ASSUMPTION = (
    "compute: every traced op re-shaped to the layout's micro-batch and tp and priced by the GPU "
    "performance model (GEMMs by M, N, K: tile and wave quantisation on the device's SMs at its "
    "measured best-shape matmul rate, K ramp; fused attention at FlashAttention's published rate; "
    "other ops at the measured achievable bandwidth; a kernel launch at least), one op after another")

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
