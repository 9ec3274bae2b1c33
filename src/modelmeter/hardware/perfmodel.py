"""The calibrated performance model: what this machine achieves per op class (layer 2, stdlib only).

The pure roofline prices an op at the device's peaks. Real kernels reach a
fraction of them that depends on the op's kind, its size and its arithmetic
intensity, and every op also pays a fixed dispatch cost (Python, the ATen
dispatcher, thread wake-up) that dominates small models. This module turns
microbenchmark points into a model of both:

* A **point** is one timed op: its class, matrix FLOPs (2 x MACs), vector
  FLOPs, bytes moved and the measured seconds per call.
* Its **bound** is the roofline at the model's reference peaks:
  ``max(matrix FLOPs / matmul peak + vector FLOPs / vector rate, bytes / bandwidth)``.
* Per class, the **dispatch overhead** ``d`` is the time of the class's tiny
  point (an op whose work is negligible), and every other point gives an
  **efficiency** ``e = bound / max(t - d, t / 5)``: the share of the reference
  peaks it reaches once the fixed cost is paid (the floor keeps a noisy tiny
  difference from becoming an absurd efficiency).
* An op is predicted as ``d + bound / e(op)`` where ``e(op)`` is interpolated
  in log space over (log10 bound, log10 intensity) from the class's points by
  inverse-distance weighting of the nearest ones: exact at a measured point,
  between its neighbours elsewhere, the nearest measured value outside the
  measured range (never extrapolated).
* Views pay ``view_s``; every module call pays ``module_call_s`` (the
  ``nn.Module.__call__`` machinery around the ops).

Pure functions and frozen dataclasses: the fitting is tested on synthetic points.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "OP_CLASSES", "ClassModel", "PerfModel", "Point", "Peaks", "fit", "op_class",
]

MODEL_SCHEMA = "modelmeter.perf-model/1"

OP_CLASSES = ("gemm", "conv", "attention", "elementwise", "norm", "reduction", "data")
VIEW = "view"  # no work: dispatch only
TINY = "tiny"  # the label of a class's overhead point

# Interpolation: neighbours used, and how much a decade of intensity counts against a decade of size.
_K_NEAREST = 3
_INTENSITY_WEIGHT = 0.5
_MIN_INTENSITY, _MAX_INTENSITY = 1e-3, 1e4
_EFFICIENCY_FLOOR_SHARE = 0.2  # t - d is never taken below t / 5

_CLASS_WORDS = (
    # (class, substrings of the aten name), first match wins; order matters (softmax before max).
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention")),
    ("conv", ("convolution", "conv1d", "conv2d", "conv3d", "conv_transpose")),
    ("gemm", ("addmm", "baddbmm", "addbmm", ".mm.", ".bmm.", "matmul", "linear", "_int_mm", "addmv", ".mv.", ".dot.")),
    ("norm", ("batch_norm", "layer_norm", "group_norm", "rms_norm", "instance_norm", "softmax")),
    ("reduction", ("mean", "sum", "amax", "amin", ".max.", ".min.", "argmax", "argmin", ".var", ".std",
                   "norm", "prod", "pool", "cumsum", "topk", "sort", "logsumexp", "all.", "any.")),
)
_ALLOCATIONS = ("aten.empty", "aten.lift_fresh", "aten.alias", "aten.detach")


def op_class(op: str, category: str) -> str:
    """The class an aten op is costed in: one of OP_CLASSES, or 'view' (dispatch only)."""
    if category == "view" or op.startswith(_ALLOCATIONS):
        return VIEW
    name = op if op.endswith(".") else op + "."
    for cls, words in _CLASS_WORDS:
        if any(w in name for w in words):
            return cls
    if category == "data":
        return "data"
    if category == "contraction":
        return "gemm"
    return "elementwise"


@dataclass(frozen=True)
class Peaks:
    """The reference rates a model's efficiencies are relative to (the profile it was fitted with)."""

    matmul_flops: float
    vector_flops: float
    bandwidth_bytes_per_s: float

    def bound_s(self, matrix_flops: float, vector_flops: float, bytes_moved: float) -> float:
        compute = matrix_flops / self.matmul_flops + vector_flops / self.vector_flops
        return max(compute, bytes_moved / self.bandwidth_bytes_per_s)


@dataclass(frozen=True)
class Point:
    """One timed op of the microbenchmarks."""

    op_class: str
    label: str  # what was run, e.g. 'linear 128x768x3072'; 'tiny' marks the overhead point
    matrix_flops: float
    vector_flops: float
    bytes: float
    seconds: float

    @property
    def intensity(self) -> float:
        work = self.matrix_flops + self.vector_flops
        return work / self.bytes if self.bytes else _MAX_INTENSITY


def _features(bound_s: float, intensity: float) -> tuple[float, float]:
    return (math.log10(max(bound_s, 1e-12)),
            math.log10(min(max(intensity, _MIN_INTENSITY), _MAX_INTENSITY)))


