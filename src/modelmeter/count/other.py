"""Non-contraction arithmetic ("other FLOPs") and pure data movement (layer 1, pure).

One FLOP per arithmetic operation per element; transcendental functions
(exp, log, erf, tanh, sqrt, rsqrt, sin, cos) count as one operation each.
The table below is the whole convention; its `basis` says which element count
the per-element cost multiplies: the op's output ("out") or its first input
("in", for reductions and adaptive pooling).

| op (aten packet) | FLOPs per element | why |
|---|---|---|
| add, sub, rsub, mul, div, neg, abs, reciprocal, maximum, minimum, clamp, comparisons, where, logical ops, relu, hardtanh, threshold | 1 | one operation |
| exp, log, log1p, expm1, sqrt, rsqrt, sin, cos, tanh, erf, pow | 1 | one (transcendental) operation |
| addcmul, addcdiv, lerp, leaky_relu, elu | 2 | two operations |
| hardsigmoid | 3 | add, clamp, div |
| sigmoid | 4 | neg, exp, add, div |
| hardswish | 4 | add, clamp, div, mul |
| silu | 5 | sigmoid (4) + mul |
| gelu (exact) | 5 | div, erf, add, mul, mul |
| gelu (tanh) | 9 | x^3 (2), mul, add, mul, tanh, add, mul, mul |
| softmax, log_softmax, _safe_softmax | 5 | max, sub, exp, sum, div (log) |
| native_layer_norm, native_group_norm | 8 | mean 1, variance 3, normalise 2, affine 2 |
| batch norm, eval | 4 | sub, mul (by rsqrt(var)), mul, add |
| batch norm, train | 7 | + mean and variance (3) |
| sum, mean, amax, amin, max, min, argmax, argmin, prod, logsumexp, any, all | 1 per input element | one accumulate each |
| var, std | 3 per input element | sub, mul, add |
| linalg_vector_norm, norm | 2 per input element | mul, add |
| cumsum, cumprod | 1 | one accumulate |
| max_pool, avg_pool | kernel size per output element | one compare/add per window element |
| adaptive_avg_pool, adaptive_max_pool | 1 per input element | every input joins one window |
| upsample linear1d / bilinear2d / tricubic… | 3 / 9 / 21 per output; bicubic 35 | 3 per lerp |
| native_dropout | 2 | mask compare, scaled mul |
| floor_divide | 2 | div, floor |
| aminmax | 2 per input element | one compare for the min, one for the max |
| index_add | 1 per element of `source` (2 when alpha ≠ 1) | one add (and the scaling mul) |
| histc | 6 per input element (+2 when min = max = 0) | 2 range compares, sub, mul, clamp, increment (+ the data's min and max) |
| _unique2, _unique | n·⌈log₂ n⌉ + n, n = input elements | sort compares + one adjacent compare each |
| torchvision nms | 13 per box pair + 3 per box + n·⌈log₂ n⌉ | worst-case IoU of every pair, areas, score sort |
| torchvision roi_align (and its backward) | 8·s² + 1 per output element | s² bilinear samples (4 mul, 3 add, 1 accumulate), 1 div |
| backward of the elementwise ops above | as named in `_BACKWARD` | derivative arithmetic |

Ops in none of these tables and not data movement are *uncounted*; their FLOPs
are estimated from their shapes (`estimated_flops`: one per element of the
largest tensor they read or write, a lower bound for anything that computes on
every element) so that `flop_coverage` can say how much of the arithmetic is
counted.
"""

from __future__ import annotations

from collections.abc import Callable
from math import ceil, log2, prod

from ..core.events import OpEvent, TensorMeta

_PER_OUTPUT: dict[str, int] = {}
for _names, _cost in (
    ("add sub rsub mul div neg abs reciprocal maximum minimum clamp clamp_min clamp_max "
     "eq ne lt le gt ge where logical_and logical_or logical_not logical_xor bitwise_and "
     "bitwise_or bitwise_not bitwise_xor relu hardtanh threshold sign sgn floor ceil round trunc "
     "remainder fmod isnan isinf masked_fill fill", 1),
    ("exp exp2 log log2 log10 log1p expm1 sqrt rsqrt sin cos tan tanh erf erfinv pow square atan", 1),
    ("addcmul addcdiv lerp leaky_relu elu prelu _prelu_kernel softplus floor_divide", 2),
    ("hardsigmoid", 3),
    ("sigmoid hardswish mish", 4),
    ("silu", 5),
    ("softmax _softmax log_softmax _log_softmax _safe_softmax", 5),
    ("native_layer_norm native_group_norm", 8),
    ("_native_batch_norm_legit_no_training", 4),
    ("native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_functional "
     "_batch_norm_with_update cudnn_batch_norm", 7),
    ("cumsum cumprod", 1),
    ("native_dropout", 2),
    ("upsample_linear1d", 3),
    ("upsample_bilinear2d _upsample_bilinear2d_aa", 9),
    ("upsample_trilinear3d", 21),
    ("upsample_bicubic2d _upsample_bicubic2d_aa", 35),
):
    for _name in _names.split():
        _PER_OUTPUT[f"aten.{_name}"] = _cost

