"""Numeric precisions and what a parameter costs in each (layer 0).

Bits per element are storage bits. Block-quantised formats (int4, nf4, and
int8/fp8 when a group size is given) also store one scale per group; that
overhead is reported apart so a user sees both the payload and the scales.

Quantised weight what-ifs (int8, int4, nf4, fp8) follow the layout that
weight-only quantisers deploy (GPTQ, AWQ, bitsandbytes, fp8 checkpoints): the
weights of the linear and convolution layers are quantised; embeddings, the
output head, norms, biases and every other tensor keep their 16-bit (as
traced) precision. `quant_layout` sizes a model that way; `param_size` keeps
the naive "every parameter at N bits" figure beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UnknownPrecisionError


@dataclass(frozen=True)
class Precision:
    name: str
    bits: int
    is_float: bool
    # The peak-FLOP/s key in the hardware database used for compute at this precision.
    compute_key: str
    # torch dtype name used when a trace runs at this precision (None: no native dtype).
    torch_dtype: str | None
    # Whether a group size (one scale per group of weights) applies by default.
    default_group_size: int | None = None
    # Bits of one group's scale: fp16 for GPTQ/AWQ-style formats; bitsandbytes keeps
    # nf4's absmax in fp32.
    scale_bits: int = 16
    # Groups over the flattened tensor (bitsandbytes' blocks) instead of along each
    # output row's input features (GPTQ/AWQ groups).
    flat_groups: bool = False

    @property
    def quantised(self) -> bool:
        """A weight-only quantisation format (int8, int4, nf4, fp8), not a float to compute in."""
        return not self.is_float or self.bits < 16


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp64", 64, True, "fp64", "float64"),
        Precision("fp32", 32, True, "fp32", "float32"),
        # tf32 stores 32 bits; only the tensor-core compute is reduced.
        Precision("tf32", 32, True, "tf32", "float32"),
        Precision("fp16", 16, True, "fp16", "float16"),
        Precision("bf16", 16, True, "bf16", "bfloat16"),
        Precision("fp8", 8, True, "fp8", "float8_e4m3fn"),
        Precision("int8", 8, False, "int8", None),
        Precision("int4", 4, False, "int4", None),
        # NF4 as bitsandbytes stores it (QLoRA's default, no double quantisation):
        # 4-bit codes plus one fp32 absmax per block of 64 weights of the flattened tensor.
        Precision("nf4", 4, False, "int4", None, default_group_size=64, scale_bits=32,
                  flat_groups=True),
    )
}

ALIASES = {
    "float64": "fp64", "double": "fp64", "float32": "fp32", "float": "fp32",
    "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
    "float8": "fp8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8",
    "uint8": "int8", "qint8": "int8", "int32": "fp32",
}


def parse_precision(name: str) -> Precision:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in PRECISIONS:
        raise UnknownPrecisionError(
            f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}"
        )
    return PRECISIONS[key]


def precision_of_torch_dtype(dtype_name: str) -> Precision:
    """Map a torch dtype name ('float32', 'torch.bfloat16') to a precision."""
    key = dtype_name.replace("torch.", "")
    if key in ("int64", "int32", "int16", "bool", "uint8", "int8", "complex64"):
        # Integer/bool tensors (ids, masks) are bytes, not compute precisions.
        return PRECISIONS["int8"] if key in ("int8", "uint8") else PRECISIONS["fp32"]
    return parse_precision(key)


@dataclass(frozen=True)
class ParamSize:
    """Bytes to store a number of parameters at a precision."""

    precision: str
    params: int
    payload_bytes: float
    scale_bytes: float
    group_size: int | None

    @property
    def total_bytes(self) -> float:
        return self.payload_bytes + self.scale_bytes


def param_size(params: int, precision: str | Precision, group_size: int | None = None) -> ParamSize:
    """Bytes for `params` weights at `precision`, every one of them quantised (the naive figure).

    Block formats carry one scale per group of `group_size` (nf4: an fp32 absmax per 64).
    """
    p = precision if isinstance(precision, Precision) else parse_precision(precision)
    if group_size is not None and group_size <= 0:
        raise UnknownPrecisionError(f"group size must be a positive integer, got {group_size}")
    group = group_size if group_size is not None else p.default_group_size
    payload = params * p.bits / 8
    scales = 0.0
    if group:
        scales = -(-params // group) * p.scale_bits / 8  # ceil division: a partial group has a scale too
    return ParamSize(p.name, params, payload, scales, group)


# ------------------------------------------------------------ deployment layout

# What a weight-only quantiser converts: the weight matrices of linear layers
# (incl. attention in-projections and mixture-of-experts weights) and of convolutions.
QUANTISED_KINDS = ("linear", "conv", "experts")
# What it leaves in 16-bit: lookup tables, the output layer, norms, biases, the rest
# (positional embeddings, class tokens, layer scales).
KEPT_KINDS = ("embedding", "head", "norm", "bias", "other")

LAYOUT_NAME = "weight-only"
LAYOUT_DESCRIPTION = (
    "weights of linear and convolution layers quantised (GPTQ/AWQ/bitsandbytes/fp8 "
    "checkpoints); embeddings, output head, norms, biases and other tensors kept as traced"
)


@dataclass(frozen=True, slots=True)
class WeightTensor:
    """One parameter tensor as a weight-only quantiser sees it."""

    name: str
    module: str  # owning module path
    numel: int
    itemsize: int  # bytes per element as traced (what a kept tensor keeps)
    dtype: str  # torch dtype name as traced
    kind: str  # one of QUANTISED_KINDS or KEPT_KINDS
    # Elements along which one row's groups run (a linear layer's input features;
    # a convolution's in/groups x kernel). numel when unknown: one row.
    row_length: int

    @property
    def quantised(self) -> bool:
        return self.kind in QUANTISED_KINDS


@dataclass(frozen=True)
class KeptGroup:
    """Tensors of one kind that keep their precision."""

    kind: str
    params: int
    tensors: int
    bytes: float
    example: str  # the first such tensor's name


@dataclass(frozen=True)
class QuantLayout:
    """A model's parameter bytes with its quantisable weights at `precision`, the rest kept."""

    precision: str
    group_size: int | None
    scale_bits: int
    groups: str  # 'per row' (GPTQ/AWQ) | 'flat' (bitsandbytes blocks) | 'none'
    quantised_params: int
    quantised_tensors: int
    payload_bytes: float  # the quantised weights' codes
    scale_bytes: float  # their group scales
    kept_params: int
    kept_bytes: float
    kept_precision: str  # e.g. 'fp16'; 'as traced' when the kept tensors differ
    kept: tuple[KeptGroup, ...]
    naive_bytes: float  # every parameter at `precision` (scales included): the seed's figure
    naive_scale_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.payload_bytes + self.scale_bytes + self.kept_bytes

    def to_dict(self) -> dict[str, object]:
        return {
            "layout": LAYOUT_NAME,
            "description": LAYOUT_DESCRIPTION,
            "precision": self.precision,
            "group_size": self.group_size,
            "scale_bits": self.scale_bits,
            "groups": self.groups,
            "quantized_params": self.quantised_params,
            "quantized_tensors": self.quantised_tensors,
            "quantized_bytes": self.payload_bytes,
            "scale_bytes": self.scale_bytes,
            "kept_params": self.kept_params,
            "kept_bytes": self.kept_bytes,
            "kept_precision": self.kept_precision,
            "kept": [{"kind": k.kind, "params": k.params, "tensors": k.tensors, "bytes": k.bytes,
                      "example": k.example} for k in self.kept],
            "param_bytes": self.total_bytes,
            "param_bytes_naive": self.naive_bytes,
            "param_scale_bytes_naive": self.naive_scale_bytes,
        }


