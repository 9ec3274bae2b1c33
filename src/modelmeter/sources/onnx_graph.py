"""An ONNX model file as a `core.graph.Graph` with every shape known (layer 1).

Steps: load the model without its weight values (only their shapes are needed,
so external-data models load in a blink), set the input shapes (from the graph,
or `--input` / `--batch` where the graph leaves a dimension symbolic), run
`onnx.shape_inference.infer_shapes` with data propagation (so the shapes that
`Shape -> Reshape` chains compute are known too), then read each node's op,
attributes, tensors and the module it came from:

* torch.onnx's torch.export-based exporter records the module path in each
  node's `pkg.torch.onnx.name_scopes` metadata (`['', 'layer1', '0', 'conv1',
  'conv2d']`: the last entry is the op) and the classes in
  `pkg.torch.onnx.class_hierarchy`;
* the TorchScript exporter names nodes `/layer1/layer1.0/conv1/Conv`;
* anything else is attributed to the model itself ('').

Needs the `onnx` package (`pip install "modelmeter[onnx]"`); torch is not used.
"""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from ..core.graph import Graph, GraphNode, GraphValue
from .configsize import MAX_PARAMS
from .inputs import MAX_DIM, check_positive, check_size, parse_input_spec

ONNX_EXTRA = 'pip install "modelmeter[onnx]"'


def is_onnx_path(spec: Any) -> bool:
    return isinstance(spec, (str, Path)) and str(spec).lower().endswith(".onnx")


def load_onnx_graph(path: str | Path, *, inputs: list[str] | None = None,
                    batch: int | None = None) -> Graph:
    """Load, shape-infer and read an ONNX file; bad input is one UserInputError line."""
    if importlib.util.find_spec("onnx") is None:
        raise UserInputError(f"counting an ONNX model needs the onnx package: {ONNX_EXTRA}")
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"no such ONNX file: {path}")
    check_positive(batch, "batch")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several kinds for a bad file
        raise UserInputError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise UserInputError(f"{path} holds no ONNX graph (no nodes)")
    _check_initializers(model, path)
    _set_input_shapes(model, inputs, batch, path)
    # Strict: an input shape that does not fit a node (x[4, 65] into a [64, 32] MatMul) is an
    # error, not a node left unshaped and counted as nothing. Graphs with ops from other
    # domains (com.microsoft...) have no schema here: strict inference would refuse them all.
    custom = any(n.domain not in ("", "ai.onnx") for n in model.graph.node)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True, strict_mode=not custom)
    except Exception as exc:  # noqa: BLE001 - inference errors name the node that failed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        given = " with the given --input shapes" if inputs or batch is not None else ""
        raise UserInputError(f"ONNX shape inference failed on {path.name}{given}: {first[:300]}") from None
    return _read_graph(model, path)


def _graph_inputs(model: Any) -> list[Any]:
    init = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in init]


def _set_input_shapes(model: Any, inputs: list[str] | None, batch: int | None, path: Path) -> None:
    real = _graph_inputs(model)
    if inputs:
        if len(inputs) != len(real):
            names = ", ".join(v.name for v in real)
            raise UserInputError(f"{path.name} takes {len(real)} input(s) ({names}); "
                                 f"got {len(inputs)} --input")
        for value, spec in zip(real, inputs, strict=True):
            shape, _ = parse_input_spec(spec)
            dims = value.type.tensor_type.shape
            del dims.dim[:]
            for d in shape:
                dims.dim.add().dim_value = d
    for value in real:
        dims = value.type.tensor_type.shape.dim
        if batch is not None and len(dims):
            dims[0].dim_value = batch
        bad = [d.dim_value for d in dims if d.dim_value < 0]
        if bad:
            raise UserInputError(f"input {value.name!r} of {path.name} has a negative dimension "
                                 f"({bad[0]}): the file is damaged or hand-edited")
        check_size(tuple(d.dim_value for d in dims), f"input {value.name!r} of {path.name}")
        unknown = [d.dim_param or "?" for d in dims if not d.dim_value]
        if unknown:
            raise UserInputError(
                f"input {value.name!r} of {path.name} has symbolic dimensions ({', '.join(unknown)}): "
                f"give its shape with --input (e.g. --input {'x'.join('1' for _ in dims)})")


