"""Options shared by the commands that load a model, and writing their output (layer 7)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from ..core.errors import UserInputError

MAX_DIM = 2**31 - 1  # the bound of one dimension (sources/inputs.py: int32, what kernels index)


def model_spec(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    """Click callback of every MODEL argument: an empty spec ('') is refused before any other check."""
    from ..sources.resolve import check_model_spec

    for spec in value if isinstance(value, tuple) else (value,):
        check_model_spec(spec)
    return value


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """MODEL argument plus --input/--batch/--seq/--dtype, shared by count, memory, roofline…"""
    decorators = [
        click.argument("model", required=False, callback=model_spec),
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


def attention_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--attention: the SDPA kernel assumed (trace/attention.py); default flash."""
    return click.option(
        "--attention", type=click.Choice(["math", "flash"], case_sensitive=False), default=None,
        help="Attention kernel assumed: flash (fused, the default: what GPUs and CPUs run; the "
             "L x S scores are never stored) or math (unfused: scores materialised).")(fn)


def threads_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--threads: torch's intra-op threads on CPU; default the physical cores, the same every run."""
    return click.option(
        "--threads", type=click.IntRange(min=1), default=None,
        help="torch intra-op threads on CPU (default: this CPU's physical cores, the same every "
             "run whatever the load).")(fn)


def check_sizes(values: Any, flag: str) -> None:
    """Each --batch/--seq style integer positive and within the sane bound (one line, exit 2)."""
    from ..sources.inputs import check_positive

    for value in values if isinstance(values, (list, tuple)) else [values]:
        check_positive(value, flag)


def make_console(*, json_to_stdout: bool = False) -> Console:
    """A console for command output; when piped, wide enough that tables do not fold.

    With ``json_to_stdout`` (``--json -``) stdout carries the JSON alone, so the
    human-readable output goes to stderr. ``COLUMNS``, when set, is the width either
    way (as rich itself reads it for a terminal).
    """
    if json_to_stdout:
        return Console(stderr=True)
    columns = os.environ.get("COLUMNS", "")
    if sys.stdout.isatty() or columns.isdigit():
        return Console()
    return Console(width=200)


def check_outputs(**targets: str | None) -> None:
    """Refuse unwritable output paths before the work (--json x.json -> json="x.json").

    A typo or a read-only folder found after minutes of tracing or measuring
    would throw the finished result away; '-' (stdout) and None are skipped.
    """
    from ..core.files import check_writable

    to_stdout = ["--" + option.replace("_", "-") for option, target in targets.items() if target == "-"]
    if len(to_stdout) > 1:
        raise UserInputError(f"{' and '.join(to_stdout)} all write to standard output ('-'): one output "
                             "there would run into the next; give the others a file")
    seen: dict[str, str] = {}
    for option, target in targets.items():
        if target is None or target == "-":
            continue
        flag = "--" + option.replace("_", "-")
        key = os.path.realpath(target)
        if key in seen:
            raise UserInputError(f"{seen[key]} and {flag} name the same file {target}; give each its own")
        seen[key] = flag
        check_writable(target)


def write_json(data: dict[str, Any], target: str) -> None:
    """Write JSON to a path, or to stdout for '-'. Whole or not at all (core.files.atomic_write)."""
    from ..core.files import atomic_write

    text = json.dumps(data, indent=2, default=_jsonable)
    if target == "-":
        sys.stdout.write(text + "\n")
        return
    atomic_write(target, text + "\n")


def _jsonable(value: Any) -> Any:
    # A typed section serialises itself; anything else is a bug upstream, refused here:
    # its str() (a dtype, a Path, a repr) would pass for data and break the contract.
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"cannot write a {type(value).__module__}.{type(value).__qualname__} as JSON "
                    f"({value!r:.60}): convert it to a JSON type (or give it to_dict) where it is built")


class CommaList(click.ParamType):
    """A comma-separated option, ``--batch 1,8,32`` -> ``(1, 8, 32)``: every list option's one parser.

    Each item is trimmed and converted by `item_type`: a click type (``click.IntRange(min=1)``)
    or a function raising ValueError / UserInputError that says why. An empty list, an
    empty item (``1,,8``) or a bad item is a click usage error (one line, exit 2) naming
    the option, the item and an example. `unique` drops repeats, keeping the first.
    """

    name = "list"

    def __init__(self, item_type: Any = click.STRING, *, example: str = "a,b", unique: bool = False,
                 what: str = "item") -> None:
        self.item_type = item_type if callable(item_type) and not isinstance(item_type, click.ParamType) \
            else click.types.convert_type(item_type)
        self.example = example
        self.unique = unique
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[Any, ...]:
        if isinstance(value, tuple):  # already converted (a default, or click's second pass)
            return value
        text = str(value)
        items = [part.strip() for part in text.split(",")]
        if not text.strip() or any(not part for part in items):
            self.fail(f"takes a comma-separated list like {self.example}, got {text!r}", param, ctx)
        values = [self._item(item, text, param, ctx) for item in items]
        return tuple(dict.fromkeys(values)) if self.unique else tuple(values)

    def _item(self, item: str, text: str, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            if isinstance(self.item_type, click.ParamType):
                return self.item_type.convert(item, param, ctx)
            return self.item_type(item)
        except click.BadParameter as exc:
            why = exc.message
        except (ValueError, UserInputError) as exc:
            why = str(exc)
        self.fail(f"bad {self.what} {item!r} in {text!r}: {why.rstrip('.')}; e.g. {self.example}", param, ctx)


def batch_list(example: str = "1,8,32", *, unique: bool = True) -> CommaList:
    """Batch sizes: whole numbers in 1..2**31 - 1 (what a tensor dimension holds), distinct
    unless `unique` is False (`compare` makes a column of each)."""
    return CommaList(_batch_size, example=example, unique=unique, what="batch size")


def _batch_size(text: str) -> int:
    from ..core.lists import positive_int

    value = positive_int(text)  # ValueError: not an integer / not a positive integer
    if value > MAX_DIM:
        raise ValueError(f"too large: at most {MAX_DIM} (2**31 - 1)")
    return value


def precision_list(example: str = "fp32,bf16") -> CommaList:
    """Precision names, each checked and spelled canonically (`core.precision`)."""
    from ..core.precision import parse_precision

    return CommaList(lambda text: parse_precision(text).name, example=example, what="precision")