_PER_INPUT: dict[str, int] = {}
for _names, _cost in (
    ("sum mean amax amin max min argmax argmin prod logsumexp any all nansum "
     "adaptive_max_pool2d adaptive_max_pool1d _adaptive_avg_pool2d _adaptive_avg_pool3d "
     "adaptive_avg_pool1d", 1),
    ("linalg_vector_norm norm aminmax", 2),
    ("var std var_mean std_mean", 3),
):
    for _name in _names.split():
        _PER_INPUT[f"aten.{_name}"] = _cost

# Backward ops: per element of their (first) output.
_BACKWARD: dict[str, int] = {
    "aten.threshold_backward": 1,
    "aten.sigmoid_backward": 2,
    "aten.tanh_backward": 2,
    "aten.silu_backward": 6,
    "aten.gelu_backward": 10,
    "aten.hardswish_backward": 4,
    "aten.hardsigmoid_backward": 2,
    "aten.leaky_relu_backward": 2,
    "aten.hardtanh_backward": 2,
    "aten._softmax_backward_data": 4,
    "aten._log_softmax_backward_data": 4,
    "aten.native_layer_norm_backward": 12,
    "aten.native_group_norm_backward": 12,
    "aten.native_batch_norm_backward": 10,
    "aten._native_batch_norm_legit_backward": 10,
    "aten.native_dropout_backward": 1,
    "aten.embedding_dense_backward": 1,
    "aten.upsample_bilinear2d_backward": 9,
    "aten.upsample_nearest2d_backward": 1,
    "aten._adaptive_avg_pool2d_backward": 1,
    "aten.max_pool2d_with_indices_backward": 1,
    "aten.avg_pool2d_backward": 1,
    "aten.mse_loss_backward": 3,
}

_POOL = {"aten.max_pool1d", "aten.max_pool2d", "aten.max_pool3d", "aten.max_pool2d_with_indices",
         "aten.max_pool3d_with_indices", "aten.avg_pool1d", "aten.avg_pool2d", "aten.avg_pool3d"}

# Ops that only move, copy, create or reinterpret data: zero FLOPs by nature (an in-place
# twin, copy_ or scatter_, counts as its twin: `is_data_movement`).
DATA_MOVEMENT = frozenset(
    f"aten.{n}" for n in (
        "view _unsafe_view reshape _reshape_alias expand expand_as permute transpose t contiguous "
        "clone copy _to_copy to slice select index index_select gather scatter scatter_add "
        "cat stack split split_with_sizes chunk unbind squeeze unsqueeze flatten unflatten alias "
        "detach narrow as_strided empty empty_like empty_strided new_empty new_empty_strided "
        "zeros zeros_like ones ones_like full full_like new_zeros new_ones new_full arange "
        "embedding lift_fresh lift_fresh_copy scalar_tensor constant_pad_nd pad repeat "
        "repeat_interleave roll flip tril triu index_put slice_scatter select_scatter "
        "diagonal unfold upsample_nearest1d upsample_nearest2d upsample_nearest3d "
        "_upsample_nearest_exact2d pixel_shuffle pixel_unshuffle channel_shuffle _unsafe_index "
        "zero_ bernoulli rand rand_like randn randn_like uniform_ normal_ randint "
        "view_as_real view_as_complex masked_select nonzero sort topk swapdims_ swapaxes_ "
        "resize_ set_ _unsafe_index_put item _local_scalar_dense fill_ "
        "empty_permuted linspace eye im2col col2im masked_scatter sym_size "
        "_assert_async _assert_tensor_metadata _functional_assert_async "
        # the backward of a slice or select: zeros, then the gradient copied into place
        "slice_backward select_backward diagonal_backward as_strided_scatter diagonal_scatter"
    ).split()
)


# In-place ops that only change a tensor's shape/strides: views, though their name ends in '_'.
INPLACE_VIEWS = frozenset(
    f"aten.{n}" for n in "as_strided_ t_ transpose_ squeeze_ unsqueeze_ swapdims_ swapaxes_ detach_".split()
)


def _numel(t: TensorMeta) -> int:
    return prod(t.shape)


# --- Ops whose cost is not a fixed multiple of one tensor: pure functions of shapes -----

def index_add_flops(source_numel: int, alpha: float = 1) -> int:
    """Each element of `source` is added into `self` once (and scaled first when alpha != 1)."""
    return source_numel * (1 if alpha == 1 else 2)


def histc_flops(numel: int, range_from_data: bool) -> int:
    """Per element: 2 compares against the range, sub, mul by bins/(max-min), clamp to the
    last bin, increment its bin. With min = max (the default 0, 0) the range is the data's
    own min and max: one more compare each."""
    return numel * (6 + (2 if range_from_data else 0))


def _sort_compares(n: int) -> int:
    return n * ceil(log2(n)) if n > 1 else 0


def unique_flops(numel: int) -> int:
    """Sort-based unique: n·⌈log₂ n⌉ compares to sort, then one adjacent compare each."""
    return _sort_compares(numel) + numel


