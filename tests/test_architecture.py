"""The layer rule: a module imports only from its own layer or below, and no import cycles.

Every file of the package is read with `ast` (no file exempt): absolute
(`from modelmeter import api`, `import modelmeter.api`) and relative
(`from ..report import html`) imports, at module level or inside functions
(lazy), under `if TYPE_CHECKING:` too, and module paths given as strings to
`importlib.import_module` or as 'modelmeter.x.y:attr' entry points. Third-party
imports are checked against an allowlist per layer (core, count, formulas,
presets: the standard library only). The checker is tested on a fake package
below, so a broken rule cannot pass unnoticed.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import modelmeter

PACKAGE = Path(modelmeter.__file__).parent
ROOT = "modelmeter"

# Layer of each top-level unit of the package (a subpackage or a module). The package
# root re-exports the public API and wires Report._repr_html_: above everything.
LAYERS = {
    "core": 0,
    "trace": 1, "sources": 1, "presets": 1, "count": 1, "formulas": 1,
    "hardware": 2,
    "analysis": 3, "measure": 3,
    "report": 4, "store": 4, "store_pg": 4, "stores": 4,
    "pipeline": 5,
    "api": 6,
    "cli": 7,
    # sweep runs the CLI's commands in worker processes and reads their options: beside cli.
    "sweep": 7,
    "__init__": 8,
}
# Third-party packages each layer may import (lazily or not); anything else is a failure.
THIRD_PARTY = {
    "core": set(), "count": set(), "formulas": set(), "presets": set(),
    "trace": {"torch"},
    # huggingface_hub fetches a Hub id's config.json; sympy reads a .pt2's symbolic shapes.
    # onnx: `count model.onnx` loads the graph and runs its shape inference (extra [onnx]).
    "sources": {"torch", "transformers", "huggingface_hub", "sympy", "onnx"},
    "hardware": {"torch", "platformdirs"},
    # Pure cost models: no torch, no transformers (exceptions: PURE_THIRD_PARTY_EXCEPTIONS).
    "analysis": set(),
    # onnxruntime: the `bench --backend onnxruntime` session (extra [onnx]).
    "measure": {"torch", "pynvml", "zeus", "onnxruntime"},
    # mlflow: `--mlflow` (extra [mlflow]), imported only when asked.
    "report": {"rich", "matplotlib", "pandas", "mlflow"},
    "store": {"platformdirs"},
    # psycopg 3: the PostgreSQL run store (extra [postgres]), imported only for a postgresql:// URL.
    "store_pg": {"psycopg"}, "stores": set(),
    # transformers: the LLM view's DynamicCache, built to trace and to run decode steps.
    "pipeline": {"torch", "transformers"},
    "api": set(),
    "cli": {"click", "rich", "torch"},
    # yaml: YAML specs when PyYAML is installed; tomli: TOML on Python 3.10.
    # ray: `sweep --ray` (extra [ray]), imported only when asked.
    "sweep": {"torch", "yaml", "tomli", "ray"},
    "__init__": set(),
}
# analysis/ is pure cost models over traces, counts and the hardware database: it never
# resolves, builds, traces or times a model (pipeline/ does, and hands it the results), even
# through a layer below it. Each unit maps to the modules it may not import (a prefix match).
PURE = {
    "analysis": (
        "modelmeter.sources",  # resolves specs and builds models
        "modelmeter.presets",  # model configs, read by sources
        "modelmeter.trace",  # runs a model under the dispatch mode
        "modelmeter.measure",  # times and meters a real run
        "modelmeter.pipeline", "modelmeter.api", "modelmeter.cli",  # above it anyway; said twice
        "modelmeter.hardware.calibration",  # runs microbenchmarks
        "modelmeter.hardware.microbench",
        "modelmeter.hardware.timing",
        "modelmeter.hardware.local",  # calibrates this machine on first use
        "modelmeter.hardware.detect",  # reads this machine (CPU, memory available)
    ),
}
# Third-party imports a pure unit's module may still make, each with its reason. None today:
# the LLM view's tracer moved to pipeline/llm_trace.py, its timed run to pipeline/llm_measure.py.
PURE_THIRD_PARTY_EXCEPTIONS: dict[str, dict[str, str]] = {}
_ENTRY_POINT = re.compile(rf"^{ROOT}(\.\w+)+:\w+$")


@dataclass(frozen=True)
class Import:
    source: str  # dotted module name of the importing file
    target: str  # dotted module name imported ("modelmeter..." or a third-party name)
    line: int


def _modules(package: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((ROOT, *parts))] = path
    return out


def _resolve(base: str, name: str, modules: dict[str, Path], public: set[str]) -> str:
    """`from base import name`: the submodule base.name when there is one, else base itself.

    At the package root a public name ('count', 'report') is the re-exported function,
    not the subpackage of the same name: importing it imports the root.
    """
    candidate = f"{base}.{name}"
    if candidate in modules and not (base == ROOT and name in public):
        return candidate
    return base


def imports_of(package: Path, public: set[str] = frozenset()) -> Iterator[Import]:
    """Every import of every file under `package` (a directory named like the package)."""
    modules = _modules(package)
    for module, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = module.split(".") if is_pkg else module.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                else:
                    base = node.module or ""
                if base == ROOT or base.startswith(ROOT + "."):
                    for alias in node.names:
                        yield Import(module, _resolve(base, alias.name, modules, public), node.lineno)
                else:
                    yield Import(module, base, node.lineno)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, node.lineno)
            elif isinstance(node, ast.Call) and _is_import_call(node):
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield Import(module, arg.value, node.lineno)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and _ENTRY_POINT.match(node.value):
                yield Import(module, node.value.split(":")[0], node.lineno)


def _is_import_call(node: ast.Call) -> bool:
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "import_module") or \
        (isinstance(f, ast.Name) and f.id in ("import_module", "__import__"))


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(package: Path, layers: dict[str, int], third_party: dict[str, set[str]],
                     public: set[str] = frozenset()) -> list[str]:
    problems = []
    stdlib = set(sys.stdlib_module_names)
    for imp in imports_of(package, public):
        unit = _unit(imp.source)
        where = f"{imp.source}:{imp.line}"
        if unit not in layers:
            problems.append(f"{where}: {unit!r} has no layer")
            continue
        if imp.target == ROOT or imp.target.startswith(ROOT + "."):
            other = _unit(imp.target)
            if other not in layers:
                problems.append(f"{where}: imports {imp.target}, which has no layer")
            elif layers[other] > layers[unit]:
                problems.append(f"{where} ({unit}, layer {layers[unit]}) imports {imp.target} "
                                f"({other}, layer {layers[other]})")
            continue
        top = imp.target.split(".")[0]
        if top and top not in stdlib and top not in third_party.get(unit, set()):
            problems.append(f"{where}: {unit} may not import {top} "
                            f"(allowed: stdlib + {sorted(third_party.get(unit, set()))})")
    return problems


def purity_violations(package: Path, pure: dict[str, tuple[str, ...]],
                      exceptions: dict[str, dict[str, str]]) -> list[str]:
    """Imports of a pure unit that reach a model-building, tracing or measuring module, or a
    third-party package outside `exceptions` ({module: {package: reason}})."""
    problems = []
    stdlib = set(sys.stdlib_module_names)
    for imp in imports_of(package):
        unit = _unit(imp.source)
        if unit not in pure:
            continue
        where = f"{imp.source}:{imp.line}"
        if imp.target == ROOT or imp.target.startswith(ROOT + "."):
            hit = [f for f in pure[unit] if imp.target == f or imp.target.startswith(f + ".")]
            if hit:
                problems.append(f"{where}: {unit} is pure cost models and may not import {imp.target}")
            continue
        top = imp.target.split(".")[0]
        if top and top not in stdlib and top not in exceptions.get(imp.source, {}):
            problems.append(f"{where}: {unit} is pure cost models and may not import {top}")
    return problems


def import_cycles(package: Path, public: set[str] = frozenset()) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan): each is an import cycle."""
    modules = _modules(package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports_of(package, public):
        if imp.target in modules and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


PUBLIC = set(modelmeter.__all__)


def test_every_import_respects_the_layers():
    problems = layer_violations(PACKAGE, LAYERS, THIRD_PARTY, PUBLIC)
    assert not problems, "\n".join(problems)


def test_analysis_is_pure_cost_models():
    problems = purity_violations(PACKAGE, PURE, PURE_THIRD_PARTY_EXCEPTIONS)
    assert not problems, "\n".join(problems)


def test_each_purity_exception_is_a_module_with_a_reason():
    modules = _modules(PACKAGE)
    for module, allowed in PURE_THIRD_PARTY_EXCEPTIONS.items():
        assert module in modules and _unit(module) in PURE, module
        assert all(reason.strip() for reason in allowed.values()), module


def test_no_import_cycles_between_modules():
    assert import_cycles(PACKAGE, PUBLIC) == []


def test_every_unit_of_the_package_has_a_layer():
    units = {_unit(m) for m in _modules(PACKAGE)}
    assert units == set(LAYERS), units ^ set(LAYERS)


# ------------------------------------------------------------------ the checker itself


def _fake(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / ROOT
    for rel, text in {"__init__.py": "", "core/__init__.py": "", "report/__init__.py": "",
                      "api.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize("text", [
    "from modelmeter import api\n",
    "import modelmeter.api\n",
    "from ..report import html\n",
    "from .. import api\n",
    "def f():\n    from ..api import x\n",
    "import importlib\nimportlib.import_module('modelmeter.api')\n",
    "TARGET = 'modelmeter.api:main'\n",
    "def f():\n    import torch\n",
    "import numpy\n",
])
def test_the_checker_catches_each_form(tmp_path, text):
    root = _fake(tmp_path, {"core/x.py": text, "report/html.py": ""})
    layers = {"core": 0, "report": 4, "api": 6, "__init__": 8}
    assert layer_violations(root, layers, {}), text


def test_the_checker_allows_downward_and_stdlib_imports(tmp_path):
    root = _fake(tmp_path, {"core/x.py": "import json\nfrom . import y\n", "core/y.py": "",
                            "api.py": "from .core import x\nfrom .report import html\n",
                            "report/html.py": "from ..core.x import *\n"})
    layers = {"core": 0, "report": 4, "api": 6, "__init__": 8}
    assert layer_violations(root, layers, {}) == []
    assert import_cycles(root) == []


@pytest.mark.parametrize("text", [
    "from ..sources import resolve_model\n",
    "def f():\n    from ..trace.run import trace_model\n",
    "from ..hardware.local import local_profile\n",
    "import modelmeter.measure.timer\n",
    "def f():\n    import torch\n",
    "from transformers import DynamicCache\n",
])
def test_the_purity_checker_catches_each_form(tmp_path, text):
    root = _fake(tmp_path, {"analysis/__init__.py": "", "analysis/x.py": text})
    assert purity_violations(root, PURE, {}), text


def test_the_purity_checker_allows_pure_imports_and_listed_exceptions(tmp_path):
    root = _fake(tmp_path, {"analysis/__init__.py": "",
                            "analysis/x.py": "import math\nfrom ..count.engine import count_op\n"
                                             "from ..hardware.gpumodel import GpuModel\nimport torch\n"})
    assert purity_violations(root, PURE, {"modelmeter.analysis.x": {"torch": "a test"}}) == []


def test_the_checker_finds_a_cycle_even_through_lazy_imports(tmp_path):
    root = _fake(tmp_path, {"core/a.py": "from . import b\n", "core/b.py": "def f():\n    from .a import x\n"})
    assert import_cycles(root) == [["modelmeter.core.a", "modelmeter.core.b"]]


# ------------------------------------------------------------------ the public API


def test_public_api_is_pinned():
    assert sorted(modelmeter.__all__) == [
        "MeasurementError", "MissingDependencyError", "ModelmeterError", "Report", "ReportFormatError",
        "ShapeError", "UnknownDocumentError", "UnknownHardwareError", "UnknownModelError", "UnknownPrecisionError", "UserInputError",
        "__version__", "analyse", "bench", "compare", "count", "llm", "memory", "plan", "report", "roofline",
    ]
    assert all(hasattr(modelmeter, n) for n in modelmeter.__all__)
    from modelmeter.count import count_trace  # the subpackages are still importable by path
    from modelmeter.report.summary import build_summary

    # Importing them does not rebind the public functions of the same name.
    assert callable(count_trace) and callable(build_summary)
    assert modelmeter.count.__module__ == "modelmeter.api" and modelmeter.report.__module__ == "modelmeter.api"


def test_public_functions_take_explicit_keywords():
    import inspect

    for name in ("analyse", "count", "memory", "roofline", "bench", "llm", "report", "compare", "plan"):
        params = inspect.signature(getattr(modelmeter, name)).parameters.values()
        assert not any(p.kind is p.VAR_KEYWORD or p.kind is p.VAR_POSITIONAL for p in params), name


def test_report_timing_overrides_are_checked():
    from modelmeter.core.errors import UserInputError
    from modelmeter.pipeline.options import REPORT_TIMING, report_timing

    assert report_timing(None) == REPORT_TIMING and report_timing({"min_iters": 7}).min_iters == 7
    with pytest.raises(UserInputError, match="choose from malloc, min_iters, min_time_s, warmup_s"):
        report_timing({"min_time": 1.0})


def test_import_modelmeter_does_not_import_torch():
    import subprocess

    code = "import modelmeter, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
