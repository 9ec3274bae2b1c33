"""The measurement layer's sourced data files (JSON beside this module)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def load(name: str) -> dict[str, Any]:
    """One data file, parsed once per process. UTF-8 whatever the locale: the sources cite
    names and units outside ASCII."""
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data
