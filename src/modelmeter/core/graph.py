"""A computation graph read from a file (ONNX), reduced to what counting needs (layer 0).

`sources.onnx_graph` fills these from an ONNX model after shape inference;
`count.onnx_ops` counts them with pure per-node formulas. Plain data only:
shapes as tuples of ints (None where inference could not tell), attributes as
ints, floats, strings or lists of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from math import prod
from typing import Any


@dataclass(frozen=True)
class GraphValue:
    """One tensor of the graph: an input, an output, an initializer or an intermediate."""

    name: str
    shape: tuple[int, ...] | None  # None: unknown (shape inference could not tell)
    dtype: str  # 'float32', 'int64', ...
    itemsize: int
    initializer: bool = False  # a stored constant: weights, biases, shape constants

    @property
    def numel(self) -> int | None:
        return prod(self.shape) if self.shape is not None else None

    @property
    def nbytes(self) -> int:
        n = self.numel
        return n * self.itemsize if n is not None else 0


@dataclass(frozen=True)
class GraphNode:
    """One node: its op, the module it came from, its tensors and attributes."""

    name: str
    op_type: str
    domain: str  # '' for the default ONNX domain, 'com.microsoft' for contrib ops
    module: str  # dotted module path ('' = the model itself)
    inputs: tuple[GraphValue | None, ...]  # None: an omitted optional input
    outputs: tuple[GraphValue, ...]
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def op(self) -> str:
        """The name reports list it by: 'Conv', 'com.microsoft.Attention'."""
        return f"{self.domain}.{self.op_type}" if self.domain not in ("", "ai.onnx") else self.op_type


@dataclass(frozen=True)
class Graph:
    name: str
    nodes: tuple[GraphNode, ...]
    inputs: tuple[GraphValue, ...]  # the graph's real inputs (initializers excluded)
    initializers: tuple[GraphValue, ...]
    module_types: Mapping[str, str] = field(default_factory=dict)  # path -> class name, if known
    opset: int | None = None
    producer: str = ""
