"""Which parameters a weight-only quantiser converts, and the bytes that follow (layer 1, pure).

GPTQ, AWQ and bitsandbytes replace the linear layers of a model with quantised
ones and leave everything else alone: embedding tables, norms and biases stay
in the model's 16-bit precision, and so does the output layer (transformers'
bitsandbytes integration skips the output embedding, `lm_head`; GPTQ/AWQ
quantise only the linear layers of the decoder blocks). fp8 checkpoints
(vLLM, TensorRT-LLM) do the same. Convolutional networks are treated alike:
convolution and linear weights quantised, batch-norm and biases kept, the
classifier (the output layer) kept.

Classification uses what the trace recorded: the owning module's type, the
parameter's name and shape, and the order the modules ran in. The output
layer is the linear/convolution module whose last op ran last in the forward
pass (a tied head owns no parameter of its own: its weight is the embedding,
kept anyway).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import prod

from ..core.events import ParamRecord, Trace
from ..core.precision import (
    Precision,
    QuantLayout,
    WeightTensor,
    param_size,
    parse_precision,
    quant_layout,
    tensor_bytes,
)

_CONV = re.compile(r"Conv(Transpose)?[123]d")
# transformers' GPT-2 style Conv1D is a linear layer with a transposed (in, out) weight.
_TRANSPOSED_LINEAR = ("Conv1D",)
# nn.MultiheadAttention keeps its input projections as its own parameters.
_MHA_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def _is_linear(module_type: str) -> bool:
    return module_type.endswith("Linear") or module_type in _TRANSPOSED_LINEAR


def _is_conv(module_type: str) -> bool:
    return bool(_CONV.search(module_type))


def output_head(trace: Trace) -> str | None:
    """Path of the linear/convolution module that ran last in the forward pass."""
    last: tuple[int, str] | None = None
    for m in trace.modules:
        if m.last_event is None or not (_is_linear(m.type) or _is_conv(m.type)):
            continue
        if last is None or m.last_event > last[0]:
            last = (m.last_event, m.path)
    return last[1] if last else None


def _kind(p: ParamRecord, module_type: str, head: str | None) -> str:
    leaf = p.name.rpartition(".")[2]
    is_bias = leaf == "bias" or leaf.endswith("_bias")
    if _is_linear(module_type) or _is_conv(module_type):
        if p.module == head:
            return "head"
        if leaf == "weight":
            return "conv" if _is_conv(module_type) else "linear"
        return "bias" if is_bias else "other"
    if leaf in _MHA_WEIGHTS and module_type == "MultiheadAttention":
        return "linear"
    if module_type.endswith("Experts") and not is_bias:  # transformers >= 5 MoE: 3-D tensors
        return "experts"
    if "Norm" in module_type:
        return "norm"
    if "Embedding" in module_type:
        return "embedding"
    return "bias" if is_bias else "other"


def _row_length(p: ParamRecord, kind: str, module_type: str) -> int:
    shape = p.shape
    if not shape:
        return p.numel
    if module_type in _TRANSPOSED_LINEAR and len(shape) == 2:
        return shape[0]
    if kind == "conv":
        return prod(shape[1:]) if len(shape) > 1 else p.numel
    return shape[-1]


def weight_tensors(trace: Trace) -> tuple[WeightTensor, ...]:
    """Every parameter of the trace, classified for the weight-only layout."""
    types = {m.path: m.type for m in trace.modules}
    head = output_head(trace)
    out = []
    for p in trace.parameters:
        module_type = types.get(p.module, "")
        kind = _kind(p, module_type, head)
        out.append(WeightTensor(p.name, p.module, p.numel, p.itemsize, p.dtype, kind,
                                _row_length(p, kind, module_type)))
    return tuple(out)


@dataclass(frozen=True)
class ParameterSizes:
    """Parameter bytes of a trace at a what-if precision."""

    by_name: dict[str, float]  # parameter name -> bytes
    param_bytes: float
    scale_bytes: float
    layout: QuantLayout | None  # the weight-only layout, for quantised precisions
    tensors: tuple[WeightTensor, ...]


def parameter_sizes(trace: Trace, precision: str | None, group_size: int | None) -> ParameterSizes:
    """Bytes per parameter: as traced (None), every one at a float precision, or the
    weight-only layout at a quantised one (int8, int4, nf4, fp8), kept tensors as traced."""
    tensors = weight_tensors(trace)
    if precision is None:
        by_name = {t.name: float(t.numel * t.itemsize) for t in tensors}
        return ParameterSizes(by_name, sum(by_name.values()), 0.0, None, tensors)
    p: Precision = parse_precision(precision)
    by_name = {t.name: tensor_bytes(t, p, group_size) for t in tensors}
    if not p.quantised:
        size = param_size(sum(t.numel for t in tensors), p, group_size)
        return ParameterSizes(by_name, size.total_bytes, size.scale_bytes, None, tensors)
    layout = quant_layout(tensors, p, group_size)
    return ParameterSizes(by_name, layout.total_bytes, layout.scale_bytes, layout, tensors)
