"""Example inputs: `--input` spec parsing and tensor creation (layer 1).

An input spec is `DIMxDIMx...[:dtype]`, e.g. `1x3x224x224`, `1x3x224x224:fp16`,
`1x128:int64`. The dtype accepts precision names (fp16, bf16, ...) and torch
dtype names (float16, int64, long, bool, ...); it defaults to float32.

A spec may name the forward argument it feeds: `input_features=1x80x3000`,
`decoder_input_ids=1x4:int64` (passed as a keyword argument); unnamed specs
are positional.
"""

from __future__ import annotations

import re
from typing import Any

from ..core.errors import UnknownPrecisionError, UserInputError
from ..core.precision import parse_precision

# Integer and bool dtypes an input may take (token ids, masks); floats go through
# the precision table so `fp16` and `float16` mean the same thing.
_INT_DTYPES = {
    "int64": "int64", "long": "int64", "int32": "int32", "int": "int32", "int16": "int16",
    "int8": "int8", "uint8": "uint8", "bool": "bool",
}
_NAMED_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*=(.*)$", re.DOTALL)
_SHAPE_RE = re.compile(r"^\s*(-?\d+)(\s*[xX×*,]\s*-?\d+)*\s*$")

INPUT_SPEC_HELP = "give a shape like 1x3x224x224 or 1x128:int64 (dims > 0, optional :dtype)"

# Sane upper bounds, so an absurd number is one clear line and not an integer
# overflow deep in torch (which unpacks sizes into int64 and multiplies them).
# MAX_DIM: one dimension, --batch or --seq; 2**31 - 1 is the int32 range many
# kernels index with, and no real batch or sequence comes near it.
# MAX_ELEMENTS: one input tensor; 2**48 elements is 1 PiB in fp32, far beyond
# any device's memory, and leaves a 2**15 factor (a hidden or vocabulary
# size) before a model's own activations would overflow int64.
MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**48


def parse_input_spec(text: str) -> tuple[tuple[int, ...], str]:
    """`"1x3x224x224:fp16"` -> `((1, 3, 224, 224), "float16")`.

    Raises UserInputError for junk, empty, zero or negative dimensions and
    unknown dtypes.
    """
    if not isinstance(text, str) or not text.strip():
        raise UserInputError(f"empty --input; {INPUT_SPEC_HELP}")
    shape_text, _, dtype_text = text.partition(":")
    if not _SHAPE_RE.match(shape_text):
        raise UserInputError(f"bad --input {text!r}; {INPUT_SPEC_HELP}")
    dims = tuple(int(d) for d in re.split(r"[xX×*,]", shape_text.replace(" ", "")))
    if any(d <= 0 for d in dims):
        raise UserInputError(f"bad --input {text!r}: every dimension must be > 0; {INPUT_SPEC_HELP}")
    check_size(dims, f"--input {text!r}")
    return dims, _dtype_name(dtype_text.strip(), text) if dtype_text.strip() else "float32"


def parse_named_input(text: str) -> tuple[str | None, tuple[int, ...], str]:
    """`"input_features=1x80x3000:fp16"` -> `("input_features", (1, 80, 3000), "float16")`.

    The name is None for a positional spec (`"1x3x224x224"`). Raises
    UserInputError as `parse_input_spec` does.
    """
    match = _NAMED_RE.match(text) if isinstance(text, str) else None
    if match is None:
        return (None, *parse_input_spec(text))
    try:
        shape, dtype = parse_input_spec(match.group(2))
    except UserInputError as exc:
        raise UserInputError(f"{exc} (in --input {text!r})") from None
    return match.group(1), shape, dtype


def _dtype_name(name: str, spec: str) -> str:
    key = name.lower().replace("torch.", "")
    if key in _INT_DTYPES:
        return _INT_DTYPES[key]
    try:
        torch_name = parse_precision(key).torch_dtype
    except UnknownPrecisionError:
        torch_name = None
    if torch_name is None:
        raise UserInputError(
            f"bad dtype {name!r} in --input {spec!r}; use a float (fp32, fp16, bf16, fp64) "
            f"or an integer type ({', '.join(sorted(set(_INT_DTYPES.values())))})"
        )
    return torch_name


def is_integer_dtype(dtype_name: str) -> bool:
    return dtype_name in _INT_DTYPES.values()


def check_positive(value: int | None, what: str) -> None:
    """A --batch/--seq style setting: None, or an integer in 1..MAX_DIM."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise UserInputError(f"{what} must be a positive integer, got {value!r}")
    if value is not None and value > MAX_DIM:
        raise UserInputError(f"{what} {value} is too large: at most {MAX_DIM} (2**31 - 1)")


def check_size(shape: tuple[int, ...], what: str) -> None:
    """Every dimension at most MAX_DIM and the element count at most MAX_ELEMENTS."""
    for d in shape:
        if d > MAX_DIM:
            raise UserInputError(f"{what}: dimension {d} is too large: at most {MAX_DIM} (2**31 - 1)")
    numel = 1
    for d in shape:
        numel *= d
    if numel > MAX_ELEMENTS:
        raise UserInputError(
            f"{what}: {numel:.3g} elements is too many for one input: at most 2**48 "
            f"({MAX_ELEMENTS:.3g}, 1 PiB in fp32)"
        )


def inputs_origin(default: str, inputs: list[str] | None, batch: int | None = None,
                  seq: int | None = None) -> str:
    """How a model's example inputs were chosen, in words: 'preset default, --seq 64'.

    `default` says where they come from when no `--input` is given; `--batch` and
    `--seq` reshape either, so they are named after it.
    """
    parts = ["given (--input)" if inputs else default]
    parts += [f"{flag} {value}" for flag, value in (("--batch", batch), ("--seq", seq)) if value is not None]
    return ", ".join(parts)


def with_batch(shape: tuple[int, ...], batch: int | None) -> tuple[int, ...]:
    """Replace the leading (batch) dimension when a batch size was asked for."""
    if batch is None or not shape:
        return shape
    return (batch, *shape[1:])


def make_tensor(
    shape: tuple[int, ...], dtype_name: str, device: str, *, high: int = 2
) -> Any:
    """A tensor of `shape`: meta (no storage) or real random values on cpu.

    Integer tensors draw from [0, high) so token ids stay inside the vocabulary.
    """
    import torch

    # --batch and --seq replace dimensions after parsing: the final shape is checked here.
    check_size(tuple(shape), f"input {'x'.join(map(str, shape))}")
    dtype = getattr(torch, dtype_name)
    if device == "meta":
        return torch.empty(shape, dtype=dtype, device="meta")
    if dtype_name == "bool":
        return torch.ones(shape, dtype=dtype, device=device)
    if is_integer_dtype(dtype_name):
        return torch.randint(0, max(1, high), shape, dtype=dtype, device=device)
    return torch.randn(shape, dtype=dtype, device=device)
