"""The Python examples of the README and of docs/ run as written, and every file they name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _examples() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        blocks = re.findall(r"^```python\n(.*?)^```", doc.read_text(encoding="utf-8"), re.S | re.M)
        found += [(f"{doc.name}#{i + 1}", code) for i, code in enumerate(blocks)]
    return found


EXAMPLES = _examples()


def test_the_docs_have_python_examples():
    assert any(name.startswith("README.md") for name, _ in EXAMPLES)


# The README's examples are quick; the tour's build real presets (slow lane).
@pytest.mark.parametrize("name, code", [
    pytest.param(name, code, id=name, marks=() if name.startswith("README") else pytest.mark.slow)
    for name, code in EXAMPLES])
def test_example_runs(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exec(compile(code, name, "exec"), {"__name__": "__readme__"})


# ------------------------------------------------------------------ files the docs name exist

# Paths the docs name that belong to another project, with the project.
ELSEWHERE = {"src/graph/tuning.cc": "NCCL", "src/graph/topo.h": "NCCL"}
TOP = sorted(p.name for p in ROOT.iterdir() if p.name not in (".git",))
PACKAGE = ROOT / "src" / "modelmeter"
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
_PATH = r"[\w.-]+(?:/[\w.-]+)*/?"
# A repository path (src/…, tests/…, benchmarks/…, docs/…, .ci/…, pyproject.toml), a package path
# (hardware/specs.json, report/) or a relative Markdown link; not part of a longer path or URL.
_NAMED = re.compile(
    rf"(?<![\w./:~-])((?:{'|'.join(map(re.escape, TOP))})(?:/{_PATH})?)(?![\w/-])"
    rf"|(?<![\w./:~-])((?:{'|'.join(SUBPACKAGES)})/(?:{_PATH})?)(?![\w/-])"
    r"|\]\((?!https?:|#|mailto:)([^)#\s]+)"
    # A bare document or module name (PEERS.md, api.py): somewhere in the repository.
    r"|(?<![\w./*-])([\w-]+\.(?:md|py))(?![\w/-])"
)


def _named_paths(doc: Path) -> list[tuple[int, str, Path]]:
    """(line, path as written, where it should be) for every repository path `doc` names."""
    out = []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        for match in _NAMED.finditer(line):
            top, package, link, bare = match.groups()
            written = (top or package or link or bare).rstrip(".,;:")
            if written in ELSEWHERE and ELSEWHERE[written] in line:
                continue
            if bare and re.search(r"(--[\w-]+|wrote|>)\s*$", line[:match.start()]):
                continue  # a file a command writes (`--md cmp.md`), not one the repository holds
            if bare:
                found = [p for p in ROOT.rglob(written) if ".git" not in p.parts]
                out.append((number, written, found[0] if found else ROOT / written))
                continue
            where = PACKAGE / written if package else (doc.parent / written if link else ROOT / written)
            out.append((number, written, where))
    return out


def test_the_docs_name_the_files_this_tour_relies_on():
    named = {written for doc in DOCS for _, written, _ in _named_paths(doc)}
    # The checker sees the kinds of reference the README makes (else it could pass by seeing none).
    assert {"pyproject.toml", "docs/report-tour.md", "src/modelmeter/hardware/specs.json"} <= named
    assert any(w.startswith("benchmarks/") for w in named) and any(w.startswith("hardware/") for w in named)


def _missing(doc: Path) -> list[tuple[int, str]]:
    """(line, path) of each path `doc` names that does not exist (a module may drop '.py': count/onnx_ops)."""
    return [(line, written) for line, written, where in _named_paths(doc)
            if not (where.exists() or where.with_name(where.name + ".py").exists())]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_file_the_docs_name_is_in_the_repository(doc):
    missing = [f"{doc.name}:{line}: {written}" for line, written in _missing(doc)]
    assert not missing, "named but not in the repository:\n" + "\n".join(missing)


def test_the_checker_flags_what_is_missing_and_only_that(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text(
        "Run `python benchmarks/nope.py`, read [the tour](docs/gone.md), PEERS.md and\n"
        "`hardware/nothing.json`; NCCL's cost model (`src/graph/tuning.cc`) is elsewhere.\n"
        "`modelmeter compare gpt2 --md cmp.md`, `pyproject.toml`, `hardware/specs.json`, `count/onnx_ops`.\n",
        encoding="utf-8")
    missing = [written for _, written in _missing(doc)]
    assert missing == ["benchmarks/nope.py", "docs/gone.md", "PEERS.md", "hardware/nothing.json"]
