"""The efficiency summary: every metric of a report in one table (layer 4).

Pure functions over a report dict (`Report.to_dict()` shape). Each row says
what the figure is, its value in base units and for people, how it was
obtained (`counted`, `estimated (...)`, `measured (meter)`), whether it
depends on the hardware, and what it mainly affects — the closing table of
the seed (`reference/seed-efficiency-metrics.txt`), one entry per metric
family. Rows whose section did not run are left out; `summary_notes` says
what is missing and how to get it. Renderers (terminal, Markdown, HTML, CSV)
format these rows; nothing here prints.

Also here: `strip_paths` (no absolute paths of the user's machine in shared
documents) and `report_to_pandas` (optional pandas).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..core.units import (
    format_bytes,
    format_count,
    format_percent,
    format_rate,
    format_seconds,
    format_value,
    plural,
)

__all__ = [
    "SEED_METRICS",
    "SummaryRow",
    "as_dict",
    "build_summary",
    "format_ratio",
    "format_value",
    "header_facts",
    "bound_label",
    "module_bound",
    "module_latency",
    "report_to_pandas",
    "strip_paths",
    "summary_dicts",
    "summary_notes",
]


@dataclass(frozen=True)
class SeedMetric:
    """One line of the seed's closing table."""

    explanation: str
    affects: str
    affected_by: str
    hardware_independent: bool


# The seed's table (metric · explanation · affects · affected by · hardware independent).
SEED_METRICS: dict[str, SeedMetric] = {
    "parameters": SeedMetric("memory footprint of the model", "latency, storage",
                             "architecture & implementation, floating-point precision", True),
    "flops": SeedMetric("number of operations the model performs", "latency, energy",
                        "architecture & implementation", True),
    "latency": SeedMetric("time for one inference", "end-user experience",
                          "parameter size, FLOPs, hardware", False),
    "energy": SeedMetric("energy one inference consumes", "training / inference cost",
                         "architecture, implementation, hardware", False),
    "throughput": SeedMetric("inferences per unit of time", "end-user experience, energy",
                             "everything", False),
    "activations": SeedMetric("memory occupied by layer outputs", "training memory",
                              "everything (architecture, batch, sequence, precision)", True),
}


@dataclass(frozen=True)
class SummaryRow:
    """One line of the summary: a metric, its value, how it was obtained, what it affects."""

    key: str  # stable id, e.g. 'macs', 'latency_measured_p50'
    metric: str  # label for people
    value: str  # formatted for people, e.g. '25.6 M', '61.9 ms (p90 92.6 ms, 14 calls)'
    raw: float | int | None  # base units (count, bytes, seconds, joules, grams)
    unit: str  # base unit of `raw`: '', 'B', 's', 'J', 'g', '1/s'
    how: str  # 'counted' | 'estimated (roofline, DEVICE, …)' | 'measured (…)' | 'estimated (…)'
    hardware_dependent: bool
    affects: str
    family: str  # key into SEED_METRICS, or '' for supporting figures


def as_dict(report: Any) -> dict[str, Any]:
    """A `Report` or its dict form, as the dict form."""
    return report.to_dict() if hasattr(report, "to_dict") else report


def _row(key: str, metric: str, value: Any, unit: str, display: str, method: str,
         family: str, *, hardware_dependent: bool | None = None, affects: str | None = None) -> SummaryRow:
    seed = SEED_METRICS.get(family)
    hw = (not seed.hardware_independent if seed else False) if hardware_dependent is None else hardware_dependent
    return SummaryRow(key, metric, display, value, unit, method, hw,
                      affects if affects is not None else (seed.affects if seed else ""), family)


