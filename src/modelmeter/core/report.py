"""The `Report` and its JSON form, schema "modelmeter.report/1" (layer 0).

A report is a set of named sections, each plain JSON data in base units:
`model`, `settings`, `totals`, `modules`, `uncounted_ops`, and, when the
matching analysis ran, `training`, `roofline`, `measured`, `llm`, `plan`. `methods`
says how each figure was obtained (counted / estimated / measured).
A report is assembled once from typed sections (`pipeline/sections.py`) and
not changed afterwards: it is frozen, and so is what it holds (`core/frozen.py`:
read-only mappings and tuples), so no reader can change what another reads;
`to_dict()` is a fresh mutable copy for writers. `Report.from_dict(r.to_dict()) == r`
holds for every report.

Jupyter shows a report through `_repr_html_`, whose renderer lives in
`report/html.py` (layer 4): the package root registers it here with
`set_html_renderer`, so this module never imports upwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ReportFormatError
from .frozen import freeze, thaw

SCHEMA = "modelmeter.report/1"
# The ids of the other documents the CLI writes (`llm --json`, `history --json`).
LLM_SCHEMA = "modelmeter.llm/1"
HISTORY_SCHEMA = "modelmeter.history/1"
OPTIONAL_SECTIONS = ("training", "roofline", "measured", "llm", "environment", "plan")
REQUIRED_SECTIONS = ("model", "settings", "totals", "modules", "uncounted_ops")

_html_renderer: list[Callable[[Report], str]] = []


def set_html_renderer(render: Callable[[Report], str]) -> None:
    """The function `Report._repr_html_` calls (registered by the package root)."""
    _html_renderer[:] = [render]


@dataclass(frozen=True, repr=False)
class Report:
    """The sections, each read-only (mappings are `MappingProxyType`, lists tuples):
    whatever is passed in is copied and frozen, so changing it later changes no report."""

    model: Mapping[str, Any]
    settings: Mapping[str, Any]
    totals: Mapping[str, Any]
    modules: tuple[Mapping[str, Any], ...]
    uncounted_ops: tuple[Mapping[str, Any], ...]
    methods: Mapping[str, str] = field(default_factory=dict)
    training: Mapping[str, Any] | None = None
    roofline: Mapping[str, Any] | None = None
    measured: Mapping[str, Any] | None = None
    llm: Mapping[str, Any] | None = None
    environment: Mapping[str, Any] | None = None
    plan: Mapping[str, Any] | None = None  # the multi-device planner (`modelmeter plan`)

    def __post_init__(self) -> None:
        for f in fields(self):
            # Setting a frozen dataclass's field in __post_init__ (the documented way).
            object.__setattr__(self, f.name, freeze(getattr(self, f.name)))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: a fresh mutable copy (changing it changes no report)."""
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
        return thaw(out)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        """The report a `to_dict()` document describes; ReportFormatError when it is not one."""
        if not isinstance(data, Mapping):
            raise ReportFormatError(f"not a modelmeter report: a {type(data).__name__}, not a JSON object")
        schema = data.get("schema")
        if schema != SCHEMA:
            raise ReportFormatError(f"not a modelmeter report (schema {schema!r}, expected {SCHEMA!r})")
        missing = [name for name in REQUIRED_SECTIONS if name not in data]
        if missing:
            raise ReportFormatError(f"not a complete modelmeter report: no {', '.join(missing)}")
        return cls(
            model=data["model"], settings=data["settings"], totals=data["totals"],
            modules=data["modules"], uncounted_ops=data["uncounted_ops"],
            methods=data.get("methods", {}),
            **{name: data.get(name) for name in OPTIONAL_SECTIONS},
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Read-only mappings cannot be pickled or deep-copied as such: a report travels
        # (to a worker, through copy.deepcopy) as its document and is rebuilt from it.
        return (Report.from_dict, (self.to_dict(),))

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
