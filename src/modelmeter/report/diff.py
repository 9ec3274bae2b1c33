"""Metric-by-metric differences between two reports, and CI gates on them (layer 4).

Pure functions over two report dicts (JSON schema ``modelmeter.report/1``):
`diff_reports` lines up the metrics in `METRICS`; `parse_gates` reads a gate
spec such as ``"latency_p50>+5%,flops>0%"``; `evaluate_gates` decides which
gates fail.

Gate grammar, comma-separated: ``METRIC OP NUMBER[%]`` with OP one of
``> >= < <=``. With ``%`` the number is a relative change from A to B
(``latency_p50>+5%``: B is more than 5 % slower; ``throughput<-10%``: B lost
more than 10 % of its throughput). Without ``%`` it is an absolute change in
the metric's base unit (``params>1000``: B has more than 1000 extra
parameters). A gate fails when its condition holds.

A gate on a metric missing from either report **fails** (status
``"missing"``): a CI gate that silently passes because the number was never
measured is worse than one that asks for it. A relative gate where A is 0 uses
±infinity for any change from 0 (so ``flops>+5%`` fails when flops appear).

Two runs are compared like with like: `settings_changes` lists the settings in
`SETTINGS` (inputs, batch, precision, device, hardware, threads, torch …) whose
values differ where both reports state one, and the CLI refuses to gate on a
diff that has any unless the user says the change is meant.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from ..core.errors import UserInputError
from ..core.units import format_value

__all__ = [
    "metric_text",
    "METRICS",
    "SETTINGS",
    "Gate",
    "GateResult",
    "Metric",
    "MetricChange",
    "SettingChange",
    "describe_settings",
    "diff_reports",
    "evaluate_gates",
    "format_change",
    "format_setting",
    "metric_value",
    "model_name",
    "models_note",
    "parse_gates",
    "settings_changes",
    "settings_note",
]


class Metric(NamedTuple):
    """Where a metric lives in a report, its base unit and which way is better."""

    path: str  # dotted JSON path
    unit: str  # base unit: "" (count), "MAC", "FLOP", "B", "s", "/s", "J", "g"
    lower_is_better: bool


METRICS: dict[str, Metric] = {
    "params": Metric("totals.params", "", True),
    "trainable_params": Metric("totals.trainable_params", "", True),
    "param_bytes": Metric("totals.param_bytes", "B", True),
    "macs": Metric("totals.macs", "MAC", True),
    "flops": Metric("totals.flops", "FLOP", True),
    "other_flops": Metric("totals.other_flops", "FLOP", True),
    "backward_flops": Metric("totals.backward_flops", "FLOP", True),
    "bytes_read": Metric("totals.bytes_read", "B", True),
    "bytes_written": Metric("totals.bytes_written", "B", True),
    "peak_activations": Metric("totals.activations.peak_inference_bytes", "B", True),
    "saved_activations": Metric("totals.activations.saved_for_backward_bytes", "B", True),
    "training_bytes": Metric("training.total_bytes", "B", True),
    "latency_predicted": Metric("roofline.latency_s", "s", True),
    "latency_fused": Metric("roofline.latency_fused_s", "s", True),
    "latency_min": Metric("measured.latency_s.min", "s", True),
    "latency_mean": Metric("measured.latency_s.mean", "s", True),
    "latency_p50": Metric("measured.latency_s.p50", "s", True),
    "latency_p90": Metric("measured.latency_s.p90", "s", True),
    "latency_p99": Metric("measured.latency_s.p99", "s", True),
    "throughput": Metric("measured.throughput_per_s", "/s", False),
    "peak_memory": Metric("measured.peak_memory_bytes", "B", True),
    "energy": Metric("measured.energy_j_per_inference", "J", True),
    "carbon": Metric("measured.carbon_g_per_1000", "g", True),
}


@dataclass(frozen=True)
class MetricChange:
    """One metric in A and B; None where a report lacks it."""

    name: str
    a: float | None
    b: float | None
    delta: float | None  # b - a, when both are present
    relative: float | None  # delta / a; None when a is 0 or either is absent

    @property
    def changed(self) -> bool:
        return self.a != self.b

    @property
    def improved(self) -> bool | None:
        """True when B is better, False when worse, None when equal or not comparable."""
        if self.delta is None or self.delta == 0:
            return None
        return (self.delta < 0) == METRICS[self.name].lower_is_better


Op = Literal[">", ">=", "<", "<="]


@dataclass(frozen=True)
class Gate:
    """`metric op threshold`: fails when the change from A to B satisfies it."""

    metric: str
    op: Op
    threshold: float  # a fraction (0.05 for 5 %) when relative, else base units
    relative: bool
    text: str  # as the user wrote it, for messages


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    status: Literal["pass", "fail", "missing"]
    reason: str
    change: MetricChange | None

    @property
    def failed(self) -> bool:
        # "missing" fails too: see the module docstring.
        return self.status != "pass"


def metric_value(report: dict[str, Any], name: str) -> float | None:
    """The metric's number in `report`, or None if absent, non-numeric or not finite."""
    node: Any = report
    for key in METRICS[name].path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    # bool is an int subclass but never a measurement.
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    return node if math.isfinite(node) else None