def build_summary(report: Any) -> list[SummaryRow]:
    """The summary rows of a report, in reading order: size, work, memory, time, energy."""
    r = as_dict(report)
    t = r.get("totals") or {}
    s = r.get("settings") or {}
    dtype = s.get("dtype") or "as traced"
    rows: list[SummaryRow] = []
    if "params" in t:
        rows.append(_row("params", "parameters", t["params"], "", format_count(t["params"]),
                         "counted", "parameters"))
    if "param_bytes" in t:
        rows.append(_row("param_bytes", f"parameter size ({dtype})", t["param_bytes"], "B",
                         f"{format_bytes(t['param_bytes'])} ({format_bytes(t['param_bytes'], binary=True)})",
                         "counted", "parameters"))
    q = t.get("quantization")
    if q and "param_bytes_naive" in t:
        rows.append(_row("param_bytes_naive", f"parameter size, naive (every tensor at {q['precision']})",
                         t["param_bytes_naive"], "B", format_bytes(t["param_bytes_naive"]),
                         "counted", "parameters"))
    if "macs" in t:
        rows.append(_row("macs", "MACs", t["macs"], "", format_count(t["macs"]), "counted", "flops"))
    if "flops" in t:
        rows.append(_row("flops", "FLOPs (2 × MACs)", t["flops"], "", format_count(t["flops"]),
                         "counted", "flops"))
    if "other_flops" in t:
        rows.append(_row("other_flops", "other FLOPs (elementwise, norms, softmax)", t["other_flops"],
                         "", format_count(t["other_flops"]), "counted", "flops"))
    if "total_flops" in t:
        rows.append(_row("total_flops", "total FLOPs (+ elementwise, norms, softmax)", t["total_flops"],
                         "", format_count(t["total_flops"]), "counted", "flops"))
    if "bytes_read" in t and "bytes_written" in t:
        moved = t["bytes_read"] + t["bytes_written"]
        rows.append(_row("bytes_moved", "memory traffic (unfused, read + written)", moved, "B",
                         format_bytes(moved), "counted", "", hardware_dependent=False,
                         affects="latency when memory-bound, energy"))
    if t.get("coverage") is not None:
        rows.append(_row("coverage", "op coverage (ops with a formula)", t["coverage"], "",
                         format_percent(t["coverage"]), "counted", "", hardware_dependent=False,
                         affects="trust in the FLOP count"))
    rows += _activation_rows(t, r.get("training"))
    rows += _roofline_rows(r.get("roofline"))
    rows += _measured_rows(r.get("measured"))
    rows += _llm_rows(r.get("llm"))
    return rows


def _activation_rows(t: dict[str, Any], training: dict[str, Any] | None) -> list[SummaryRow]:
    act = t.get("activations") or {}
    rows: list[SummaryRow] = []
    if act.get("peak_inference_bytes") is not None:
        rows.append(_row("peak_activations", "peak activations, inference", act["peak_inference_bytes"],
                         "B", format_bytes(act["peak_inference_bytes"]), "counted", "activations",
                         affects="inference memory"))
    if act.get("peak_inference_total_bytes") is not None:
        rows.append(_row("peak_inference_total", "peak inference memory (+ params, buffers, inputs)",
                         act["peak_inference_total_bytes"], "B",
                         format_bytes(act["peak_inference_total_bytes"]), "counted", "activations",
                         affects="which device the model fits on"))
    if act.get("saved_for_backward_bytes") is not None:
        rows.append(_row("saved_for_backward", "activations saved for backward",
                         act["saved_for_backward_bytes"], "B",
                         format_bytes(act["saved_for_backward_bytes"]), "counted", "activations"))
    if act.get("peak_backward_bytes") is not None:
        rows.append(_row("peak_backward", "peak during backward (incl. gradients)",
                         act["peak_backward_bytes"], "B", format_bytes(act["peak_backward_bytes"]),
                         "counted", "activations"))
    if t.get("backward_flops") is not None:
        rows.append(_row("backward_flops", "backward FLOPs", t["backward_flops"], "",
                         format_count(t["backward_flops"]), "counted", "flops",
                         affects="training time, energy"))
    if training and training.get("total_bytes") is not None:
        opt = training.get("optimizer", "optimizer")
        rows.append(_row("training_total", f"training memory (params + grads + {opt} + activations)",
                         training["total_bytes"], "B",
                         f"{format_bytes(training['total_bytes'])} "
                         f"({format_bytes(training['total_bytes'], binary=True)})",
                         "counted", "activations", affects="training memory, which device fits"))
    return rows


def _roofline_rows(rl: dict[str, Any] | None) -> list[SummaryRow]:
    if not rl or rl.get("latency_s") is None:
        return []
    hw = rl.get("hardware", "?")
    how = f"estimated (roofline, {hw}, {rl.get('precision', '')})"
    rows = [
        _row("latency_predicted", "predicted latency (unfused, per op)", rl["latency_s"], "s",
             f"{format_seconds(rl['latency_s'])} ({rl.get('bound', '?')}-bound)", how, "latency"),
    ]
    gpu = rl.get("predicted") or {}
    if gpu.get("predicted_latency_s") is not None:
        c = gpu.get("conditions") or {}
        rows.append(_row("latency_gpu_model", "predicted latency, GPU shape model", gpu["predicted_latency_s"], "s",
                         format_seconds(gpu["predicted_latency_s"]),
                         f"estimated (GPU model, {hw}: {c.get('kernels', '?')} kernels, {c.get('runtime', '?')})",
                         "latency"))
    cal = rl.get("calibrated") or {}
    if cal.get("predicted_latency_s") is not None:
        c = cal.get("conditions") or {}
        rows.append(_row("latency_calibrated", "predicted latency, calibrated (this machine)",
                         cal["predicted_latency_s"], "s", format_seconds(cal["predicted_latency_s"]),
                         f"estimated (per-op-class rates and dispatch cost measured here, "
                         f"{plural(c.get('threads'), 'thread')})", "latency"))
    if rl.get("latency_fused_s") is not None:
        rows.append(_row("latency_fused", "predicted latency, fully fused (lower bound)",
                         rl["latency_fused_s"], "s", format_seconds(rl["latency_fused_s"]), how, "latency"))
    if rl.get("ridge_point") is not None:
        rows.append(_row("ridge_point", "ridge point (FLOP/byte)", rl["ridge_point"], "FLOP/B",
                         f"{rl['ridge_point']:.3g}", f"from the {hw} profile", "",
                         hardware_dependent=True, affects="which layers are memory-bound"))
    return rows


