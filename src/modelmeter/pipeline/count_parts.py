"""The count section's JSON, typed: one dataclass per object the report writes (layer 5).

Each class is the one definition of its keys: `core.jsonable.to_json` writes its
fields in order (so the JSON follows from the type), and `tests/test_section_types.py`
checks every field against the shipped schema definition named in `SCHEMA_DEFS`
and every property of that definition against the fields, so a key added in one
place and not the other fails there. Values are in base units (bytes, FLOPs, seconds).
The builders from the counts live in `sections.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.jsonable import part_field

__all__ = ["SCHEMA_DEFS", "FallbackRow", "InputRow", "ModelPart", "ModuleRow", "OperatorRow", "SettingsPart",
           "TotalsPart", "UncountedRow"]


@dataclass(frozen=True, kw_only=True)
class ModelPart:
    """`model`: what was analysed."""

    name: str
    kind: str
    source: str
    description: str
    build: str | None
    path: str | None = part_field(omit_if_none=True)  # a file counted as it is (ONNX)


@dataclass(frozen=True, kw_only=True)
class InputRow:
    """`settings.inputs[]`: one traced input; `name` only for a keyword input."""

    name: str | None = part_field(omit_if_none=True)
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True, kw_only=True)
class SettingsPart:
    """`settings`, as counted: the precision, shapes, trace mode and the assumptions made."""

    dtype: str | None
    trace_dtype: str
    group_size: int | None
    batch: int | None
    seq: int | None
    mode: str
    inputs: tuple[InputRow, ...]
    inputs_from: str
    notes: tuple[str, ...]
    attention: Mapping[str, Any] | None = part_field(omit_if_none=True)  # `core.attention.attention_setting`
    routing: str | None = part_field(omit_if_none=True)  # mixture of experts: how routed experts were costed


@dataclass(frozen=True, kw_only=True)
class FallbackRow:
    """`totals.fallback_ops[]`: an op counted with PyTorch's flop_registry (we have no formula)."""

    op: str
    count: int
    flops: float = part_field(unit="FLOPs")
    source: str


@dataclass(frozen=True, kw_only=True)
class UncountedRow:
    """`uncounted_ops[]`: an op without a formula, how often it ran and its FLOPs estimated from shapes."""

    op: str
    count: int
    estimated_flops: float = part_field(unit="FLOPs")


@dataclass(frozen=True, kw_only=True)
class OperatorRow:
    """`totals.by_operator[]` (`count --by op`): one op kind summed over its calls."""

    op: str
    category: str
    calls: int
    macs: int
    flops: int = part_field(unit="FLOPs")
    other_flops: int = part_field(unit="FLOPs")
    bytes_read: int = part_field(unit="bytes")
    bytes_written: int = part_field(unit="bytes")
    share_of_total_flops: float | None  # None: the model has no FLOPs at all


@dataclass(frozen=True, kw_only=True)
class TotalsPart:
    """`totals`, as counted (the memory section adds its keys after these)."""

    params: int
    active_params: int
    active_params_without_embeddings: int
    trainable_params: int
    buffers: int
    buffer_bytes: int = part_field(unit="bytes")
    param_bytes: float = part_field(unit="bytes")
    param_scale_bytes: float = part_field(unit="bytes")
    macs: int
    flops: int = part_field(unit="FLOPs")
    other_flops: int = part_field(unit="FLOPs")
    total_flops: int = part_field(unit="FLOPs")
    bytes_read: int = part_field(unit="bytes")
    bytes_written: int = part_field(unit="bytes")
    # `coverage` is the call coverage (kept as it always was); flop_coverage is the
    # share of the arithmetic counted, uncounted ops estimated from their shapes.
    coverage: float
    call_coverage: float
    flop_coverage: float
    uncounted_flops_estimate: float = part_field(unit="FLOPs")
    # Ops counted with PyTorch's flop_registry because modelmeter has no formula.
    fallback_ops: tuple[FallbackRow, ...]
    fallback_flops: float = part_field(unit="FLOPs")
    by_operator: tuple[OperatorRow, ...]
    # A quantised precision: the naive all-tensors figure beside param_bytes, and the
    # weight-only layout behind it (`QuantLayout.to_dict`).
    param_bytes_naive: float | None = part_field(omit_if_none=True, unit="bytes")
    quantization: Mapping[str, Any] | None = part_field(omit_if_none=True)


@dataclass(frozen=True, kw_only=True)
class ModuleRow:
    """`modules[]`, as counted: one module inclusive of its submodules (memory, roofline and
    measured columns are added after these by their sections)."""

    path: str
    type: str
    depth: int
    calls: int
    params: int
    own_params: int
    param_bytes: float = part_field(unit="bytes")
    macs: int
    flops: int = part_field(unit="FLOPs")
    other_flops: int = part_field(unit="FLOPs")
    bytes_read: int = part_field(unit="bytes")
    bytes_written: int = part_field(unit="bytes")
    input_bytes: int = part_field(unit="bytes")
    output_bytes: int = part_field(unit="bytes")
    seed_bytes: float = part_field(unit="bytes")
    experts: int | None = part_field(omit_if_none=True)  # a mixture-of-experts group only
    top_k: int | None = part_field(omit_if_none=True)
    # The first call's tensors, flattened (positional, keyword; nested outputs in order).
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtypes: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    output_dtypes: tuple[str, ...]


# Each typed part and the schema definition ($defs) that describes its JSON.
SCHEMA_DEFS: dict[type, str] = {
    ModelPart: "model", InputRow: "input_tensor", SettingsPart: "settings", FallbackRow: "fallback_op",
    UncountedRow: "uncounted_op", OperatorRow: "operator_row", TotalsPart: "totals", ModuleRow: "module_row",
}
