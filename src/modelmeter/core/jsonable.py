"""Typed JSON parts: a dataclass is the one definition of the keys it writes (layer 0).

`to_json(part)` writes a dataclass's fields in their declared order, recursively
(dataclasses, mappings, lists and tuples), so the JSON of a section follows from
its type and the schema test (`tests/test_section_types.py`) can check every
field against the shipped schema and back. Field metadata, set with `part_field`:

- `omit_if_none`: a None value leaves the key out (a key that exists only in some
  reports, such as a module's `experts`), instead of writing null;
- `json_name`: the key, where it differs from the field name;
- `unit`: the field's base unit ('bytes', 's', 'FLOPs'…), for readers of the type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["json_name", "omits_none", "part_field", "to_json"]


def part_field(*, omit_if_none: bool = False, json_name: str | None = None, unit: str | None = None,
               default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with the JSON metadata `to_json` and the schema test read."""
    metadata = {"omit_if_none": omit_if_none, "json_name": json_name, "unit": unit}
    if default is dataclasses.MISSING and omit_if_none:
        default = None  # an optional key defaults to absent
    return dataclasses.field(default=default, metadata=metadata)


def json_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("json_name") or f.name


def omits_none(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get("omit_if_none"))


def to_json(value: Any) -> Any:
    """Plain JSON data (dicts, lists, scalars) of a typed part, a mapping or a sequence.

    A fresh structure every call: changing it changes nothing the part holds.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None and omits_none(f):
                continue
            out[json_name(f)] = to_json(item)
        return out
    if isinstance(value, Mapping):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return value
