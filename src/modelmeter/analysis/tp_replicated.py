"""Which ops tensor parallelism leaves whole on every rank (layer 3, pure).

Megatron-LM's tensor parallelism (Shoeybi et al. 2019, section 3) splits the
matrix products of attention (by heads) and of the MLP (by columns, then rows),
and with them everything between: per-head attention, the MLP's intermediate
activation. What sits on the residual stream between the split regions, the
norms, the residual adds, the dropout of a block's output, is computed whole on
every rank: the all-reduce has just made the hidden states identical there
(Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models", section 4.2.2; sequence parallelism splits these along the sequence).

Read off the trace, without names: an op that is not a matrix product and whose
largest floating tensor read or written, weights aside, is one hidden-size tensor,
tokens x hidden with hidden the last dimension, or one value per token (a norm's
statistics, tokens x 1).
"""

from __future__ import annotations

from ..core.events import BUFFER, PARAMETER, OpEvent

_FLOATS = ("float", "bfloat", "half")


def replicated_under_tp(event: OpEvent, category: str, tokens: int, hidden: int | None) -> bool:
    """True for an op every tensor-parallel rank runs whole (module docstring)."""
    if not hidden or category in ("contraction", "view"):
        return False
    acts = [t for t in (*event.inputs, *event.outputs)
            if t.role not in (PARAMETER, BUFFER) and t.dtype.startswith(_FLOATS) and t.shape]
    if not acts:
        return False
    big = max(acts, key=lambda t: t.numel)
    # Per-token statistics (a norm's mean and reciprocal root: tokens x 1) go with their norm.
    return (big.shape[-1] == hidden and big.numel == tokens * hidden) or (big.shape[-1] == 1 and big.numel == tokens)
