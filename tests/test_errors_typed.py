"""Public errors are typed: bad input to the public API raises a `ModelmeterError` subclass.

Each row is a real call through `modelmeter.*` on a real (tiny) model; before the
errors were typed, the rows marked `was:` escaped as bare builtins (a TypeError
from comparing a str with an int, an AttributeError from `.strip()` on a module,
ValueError/KeyError from `Report.from_dict`). The architecture test below keeps
new bare `raise ValueError(` / `TypeError(` / `RuntimeError(` out of library modules.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import modelmeter
from modelmeter import (
    ModelmeterError,
    ReportFormatError,
    ShapeError,
    UnknownDocumentError,
    UnknownHardwareError,
    UnknownPrecisionError,
    UserInputError,
)
from modelmeter.core.schema import load_schema

SRC = Path(modelmeter.__file__).resolve().parent


def _tiny() -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)), (torch.randn(2, 4),)


M, X = _tiny()

BAD_CALLS: list[tuple[str, Callable[[], Any], type[ModelmeterError]]] = [
    ("was: TypeError", lambda: modelmeter.count("gpt2", batch="two"), UserInputError),
    ("was: TypeError", lambda: modelmeter.count(M, X, dtype="int4", group_size="32"), UserInputError),
    ("was: TypeError", lambda: modelmeter.roofline(M, X, hardware="h100-sxm", depth="1"), UserInputError),
    ("was: AttributeError", lambda: modelmeter.llm(M, hardware="h100-sxm"), UserInputError),
    ("was: ValueError", lambda: modelmeter.Report.from_dict({"schema": "x"}), ReportFormatError),
    ("was: KeyError", lambda: modelmeter.Report.from_dict({"schema": "modelmeter.report/1"}), ReportFormatError),
    ("was: AttributeError", lambda: modelmeter.Report.from_dict([]), ReportFormatError),  # type: ignore[arg-type]
    ("was: ValueError", lambda: load_schema("nonsense"), UnknownDocumentError),
    ("precision", lambda: modelmeter.count(M, X, dtype="fp7"), UnknownPrecisionError),
    ("shape", lambda: modelmeter.count(M, (torch.randn(2, 5),)), ShapeError),
    ("hardware", lambda: modelmeter.roofline(M, X, hardware="no-such-gpu"), UnknownHardwareError),
    ("batch 0", lambda: modelmeter.count("gpt2", batch=0), UserInputError),
    ("efficiency", lambda: modelmeter.roofline(M, X, hardware="h100-sxm", efficiency=2), UserInputError),
    ("llm prompt", lambda: modelmeter.llm("gpt2", hardware="h100-sxm", prompt=0), UserInputError),
    ("llm batches", lambda: modelmeter.llm("gpt2", hardware="h100-sxm", batches="a,b"), UserInputError),
    ("optimizer", lambda: modelmeter.memory(M, X, train=True, optimizer="nope"), UserInputError),
    ("timing", lambda: modelmeter.report(M, X, timing={"nope": 1}), UserInputError),
    ("compare", lambda: modelmeter.compare([]), UserInputError),
    ("plan devices", lambda: modelmeter.plan("gpt2", hardware="h100-sxm", devices=0), UserInputError),
]


@pytest.mark.parametrize(("what", "call", "error"), BAD_CALLS, ids=[f"{i}-{row[0]}" for i, row in enumerate(BAD_CALLS)])
def test_bad_input_to_the_public_api_raises_a_typed_error(what: str, call: Callable[[], Any],
                                                         error: type[ModelmeterError]) -> None:
    with pytest.raises(error) as caught:
        call()
    assert isinstance(caught.value, ModelmeterError)
    assert str(caught.value) and "\n" not in str(caught.value)  # one line, as the CLI prints it


def test_the_typed_replacements_of_value_error_still_are_value_errors() -> None:
    # Callers that caught ValueError from Report.from_dict / load_schema keep working.
    assert issubclass(ReportFormatError, ValueError) and issubclass(UnknownDocumentError, ValueError)
    assert all(name in modelmeter.__all__ for name in ("ReportFormatError", "UnknownDocumentError"))


# ------------------------------------------------------------------ architecture

BANNED = ("ValueError", "TypeError", "RuntimeError")
# (module, function, builtin): each an internal check whose caller catches it, never user input.
ALLOWED = {
    ("core/files.py", "atomic_open", "ValueError"): "a programming error: a mode other than 'w'/'wb'",
    ("core/lists.py", "positive_int", "ValueError"): "parse_list's cast contract: turned into UserInputError there",
    ("count/registry.py", "decorate", "ValueError"): "a formula registered twice: a bug found at import",
    ("count/contractions.py", "_t", "TypeError"): "the engine counts an op whose formula fails as uncounted",
    ("count/onnx_ops.py", "_shape", "ValueError"): "caught by the ONNX counter: the node is uncounted",
    ("count/onnx_ops.py", "_ms_mha", "ValueError"): "caught by the ONNX counter: the node is uncounted",
    ("sources/pt2.py", "_read_json", "ValueError"): "caught on the next line and re-raised typed",
    ("store.py", "_insert", "RuntimeError"): "16 random 64-bit run ids all taken: cannot happen in practice",
    ("store.py", "_row_to_run", "ValueError"): "caught on the next line: the row is reported as unreadable",
    ("hardware/perfmodel.py", "from_dict", "ValueError"): "a cached record: its caller sets the file aside",
    ("hardware/perfmodel.py", "fit", "ValueError"): "calibration's own points: times are measured > 0",
    ("hardware/detect.py", "_size_bytes", "ValueError"): "sysfs cache sizes: the kernel writes them as parsed",
    ("analysis/comm.py", "_bus", "ValueError"): "collectives are module constants, never user input",
}


class _Raises(ast.NodeVisitor):
    """(innermost function, builtin) of every `raise <banned>` / `raise <banned>(...)`."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.found: set[tuple[str, str]] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Raise(self, node: ast.Raise) -> None:
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(target, ast.Name) and target.id in BANNED:
            self.found.add((self.stack[-1] if self.stack else "<module>", target.id))


def _bare_raises() -> set[tuple[str, str, str]]:
    found = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("cli/"):  # the CLI maps errors to exit codes itself
            continue
        visitor = _Raises()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        found |= {(rel, func, name) for func, name in visitor.found}
    return found


def test_no_bare_builtin_errors_in_library_modules_beyond_the_allow_list() -> None:
    found = _bare_raises()
    assert found - set(ALLOWED) == set(), "raise a core.errors type (or allow-list it here with a reason)"
    assert set(ALLOWED) - found == set(), "allow-list entries that no longer raise: remove them"