def _meter(measured: dict[str, Any]) -> str:
    c = measured.get("conditions") or {}
    where = c.get("device_name") or measured.get("device", "?")
    threads = f", {plural(c['threads'], 'thread')}" if c.get("threads") else ""
    batch = f", batch {measured['batch']}" if measured.get("batch") is not None else ""
    return f"{where}{threads}{batch}"


def _measured_rows(m: dict[str, Any] | None) -> list[SummaryRow]:
    if not m:
        return []
    rows: list[SummaryRow] = []
    lat = m.get("latency_s") or {}
    where = m.get("device", "?")  # the full machine description is in the header facts
    if lat.get("p50") is not None:
        spread = f" (p90 {format_seconds(lat.get('p90'))}, {plural(lat.get('iterations'), 'call')})"
        rows.append(_row("latency_measured_p50", "measured latency (p50)", lat["p50"], "s",
                         format_seconds(lat["p50"]) + spread, f"measured (wall clock, {where})",
                         "latency"))
    if m.get("calibrated_prediction_error") is not None:
        err = m["calibrated_prediction_error"]
        rows.append(_row("prediction_error", "calibrated prediction / measured - 1", err, "",
                         f"{err:+.0%}", "calibrated prediction against the measured p50", "latency"))
    if m.get("throughput_per_s") is not None:
        rows.append(_row("throughput", "throughput (items/s)", m["throughput_per_s"], "1/s",
                         format_rate(m['throughput_per_s'], "items/s"), f"measured (batch / p50, {where})",
                         "throughput"))
    if m.get("peak_memory_bytes") is not None:
        rows.append(_row("peak_memory_measured", "measured peak memory (above baseline)",
                         m["peak_memory_bytes"], "B", format_bytes(m["peak_memory_bytes"], binary=True),
                         f"measured ({m.get('device', '?')})", "activations", hardware_dependent=True,
                         affects="inference memory"))
    if m.get("energy_j_per_inference") is not None:
        source = m.get("energy_source") or "?"
        how = ("estimated (from the counts: no energy meter)" if source == "estimate"
               else f"measured ({source})")
        rows.append(_row("energy", "energy per inference", m["energy_j_per_inference"], "J",
                         f"{m['energy_j_per_inference']:.3g} J", how, "energy"))
    if m.get("carbon_g_per_1000") is not None:
        rows.append(_row("carbon", "carbon per 1000 inferences (gCO2e)", m["carbon_g_per_1000"], "g",
                         f"{m['carbon_g_per_1000']:.3g} g",
                         f"estimated (energy × grid intensity, {m.get('carbon_region')}, "
                         f"PUE {m.get('pue')})", "energy"))
    return rows


def _llm_rows(llm: dict[str, Any] | None) -> list[SummaryRow]:
    if not llm:
        return []
    how = f"estimated (roofline, {llm.get('hardware', '?')})"
    rows: list[SummaryRow] = []
    for key, label in (("ttft_s", "time to first token"), ("tpot_s", "time per output token")):
        if llm.get(key) is not None:
            rows.append(_row(f"llm_{key}", label, llm[key], "s", format_seconds(llm[key]), how, "latency"))
    if llm.get("tokens_per_s") is not None:
        rows.append(_row("llm_tokens_per_s", "tokens per second", llm["tokens_per_s"], "1/s",
                         format_rate(llm['tokens_per_s'], "tokens/s"), how, "throughput"))
    if llm.get("kv_cache_bytes_per_token") is not None:
        rows.append(_row("llm_kv_per_token", "KV cache per token", llm["kv_cache_bytes_per_token"], "B",
                         format_bytes(llm["kv_cache_bytes_per_token"]), "counted", "activations"))
    return rows


