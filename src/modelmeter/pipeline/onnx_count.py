"""`count model.onnx`: an ONNX graph's counts as the same count section as a traced module (layer 5).

The graph is loaded without weight values and shaped by ONNX shape inference
(`sources/onnx_graph.py`); `count/onnx_ops.py` has the per-node formulas in the
aten path's conventions, so totals, module rows and uncounted ops have the
structure of every other count report.
"""

from __future__ import annotations

from ..core.errors import UserInputError
from ..core.precision import parse_precision
from .count_parts import InputRow, ModelPart, SettingsPart
from .options import ModelOptions
from .sections import CountSection, _module_rows, _totals, uncounted_rows

ONNX_METHODS = {
    "params": ("counted: elements of the floating-point initializers of rank >= 1 (ONNX does "
               "not tell parameters from buffers)"),
    "param_bytes": "counted",
    "macs": "counted from ONNX shape inference, per-node formulas (count/onnx_ops.py)",
    "flops": "counted",
    "bytes": "counted (unfused: each node reads its inputs and writes its outputs once)",
    "formulas": "modelmeter's ONNX node formulas, in the aten path's conventions",
}


def onnx_count_section(options: ModelOptions) -> CountSection:
    """The count section of the ONNX file `options.model`: its graph's own shapes and dtypes."""
    from ..count.onnx_ops import count_graph
    from ..sources.onnx_graph import load_onnx_graph

    # The graph fixes its dtypes and what it computes: these options cannot change either.
    for label, value in (("--dtype", options.dtype), ("--group-size", options.group_size),
                         ("--seq", options.seq), ("--attention", options.attention)):
        if value is not None:
            raise UserInputError(f"{label} cannot apply to an ONNX file: its graph is counted in "
                                 "its own dtypes; give input shapes with --input (and --batch)")
    if options.device not in (None, "meta"):
        raise UserInputError(f"--device {options.device} cannot apply to an ONNX file: nothing is allocated, "
                             "its shapes come from ONNX shape inference")
    path = str(options.model)
    graph = load_onnx_graph(path, inputs=list(options.inputs) if options.inputs else None,
                            batch=options.batch)
    counts = count_graph(graph)
    dtypes = {v.dtype for v in graph.initializers if v.shape and v.dtype.startswith("float")}
    precision = parse_precision(dtypes.pop()).name if len(dtypes) == 1 else "mixed"
    settings = SettingsPart(
        dtype=precision, trace_dtype=precision, group_size=None, batch=options.batch, seq=None, mode="onnx",
        inputs=tuple(InputRow(name=v.name, shape=tuple(v.shape or ()), dtype=v.dtype) for v in graph.inputs),
        inputs_from=("given (--input)" if options.inputs else "the graph's declared input shapes")
                    + (f", --batch {options.batch}" if options.batch is not None else ""),
        notes=(),
    )
    return CountSection(
        model=ModelPart(name=options.name or graph.name, kind="onnx", source="onnx",
                        description=f"ONNX graph, opset {graph.opset}, {len(graph.nodes)} nodes"
                                    + (f", from {graph.producer}" if graph.producer else ""),
                        build="onnx shape inference (no weights loaded)", path=path),
        settings=settings, totals=_totals(counts), modules=_module_rows(counts),
        uncounted_ops=uncounted_rows(counts),
        methods=dict(ONNX_METHODS),
    )
