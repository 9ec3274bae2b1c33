"""Is a calibrated profile possible? Types, finite values and plausible ranges (layer 2).

A profile is checked when it is written and when it is read back; the first
field out of its range is named in one line (field, value, the plausible range
and why), and `set_aside` renames the file beside itself so it is never used
again but stays there to look at.

The ranges, and why they are where they are:

* Every figure is a JSON number (not text, not a bool), finite and above zero.
* Upper bounds: no figure may exceed ten times the largest of its kind in the
  sourced database (`specs.json`, every kind of device together: an APU's CPU
  may sit on HBM). Those devices are the fastest there are; ten times more is
  a broken file, not a chip. Memory is at most 2^52 bytes, the largest
  physical address x86-64 and ARMv8 define.
* Lower bounds that hold on any device: 256 MiB of memory (importing PyTorch
  alone takes more), 100 MB/s of bandwidth (a thirtieth of single-channel
  DDR2-400's 3.2 GB/s), 1 MFLOP/s for any rate.
* A calibrated CPU profile is measured against this CPU's ISA (`detect`):
  - fp32 matmul at least 3 % of the ISA peak for its threads (cores x clock x
    FLOPs/cycle): below that the run was starved of CPU, not measuring it.
    Only fp32: it is the one precision every x86 BLAS vectorises; bf16 or fp16
    may really lack a fast path.
  - every elementwise rate at least (fp32 matmul / fp32 FLOPs per cycle per
    core) x 0.5 / 4. The first factor is the core-cycles per second the matmul
    itself shows it had; 0.5 FLOP/cycle is a plain scalar loop (addcmul needs
    four memory accesses for its two FLOPs, and every x86-64 or ARMv8 core
    issues at least one access per cycle); the 4 leaves room for the per-call
    dispatch overhead on the small cache-sized buffers the calibration times.
    On a busy 2-core machine the calibration once saved 16.5 MFLOP/s beside a
    matmul of tens of GFLOP/s (a descheduled worker thread per call): a
    thousand times under that floor. Healthy runs sit 50-100 times above it.
    Where the ISA is unknown, the widest FLOPs/cycle in the table is used
    (the lowest floor).
"""

from __future__ import annotations

import datetime as _dt
import math
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from .specs import PRECISION_KEYS, Hardware, cpu_peak_method, database_hardware

MIN_MEMORY_BYTES = 256 * 2**20
MAX_MEMORY_BYTES = 2**52
MIN_BANDWIDTH = 1e8
MIN_FLOPS = 1e6
HEADROOM_OVER_DATABASE = 10.0
MIN_SHARE_OF_ISA_PEAK = 0.03  # fp32 matmul, as the calibration's own refusal
SCALAR_FLOPS_PER_CYCLE = 0.5
DISPATCH_ALLOWANCE = 4.0


class InvalidProfile(UserInputError):
    """A profile with a figure no device can have; the one line names the field and its range."""


class ProfileSetAside(UserWarning):
    """A command went on without an invalid profile it set aside (the CLI prints it as one line)."""


def warn_set_aside(exc: InvalidProfile, then: str = "") -> None:
    """Say, as a `ProfileSetAside` warning, that a command goes on without the profile `exc` names."""
    warnings.warn(f"{exc}{then}", ProfileSetAside, stacklevel=3)


@lru_cache(maxsize=1)
def _ceilings() -> tuple[float, float]:
    """(largest FLOP/s, largest bytes/s) in the database, times the headroom."""
    devices = database_hardware()
    flops = max(v for hw in devices for v in (*hw.peak_flops.values(), *hw.vector_flops.values()))
    bandwidth = max(hw.memory_bandwidth_bytes_per_s for hw in devices)
    return HEADROOM_OVER_DATABASE * flops, HEADROOM_OVER_DATABASE * bandwidth