def _groups(p: Precision, group_size: int | None) -> int | None:
    if group_size is not None and group_size <= 0:
        raise UnknownPrecisionError(f"group size must be a positive integer, got {group_size}")
    return group_size if group_size is not None else p.default_group_size


def quantised_tensor_bytes(t: WeightTensor, p: Precision, group_size: int | None) -> tuple[float, float]:
    """(codes, scales) bytes of one quantised tensor at `p`."""
    group = _groups(p, group_size)
    payload = t.numel * p.bits / 8
    if not group:
        return payload, 0.0
    if p.flat_groups or t.row_length <= 0 or t.numel % t.row_length:
        count = -(-t.numel // group)
    else:
        # One scale per group along each row; a row's partial group has a scale too.
        count = (t.numel // t.row_length) * -(-t.row_length // group)
    return payload, count * p.scale_bits / 8


def tensor_bytes(t: WeightTensor, p: Precision, group_size: int | None,
                 kept_itemsize: float | None = None) -> float:
    """Bytes of one tensor under the layout: quantised at `p`, or kept (as traced by default)."""
    if p.quantised and t.quantised:
        return sum(quantised_tensor_bytes(t, p, group_size))
    if not p.quantised:
        return param_size(t.numel, p, group_size).total_bytes
    return t.numel * (t.itemsize if kept_itemsize is None else kept_itemsize)


def quant_layout(tensors: tuple[WeightTensor, ...] | list[WeightTensor], precision: str | Precision,
                 group_size: int | None = None, kept: str | Precision | None = None) -> QuantLayout:
    """Size `tensors` with the weight-only layout at a quantised `precision`.

    `kept`: the precision of the tensors left unquantised (None: as traced).
    """
    p = precision if isinstance(precision, Precision) else parse_precision(precision)
    keep = kept if isinstance(kept, Precision) or kept is None else parse_precision(kept)
    kept_itemsize = keep.bits / 8 if keep is not None else None
    group = _groups(p, group_size)
    payload = scales = kept_bytes = 0.0
    q_params = q_tensors = kept_params = 0
    by_kind: dict[str, list[WeightTensor]] = {}
    for t in tensors:
        if t.quantised:
            codes, sc = quantised_tensor_bytes(t, p, group)
            payload, scales = payload + codes, scales + sc
            q_params, q_tensors = q_params + t.numel, q_tensors + 1
        else:
            kept_params += t.numel
            kept_bytes += tensor_bytes(t, p, group, kept_itemsize)
            by_kind.setdefault(t.kind, []).append(t)
    kept_groups = tuple(
        KeptGroup(kind, sum(t.numel for t in by_kind[kind]), len(by_kind[kind]),
                  sum(tensor_bytes(t, p, group, kept_itemsize) for t in by_kind[kind]),
                  by_kind[kind][0].name)
        for kind in KEPT_KINDS if kind in by_kind
    )
    if keep is not None:
        kept_name = keep.name
    else:
        names = {t.dtype for ts in by_kind.values() for t in ts}
        kept_name = precision_of_torch_dtype(names.pop()).name if len(names) == 1 else "as traced"
    naive = param_size(sum(t.numel for t in tensors), p, group)
    return QuantLayout(
        precision=p.name, group_size=group, scale_bits=p.scale_bits if group else 0,
        groups="none" if not group else ("flat" if p.flat_groups else "per row"),
        quantised_params=q_params, quantised_tensors=q_tensors, payload_bytes=payload,
        scale_bytes=scales, kept_params=kept_params, kept_bytes=kept_bytes,
        kept_precision=kept_name, kept=kept_groups, naive_bytes=naive.total_bytes,
        naive_scale_bytes=naive.scale_bytes,
    )


def kept_precision(compute: Precision) -> Precision:
    """What the unquantised tensors are stored in beside quantised weights: the compute
    precision, or fp16 when that is itself a quantised format (fp8 compute keeps 16-bit norms)."""
    return compute if not compute.quantised else PRECISIONS["fp16"]


@dataclass(frozen=True)
class ModuleWeights:
    """One module's own parameters: bytes under the layout, elements, bytes as traced."""

    bytes: float
    numel: int
    traced_bytes: int

    @property
    def scale(self) -> float:
        """Factor on the traced bytes of this module's parameter reads."""
        return self.bytes / self.traced_bytes if self.traced_bytes else 1.0

    @property
    def bytes_per_element(self) -> float:
        return self.bytes / self.numel if self.numel else 0.0


def module_weights(tensors: tuple[WeightTensor, ...] | list[WeightTensor], precision: str | Precision,
                   group_size: int | None = None,
                   kept: str | Precision | None = None) -> dict[str, ModuleWeights]:
    """Owning module path -> its own parameters under the layout at `precision`.

    Ops read the parameters of the module they run in, so an op's traced parameter
    reads are rescaled by its module's factor; a module not listed owns no
    parameters (a tied head reads the embedding, rotary tables are buffers): what it
    reads is kept, not quantised.
    """
    p = precision if isinstance(precision, Precision) else parse_precision(precision)
    keep = kept if isinstance(kept, Precision) or kept is None else parse_precision(kept)
    kept_itemsize = keep.bits / 8 if keep is not None else None
    acc: dict[str, list[float]] = {}
    for t in tensors:
        row = acc.setdefault(t.module, [0.0, 0, 0])
        row[0] += tensor_bytes(t, p, group_size, kept_itemsize)
        row[1] += t.numel
        row[2] += t.numel * t.itemsize
    return {m: ModuleWeights(b, int(n), int(tb)) for m, (b, n, tb) in acc.items()}
