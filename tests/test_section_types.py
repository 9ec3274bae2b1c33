"""The typed count parts, the JSON they write and the shipped schema are one definition.

`pipeline/count_parts.py` declares each object the count section writes; this test
walks those dataclasses and checks, against `core/schema/report-1.schema.json`:
every field is a property of its definition with a compatible JSON type (None only
where the schema allows null or the key is omitted), every required property is a
field that is always written, and every property is a field or one of the few keys
another section writes (`WRITTEN_ELSEWHERE`, each naming its writer). A field added
to a part without the schema, or to the schema without a part, fails here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

import pytest

from modelmeter.core.jsonable import json_name, omits_none, part_field, to_json
from modelmeter.core.schema import load_schema
from modelmeter.pipeline import count_parts
from modelmeter.pipeline.count_parts import SCHEMA_DEFS

# Keys of these definitions that sections other than the count write (not yet typed parts).
WRITTEN_ELSEWHERE: dict[str, dict[str, str]] = {
    "settings": {"measure": "RunInfo.settings_part", "prompt": "pipeline/plan.py (inference plan)",
                 "gen": "pipeline/plan.py (inference plan)"},
    "totals": {key: "MemorySection.totals_part" for key in (
        "activations", "backward_flops", "backward_macs", "backward_fallback_ops", "backward_uncounted_ops",
        "backward_attention")},
    "module_row": {
        "peak_share_bytes": "MemorySection.module_bytes", "saved_bytes": "MemorySection.module_bytes",
        **{key: "RooflineSection.module_columns" for key in (
            "t_compute_s", "t_memory_s", "bound", "latency_s", "predicted_latency_s", "roofline_latency_s")},
        "measured_latency_s": "MeasuredSection.module_columns",
    },
}

DEFS = load_schema()["$defs"]
JSON_TYPES = {int: {"integer", "number"}, float: {"number"}, str: {"string"}, bool: {"boolean"}}


def _types(schema: Mapping[str, Any]) -> set[str]:
    if "$ref" in schema:
        return {"object"} if DEFS[schema["$ref"].rsplit("/", 1)[1]].get("type") == "object" else set()
    kind = schema.get("type")
    return set(kind) if isinstance(kind, list) else {kind} if kind else set()


def _check(hint: Any, schema: Mapping[str, Any], where: str) -> list[str]:
    """What is wrong in saying a value of type `hint` is described by `schema` (empty: fits)."""
    if hint is Any:
        return []
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return [problem for arg in args if arg is not type(None) for problem in _check(arg, schema, where)]
    allowed = _types(schema)
    if dataclasses.is_dataclass(hint):
        expected = f"#/$defs/{SCHEMA_DEFS[hint]}"
        return [] if schema.get("$ref") == expected else [f"{where}: {hint.__name__} is not {schema}"]
    if origin in (tuple, list):
        if "array" not in allowed:
            return [f"{where}: a sequence, the schema says {allowed}"]
        return _check(args[0], schema.get("items", {}), f"{where}[]") if args else []
    if origin is not None and issubclass(origin, Mapping):
        return [] if "object" in allowed else [f"{where}: a mapping, the schema says {allowed}"]
    if hint in JSON_TYPES:
        return [] if JSON_TYPES[hint] & allowed else [f"{where}: {hint.__name__}, the schema says {allowed}"]
    return [f"{where}: no JSON type known for {hint}"]


@pytest.mark.parametrize("part", list(SCHEMA_DEFS), ids=lambda part: part.__name__)
def test_every_field_is_in_the_schema_and_every_schema_key_is_a_field(part: type) -> None:
    definition = DEFS[SCHEMA_DEFS[part]]
    properties = definition["properties"]
    hints = typing.get_type_hints(part)
    problems = []
    names = set()
    for f in dataclasses.fields(part):
        key = json_name(f)
        names.add(key)
        if key not in properties:
            problems.append(f"field {key} is not in $defs/{SCHEMA_DEFS[part]}")
            continue
        hint = hints[f.name]
        problems += _check(hint, properties[key], key)
        nullable = type(None) in typing.get_args(hint)
        if nullable and not omits_none(f) and "null" not in _types(properties[key]):
            problems.append(f"{key}: may be None (written as null), the schema does not allow null")
        if key in definition.get("required", ()) and omits_none(f):
            problems.append(f"{key}: required by the schema, but left out when None")
    elsewhere = WRITTEN_ELSEWHERE.get(SCHEMA_DEFS[part], {})
    assert not names & set(elsewhere), "a key both typed here and listed as written elsewhere"
    problems += [f"schema key {key} is neither a field nor written elsewhere"
                 for key in properties if key not in names and key not in elsewhere]
    assert problems == []


def test_every_part_of_the_module_is_mapped_to_a_definition() -> None:
    parts = {obj for obj in vars(count_parts).values()
             if dataclasses.is_dataclass(obj) and obj.__module__ == count_parts.__name__}
    assert parts == set(SCHEMA_DEFS)


def test_the_check_catches_what_it_is_for() -> None:
    # The checker itself: a wrong type, a None the schema forbids, a sequence of the wrong items.
    assert _check(int, {"type": "string"}, "x")
    assert _check(tuple[int, ...], {"type": "array", "items": {"type": "string"}}, "x")
    assert _check(str, {"type": ["string", "null"]}, "x") == []
    assert _check(int, {"type": "number"}, "x") == [] and _check(float, {"type": "integer"}, "x")


# ------------------------------------------------------------------ to_json


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Inner:
    b: int
    a: tuple[int, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Outer:
    z: str | None  # written as null
    inner: tuple[_Inner, ...]
    gone: int | None = part_field(omit_if_none=True)
    renamed: float = part_field(json_name="other name", unit="s")
    mapping: Mapping[str, Any]


def test_to_json_writes_fields_in_order_with_its_metadata() -> None:
    part = _Outer(z=None, inner=(_Inner(b=1, a=(2, 3)),), renamed=0.5, mapping={"k": (1, {"n": None})})
    out = to_json(part)
    assert out == {"z": None, "inner": [{"b": 1, "a": [2, 3]}], "other name": 0.5, "mapping": {"k": [1, {"n": None}]}}
    assert list(out) == ["z", "inner", "other name", "mapping"] and list(out["inner"][0]) == ["b", "a"]
    assert to_json(dataclasses.replace(part, gone=0))["gone"] == 0  # only None is left out
    out["inner"][0]["b"] = 9  # a fresh structure: the part is unchanged
    assert part.inner[0].b == 1
