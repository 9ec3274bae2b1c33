"""HTML view of the `plan` section: memory per device and step time per layout (layer 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import UserInputError


def check_html_path(path: str) -> None:
    target = Path(path)
    if target.suffix.lower() not in (".html", ".htm"):
        raise UserInputError(f"--html {path}: give a .html file name")
    if target.parent and not target.parent.exists():
        raise UserInputError(f"cannot write {path}: folder {target.parent} does not exist")


def write_plan_html(report: dict[str, Any], path: str) -> None:
    raise NotImplementedError
