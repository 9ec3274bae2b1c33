"""The JSON document a command writes (layer 4): the report plus its summary rows."""

from __future__ import annotations

from typing import Any

from ..core.report import Report
from .summary import summary_dicts


def export_json(report: Report) -> dict[str, Any]:
    """The report (schema modelmeter.report/1) plus `summary`: derived rows that
    `Report.from_dict` ignores."""
    data: dict[str, Any] = report.to_dict()
    data["summary"] = summary_dicts(data)
    return data
