"""The JSON writer writes JSON types and typed sections only: anything else is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelmeter.cli.options import write_json


class Section:
    def to_dict(self):
        return {"n": 1}


def test_known_objects_are_written(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json({"section": Section(), "rows": (1, 2.5, None, "a")}, str(target))
    assert json.loads(target.read_text()) == {"section": {"n": 1}, "rows": [1, 2.5, None, "a"]}


@pytest.mark.parametrize("value", [object(), Path("/x"), {1, 2}, b"raw"])
def test_unknown_objects_are_refused_not_stringified(tmp_path: Path, value) -> None:
    # Their str() used to be written as if it were data ("/x", "{1, 2}", "<object ...>").
    target = tmp_path / "out.json"
    target.write_text('{"kept": true}\n')
    with pytest.raises(TypeError, match=type(value).__qualname__):
        write_json({"value": value}, str(target))
    assert json.loads(target.read_text()) == {"kept": True}  # nothing half-written over it