def diff_reports(a: dict[str, Any], b: dict[str, Any]) -> list[MetricChange]:
    """Every metric present in A or B, in `METRICS` order."""
    changes = []
    for name in METRICS:
        va, vb = metric_value(a, name), metric_value(b, name)
        if va is None and vb is None:
            continue
        delta = vb - va if va is not None and vb is not None else None
        relative = delta / va if delta is not None and va else None
        changes.append(MetricChange(name, va, vb, delta, relative))
    return changes


# The settings a metric depends on, each with the report paths that state it (the first one a
# report has wins): the measured device and threads live beside the measurement, the torch
# version in the environment or the measurement's conditions.
SETTINGS: dict[str, tuple[str, ...]] = {
    "inputs": ("settings.inputs",),
    "batch": ("settings.batch", "measured.batch"),
    "seq": ("settings.seq",),
    "prompt": ("settings.prompt",),
    "gen": ("settings.gen",),
    "dtype": ("settings.dtype",),
    "group_size": ("settings.group_size",),
    "attention": ("settings.attention.implementation",),
    "device": ("measured.device", "settings.measure.device"),
    "hardware": ("roofline.hardware", "environment.hardware", "measured.prediction_hardware"),
    "threads": ("measured.conditions.threads", "roofline.calibrated.conditions.threads"),
    "torch": ("environment.torch", "measured.conditions.torch_version"),
}


@dataclass(frozen=True)
class SettingChange:
    """A setting both reports state, with different values (JSON values as written)."""

    setting: str
    a: Any
    b: Any


def setting_value(report: dict[str, Any], name: str) -> Any:
    """The setting's value in `report`: the first of its paths present; None when none is."""
    for path in SETTINGS[name]:
        node: Any = report
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


def settings_changes(a: dict[str, Any], b: dict[str, Any]) -> list[SettingChange]:
    """The settings whose values differ, in `SETTINGS` order.

    A setting one report does not state (B was not measured, so has no measured
    device; a preset's default batch is null) is unknown there, not a change: the
    shapes that follow from it are compared under `inputs`.
    """
    changes = []
    for name in SETTINGS:
        va, vb = setting_value(a, name), setting_value(b, name)
        if va is not None and vb is not None and va != vb:
            changes.append(SettingChange(name, va, vb))
    return changes


def settings_note(changes: list[SettingChange]) -> str | None:
    """One line naming each changed setting with both values, None when there is none."""
    if not changes:
        return None
    return (f"settings differ ({describe_settings(changes)}): the changes compare two "
            "set-ups, not two runs of one")


def describe_settings(changes: list[SettingChange]) -> str:
    """'seq 16 vs 32, dtype fp32 vs bf16'."""
    return ", ".join(f"{c.setting} {format_setting(c.a)} vs {format_setting(c.b)}" for c in changes)


def format_setting(value: Any) -> str:
    """A setting as text: input rows as 'name[shape] dtype', lists joined, else str()."""
    if isinstance(value, list):
        return "; ".join(format_setting(item) for item in value)
    if isinstance(value, dict) and "shape" in value:
        name = value.get("name") or "input"
        return f"{name}{list(value['shape'])} {value.get('dtype', '')}".rstrip()
    return str(value)


def model_name(report: dict[str, Any]) -> str | None:
    """The model a report describes (`model.name`), None when it does not say."""
    model = report.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    return name if isinstance(name, str) and name else None


