"""The JSON Schema (draft 2020-12) of the report contract "modelmeter.report/1" (layer 0).

The schema ships as a data file beside this module, `report-1.schema.json`, so
tools in any language can read it; `load_schema()` hands it to Python callers.
Its root describes a report (what `count`, `memory`, `roofline`, `bench`,
`report` and `plan` write with `--json`); its `$defs` also describe the other
documents the CLI writes (`llm --json`, `compare --json`, `history --json`,
`diff --json`, `validate --json`),
which `load_schema(document)` roots at that definition.

Every object with fixed keys sets `additionalProperties: false`: a section
that starts to emit a key the schema does not know fails the schema tests, so
the contract and the code cannot drift apart unnoticed. Validation itself is
left to a validator such as `jsonschema` (not a dependency of modelmeter).
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

SCHEMA_FILE = "report-1.schema.json"
DOCUMENTS = ("report", "llm_document", "compare_document", "history_document", "diff_document",
             "validation_document", "sweep_document")


@functools.cache
def _read() -> dict[str, Any]:
    text = resources.files(__name__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def load_schema(document: str = "report") -> dict[str, Any]:
    """The schema as a dict (a fresh copy: callers may change it).

    `document` picks the root: 'report' (the file as shipped), 'llm_document',
    'compare_document', 'history_document', 'diff_document', 'validation_document' or 'sweep_document'.
    """
    if document not in DOCUMENTS:
        raise ValueError(f"unknown document {document!r}; use one of {', '.join(DOCUMENTS)}")
    schema = copy.deepcopy(_read())
    schema["$ref"] = f"#/$defs/{document}"
    if document != "report":
        schema["title"] = f"{schema['title']} ({document})"
    return schema


def schema_path() -> Any:
    """The shipped schema file (an importlib.resources Traversable; a Path in a normal install)."""
    return resources.files(__name__).joinpath(SCHEMA_FILE)


__all__ = ["DOCUMENTS", "SCHEMA_FILE", "load_schema", "schema_path"]
