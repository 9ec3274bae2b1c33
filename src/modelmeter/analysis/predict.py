"""Calibrated latency prediction per op, per module and in total (layer 3).

Beside the pure roofline bound (`roofline.py`: every op at the device's
peaks), this predicts what the ops take on *this* machine from the
performance model fitted to its microbenchmarks (`hardware.perfmodel`):

* each op is classed (GEMM, convolution, attention, elementwise,
  normalisation, reduction, data movement; views and allocations pay the
  dispatch cost of a view) and costed ``overhead(class) + bound / efficiency``,
  where the bound uses the op's own FLOPs and bytes at the model's reference
  peaks and the efficiency is interpolated from the measured points by size
  and arithmetic intensity;
* every module call adds the measured cost of ``nn.Module.__call__``;
* a module's figure is the sum over its ops plus its module calls; the
  total is the root's.

Assumptions: eager PyTorch, one op after another (no fusion, no overlap), the
same thread count and torch version as the calibration, and the precision it
measured (fp32); other precisions get no prediction (None, with a note).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ..core.results import Counts
from ..count.engine import ancestors
from ..hardware.perfmodel import PerfModel, op_class
from .roofline import RooflineResult

__all__ = ["OpPrediction", "PredictionResult", "aggregate", "predict", "prediction_section"]


@dataclass(frozen=True, slots=True)
class OpPrediction:
    index: int
    op: str
    module: str
    op_class: str
    roofline_latency_s: float  # the bound at the roofline's device peaks
    predicted_latency_s: float  # calibrated


@dataclass(frozen=True)
class PredictionResult:
    predicted_latency_s: float
    roofline_latency_s: float
    ops: tuple[OpPrediction, ...]
    modules: dict[str, float]  # path -> predicted seconds, inclusive of submodules and module calls
    module_roofline: dict[str, float]  # path -> roofline seconds
    by_class: dict[str, float]  # op class -> predicted seconds
    module_calls: int
    module_call_s: float  # total predicted cost of module calls
    conditions: dict[str, Any]
    notes: tuple[str, ...] = ()


def aggregate(ops: list[OpPrediction]) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(predicted per module, bound per module, predicted per op class): modules inclusive."""
    modules: dict[str, float] = defaultdict(float)
    module_roof: dict[str, float] = defaultdict(float)
    by_class: dict[str, float] = defaultdict(float)
    for p in ops:
        by_class[p.op_class] += p.predicted_latency_s
        for anc in ancestors(p.module):
            modules[anc] += p.predicted_latency_s
            module_roof[anc] += p.roofline_latency_s
    return modules, module_roof, by_class


def predict(counts: Counts, roof: RooflineResult, model: PerfModel) -> PredictionResult | None:
    """The calibrated prediction of the ops `roof` costed; None when the precisions differ."""
    if roof.precision != model.precision:
        return None
    ops: list[OpPrediction] = []
    for o in roof.ops:
        cls = op_class(o.op, o.category)
        t = model.op_seconds(cls, o.flops, o.other_flops, o.bytes)
        ops.append(OpPrediction(o.index, o.op, o.module, cls, o.latency_s, t))
    modules, module_roof, by_class = aggregate(ops)
    # Each call of a module runs nn.Module.__call__ once: charge it to the module and its ancestors.
    calls = 0
    for m in counts.modules:
        calls += m.calls
        for anc in ancestors(m.path):
            modules[anc] += m.calls * model.module_call_s
    total_ops = sum(p.predicted_latency_s for p in ops)
    module_cost = calls * model.module_call_s
    return PredictionResult(
        predicted_latency_s=total_ops + module_cost,
        roofline_latency_s=roof.latency_s,
        ops=tuple(ops), modules=dict(modules), module_roofline=dict(module_roof),
        by_class=dict(by_class), module_calls=calls, module_call_s=module_cost,
        conditions=dict(model.conditions),
    )


def prediction_section(result: PredictionResult) -> dict[str, Any]:
    """JSON keys for a report: totals, per class, per module and per op (base units)."""
    return {
        "predicted_latency_s": result.predicted_latency_s,
        "roofline_latency_s": result.roofline_latency_s,
        "by_class_s": dict(sorted(result.by_class.items(), key=lambda kv: -kv[1])),
        "module_calls": result.module_calls,
        "module_call_overhead_s": result.module_call_s,
        "modules": [{"path": p, "predicted_latency_s": t,
                     "roofline_latency_s": result.module_roofline.get(p, 0.0)}
                    for p, t in result.modules.items()],
        # Every op in trace order: its class, the bound and the calibrated figure.
        "ops": [{"index": o.index, "op": o.op, "module": o.module, "op_class": o.op_class,
                 "roofline_latency_s": o.roofline_latency_s, "predicted_latency_s": o.predicted_latency_s}
                for o in result.ops],
        "conditions": result.conditions,
        "method": ("calibrated: per op overhead(class) + roofline bound / efficiency(class, size, "
                   "intensity) measured by microbenchmarks on this machine, + nn.Module call cost; "
                   "eager, unfused, sequential"),
    }
