"""Numeric precisions and what a parameter costs in each (layer 0).

Bits per element are storage bits. Block-quantised formats (int4, nf4, and
int8/fp8 when a group size is given) also store one scale per group; that
overhead is reported apart so a user sees both the payload and the scales.
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
        # NF4 (QLoRA): 4-bit codes plus one scale per block of 64 weights.
        Precision("nf4", 4, False, "int4", None, default_group_size=64),
    )
}

ALIASES = {
    "float64": "fp64", "double": "fp64", "float32": "fp32", "float": "fp32",
    "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
    "float8": "fp8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8",
    "uint8": "int8", "qint8": "int8", "int32": "fp32",
}

# Bits of one quantisation scale (an fp16 number, as GPTQ/AWQ/bitsandbytes store it).
SCALE_BITS = 16


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
    """Bytes for `params` weights at `precision`; int4/nf4 may carry one fp16 scale per group."""
    p = precision if isinstance(precision, Precision) else parse_precision(precision)
    if group_size is not None and group_size <= 0:
        raise UnknownPrecisionError(f"group size must be a positive integer, got {group_size}")
    group = group_size if group_size is not None else p.default_group_size
    payload = params * p.bits / 8
    scales = 0.0
    if group:
        scales = -(-params // group) * SCALE_BITS / 8  # ceil division: a partial group has a scale too
    return ParamSize(p.name, params, payload, scales, group)