def _read_graph(model: Any, path: Path) -> Graph:
    import onnx

    values: dict[str, GraphValue] = {}
    for info in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        values[info.name] = _value(info.name, info.type.tensor_type)
    initializers = []
    for t in model.graph.initializer:
        dtype, itemsize = _dtype(t.data_type)
        v = GraphValue(t.name, tuple(int(d) for d in t.dims), dtype, itemsize, initializer=True)
        values[t.name] = v
        initializers.append(v)
    module_types: dict[str, str] = {}
    nodes = []
    for i, node in enumerate(model.graph.node):
        module = _module_of(node, module_types)
        attrs = {a.name: _attribute(onnx.helper.get_attribute_value(a)) for a in node.attribute}
        nodes.append(GraphNode(
            name=node.name or f"{node.op_type}_{i}",
            op_type=node.op_type,
            domain=node.domain,
            module=module,
            inputs=tuple(values.get(n, GraphValue(n, None, "unknown", 0)) if n else None
                         for n in node.input),
            outputs=tuple(values.get(n, GraphValue(n, None, "unknown", 0)) for n in node.output),
            attributes=attrs,
        ))
    init_names = {t.name for t in initializers}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return Graph(
        name=path.name,
        nodes=tuple(nodes),
        inputs=tuple(values[v.name] for v in model.graph.input if v.name not in init_names),
        initializers=tuple(initializers),
        module_types=module_types,
        opset=opset,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
    )


def _check_initializers(model: Any, path: Path) -> None:
    """Every weight's dims in 0..MAX_DIM and their total within MAX_PARAMS: a negative or
    absurd dim is a damaged file, not a count of -1.8e19 parameters."""
    total = 0
    for t in model.graph.initializer:
        for d in t.dims:
            if d < 0 or d > MAX_DIM:
                raise UserInputError(
                    f"initialiser {t.name!r} of {path.name} has dimension {d}"
                    f"{' is too large' if d > 0 else ''}: each must be in 0..{MAX_DIM} (2**31 - 1); "
                    "the file is damaged or hand-edited")
        total += math.prod(t.dims)
    if total > MAX_PARAMS:
        raise UserInputError(f"{path.name}'s initialisers hold {total:.3g} parameters: at most "
                             f"{MAX_PARAMS:.0e} can be counted; the file is damaged or hand-edited")


def _value(name: str, tensor_type: Any) -> GraphValue:
    dtype, itemsize = _dtype(tensor_type.elem_type)
    if not tensor_type.HasField("shape"):
        return GraphValue(name, None, dtype, itemsize)
    dims = tensor_type.shape.dim
    shape = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims)
    return GraphValue(name, None if any(d < 0 for d in shape) else shape, dtype, itemsize)


def _dtype(elem_type: int) -> tuple[str, int]:
    import onnx

    try:
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    except (KeyError, ValueError, TypeError):
        return "unknown", 0
    return str(np_dtype), int(np_dtype.itemsize)


def _attribute(value: Any) -> Any:
    """Ints, floats, strings and lists of them; tensors and graphs as None (not needed)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_attribute(v) for v in value]
        return items if all(v is not None for v in items) else None
    return None


def _module_of(node: Any, module_types: dict[str, str]) -> str:
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = _literal_list(meta.get("pkg.torch.onnx.name_scopes"))
    if scopes:
        parts = [s for s in scopes[1:-1] if s]  # [0] is the model itself, [-1] the op
        classes = _literal_list(meta.get("pkg.torch.onnx.class_hierarchy")) or []
        for depth in range(min(len(parts) + 1, len(classes))):
            path = ".".join(parts[:depth])
            module_types.setdefault(path, classes[depth].rpartition(".")[2])
        return ".".join(parts)
    if node.name.startswith("/"):  # TorchScript exporter: /layer1/layer1.0/conv1/Conv
        path = ""
        for part in node.name.split("/")[1:-1]:
            path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
        return path
    return ""


def _literal_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return [str(v) for v in value] if isinstance(value, list) else None
