"""The `Report` and its JSON form, schema "modelmeter.report/1" (layer 0).

A report is a set of named sections, each plain JSON data in base units:
`model`, `settings`, `totals`, `modules`, `uncounted_ops`, and, when the
matching analysis ran, `training`, `roofline`, `measured`, `llm`, `plan`. `methods`
says how each figure was obtained (counted / estimated / measured).
A report is assembled once from typed sections (`pipeline/sections.py`) and
not changed afterwards (frozen); `Report.from_dict(r.to_dict()) == r` holds
for every report.

Jupyter shows a report through `_repr_html_`, whose renderer lives in
`report/html.py` (layer 4): the package root registers it here with
`set_html_renderer`, so this module never imports upwards.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "modelmeter.report/1"
# The ids of the other documents the CLI writes (`llm --json`, `history --json`).
LLM_SCHEMA = "modelmeter.llm/1"
HISTORY_SCHEMA = "modelmeter.history/1"
OPTIONAL_SECTIONS = ("training", "roofline", "measured", "llm", "environment", "plan")

_html_renderer: list[Callable[[Report], str]] = []


def set_html_renderer(render: Callable[[Report], str]) -> None:
    """The function `Report._repr_html_` calls (registered by the package root)."""
    _html_renderer[:] = [render]


@dataclass(frozen=True, repr=False)
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

    def __repr__(self) -> str:
        """A few lines (model, inputs, params, MACs/FLOPs, memory, latency); `to_dict()` has it all.

        The dataclass's own repr would print every module row: hundreds of kilobytes.
        """
        from .brief import report_brief

        return report_brief(self.to_dict())

    __str__ = __repr__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain-text display: the same few lines."""
        printer.text(repr(self))

    def _repr_html_(self) -> str | None:
        """Jupyter's rich display; None (plain repr) when no renderer is registered."""
        return _html_renderer[0](self) if _html_renderer else None
