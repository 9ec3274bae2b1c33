"""The training-memory budget and the activation-checkpointing what-if (layer 3).

Budget = parameters + gradients + optimizer state (+ fp32 master weights)
+ peak activations of the training forward, the figure the literature uses:
with mixed-precision AdamW that is 2 + 2 + 8 (+ 4) bytes per parameter plus
activations (Rajbhandari et al., "ZeRO", SC'20, section 3.1: 16 bytes per
parameter with fp32 master weights, momentum and variance).

Optimizer state is kept in fp32, as mixed-precision training does:
sgd none, sgd-momentum one buffer, adam/adamw two (first and second moments).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import UserInputError
from ..core.events import Trace
from ..core.precision import parse_precision
from ..core.results import Counts
from ..count.contractions import BACKWARD_ATTENTION_CONVENTION, attention_recompute
from ..count.liveness import inclusive, live_peak, saved_for_backward

OPTIMIZER_STATES = {"sgd": 0, "sgd-momentum": 1, "adam": 2, "adamw": 2}
STATE_BYTES = 4  # fp32 moments


def check_optimizer(name: str) -> str:
    key = name.strip().lower()
    if key not in OPTIMIZER_STATES:
        raise UserInputError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZER_STATES)}")
    return key


@dataclass(frozen=True)
class TrainingBudget:
    optimizer: str
    precision: str
    master_fp32: bool
    param_bytes: float
    grad_bytes: float
    optimizer_bytes: float
    master_weight_bytes: float
    activation_bytes: int

    @property
    def total_bytes(self) -> float:
        return (self.param_bytes + self.grad_bytes + self.optimizer_bytes
                + self.master_weight_bytes + self.activation_bytes)


def training_budget(params: int, trainable: int, precision: str, optimizer: str,
                    activation_bytes: int, master_fp32: bool = False,
                    param_bytes: float | None = None) -> TrainingBudget:
    """`param_bytes`: the weights as stored when not every parameter is at `precision`
    (a quantised precision's weight-only layout); default params x bits / 8."""
    if trainable == 0:
        raise UserInputError("the model has no trainable parameters; nothing to train")
    optimizer = check_optimizer(optimizer)
    bytes_per = parse_precision(precision).bits / 8
    master = trainable * 4 if master_fp32 and bytes_per != 4 else 0
    return TrainingBudget(
        optimizer=optimizer, precision=parse_precision(precision).name, master_fp32=master_fp32,
        param_bytes=params * bytes_per if param_bytes is None else param_bytes, grad_bytes=trainable * bytes_per,
        optimizer_bytes=trainable * STATE_BYTES * OPTIMIZER_STATES[optimizer],
        master_weight_bytes=master, activation_bytes=activation_bytes,
    )


def checkpoint_blocks(trace: Trace) -> list[str]:
    """The repeated top-level blocks: children of the shallowest ModuleList/Sequential with most of them.

    Transformers keep their layers in a ModuleList (model.layers.N); CNNs in
    Sequentials. Without either, the root's children are the blocks.
    """
    containers = [m.path for m in trace.modules if m.type in ("ModuleList", "Sequential")]
    best: list[str] = []
    best_depth = None
    for path in containers:
        prefix = f"{path}." if path else ""
        children = [m.path for m in trace.modules
                    if m.path.startswith(prefix) and "." not in m.path[len(prefix):] and m.calls]
        depth = path.count(".")
        if len(children) >= 2 and (best_depth is None or depth < best_depth
                                   or (depth == best_depth and len(children) > len(best))):
            best, best_depth = children, depth
    if not best:
        best = [m.path for m in trace.modules if m.path and "." not in m.path and m.calls]
    return best


def checkpoint_what_if(train_trace: Trace, forward_counts: Counts) -> dict[str, Any]:
    """Saved bytes and extra FLOPs if each top-level block is recomputed in backward.

    With checkpointing a block keeps only its inputs; during its backward its own
    saved tensors are recreated, one block at a time. So saved bytes become
    (saved outside the blocks) + (block inputs) + (the largest block's own saved bytes),
    and the blocks' forward FLOPs are spent once more.
    """
    blocks = checkpoint_blocks(train_trace)
    saved = saved_for_backward(train_trace)
    per_block = inclusive(saved.by_module, blocks)
    inside = sum(per_block.values())
    records = {m.path: m for m in train_trace.modules}
    block_inputs = sum(records[b].input_bytes for b in blocks)
    largest = max(per_block.values(), default=0)
    with_checkpoint = saved.total_bytes - inside + block_inputs + largest
    counts = {m.path: m for m in forward_counts.modules}
    extra_flops = sum(2 * counts[b].macs + counts[b].other_flops for b in blocks if b in counts)
    return {
        "blocks": len(blocks),
        "block_prefix": blocks[0].rpartition(".")[0] if blocks else "",
        "saved_bytes_without": saved.total_bytes,
        "saved_bytes_with": with_checkpoint,
        "saved_bytes_delta": with_checkpoint - saved.total_bytes,
        "extra_forward_flops": extra_flops,
    }


def attention_figures(inference: Trace, train: Trace | None) -> dict[str, int]:
    """The activation figures that depend on the attention kernel, for `activations_by_attention`."""
    out = {"peak_inference_bytes": live_peak(inference).peak_bytes}
    if train is not None:
        out["saved_for_backward_bytes"] = saved_for_backward(train).total_bytes
        out["peak_train_forward_bytes"] = live_peak(train).peak_bytes
    return out


def memory_sections(inference: Trace, train: Trace | None, *, precision: str, optimizer: str,
                    master_fp32: bool, params: int, trainable: int,
                    backward_counts: Counts | None = None, forward_counts: Counts | None = None,
                    checkpoint: bool = False, param_bytes: float | None = None,
                    dropout: bool = True) -> dict[str, Any]:
    """`activations` (for totals), per-module bytes, and the `training` section.

    `dropout`: whether the training trace ran with dropout on (False: traced off)."""
    peak = live_peak(inference)
    activations: dict[str, Any] = {
        "peak_inference_bytes": peak.peak_bytes,
        "peak_inference_total_bytes": peak.peak_total_bytes,
        "static_bytes": peak.static_bytes,
        "peak_inference_at": {"index": peak.index, "op": peak.op, "module": peak.module},
    }
    # SDPA's math decomposition is the one caller of _safe_softmax.
    if (inference.mode == "meta" and inference.attention != "flash"
            and any(e.packet == "aten._safe_softmax" for e in inference.events)):
        # Meta tensors make scaled_dot_product_attention take its math path; a fused
        # kernel (flash, memory-efficient) never materialises the L x S scores. Under
        # 'flash' the calls took what a CPU takes, and settings.attention.kernels says which.
        activations["attention_path"] = ("meta: SDPA traced as its math form (L x S scores and "
                                         "probabilities materialised, saved in training); fused "
                                         "kernels keep O(L) instead (--attention flash)")
    paths = [m.path for m in inference.modules]
    modules: dict[str, dict[str, int]] = {
        p: {"peak_share_bytes": v} for p, v in inclusive(peak.by_module, paths).items()
    }
    out: dict[str, Any] = {"activations": activations, "modules": modules}
    if train is None:
        return out
    saved = saved_for_backward(train)
    forward_peak = live_peak(train)
    backward_peak = live_peak(train, ("forward", "backward"), count_from="backward")
    activations["saved_for_backward_bytes"] = saved.total_bytes
    activations["peak_train_forward_bytes"] = forward_peak.peak_bytes
    activations["peak_backward_bytes"] = backward_peak.peak_bytes
    for path, value in inclusive(saved.by_module, paths).items():
        modules.setdefault(path, {})["saved_bytes"] = value
    budget = training_budget(params, trainable, precision, optimizer, forward_peak.peak_bytes,
                             master_fp32, param_bytes)
    training: dict[str, Any] = {
        "optimizer": budget.optimizer,
        "precision": budget.precision,
        "master_fp32": budget.master_fp32,
        "param_bytes": budget.param_bytes,
        "grad_bytes": budget.grad_bytes,
        "optimizer_bytes": budget.optimizer_bytes,
        "master_weight_bytes": budget.master_weight_bytes,
        "activation_bytes": budget.activation_bytes,
        "total_bytes": budget.total_bytes,
        "method": ("counted: params + grads + fp32 optimizer state (+ fp32 master weights) + peak "
                   "live activations of the traced training forward"),
    }
    training["dropout"] = dropout_setting(train, dropout)
    if backward_counts is not None:
        t = backward_counts.totals
        out["backward_flops"] = t.flops + t.other_flops
        out["backward_macs"] = t.macs
        calls, recompute = attention_recompute(train.events)
        if calls:
            out["backward_attention"] = {"convention": BACKWARD_ATTENTION_CONVENTION,
                                         "fused_calls": calls, "recompute_macs": recompute}
    if checkpoint and forward_counts is not None:
        what_if = checkpoint_what_if(train, forward_counts)
        # The forward's activation peak is the saved tensors plus transients, so
        # dropping saved bytes lowers it by the same amount (to first order).
        what_if["total_bytes_with"] = budget.total_bytes + what_if["saved_bytes_delta"]
        training["checkpoint"] = what_if
    out["training"] = training
    return out


# The forward ops that draw a dropout mask: nn.Dropout / F.dropout, and math attention's.
_DROPOUT_OPS = ("aten.native_dropout", "aten.bernoulli_", "aten.bernoulli")


def dropout_setting(train: Trace, traced_on: bool) -> dict[str, Any]:
    """`training.dropout`: whether the training trace drew dropout masks, and how many.

    A training trace runs the model in train mode, so its dropout is active and each
    mask is kept for backward (it adds to saved bytes and the forward peak)."""
    masks = sum(1 for e in train.events if e.phase == "forward" and e.packet in _DROPOUT_OPS)
    if not traced_on:
        why = "traced with dropout off (every dropout the identity, SDPA dropout_p = 0)"
    elif masks:
        why = (f"traced with dropout active (train mode): {masks} ops draw a mask, kept for "
               "backward; an SDPA call with dropout takes the math form on a CPU; "
               "trace without it: --no-dropout (dropout=False)")
    else:
        why = "the model draws no dropout mask in train mode"
    return {"active": traced_on and masks > 0, "mask_ops": masks, "why": why}