@dataclass(frozen=True)
class ClassModel:
    """One op class: its dispatch overhead and (log bound, log intensity, log efficiency) knots."""

    overhead_s: float
    knots: tuple[tuple[float, float, float], ...]

    def efficiency(self, bound_s: float, intensity: float) -> float:
        """Interpolated efficiency (see the module docstring); 1.0 with no knots."""
        if not self.knots:
            return 1.0
        x, y = _features(bound_s, intensity)
        # Clamp to the measured range first: beyond it the nearest edge's value holds
        # (inverse-distance weights alone would drift toward the mean of far-away knots).
        x = min(max(x, min(k[0] for k in self.knots)), max(k[0] for k in self.knots))
        y = min(max(y, min(k[1] for k in self.knots)), max(k[1] for k in self.knots))
        dist = sorted(
            (math.hypot(x - kx, _INTENSITY_WEIGHT * (y - ky)), ke) for kx, ky, ke in self.knots
        )[:_K_NEAREST]
        if dist[0][0] < 1e-9:
            return 10 ** dist[0][1]
        weights = [1 / d**2 for d, _ in dist]
        return 10 ** (sum(w * ke for w, (_, ke) in zip(weights, dist, strict=True)) / sum(weights))

    def seconds(self, bound_s: float, intensity: float) -> float:
        if bound_s <= 0:
            return self.overhead_s
        return self.overhead_s + bound_s / self.efficiency(bound_s, intensity)


@dataclass(frozen=True)
class PerfModel:
    """Per-class models, fixed costs, the reference peaks, and what they were measured under."""

    peaks: Peaks
    classes: Mapping[str, ClassModel]
    view_s: float
    module_call_s: float
    precision: str = "fp32"  # the precision the points were measured at
    conditions: Mapping[str, Any] = field(default_factory=dict)  # device, threads, torch, load
    points: tuple[Point, ...] = ()

    def op_seconds(self, cls: str, matrix_flops: float, vector_flops: float, bytes_moved: float) -> float:
        """Predicted seconds of one op of class `cls` (a class never measured costs its bound)."""
        if cls == VIEW:
            return self.view_s
        bound = self.peaks.bound_s(matrix_flops, vector_flops, bytes_moved)
        model = self.classes.get(cls) or self.classes.get("elementwise")
        if model is None:
            return bound
        work = matrix_flops + vector_flops
        intensity = work / bytes_moved if bytes_moved else _MAX_INTENSITY
        return model.seconds(bound, intensity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": MODEL_SCHEMA,
            "precision": self.precision,
            "peaks": {"matmul_flops": self.peaks.matmul_flops, "vector_flops": self.peaks.vector_flops,
                      "bandwidth_bytes_per_s": self.peaks.bandwidth_bytes_per_s},
            "view_s": self.view_s,
            "module_call_s": self.module_call_s,
            "classes": {k: {"overhead_s": c.overhead_s, "knots": [list(k3) for k3 in c.knots]}
                        for k, c in self.classes.items()},
            "conditions": dict(self.conditions),
            "points": [{"op_class": p.op_class, "label": p.label, "matrix_flops": p.matrix_flops,
                        "vector_flops": p.vector_flops, "bytes": p.bytes, "seconds": p.seconds}
                       for p in self.points],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PerfModel:
        """Inverse of to_dict; raises ValueError/KeyError/TypeError on a malformed record."""
        if d.get("schema") != MODEL_SCHEMA:
            raise ValueError(f"performance model schema {d.get('schema')!r}, expected {MODEL_SCHEMA!r}")
        p = d["peaks"]
        return cls(
            peaks=Peaks(float(p["matmul_flops"]), float(p["vector_flops"]), float(p["bandwidth_bytes_per_s"])),
            classes={k: ClassModel(float(c["overhead_s"]), tuple(tuple(float(v) for v in k3) for k3 in c["knots"]))
                     for k, c in d["classes"].items()},
            view_s=float(d["view_s"]),
            module_call_s=float(d["module_call_s"]),
            precision=str(d.get("precision", "fp32")),
            conditions=dict(d.get("conditions", {})),
            points=tuple(Point(**q) for q in d.get("points", [])),
        )


def fit(points: Iterable[Point], peaks: Peaks, *, view_s: float, module_call_s: float,
        precision: str = "fp32", conditions: Mapping[str, Any] | None = None) -> PerfModel:
    """Fit the per-class models to `points` (see the module docstring)."""
    pts = tuple(points)
    by_class: dict[str, list[Point]] = {}
    for p in pts:
        if p.seconds <= 0:
            raise ValueError(f"point {p.label!r} has a non-positive time {p.seconds}")
        by_class.setdefault(p.op_class, []).append(p)
    classes = {cls: _fit_class(rows, peaks) for cls, rows in by_class.items()}
    return PerfModel(peaks, classes, view_s, module_call_s, precision, dict(conditions or {}), pts)


def _fit_class(rows: Sequence[Point], peaks: Peaks) -> ClassModel:
    tiny = [p.seconds for p in rows if p.label == TINY]
    overhead = min(tiny) if tiny else 0.0
    knots = []
    for p in rows:
        if p.label == TINY:
            continue
        bound = peaks.bound_s(p.matrix_flops, p.vector_flops, p.bytes)
        busy = max(p.seconds - overhead, _EFFICIENCY_FLOOR_SHARE * p.seconds)
        x, y = _features(bound, p.intensity)
        knots.append((x, y, math.log10(bound / busy)))
    return ClassModel(overhead, tuple(knots))
