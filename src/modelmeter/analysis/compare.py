"""Side-by-side comparison of reports, with ratios to the first (layer 3).

Pure: report dicts (`Report.to_dict()` shape) in, a `Comparison` out. Each
metric row holds every report's value in base units and its ratio to the
first report's value (None when either is missing or the first is zero). A
metric no report has is left out. Labels name each report by its model and
the settings that differ between the reports (dtype, batch, seq, hardware).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import UserInputError

__all__ = ["COMPARE_METRICS", "Comparison", "ComparisonRow", "compare_reports", "comparison_labels"]

SCHEMA = "modelmeter.compare/1"


def _get(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    def pick(report: dict[str, Any]) -> float | None:
        node: Any = report
        for key in keys:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None
    return pick


# key, label, base unit, how obtained, getter
COMPARE_METRICS: tuple[tuple[str, str, str, str, Callable[[dict[str, Any]], float | None]], ...] = (
    ("params", "parameters", "", "counted", _get("totals", "params")),
    ("param_bytes", "parameter bytes", "B", "counted", _get("totals", "param_bytes")),
    ("macs", "MACs", "", "counted", _get("totals", "macs")),
    ("flops", "FLOPs (2 × MACs)", "", "counted", _get("totals", "flops")),
    ("total_flops", "total FLOPs (+ other)", "", "counted", _get("totals", "total_flops")),
    ("peak_activations", "peak activations (inference)", "B", "counted",
     _get("totals", "activations", "peak_inference_bytes")),
    ("latency_predicted", "predicted latency (roofline)", "s", "estimated", _get("roofline", "latency_s")),
    ("latency_fused", "predicted latency, fused bound", "s", "estimated", _get("roofline", "latency_fused_s")),
    ("latency_gpu_model", "predicted latency (GPU shape model)", "s", "estimated",
     _get("roofline", "predicted", "predicted_latency_s")),
    ("latency_measured", "measured latency (p50)", "s", "measured", _get("measured", "latency_s", "p50")),
    ("throughput", "measured throughput (items/s)", "1/s", "measured", _get("measured", "throughput_per_s")),
    ("energy", "energy per inference", "J", "measured or estimated",
     _get("measured", "energy_j_per_inference")),
)


@dataclass(frozen=True)
class ComparisonRow:
    key: str
    metric: str
    unit: str
    method: str
    values: tuple[float | None, ...]
    ratios: tuple[float | None, ...]  # value / first value


@dataclass(frozen=True, repr=False)
class Comparison:
    labels: tuple[str, ...]
    rows: tuple[ComparisonRow, ...]

    def __repr__(self) -> str:
        """Each metric's values and ratios, one line each; `to_dict()` has the methods and units."""
        from ..core.brief import comparison_brief

        return comparison_brief(self.to_dict())

    __str__ = __repr__

    def row(self, key: str) -> ComparisonRow:
        for r in self.rows:
            if r.key == key:
                return r
        raise KeyError(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "labels": list(self.labels),
            "rows": [{"key": r.key, "metric": r.metric, "unit": r.unit, "method": r.method,
                      "values": list(r.values), "ratios": list(r.ratios)} for r in self.rows],
        }


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def comparison_labels(reports: Sequence[dict[str, Any]]) -> list[str]:
    """Model name plus the settings that differ between reports; made unique with #n."""
    def setting(r: dict[str, Any], key: str) -> Any:
        if key == "hardware":
            return (r.get("roofline") or {}).get("hardware")
        return (r.get("settings") or {}).get(key)

    # A setting some reports lack (no roofline ran) does not by itself tell them apart.
    varying = [k for k in ("dtype", "batch", "seq", "hardware")
               if len({repr(setting(r, k)) for r in reports if setting(r, k) is not None}) > 1]
    labels = []
    for r in reports:
        name = str((r.get("model") or {}).get("name") or "model")
        extra = [f"{k}={setting(r, k)}" if k in ("batch", "seq") else str(setting(r, k))
                 for k in varying if setting(r, k) is not None]
        labels.append(" ".join([name, *extra]))
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if labels.count(label) == 1 else f"{label} #{seen[label]}")
    return unique


def compare_reports(reports: Sequence[dict[str, Any]], labels: Sequence[str] | None = None) -> Comparison:
    """Every metric of `COMPARE_METRICS` that some report has, with ratios to the first report."""
    if not reports:
        raise UserInputError("nothing to compare: no reports")
    if labels is not None and len(labels) != len(reports):
        raise UserInputError(f"{len(labels)} labels for {len(reports)} reports")
    rows = []
    for key, metric, unit, method, get in COMPARE_METRICS:
        values = tuple(get(r) for r in reports)
        if all(v is None for v in values):
            continue
        rows.append(ComparisonRow(key, metric, unit, method, values,
                                  tuple(_ratio(v, values[0]) for v in values)))
    return Comparison(tuple(labels) if labels is not None else tuple(comparison_labels(reports)),
                      tuple(rows))