def models_note(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """One line when A and B describe different models, else None.

    The diff still runs (comparing two models is a fair question), but a user who
    meant two runs of one model must not read a model swap as a regression.
    """
    name_a, name_b = model_name(a), model_name(b)
    if name_a is None or name_b is None or name_a == name_b:
        return None
    return (f"A and B are different models ({name_a} vs {name_b}): the changes compare two models, "
            "not two runs of one")


_GATE_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<pct>%?)\s*$"
)


def parse_gates(spec: str) -> list[Gate]:
    """``"latency_p50>+5%,flops>0%"`` -> gates; bad syntax or unknown metric -> UserInputError."""
    parts = [part for part in spec.split(",") if part.strip()]
    if not parts:
        raise UserInputError(f"no gates in {spec!r}; write e.g. 'latency_p50>+5%,flops>0%'")
    gates = []
    for part in parts:
        match = _GATE_RE.match(part)
        if match is None:
            raise UserInputError(
                f"cannot read gate {part.strip()!r}; write METRIC>+5%, METRIC<-10% or "
                f"METRIC>1000 (absolute change), with METRIC one of: {', '.join(METRICS)}"
            )
        metric = match["metric"].lower()
        if metric not in METRICS:
            raise UserInputError(
                f"unknown metric {match['metric']!r} in gate {part.strip()!r}; "
                f"valid metrics: {', '.join(METRICS)}"
            )
        relative = bool(match["pct"])
        number = float(match["num"])
        gates.append(
            Gate(
                metric=metric,
                op=match["op"],  # type: ignore[arg-type]  # the regex admits only Op values
                threshold=number / 100 if relative else number,
                relative=relative,
                text=part.strip(),
            )
        )
    return gates


def evaluate_gates(changes: list[MetricChange], gates: list[Gate]) -> list[GateResult]:
    """One result per gate, in order; a gate on a missing metric fails as "missing"."""
    by_name = {change.name: change for change in changes}
    results = []
    for gate in gates:
        change = by_name.get(gate.metric)
        if change is None or change.delta is None:
            where = _missing_where(change)
            results.append(GateResult(gate, "missing", f"{gate.metric} missing in {where}", change))
            continue
        assert change.a is not None  # delta is not None
        if gate.relative:
            value = change.relative
            if value is None:  # A is 0: any change from nothing is infinitely large
                value = math.copysign(math.inf, change.delta) if change.delta else 0.0
        else:
            value = change.delta
        failed = _holds(value, gate.op, gate.threshold)
        observed = format_change(change) if gate.relative else _signed(gate.metric, change.delta)
        limit = (
            f"{gate.threshold * 100:+g}%" if gate.relative else _signed(gate.metric, gate.threshold)
        )
        reason = (
            f"{gate.metric} changed by {observed} "
            f"({metric_text(gate.metric, change.a)} -> {metric_text(gate.metric, change.b)}); "
            f"fails {_OP_WORDS[gate.op]} {limit}"
        )
        results.append(GateResult(gate, "fail" if failed else "pass", reason, change))
    return results


_OP_WORDS = {">": "above", ">=": "at or above", "<": "below", "<=": "at or below"}


def _holds(value: float, op: Op, threshold: float) -> bool:
    if op == ">":
        return value > threshold
    if op == ">=":
        return value >= threshold
    if op == "<":
        return value < threshold
    return value <= threshold


def _missing_where(change: MetricChange | None) -> str:
    if change is None or (change.a is None and change.b is None):
        return "both reports"
    return "report A" if change.a is None else "report B"


# --- formatting (report/ is where numbers become text) ------------------------


def metric_text(name: str, value: float | None) -> str:
    """A metric's value with the prefix that suits its unit (`core.units.format_value`)."""
    return format_value(value, METRICS[name].unit)


def format_change(change: MetricChange) -> str:
    """'+5.2%', '-0.8%', '0%' (equal), 'new' (A is 0 or absent), 'gone' (B absent)."""
    if change.a is None:
        return "new"
    if change.b is None:
        return "gone"
    if change.delta == 0:
        return "0%"
    if change.relative is None:  # A is 0
        return _signed(change.name, change.delta)
    pct = change.relative * 100
    # Tiny changes keep two significant digits instead of collapsing to "+0.0%".
    return f"{pct:+.1f}%" if abs(pct) >= 0.1 else f"{pct:+.2g}%"


def _signed(name: str, value: float | None) -> str:
    if value is None:
        return "—"
    text = metric_text(name, abs(value))
    return ("-" if value < 0 else "+") + text
