"""The device database and the `Hardware` record (layer 2).

`specs.json` beside this module is built once from the sourced reference
(`reference/hardware.json`), already in base units: bytes, bytes/s, FLOP/s.
Every figure keeps the key of its source; `Hardware.sources` resolves those
keys to titles and URLs so a user can check any number.

Two rates per precision:

* `peak_flops` — dense rate of the matrix / tensor units: what a matmul can
  reach. For NVIDIA GPUs `fp32` is the CUDA-core rate (PyTorch leaves TF32 off
  for fp32 matmul by default) and `tf32` the tensor-core rate.
* `vector_flops` — rate of the non-matrix units for elementwise work. Where a
  source gives its own figure (H100 FP64 34 vs FP64 tensor 67) it is used;
  fp64/fp32 otherwise equal the single published number; every other precision
  takes the fp32 vector rate, because PyTorch computes elementwise ops on
  16-bit and 8-bit types in fp32 ("opmath") and quantised models dequantise
  first. A device with no fp32 figure (TPU) keeps its single published number.
  Each filled-in value says so in `sources`.

Lookups never fall back silently. The one documented fallback: tf32 on a device
without TF32 units is the fp32 rate, which is what such hardware runs when
PyTorch is told to allow TF32.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from ..core.errors import UnknownHardwareError, UserInputError
from ..core.precision import parse_precision

KINDS = ("gpu", "cpu", "tpu", "accelerator")
PRECISION_KEYS = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4")
OP_CLASSES = ("matmul", "vector")
LOCAL_ID = "local"


@dataclass(frozen=True)
class Hardware:
    """One device: memory, bandwidth and peak rates in base units, each with its source."""

    id: str
    name: str
    vendor: str
    kind: str  # 'gpu' | 'cpu' | 'tpu' | 'accelerator'
    memory_bytes: int | None
    memory_bandwidth_bytes_per_s: float
    # precision key -> dense FLOP/s (ops/s for int) on the matrix / tensor units
    peak_flops: dict[str, float]
    # precision key -> FLOP/s for elementwise (non-matrix) work
    vector_flops: dict[str, float]
    tdp_w: float | None
    year: int | None
    source: str  # 'database' | 'calibrated'
    sources: dict[str, str]  # field -> source title/url, or calibration conditions
    notes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = field(default=())

    def __hash__(self) -> int:
        # The rate tables are dicts; identity is the id and where the figures came from.
        return hash((self.id, self.source, self.name))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserInputError(f"hardware kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def peak_flops_for(self, precision: str, op_class: str = "matmul") -> float:
        """FLOP/s at `precision` for matmul (matrix units) or vector (elementwise) work.

        nf4 computes on the int4 key (its Precision.compute_key). Raises
        UserInputError naming what the device has when it lacks the precision.
        """
        if op_class not in OP_CLASSES:
            raise UserInputError(
                f"unknown op class {op_class!r}; choose one of {', '.join(OP_CLASSES)}"
            )
        key = parse_precision(precision).compute_key
        table = self.peak_flops if op_class == "matmul" else self.vector_flops
        if key in table:
            return table[key]
        if key == "tf32" and "fp32" in table:
            # Documented fallback: without TF32 units, allow_tf32 runs plain fp32.
            return table["fp32"]
        have = ", ".join(p for p in PRECISION_KEYS if p in table)
        # An entry with no sourced peak at all (Apple's GPUs) serves no roofline at any precision.
        hint = have or "none (no published figure to source), so it serves no roofline; pick another device from `modelmeter hardware list`"
        raise UserInputError(
            f"{self.id} has no {op_class} peak for {precision} in the database; "
            f"it has: {hint}"
        )

    def ridge_point(self, precision: str) -> float:
        """Arithmetic intensity (FLOP per byte) where matmul turns compute-bound."""
        if self.memory_bandwidth_bytes_per_s <= 0:
            raise UserInputError(f"{self.id} has no memory bandwidth figure")
        return self.peak_flops_for(precision, "matmul") / self.memory_bandwidth_bytes_per_s

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict in base units (the profile and `show --json` format)."""
        return {
            "id": self.id,
            "name": self.name,
            "vendor": self.vendor,
            "kind": self.kind,
            "memory_bytes": self.memory_bytes,
            "memory_bandwidth_bytes_per_s": self.memory_bandwidth_bytes_per_s,
            "peak_flops": dict(self.peak_flops),
            "vector_flops": dict(self.vector_flops),
            "tdp_w": self.tdp_w,
            "year": self.year,
            "source": self.source,
            "sources": dict(self.sources),
            "notes": list(self.notes),
            "aliases": list(self.aliases),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hardware:
        try:
            return cls(
                id=str(data["id"]),
                name=str(data["name"]),
                vendor=str(data["vendor"]),
                kind=str(data["kind"]),
                memory_bytes=None if data.get("memory_bytes") is None else int(data["memory_bytes"]),
                memory_bandwidth_bytes_per_s=float(data["memory_bandwidth_bytes_per_s"]),
                peak_flops={k: float(v) for k, v in data["peak_flops"].items()},
                vector_flops={k: float(v) for k, v in data.get("vector_flops", {}).items()},
                tdp_w=None if data.get("tdp_w") is None else float(data["tdp_w"]),
                year=None if data.get("year") is None else int(data["year"]),
                source=str(data.get("source", "database")),
                sources={str(k): str(v) for k, v in data.get("sources", {}).items()},
                notes=tuple(str(n) for n in data.get("notes", ())),
                aliases=tuple(str(a) for a in data.get("aliases", ())),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise UserInputError(f"malformed hardware record ({exc!r}); expected Hardware.to_dict() output") from exc


# ---------------------------------------------------------------- database


@lru_cache(maxsize=1)
def _raw() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("specs.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _cite(key: str, table: dict[str, Any]) -> str:
    src = table.get(key)
    if src is None:
        return key
    return f"[{key}] {src['title']} <{src['url']}>"


def _from_entry(entry: dict[str, Any], table: dict[str, Any]) -> Hardware:
    peak = {k: float(v) for k, v in entry["peak_flops"].items()}
    vector = {k: float(v) for k, v in entry["vector_flops"].items()}
    sources = {f: _cite(k, table) for f, k in entry["field_sources"].items()}
    derived = set(entry.get("derived_fields", ()))
    for f in list(sources):
        if f in derived:
            sources[f] += " (derived from the source: see notes)"
    # The vector rule of the module docstring, applied once here so it lives in code.
    for p in PRECISION_KEYS:
        if p not in peak or p in vector:
            continue
        if p in ("fp64", "fp32"):
            vector[p] = peak[p]
            sources[f"vector_flops.{p}"] = f"= peak_flops.{p}: the source gives one {p} rate"
    for p in PRECISION_KEYS:
        if p not in peak or p in vector:
            continue
        if "fp32" in vector:
            vector[p] = vector["fp32"]
            why = (
                "quantised models dequantise before elementwise math"
                if p.startswith("int")
                else f"PyTorch runs elementwise {p} math in fp32 (opmath)"
            )
            sources[f"vector_flops.{p}"] = f"= vector_flops.fp32: {why}"
        else:
            vector[p] = peak[p]
            sources[f"vector_flops.{p}"] = f"= peak_flops.{p}: the source gives one {p} rate"
    notes = list(entry.get("notes", ()))
    if entry.get("sparsity") and entry["sparsity"] != "n/a":
        notes.append(f"Sparsity: {entry['sparsity']}")
    if "cpu_params" in entry:
        params = ", ".join(f"{k}={v}" for k, v in entry["cpu_params"].items())
        notes.append(f"CPU parameters: {params}")
    return Hardware(
        id=entry["id"],
        name=entry["name"],
        vendor=entry["vendor"],
        kind=entry["kind"],
        memory_bytes=entry["memory_bytes"],
        memory_bandwidth_bytes_per_s=float(entry["memory_bandwidth_bytes_per_s"]),
        peak_flops=peak,
        vector_flops=vector,
        tdp_w=None if entry["tdp_w"] is None else float(entry["tdp_w"]),
        year=entry["year"],
        source="database",
        sources=dict(sorted(sources.items())),
        notes=tuple(notes),
        aliases=tuple(entry.get("aliases", ())),
    )


@lru_cache(maxsize=1)
def _database() -> tuple[Hardware, ...]:
    raw = _raw()
    return tuple(_from_entry(e, raw["sources"]) for e in raw["devices"])


def database_hardware() -> list[Hardware]:
    """Every device in the database, in file order (never the calibrated 'local' profile)."""
    return list(_database())


def find_in_database(hw_id: str) -> Hardware:
    """A database device by id or alias (case-insensitive); `lookup.get_hardware` adds 'local'."""
    key = hw_id.strip().lower()
    for hw in _database():
        if key == hw.id or key in hw.aliases:
            return hw
    raise UnknownHardwareError(f"unknown hardware {hw_id!r} — {_suggest(key)}")


def _suggest(key: str) -> str:
    names = [hw.id for hw in _database()]
    # Prefix/substring hits first ('h100' -> both H100s), then edit-distance neighbours.
    hits = [n for n in names if key and key in n]
    if not hits:
        hits = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    if hits:
        return f"did you mean {', '.join(hits[:4])}? (`modelmeter hardware list`)"
    return "see `modelmeter hardware list` for known ids, or use 'local' after `modelmeter hardware calibrate`"


# ------------------------------------------------------------ side tables


def sources_table() -> dict[str, dict[str, str]]:
    """Source key -> {'title', 'url', maybe 'verified_via'} for every cited source."""
    return copy.deepcopy(_raw()["sources"])


def energy_per_op() -> dict[str, Any]:
    """Energy per operation / memory access (pJ), each block with its source (a copy).

    Keys: 'horowitz_isscc2014_45nm_0p9v' (pJ per op and per 64-bit access),
    'dally_micro52_keynote_2019', 'memory_pj_per_bit', 'modern_node_per_op',
    'derived_board_pj_per_flop_at_tdp'.
    """
    return copy.deepcopy(_raw()["energy_per_op_pj"])


def mamf_efficiency() -> dict[str, Any]:
    """Measured max-achievable matmul FLOP/s as a fraction of dense peak (stas00 MAMF).

    Returns {'source': str, 'note': str, 'by_precision': {precision: {hw_id:
    {'achieved_flops': FLOP/s, 'fraction_of_peak': float}}}}.
    """
    raw = _raw()["measured_efficiency_mamf"]
    table = _raw()["sources"]
    out: dict[str, Any] = {
        "source": _cite(raw["source"].split()[0], table) + " " + raw["source"].split(" ", 1)[1],
        "note": raw["note"],
        "by_precision": {},
    }
    for prec, rows in raw.items():
        if prec in ("source", "note"):
            continue
        out["by_precision"][prec] = {
            # 'gaudi2_v1_table' is stas00's label for Gaudi 2; map it to our id.
            dev.split("_v1")[0]: {"achieved_flops": tf * 1e12, "fraction_of_peak": frac}
            for dev, (tf, frac) in rows.items()
        }
    return out


def cpu_peak_method() -> dict[str, Any]:
    """The CPU peak-FLOP/s method: formula, FLOPs/cycle/core per ISA class, sources."""
    return copy.deepcopy(_raw()["cpu_peak_flops_method"])


def carbon_intensity() -> dict[str, Any]:
    """Grid carbon intensity (gCO2e/kWh) and PUE figures with sources, as in the reference."""
    return copy.deepcopy(_raw()["carbon_intensity_g_per_kwh"])