def _show(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{float(value):.3g}" if math.isfinite(value) else str(float(value))
    return repr(value)


def _number(field: str, value: Any, lo: float, hi: float, why: str, integer: bool = False) -> float:
    """`value` as a float in [lo, hi]; InvalidProfile naming the field otherwise."""
    ok_type = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if integer and isinstance(value, float) and value.is_integer():
        ok_type = True
    if not ok_type or not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidProfile(f"{field} = {_show(value)}, plausible {lo:.3g} to {hi:.3g} ({why})")
    return float(value)


def check_record(data: Any) -> Hardware:
    """The `Hardware` in a profile's JSON record, every figure checked for type, finiteness and range."""
    if not isinstance(data, dict):
        raise InvalidProfile(f"hardware = {_show(data)}, expected a JSON object")
    flops_hi, bandwidth_hi = _ceilings()
    if data.get("memory_bytes") is not None:
        _number("memory_bytes", data["memory_bytes"], MIN_MEMORY_BYTES, MAX_MEMORY_BYTES,
                "bytes: 256 MiB to the 52-bit physical address limit", integer=True)
    _number("memory_bandwidth_bytes_per_s", data.get("memory_bandwidth_bytes_per_s"), MIN_BANDWIDTH,
            bandwidth_hi, "bytes/s: 100 MB/s to 10x the fastest memory in the database")
    for table in ("peak_flops", "vector_flops"):
        rates = data.get(table, {})
        if not isinstance(rates, dict) or (table == "peak_flops" and not rates):
            raise InvalidProfile(f"{table} = {_show(rates)}, expected {{precision: FLOP/s}}")
        for key, value in rates.items():
            if key not in PRECISION_KEYS:
                raise InvalidProfile(f"{table}.{key}: unknown precision; expected one of {', '.join(PRECISION_KEYS)}")
            _number(f"{table}.{key}", value, MIN_FLOPS, flops_hi,
                    "FLOP/s: 1 MFLOP/s to 10x the fastest device in the database")
    if data.get("tdp_w") is not None:
        _number("tdp_w", data["tdp_w"], 0.1, 1e6, "watts")
    return Hardware.from_dict(data)


def isa_floors(hw: Hardware, threads: int, cpu: Any = None) -> dict[str, tuple[float, str]]:
    """Field -> (lowest plausible value, why) that this CPU's ISA and the profile's own matmul imply.

    Empty for a device that is not a calibrated CPU, or one without an fp32 matmul figure.
    """
    from .detect import isa_class, isa_peak, read_cpu_info

    matmul = hw.peak_flops.get("fp32")
    if hw.kind != "cpu" or hw.source != "calibrated" or matmul is None:
        return {}
    cpu = cpu if cpu is not None else read_cpu_info()
    floors: dict[str, tuple[float, str]] = {}
    table = cpu_peak_method()["flops_per_cycle_per_core"]
    chosen = isa_class(cpu)
    per_cycle = (float(table[chosen[0]]["fp32"]) if chosen is not None
                 else max(float(row["fp32"]) for row in table.values() if "fp32" in row))
    peak = isa_peak(cpu, threads)
    if peak is not None and "fp32" in peak.peak_flops:
        floors["peak_flops.fp32"] = (
            MIN_SHARE_OF_ISA_PEAK * peak.peak_flops["fp32"],
            f"3% of this CPU's fp32 ISA peak for {threads} thread(s), "
            f"{peak.peak_flops['fp32'] / 1e9:.4g} GFLOP/s: lower means a starved run")
    vector_floor = matmul / per_cycle * SCALAR_FLOPS_PER_CYCLE / DISPATCH_ALLOWANCE
    for key in hw.vector_flops:
        floors[f"vector_flops.{key}"] = (
            vector_floor,
            f"fp32 matmul {matmul / 1e9:.3g} GFLOP/s / {per_cycle:g} FLOP/cycle x a scalar loop's "
            f"{SCALAR_FLOPS_PER_CYCLE:g} FLOP/cycle / {DISPATCH_ALLOWANCE:g} for call overhead: "
            "lower means a starved run")
    return floors


def check_hardware(hw: Hardware, threads: int = 1, cpu: Any = None) -> Hardware:
    """`hw` when every figure is plausible (`check_record`, then the ISA floors); InvalidProfile otherwise."""
    check_record(hw.to_dict())
    values = {f"peak_flops.{k}": v for k, v in hw.peak_flops.items()}
    values.update({f"vector_flops.{k}": v for k, v in hw.vector_flops.items()})
    for field, (floor, why) in isa_floors(hw, threads, cpu).items():
        if values[field] < floor:
            raise InvalidProfile(f"{field} = {values[field]:.3g}, plausible at least {floor:.3g} ({why})")
    return hw


def profile_threads(calibration: Any) -> int:
    """The thread count a profile's calibration record gives (1, the lowest floor, when it gives none)."""
    threads = calibration.get("threads") if isinstance(calibration, dict) else None
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1 else 1


def set_aside(path: Path) -> Path:
    """Rename `path` to `<name>.invalid-<UTC time>` beside it (never deleted); the new path."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.invalid-{stamp}")
    path.rename(target)
    return target


__all__ = ["InvalidProfile", "ProfileSetAside", "warn_set_aside", "check_hardware", "check_record", "isa_floors", "profile_threads", "set_aside"]
