"""The Python examples of the README and of docs/ run as written."""

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
