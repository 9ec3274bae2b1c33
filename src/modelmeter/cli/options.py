"""Options shared by the commands that load a model, and writing their output (layer 7)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..core.errors import UserInputError


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """MODEL argument plus --input/--batch/--seq/--dtype, shared by count, memory, roofline…"""
    decorators = [
        click.argument("model", required=False),
        click.option("--input", "inputs", multiple=True, metavar="[NAME=]SHAPE[:DTYPE]",
                     help="Input shape such as 1x3x224x224 (repeat for several inputs); "
                          "NAME= passes it as that keyword, e.g. input_features=1x80x3000."),
        click.option("--batch", type=int, help="Batch size (text and vision presets)."),
        click.option("--seq", type=int, help="Sequence length in tokens (text models)."),
        click.option("--dtype", help="Precision: fp64 fp32 tf32 fp16 bf16 fp8 int8 int4 nf4."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def make_console(*, json_to_stdout: bool = False) -> Console:
    """A console for command output; when piped, wide enough that tables do not fold.

    With ``json_to_stdout`` (``--json -``) stdout carries the JSON alone, so the
    human-readable output goes to stderr.
    """
    if json_to_stdout:
        return Console(stderr=True)
    return Console(width=None if sys.stdout.isatty() else 160)


def write_json(data: dict[str, Any], target: str) -> None:
    """Write JSON to a path, or to stdout for '-'. Written whole, then renamed: never half a file."""
    text = json.dumps(data, indent=2, default=_jsonable)
    if target == "-":
        sys.stdout.write(text + "\n")
        return
    path = Path(target)
    if path.parent and not path.parent.exists():
        raise UserInputError(f"cannot write {target}: folder {path.parent} does not exist")
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text + "\n")
        tmp.replace(path)
    except OSError as exc:
        raise UserInputError(f"cannot write {target}: {exc.strerror or exc}") from exc


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def split_list(text: str | None, label: str, cast: Callable[[str], Any]) -> list[Any]:
    """'a,b' -> [cast(a), cast(b)]; None -> [None] (one variant: the default)."""
    if text is None:
        return [None]
    items = [p.strip() for p in text.split(",")]
    if any(not p for p in items):
        raise UserInputError(f"--{label} takes a comma-separated list like 'a,b', got {text!r}")
    try:
        return [cast(p) for p in items]
    except ValueError:
        raise UserInputError(f"--{label}: {text!r} is not a list of integers") from None
