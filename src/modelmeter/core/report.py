"""The `Report` and its JSON form, schema "modelmeter.report/1" (layer 0).

A report is a set of named sections, each plain JSON data in base units:
`model`, `settings`, `totals`, `modules`, `uncounted_ops`, and, when the
matching analysis ran, `training`, `roofline`, `measured`, `llm`, `plan`. `methods`
says how each figure was obtained (counted / estimated / measured).
Sections are dicts so later layers add to them without touching this file;
`Report.from_dict(r.to_dict()) == r` holds for every report.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .results import Counts

SCHEMA = "modelmeter.report/1"
OPTIONAL_SECTIONS = ("training", "roofline", "measured", "llm", "environment", "plan")


@dataclass
class Report:
    model: dict[str, Any]
    settings: dict[str, Any]
    totals: dict[str, Any]
    modules: list[dict[str, Any]]
    uncounted_ops: list[dict[str, Any]]
    methods: dict[str, str] = field(default_factory=dict)
    training: dict[str, Any] | None = None
    roofline: dict[str, Any] | None = None
    measured: dict[str, Any] | None = None
    llm: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None  # the multi-device planner (`modelmeter plan`)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "model": self.model,
            "settings": self.settings,
            "totals": self.totals,
            "modules": self.modules,
            "uncounted_ops": self.uncounted_ops,
            "methods": self.methods,
        }
        for name in OPTIONAL_SECTIONS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return copy.deepcopy(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        schema = data.get("schema")
        if schema != SCHEMA:
            raise ValueError(f"not a modelmeter report (schema {schema!r}, expected {SCHEMA!r})")
        data = copy.deepcopy(data)
        return cls(
            model=data["model"], settings=data["settings"], totals=data["totals"],
            modules=data["modules"], uncounted_ops=data["uncounted_ops"],
            methods=data.get("methods", {}),
            **{name: data.get(name) for name in OPTIONAL_SECTIONS},
        )

    def _repr_html_(self) -> str:  # Jupyter; the renderer lives in report/ (layer 4)
        from ..report.html import render_html_fragment  # noqa: PLC0415

        return render_html_fragment(self)


def count_sections(counts: Counts) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """`totals`, `modules` and `uncounted_ops` sections from counts."""
    t = counts.totals
    totals = {
        "params": t.params,
        "active_params": t.active_params,
        "active_params_without_embeddings": t.active_params_without_embeddings,
        "trainable_params": t.trainable_params,
        "buffers": t.buffers,
        "buffer_bytes": t.buffer_bytes,
        "param_bytes": t.param_bytes,
        "param_scale_bytes": t.param_scale_bytes,
        "macs": t.macs,
        "flops": t.flops,
        "other_flops": t.other_flops,
        "total_flops": t.flops + t.other_flops,
        "bytes_read": t.bytes_read,
        "bytes_written": t.bytes_written,
        # `coverage` is the call coverage (kept as it always was); flop_coverage is the
        # share of the arithmetic counted, uncounted ops estimated from their shapes.
        "coverage": counts.coverage,
        "call_coverage": counts.call_coverage,
        "flop_coverage": counts.flop_coverage,
        "uncounted_flops_estimate": counts.uncounted_flops_estimate,
        # Ops counted with PyTorch's flop_registry because modelmeter has no formula.
        "fallback_ops": fallback_section(counts),
        "fallback_flops": sum(f for _, _, f in counts.fallback_ops),
    }
    if counts.quantization is not None:
        # The weight-only layout behind param_bytes, and the naive all-tensors figure beside it.
        totals["param_bytes_naive"] = counts.quantization.naive_bytes
        totals["quantization"] = counts.quantization.to_dict()
    modules = [
        {
            "path": m.path, "type": m.type, "depth": m.depth, "calls": m.calls,
            "params": m.params, "own_params": m.own_params, "param_bytes": m.param_bytes,
            "macs": m.macs, "flops": m.flops, "other_flops": m.other_flops,
            "bytes_read": m.bytes_read, "bytes_written": m.bytes_written,
            "input_bytes": m.input_bytes, "output_bytes": m.output_bytes,
            "seed_bytes": m.seed_bytes,
            **({"experts": m.experts, "top_k": m.top_k} if m.experts else {}),
        }
        for m in counts.modules
    ]
    estimates = counts.uncounted_estimates()
    uncounted = [{"op": op, "count": n, "estimated_flops": estimates.get(op, 0)}
                 for op, n in counts.uncounted_ops]
    return totals, modules, uncounted


def fallback_section(counts: Counts) -> list[dict[str, Any]]:
    """Ops counted with PyTorch's flop_registry (a fallback: we have no formula for them)."""
    return [{"op": op, "count": n, "flops": f, "source": "pytorch flop_registry"}
            for op, n, f in counts.fallback_ops]