def summary_notes(report: Any) -> list[str]:
    """What the summary lacks and how to get it, plus the report's own notes."""
    r = as_dict(report)
    notes = list((r.get("settings") or {}).get("notes") or [])
    if r.get("uncounted_ops"):
        n = sum(int(u.get("count", 0)) for u in r["uncounted_ops"])
        notes.append(f"{plural(len(r['uncounted_ops']), 'op kind')} ({plural(n, 'call')}) have no formula: "
                     "their arithmetic is not in the FLOP totals (listed under uncounted ops)")
    backward = (r.get("totals") or {}).get("backward_uncounted_ops") or []
    if backward:
        notes.append(f"backward: {plural(len(backward), 'op kind')} without a formula, not in backward FLOPs: "
                     + ", ".join(u["op"] for u in backward))
    rl = r.get("roofline")
    if rl:
        notes += [f"roofline: {n}" for n in rl.get("notes") or []]
    m = r.get("measured")
    if m:
        notes += [f"measured: {n}" for n in m.get("notes") or []]
        for row in m.get("sweep") or []:
            if row.get("noisy"):
                notes.append(f"measured: batch {row.get('batch')} is noisy ({row.get('noise_reason')})")
    return notes


def summary_dicts(report: Any) -> list[dict[str, Any]]:
    """The summary rows as JSON-ready dicts."""
    return [asdict(row) for row in build_summary(report)]


def module_latency(m: dict[str, Any]) -> float | None:
    """A module's predicted time: its `latency_s` (sum of per-op maxima) when the roofline
    gave it, else max(t_compute, t_memory) of its summed times; None without a roofline."""
    if m.get("latency_s") is not None:
        return float(m["latency_s"])
    if m.get("t_compute_s") is None or m.get("t_memory_s") is None:
        return None
    return float(max(m["t_compute_s"], m["t_memory_s"]))


def module_bound(m: dict[str, Any]) -> str:
    """'memory' | 'compute' from the roofline; 'no work' for a module that computes and moves
    nothing (views, Flatten, Identity); '—' for a module without a predicted time."""
    if m.get("bound") == "none":
        return bound_label("none")
    if not module_latency(m):
        return "—"
    return str(m.get("bound", "—"))


def bound_label(bound: str) -> str:
    """A roofline `bound` for people: 'memory', 'compute', or 'no work' for 'none'."""
    return "no work" if bound == "none" else bound


def format_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"×{ratio:.3g}"


def header_facts(report: Any) -> list[tuple[str, str]]:
    """(label, value) pairs that say what was analysed: model, precision, inputs, device."""
    r = as_dict(report)
    m, s = r.get("model") or {}, r.get("settings") or {}
    facts = [("model", str(m.get("name", "?")))]
    if m.get("description"):
        facts.append(("description", str(m["description"])))
    facts.append(("precision", str(s.get("dtype", "?"))))
    shapes = ", ".join("x".join(str(d) for d in i.get("shape", [])) + f" {i.get('dtype', '')}".rstrip()
                       for i in s.get("inputs") or [])
    if shapes:
        facts.append(("inputs", shapes + (f" ({s['inputs_from']})" if s.get("inputs_from") else "")))
    rl = r.get("roofline")
    if rl:
        detail = rl.get("hardware_detail") or {}
        facts.append(("roofline device", f"{detail.get('name', rl.get('hardware'))} ({rl.get('hardware')}, "
                                         f"{detail.get('source', '?')})"))
    meas = r.get("measured")
    if meas:
        facts.append(("measured on", _meter(meas)))
    return facts


# ------------------------------------------------------------------ paths

# An absolute POSIX path with at least two parts (/x/y: a lone '/s' in 'items /s' is no path),
# a home path (~/x) or a Windows drive path (C:\x).
_SEG = r"[^\s'\"<>|,;()/\\]"
_ABS_PATH = re.compile(
    rf"(?<![\w.:/~-])/{_SEG}+(?:/{_SEG}*)+"
    rf"|(?<![\w.:/-])~/[^\s'\"<>|,;()]*"
    rf"|\b[A-Za-z]:\\[^\s'\"<>|,;()]*"
)


def strip_paths(text: str) -> str:
    """Replace absolute paths in `text` by their last component (`/home/x/model` -> `model`).

    Shared documents (Markdown, HTML) must not reveal the user's file layout.
    """
    def base(match: re.Match[str]) -> str:
        path = match.group(0).rstrip("/\\")
        name = re.split(r"[/\\]", path)[-1]
        return name or os.sep

    return _ABS_PATH.sub(base, text)


# ------------------------------------------------------------------ pandas


def report_to_pandas(report: Any, what: str = "modules") -> Any:
    """A pandas DataFrame of the report's modules (`what='modules'`) or summary (`'summary'`)."""
    from ..core.errors import MissingDependencyError, UserInputError

    try:
        import pandas as pd
    except ImportError as exc:
        raise MissingDependencyError("report_to_pandas needs pandas: pip install pandas") from exc
    if what == "modules":
        return pd.DataFrame(as_dict(report)["modules"])
    if what == "summary":
        return pd.DataFrame(summary_dicts(report))
    raise UserInputError(f"what must be 'modules' or 'summary', got {what!r}")
