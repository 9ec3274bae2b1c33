"""The layer rule of DESIGN.md/STYLE.md: a module imports only from its own layer or below."""

from __future__ import annotations

import ast
from pathlib import Path

import modelmeter

PACKAGE = Path(modelmeter.__file__).parent

LAYERS = {
    "core": 0,
    "trace": 1, "sources": 1, "presets": 1, "count": 1, "formulas": 1,
    "hardware": 2,
    "analysis": 3, "measure": 3,
    "report": 4, "store": 4,
    "api": 5, "benchsetup": 5, "reportsetup": 5, "plan_run": 5,
    "cli": 6,
}
STDLIB_ONLY = {"core", "count", "formulas"}  # pure layers: no torch, no third-party


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = path.relative_to(PACKAGE).parts[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join((*base, node.module or "")).strip(".")
                found.append((target or (node.names[0].name), node.lineno))
            elif node.module and node.module.startswith("modelmeter"):
                found.append((node.module.removeprefix("modelmeter").strip("."), node.lineno))
            elif node.module:
                found.append(("<ext>" + node.module, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("modelmeter."):
                    found.append((alias.name.removeprefix("modelmeter."), node.lineno))
                else:
                    found.append(("<ext>" + alias.name, node.lineno))
    return found


def test_modules_import_only_their_layer_or_below():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue  # the package root re-exports the facade
        unit = _unit(path)
        layer = LAYERS[unit]
        for target, line in _imports(path):
            if target.startswith("<ext>"):
                top = target[5:].split(".")[0]
                if unit in STDLIB_ONLY and top in ("torch", "transformers", "rich", "click", "matplotlib"):
                    problems.append(f"{path.relative_to(PACKAGE)}:{line} imports {top} in a pure layer")
                continue
            other = target.split(".")[0]
            if other in LAYERS and LAYERS[other] > layer:
                problems.append(f"{path.relative_to(PACKAGE)}:{line} ({unit}) imports {target}")
    # Report._repr_html_ renders lazily through report/ for Jupyter: the one sanctioned upward call.
    problems = [p for p in problems if not p.startswith("core/report.py")]
    assert not problems, "\n".join(problems)


def test_public_api():
    assert set(modelmeter.__all__) == {n for n in modelmeter.__all__ if hasattr(modelmeter, n)}
    assert callable(modelmeter.count)
    from modelmeter.count import count_trace  # the subpackage is still importable by path

    assert callable(count_trace)
