"""The shape-aware GPU prediction of a traced model, per op, per module and in total (layer 3).

Beside the roofline bound (`roofline.py`: every op at the datasheet peaks),
this prices each traced op with the GPU performance model
(`hardware.gpumodel`): GEMMs and convolutions by their M, N, K (tile and wave
quantisation, K ramp, achievable bandwidth), fused attention by its lengths,
every other op by its bytes at the achievable bandwidth, each at least one
kernel launch. Views launch nothing and cost nothing.

Assumptions: one kernel per traced op (the trace's ops, not a fused graph),
run one after another; the runtime (`eager` submits each kernel from the host,
`graphs` replays a CUDA graph) sets the launch floor. The result has the
calibrated prediction's shape (`predict.PredictionResult`), so every view that
shows one shows the other.
"""

from __future__ import annotations

from typing import Any

from ..core.events import OpEvent
from ..core.results import Counts
from ..count.shapes import attention_shape, gemm_shape
from ..hardware.gpumodel import PREDICTION, GpuModel
from ..hardware.perfmodel import VIEW, op_class
from .predict import OpPrediction, PredictionResult, aggregate
from .roofline import OpTime, RooflineResult

__all__ = ["METHOD", "gpu_predict", "op_seconds"]

METHOD = ("gpu shape model: GEMMs at the device's max achievable matmul rate x tile/wave quantisation "
          "(M, N, K, SM count, cuBLAS tiles) x K ramp, or their bytes at achievable bandwidth when "
          "larger; fused attention at FlashAttention's published rate; other ops at achievable "
          "bandwidth with a size ramp; each op at least one kernel launch; one kernel per traced op, "
          "sequential")


def op_seconds(o: OpTime, event: OpEvent | None, model: GpuModel) -> float:
    """One costed op on the GPU model (its event gives the shapes)."""
    if o.category == "view":
        return 0.0
    if event is not None and o.category == "contraction":
        g = gemm_shape(event)
        if g is not None:
            return model.gemm_s(g.batch, g.m, g.n, g.k, o.precision, o.bytes)
        a = attention_shape(event)
        if a is not None:
            return model.attention_s(a.batch_heads, a.q_len, a.kv_len, o.flops, o.precision, o.bytes)
    if o.category in ("data", "uncounted"):
        return model.memory_s(o.bytes)
    if o.category == "contraction":  # a product without readable shapes: at the best-shape rate
        rate = model.matmul_rate(o.precision)
        return max(o.flops / rate if rate else 0.0, model.memory_s(o.bytes))
    return model.vector_s(o.other_flops, o.bytes, o.precision)


def gpu_predict(events: dict[int, OpEvent], counts: Counts, roof: RooflineResult,
                model: GpuModel) -> PredictionResult:
    """The GPU prediction of every op the roofline costed."""
    ops: list[OpPrediction] = []
    for o in roof.ops:
        cls = op_class(o.op, o.category)
        t = 0.0 if cls == VIEW else op_seconds(o, events.get(o.index), model)  # views, allocations: no kernel
        ops.append(OpPrediction(o.index, o.op, o.module, cls, o.latency_s, t))
    modules, module_roof, by_class = aggregate(ops)
    kernels = sum(1 for p in ops if p.op_class != VIEW)
    return PredictionResult(
        predicted_latency_s=sum(p.predicted_latency_s for p in ops),
        roofline_latency_s=roof.latency_s,
        ops=tuple(ops), modules=dict(modules), module_roofline=dict(module_roof),
        by_class=dict(by_class), module_calls=0, module_call_s=0.0,
        conditions=_conditions(model, kernels),
    )


def _conditions(model: GpuModel, kernels: int) -> dict[str, Any]:
    return {**model.describe(), "kernels": kernels, "prediction": PREDICTION}
