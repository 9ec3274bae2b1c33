"""`CommaList`: the one click type of every comma-separated option (bad items: one line, exit 2)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from modelmeter.cli.options import CommaList, batch_list, precision_list


def _echo(option_type: click.ParamType):
    @click.command()
    @click.option("--x", type=option_type)
    def cmd(x):
        click.echo(repr(x))

    return cmd


@pytest.mark.parametrize("option_type, text, expected", [
    (batch_list(), " 32, 1,8,8", (32, 1, 8)),  # trimmed, order kept, repeats dropped
    (batch_list(unique=False), "8,8", (8, 8)),  # compare: a column each
    (precision_list(), "FP32,bf16", ("fp32", "bf16")),  # canonical spelling
    (CommaList(), "a", ("a",)),
])
def test_items_are_converted_in_order(option_type, text, expected) -> None:
    out = CliRunner().invoke(_echo(option_type), ["--x", text])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == repr(expected)


@pytest.mark.parametrize("option_type, text, needles", [
    (batch_list(), "1,x", ("bad batch size 'x' in '1,x'", "not an integer", "e.g. 1,8,32")),
    (batch_list(), "8,0", ("bad batch size '0'", "not a positive integer")),
    (batch_list(), "4294967296", ("bad batch size '4294967296'", "at most 2147483647")),
    (batch_list(), "1,,2", ("comma-separated list like 1,8,32", "'1,,2'")),
    (batch_list(), " ", ("comma-separated list",)),
    (precision_list(), "fp32,fp7", ("bad precision 'fp7'", "unknown precision", "e.g. fp32,bf16")),
])
def test_a_bad_item_is_a_usage_error_naming_the_option(option_type, text, needles) -> None:
    out = CliRunner().invoke(_echo(option_type), ["--x", text])
    assert out.exit_code == 2
    assert "'--x'" in out.output and all(n in out.output for n in needles), out.output


@pytest.mark.parametrize("args, needle", [
    (("llm", "gpt2", "--hardware", "h100-sxm", "--batch", "1,x"), "bad batch size 'x'"),
    (("bench", "gpt2", "--batch", "4,-1"), "bad batch size '-1'"),
    (("bench", "gpt2", "--backend", "compile,"), "comma-separated list"),
    (("compare", "gpt2", "--dtype", "fp32,fp7"), "bad precision 'fp7'"),
    (("compare", "gpt2", "--batch", "1,0"), "bad batch size '0'"),
])
def test_every_list_option_of_the_cli_uses_it(run_main, args, needle) -> None:
    code, out, err = run_main(*args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelmeter: error: Invalid value for '--")
    assert needle in lines[0], lines[0]


def test_no_command_splits_a_list_by_hand() -> None:
    import ast
    from pathlib import Path

    import modelmeter.cli

    hits = []
    for path in Path(modelmeter.cli.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "split" \
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == ",":
                hits.append(f"{path.name}:{node.lineno}")
    # CommaList.convert is the one place that splits on commas.
    assert hits == ["options.py:" + str(_comma_list_split_line())], hits


def _comma_list_split_line() -> int:
    import inspect

    lines, start = inspect.getsourcelines(CommaList.convert)
    return start + next(i for i, line in enumerate(lines) if '.split(",")' in line)
