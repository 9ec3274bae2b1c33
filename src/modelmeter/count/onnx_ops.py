"""Counting an ONNX graph: pure per-node formulas on inferred shapes (layer 1, pure).

The conventions are those of the aten path (`contractions.py`, `other.py`), so
an exported model counts the same MACs as the module it came from:

| node | MACs | other FLOPs |
|---|---|---|
| MatMul, MatMulInteger, QLinearMatMul | output elements x K (numpy broadcasting) | — |
| Gemm | M x N x K (transA/transB) | — (bias folded, as aten.addmm) |
| Conv, ConvInteger, QLinearConv | output elements x C_in/groups x kernel | — |
| ConvTranspose | input elements x C_out/groups x kernel | — |
| Attention (ai.onnx 23) / com.microsoft MultiHeadAttention | B x S x L x (E_qk + E_v) summed over heads | — |
| com.microsoft Attention | the QKV projection + the attention above | — |
| elementwise, activations, norms, softmax | — | per element, as `other.py`'s table |
| ReduceX, ArgMax/ArgMin, GlobalXPool | — | per input element |
| MaxPool, AveragePool, LpPool | — | kernel size per output element |

Conv output sizes come from shape inference; where it left them unknown they are
computed from pads, strides, dilations and auto_pad. Data-movement nodes
(Reshape, Transpose, Gather, Concat, Slice, Cast…) count bytes, no FLOPs; the
shape-only ones (Reshape, Squeeze, Unsqueeze, Flatten, Identity, Shape, Size)
count nothing, like aten's views. Any other node is *uncounted*: listed, with a
lower-bound estimate of one FLOP per element of its largest tensor.

Parameters: ONNX does not tell parameters from buffers, so `params` is the
elements of the floating-point initializers of rank >= 1 (scalar constants and
integer shape constants are not parameters); buffers a model exported as
initializers (a causal mask) count too. Each is attributed to the module of the
first node that reads it. Bytes are unfused, as on the aten path.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from math import ceil, floor, prod

from ..core.graph import Graph, GraphNode, GraphValue
from ..core.results import SOURCE_OURS, Counts, CountTotals, ModuleCounts, OpCount
from .contractions import conv_macs
from .engine import ancestors

__all__ = ["count_graph", "node_cost"]

# --- other FLOPs per output element (the aten table's costs, under ONNX names) ----------
_PER_OUTPUT: dict[str, int] = {}
for _names, _cost in (
    ("Add Sub Mul Div Neg Abs Reciprocal Max Min Clip Equal Less LessOrEqual Greater "
     "GreaterOrEqual Where And Or Not Xor BitwiseAnd BitwiseOr BitwiseNot BitwiseXor Relu Sign "
     "Floor Ceil Round Mod IsNaN IsInf Sum Mean ThresholdedRelu Shrink", 1),
    ("Exp Log Sqrt Tanh Erf Pow Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh", 1),
    ("LeakyRelu Elu Selu Celu PRelu Softplus Softsign", 2),
    ("HardSigmoid", 3),
    ("Sigmoid HardSwish Mish", 4),
    ("Swish", 5),
    ("Softmax LogSoftmax Hardmax", 5),
    ("LayerNormalization GroupNormalization InstanceNormalization SimplifiedLayerNormalization "
     "SkipLayerNormalization RMSNormalization", 8),
    ("BatchNormalization", 4),  # inference form: sub, mul by rsqrt(var), mul, add
    ("CumSum", 1),
):
    for _name in _names.split():
        _PER_OUTPUT[_name] = _cost

_PER_INPUT: dict[str, int] = {}
for _names, _cost in (
    ("ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceLogSumExp ArgMax ArgMin "
     "GlobalAveragePool GlobalMaxPool", 1),
    ("ReduceL1 ReduceL2 ReduceSumSquare ReduceLogSum GlobalLpPool", 2),
):
    for _name in _names.split():
        _PER_INPUT[_name] = _cost

# Shape-only nodes: no bytes move (aten's views); data nodes: bytes move, nothing computed.
SHAPE_ONLY = frozenset("Reshape Squeeze Unsqueeze Flatten Identity Shape Size Dropout "
                       "Optional OptionalGetElement".split())
DATA_MOVEMENT = frozenset(
    "Transpose Gather GatherElements GatherND Concat Slice Split SplitToSequence Expand Tile Pad "
    "Cast CastLike Constant ConstantOfShape Range ScatterND ScatterElements Scatter DepthToSpace "
    "SpaceToDepth Trilu NonZero TopK EyeLike OneHot Compress ReverseSequence Col2Im "
    "QuantizeLinear DequantizeLinear DynamicQuantizeLinear RandomNormal RandomUniform "
    "RandomNormalLike RandomUniformLike Multinomial Unique".split()
)


def _shape(v: GraphValue | None) -> tuple[int, ...]:
    if v is None or v.shape is None:
        raise ValueError("unknown shape")
    return v.shape


def _in(node: GraphNode, i: int) -> tuple[int, ...]:
    return _shape(node.inputs[i] if i < len(node.inputs) else None)


def _out(node: GraphNode, i: int = 0) -> tuple[int, ...]:
    return _shape(node.outputs[i] if i < len(node.outputs) else None)


# --- contractions ----------------------------------------------------------------------------


def matmul_macs(a: tuple[int, ...], b: tuple[int, ...], out: tuple[int, ...]) -> int:
    """numpy matmul: every output element is a K-long dot product (1-D operands included)."""
    k = a[-1] if a else 1
    return prod(out) * k


def gemm_macs(a: tuple[int, ...], b: tuple[int, ...], trans_a: int, trans_b: int) -> int:
    m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
    n = b[0] if trans_b else b[1]
    return m * k * n


def conv_output(x: tuple[int, ...], w: tuple[int, ...], attrs: dict, transposed: bool) -> tuple[int, ...]:
    """Output shape of (transposed) convolution from its attributes, as the ONNX spec defines it."""
    spatial = x[2:]
    kernel = attrs.get("kernel_shape") or list(w[2:])
    n = len(spatial)
    strides = attrs.get("strides") or [1] * n
    dilations = attrs.get("dilations") or [1] * n
    pads = attrs.get("pads") or [0] * (2 * n)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    group = int(attrs.get("group", 1))
    sizes = []
    for i in range(n):
        eff = dilations[i] * (kernel[i] - 1) + 1
        if transposed:
            if attrs.get("output_shape"):
                sizes.append(int(attrs["output_shape"][i]))
                continue
            extra = (attrs.get("output_padding") or [0] * n)[i]
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                sizes.append(spatial[i] * strides[i])
            else:
                sizes.append(strides[i] * (spatial[i] - 1) + extra + eff - pads[i] - pads[i + n])
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            sizes.append(ceil(spatial[i] / strides[i]))
        elif auto_pad == "VALID":
            sizes.append(floor((spatial[i] - eff) / strides[i]) + 1)
        else:
            sizes.append(floor((spatial[i] + pads[i] + pads[i + n] - eff) / strides[i]) + 1)
    channels = w[1] * group if transposed else w[0]
    return (x[0], channels, *sizes)


def _conv(node: GraphNode, transposed: bool = False, weight_input: int = 1) -> int:
    """A convolution's MACs; the output shape from shape inference, else from the attributes."""
    x, w = _in(node, 0), _in(node, weight_input)
    try:
        out = _out(node)
    except ValueError:
        out = conv_output(x, w, dict(node.attributes), transposed)
    return conv_macs(x, w, out, transposed)