def nms_flops(boxes: int) -> int:
    """torchvision::nms on n boxes, worst case (no box suppressed, so every pair's IoU is
    computed): areas 3 per box (2 sub, 1 mul); the score sort n·⌈log₂ n⌉ compares; per pair
    13: intersection corners 4 (2 max, 2 min), width/height 2 sub + 2 clamp, its area 1 mul,
    union 2 (add, sub), IoU 1 div, compare with the threshold 1."""
    pairs = boxes * (boxes - 1) // 2
    return 13 * pairs + 3 * boxes + _sort_compares(boxes)


def roi_align_flops(output_numel: int, sampling_ratio: int) -> int:
    """torchvision::roi_align, per output element (box x channel x bin): s x s bilinear
    samples, each 4 mul + 3 add + 1 accumulate, then 1 div for the average. With
    sampling_ratio <= 0 torchvision picks s from each box's size (data, not shapes): counted
    as 1, the least it can be. The backward scatters the same samples: the same count.
    The bilinear weights, shared by all channels, are not counted."""
    s = sampling_ratio if sampling_ratio > 0 else 1
    return output_numel * (8 * s * s + 1)


def _arg(event: OpEvent, i: int, name: str, default: object) -> object:
    if len(event.args) > i:
        return event.args[i]
    return event.kwargs.get(name, default)


def _index_add(e: OpEvent) -> int:
    # index_add(self, dim, index, source, *, alpha=1)
    source = _arg(e, 3, "source", None)
    alpha = e.kwargs.get("alpha", 1)
    return index_add_flops(source.numel if isinstance(source, TensorMeta) else 0, alpha)


def _histc(e: OpEvent) -> int:
    # histc(self, bins=100, min=0, max=0)
    low, high = _arg(e, 2, "min", 0), _arg(e, 3, "max", 0)
    return histc_flops(e.inputs[0].numel, low == high)


def _roi_align(e: OpEvent) -> int:
    # roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    return roi_align_flops(e.outputs[0].numel, int(_arg(e, 5, "sampling_ratio", -1)))


def _roi_align_backward(e: OpEvent) -> int:
    # _roi_align_backward(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
    #                     channels, height, width, sampling_ratio, aligned)
    return roi_align_flops(e.inputs[0].numel, int(_arg(e, 9, "sampling_ratio", -1)))


# torchvision's ops are keyed by their name string ('torchvision::nms' dispatches as
# 'torchvision.nms'), so they count whenever torchvision is installed, without importing it.
_SPECIAL: dict[str, Callable[[OpEvent], int]] = {
    "aten.index_add": _index_add,
    "aten.index_add_": _index_add,
    "aten.histc": _histc,
    "aten._unique2": lambda e: unique_flops(e.inputs[0].numel),
    "aten._unique": lambda e: unique_flops(e.inputs[0].numel),
    "torchvision.nms": lambda e: nms_flops(e.inputs[0].shape[0]),
    "torchvision.roi_align": _roi_align,
    "torchvision._roi_align_backward": _roi_align_backward,
}


def estimated_flops(event: OpEvent) -> int:
    """Lower-bound FLOPs of an op without a formula: one per element of its largest tensor."""
    return max((t.numel for t in (*event.inputs, *event.outputs)), default=0)


def other_flops(event: OpEvent) -> int | None:
    """Non-contraction FLOPs of one op; None when the op is not in the table."""
    packet = event.packet
    if packet.endswith("_") and packet[:-1] in _PER_OUTPUT:  # in-place twin: add_, mul_, relu_
        packet = packet[:-1]
    out = event.outputs[0] if event.outputs else None
    if packet in _PER_OUTPUT:
        cost = _PER_OUTPUT[packet]
        if packet in ("aten.native_layer_norm", "aten.native_group_norm") and _no_affine(event):
            cost = 5
        return cost * (_numel(out) if out is not None else 0)
    if packet in ("aten.gelu", "aten.gelu_"):
        approximate = event.kwargs.get("approximate", event.args[1] if len(event.args) > 1 else "none")
        return (9 if approximate == "tanh" else 5) * (_numel(out) if out is not None else 0)
    if packet in _PER_INPUT:
        first = event.inputs[0] if event.inputs else None
        return _PER_INPUT[packet] * (_numel(first) if first is not None else 0)
    if packet in _BACKWARD:
        return _BACKWARD[packet] * (_numel(out) if out is not None else 0)
    if packet in _SPECIAL:
        return _SPECIAL[packet](event)
    if packet in _POOL:
        kernel = event.args[1] if len(event.args) > 1 else [1]
        k = prod(kernel) if isinstance(kernel, (list, tuple)) else int(kernel) ** 2
        return k * (_numel(out) if out is not None else 0)
    return None


def _no_affine(event: OpEvent) -> bool:
    # native_layer_norm(input, normalized_shape, weight, bias, eps)
    weight = event.args[2] if len(event.args) > 2 else None
    return weight is None


def is_data_movement(event: OpEvent) -> bool:
    packet = event.packet
    # The in-place twin (scatter_, index_fill_...) moves data as its twin does.
    return packet in DATA_MOVEMENT or (packet.endswith("_") and packet[:-1] in DATA_MOVEMENT)