def _qlinear_conv(node: GraphNode) -> int:
    # QLinearConv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B)
    return _conv(node, weight_input=3)


def attention_3d_macs(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...]) -> int:
    """Scores and weighted sum for q [B, S, H*E], k [B, L, H*E], v [B, L, H*Ev]: the heads
    split the hidden size, so B x S x L x (H*E + H*Ev) whatever the head count."""
    return q[0] * q[1] * k[1] * (q[2] + v[2])


def attention_4d_macs(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...]) -> int:
    """q [B, H, S, E], k/v [B, Hk, L, E|Ev]: every query head scores all L keys (GQA too)."""
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def _attention(node: GraphNode) -> int:
    q, k = _in(node, 0), _in(node, 1)
    v = _in(node, 2)
    if len(q) == 4:
        return attention_4d_macs(q, k, v)
    return attention_3d_macs(q, k, v)


def _ms_attention(node: GraphNode) -> int:
    # com.microsoft.Attention(input [B, S, D], weights [D, Dq + Dk + Dv], bias, ...)
    x, w = _in(node, 0), _in(node, 1)
    sizes = node.attributes.get("qkv_hidden_sizes") or [w[1] // 3] * 3
    dq, _, dv = sizes
    b, s = x[0], x[1]
    return b * s * x[2] * w[1] + b * s * s * (dq + dv)


def _ms_mha(node: GraphNode) -> int:
    # com.microsoft.MultiHeadAttention(query [B, S, D], key [B, L, D], value [B, L, Dv], ...);
    # packed forms (key absent, or 5-D) are counted from the output and the key length.
    q = _in(node, 0)
    k = node.inputs[1] if len(node.inputs) > 1 else None
    v = node.inputs[2] if len(node.inputs) > 2 else None
    if k is None or v is None or len(_shape(k)) != 3:
        raise ValueError("packed QKV layout")
    return attention_3d_macs(q, _shape(k), _shape(v))


_MACS: dict[str, Callable[[GraphNode], int]] = {
    "MatMul": lambda n: matmul_macs(_in(n, 0), _in(n, 1), _out(n)),
    "MatMulInteger": lambda n: matmul_macs(_in(n, 0), _in(n, 1), _out(n)),
    "QLinearMatMul": lambda n: matmul_macs(_in(n, 0), _in(n, 3), _out(n)),
    "Gemm": lambda n: gemm_macs(_in(n, 0), _in(n, 1), int(n.attributes.get("transA", 0)),
                                int(n.attributes.get("transB", 0))),
    "Conv": _conv,
    "ConvInteger": _conv,
    "QLinearConv": _qlinear_conv,
    "ConvTranspose": lambda n: _conv(n, transposed=True),
    "Attention": _attention,
    "com.microsoft.Attention": _ms_attention,
    "com.microsoft.MultiHeadAttention": _ms_mha,
}


# --- other FLOPs -----------------------------------------------------------------------------


def _other(node: GraphNode) -> int | None:
    op = node.op_type if node.domain in ("", "ai.onnx", "com.microsoft") else node.op
    if op == "Gelu" or op == "FastGelu" or op == "BiasGelu":
        approximate = node.attributes.get("approximate", "none")
        per = 9 if op == "FastGelu" or approximate == "tanh" else 5
        return per * prod(_out(node))
    if op in _PER_OUTPUT:
        return _PER_OUTPUT[op] * prod(_out(node))
    if op in _PER_INPUT:
        return _PER_INPUT[op] * prod(_in(node, 0))
    if op in ("MaxPool", "AveragePool", "LpPool"):
        return prod(node.attributes.get("kernel_shape") or [1]) * prod(_out(node))
    if op == "Resize":
        mode = node.attributes.get("mode", "nearest")
        if mode == "nearest":
            return 0
        rank = len(_out(node)) - 2  # spatial dims interpolated: 3 FLOPs per lerp
        per = {"linear": {1: 3, 2: 9, 3: 21}, "cubic": {2: 35}}.get(mode, {}).get(rank)
        return per * prod(_out(node)) if per is not None else None
    return None


def node_cost(node: GraphNode) -> tuple[str, int, int]:
    """(category, MACs, other FLOPs) of one node; category as OpCount.category."""
    key = node.op if node.domain not in ("", "ai.onnx") else node.op_type
    if (formula := _MACS.get(key)) is not None:
        try:
            return "contraction", formula(node), 0
        except (ValueError, IndexError, TypeError, KeyError):
            return "uncounted", 0, 0
    try:
        flops = _other(node)
    except (ValueError, IndexError, TypeError):
        flops = None
    if flops is not None:
        return ("data" if flops == 0 else "other"), 0, flops
    if node.op_type in SHAPE_ONLY and node.domain in ("", "ai.onnx"):
        return "view", 0, 0
    if node.op_type in DATA_MOVEMENT and node.domain in ("", "ai.onnx"):
        return "data", 0, 0
    return "uncounted", 0, 0


# --- the whole graph -------------------------------------------------------------------------


def is_parameter(v: GraphValue) -> bool:
    """A weight or bias: a floating-point initializer of rank >= 1."""
    return v.initializer and bool(v.shape) and v.dtype.startswith(("float", "bfloat"))


def _count_node(index: int, node: GraphNode) -> OpCount:
    category, macs, extra = node_cost(node)
    ins = [v for v in node.inputs if v is not None]
    if category == "view":
        read = written = param_read = 0
    else:
        read = sum(v.nbytes for v in ins)
        written = sum(v.nbytes for v in node.outputs)
        param_read = sum(v.nbytes for v in ins if is_parameter(v))
    estimate = 0
    if category == "uncounted":
        estimate = max((v.numel or 0 for v in (*ins, *node.outputs)), default=0)
    dtype = next((v.dtype for v in (*ins, *node.outputs) if v.dtype.startswith(("float", "bfloat"))),
                 ins[0].dtype if ins else "float32")
    return OpCount(
        index=index, op=node.op, module=node.module, phase="forward", category=category,
        macs=macs, other_flops=extra, bytes_read=read, bytes_written=written, dtype=dtype,
        param_bytes_read=param_read, source=SOURCE_OURS if category in ("contraction", "other") else "",
        estimated_flops=estimate,
    )


def count_graph(graph: Graph) -> Counts:
    """Counts of an ONNX graph in the aten path's structure: totals, modules, uncounted ops."""
    ops = tuple(_count_node(i, n) for i, n in enumerate(graph.nodes))
    uncounted = Counter(o.op for o in ops if o.category == "uncounted")

    # Each parameter belongs to the module of the first node that reads it.
    owner: dict[str, str] = {}
    for node in graph.nodes:
        for v in node.inputs:
            if v is not None and v.initializer and v.name not in owner:
                owner[v.name] = node.module
    params = [v for v in graph.initializers if is_parameter(v)]
    own_params: Counter[str] = Counter()
    for p in params:
        own_params[owner.get(p.name, "")] += p.numel or 0

    paths: set[str] = {""}
    for node in graph.nodes:
        paths.update(ancestors(node.module))
    inclusive: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    for o in ops:
        for anc in ancestors(o.module):
            acc = inclusive[anc]
            acc[0] += o.macs
            acc[1] += o.other_flops
            acc[2] += o.bytes_read
            acc[3] += o.bytes_written
    for p in params:
        for anc in ancestors(owner.get(p.name, "")):
            inclusive[anc][4] += p.numel or 0
            inclusive[anc][5] += p.nbytes
    boundary = _module_boundaries(graph)
    modules = tuple(
        ModuleCounts(
            path=path, type=graph.module_types.get(path, "graph" if not path else ""),
            depth=0 if not path else path.count(".") + 1, calls=1,
            params=inclusive[path][4], own_params=own_params[path], param_bytes=inclusive[path][5],
            macs=inclusive[path][0], other_flops=inclusive[path][1],
            bytes_read=inclusive[path][2], bytes_written=inclusive[path][3],
            input_bytes=boundary[path][0], output_bytes=boundary[path][1],
        )
        for path in sorted(paths, key=_path_order(graph))
    )
    n_params = sum(p.numel or 0 for p in params)
    others = [v for v in graph.initializers if v.initializer and not is_parameter(v)]
    totals = CountTotals(
        params=n_params, trainable_params=n_params,
        buffers=sum(v.numel or 0 for v in others), buffer_bytes=sum(v.nbytes for v in others),
        param_bytes=float(sum(p.nbytes for p in params)), param_scale_bytes=0.0,
        macs=sum(o.macs for o in ops), other_flops=sum(o.other_flops for o in ops),
        bytes_read=sum(o.bytes_read for o in ops), bytes_written=sum(o.bytes_written for o in ops),
        active_params=n_params, active_params_without_embeddings=n_params,
    )
    return Counts(totals, modules, ops, tuple(sorted(uncounted.items(), key=lambda kv: -kv[1])))


def _path_order(graph: Graph) -> Callable[[str], tuple[int, str]]:
    """Modules in the order the graph first reaches them (parents before children)."""
    first: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for anc in ancestors(node.module):
            first.setdefault(anc, i)
    return lambda path: (first.get(path, 0), path)


def _inside(module: str, scope: str) -> bool:
    return not scope or module == scope or module.startswith(scope + ".")


def _module_boundaries(graph: Graph) -> dict[str, tuple[int, int]]:
    """Bytes of the activations entering and leaving each module, each tensor once.

    In: read inside, made outside (or a graph input). Out: made inside, read
    outside (or read by nobody: a graph output). Initializers are parameters, not inputs.
    """
    produced: dict[str, str] = {v.name: n.module for n in graph.nodes for v in n.outputs}
    readers: dict[str, set[str]] = defaultdict(set)
    size: dict[str, int] = {}
    for node in graph.nodes:
        for v in (*node.inputs, *node.outputs):
            if v is not None:
                size[v.name] = v.nbytes
        for v in node.inputs:
            if v is not None and not v.initializer:
                readers[v.name].add(node.module)
    bounds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, mods in readers.items():
        src = produced.get(name)
        scopes = {anc for m in mods for anc in ancestors(m)}
        for scope in scopes:
            if src is None or not _inside(src, scope):
                bounds[scope][0] += size.get(name, 0)
    for name, src in produced.items():
        mods = readers.get(name, set())
        for scope in ancestors(src):
            if not mods or any(not _inside(m, scope) for m in mods):
                bounds[scope][1] += size.get(name, 0)
    return defaultdict(lambda: (0, 0), {k: (v[0], v[1]) for k, v in bounds.items()})
