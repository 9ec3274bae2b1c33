"""Energy ESTIMATED from counts, for when no meter exists (layer 3).

Model (data and sources in ``measure/data/energy.json``)::

    compute_j = flops × (mult_pj + add_pj) / 2 × 1e-12     # a MAC = mult + add = 2 FLOPs
    dram_j    = dram_bytes × [1300, 2600] pJ / 8 bytes × 1e-12
    static_j  = idle_w × latency_s                          # when both are given
    energy_j  = compute_j + dram_j(midpoint) + static_j     # min/max from the DRAM range

and, independently, the upper bound ``tdp_w × latency_s`` (the chip cannot
draw more than its TDP for long). Per-op figures are Horowitz's 45 nm table;
modern chips spend less per op but more on static power and on-chip data
movement, so the result is an order of magnitude, labelled ``source =
"estimate"`` and never presented as a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...core.errors import UnknownPrecisionError, UserInputError
from ...core.precision import parse_precision
from ..data import load

PJ = 1e-12


def energy_data() -> dict[str, Any]:
    """The sourced per-op and DRAM figures (measure/data/energy.json)."""
    return load("energy.json")


def pj_per_flop(precision: str) -> float:
    """pJ per FLOP at a precision: (mult + add) / 2, from the MAC recipe."""
    data = energy_data()
    name = parse_precision(precision).name
    recipe = data["mac_recipes"].get(name)
    if recipe is None:
        supported = ", ".join(k for k in data["mac_recipes"] if k != "note")
        raise UnknownPrecisionError(
            f"no sourced energy per operation for {name}; the estimate supports {supported}"
        )
    ops = data["ops_pj"]
    return (float(ops[recipe["mult"]]) + float(ops[recipe["add"]])) / 2


def dram_pj_per_byte() -> tuple[float, float]:
    """(min, max) pJ per byte of DRAM traffic, from the 64-bit read range."""
    dram = energy_data()["dram_read_64bit_pj"]
    return float(dram["min"]) / 8, float(dram["max"]) / 8


@dataclass(frozen=True)
class EnergyEstimate:
    """An estimate, never a measurement: ``source`` is always 'estimate'."""

    energy_j: float  # midpoint of [energy_min_j, energy_max_j]
    energy_min_j: float
    energy_max_j: float
    compute_j: float
    dram_min_j: float
    dram_max_j: float
    static_j: float | None
    upper_bound_j: float | None  # tdp_w × latency_s
    precision: str
    method: str
    source: str = "estimate"

    @property
    def dram_j(self) -> float:
        return (self.dram_min_j + self.dram_max_j) / 2


def _check_non_negative(name: str, value: float | None) -> None:
    if value is not None and not value >= 0:  # also rejects NaN
        raise UserInputError(f"{name} must be a non-negative number, got {value}")


def estimate_energy(
    flops: float,
    dram_bytes: float,
    precision: str = "fp32",
    *,
    latency_s: float | None = None,
    tdp_w: float | None = None,
    idle_w: float | None = None,
) -> EnergyEstimate:
    """Estimate the energy of work that performs ``flops`` and moves ``dram_bytes``."""
    for name, value in (
        ("flops", flops), ("dram_bytes", dram_bytes), ("latency_s", latency_s),
        ("tdp_w", tdp_w), ("idle_w", idle_w),
    ):
        _check_non_negative(name, value)
    prec = parse_precision(precision).name
    per_flop = pj_per_flop(prec)
    lo_b, hi_b = dram_pj_per_byte()
    compute_j = flops * per_flop * PJ
    dram_min_j, dram_max_j = dram_bytes * lo_b * PJ, dram_bytes * hi_b * PJ
    static_j = idle_w * latency_s if idle_w is not None and latency_s is not None else None
    base = compute_j + (static_j or 0.0)
    upper = tdp_w * latency_s if tdp_w is not None and latency_s is not None else None

    parts = [
        f"{per_flop:g} pJ/FLOP ({prec} mult+add per MAC / 2, Horowitz ISSCC 2014, 45 nm)",
        f"DRAM {lo_b:g}-{hi_b:g} pJ/byte (1.3-2.6 nJ per 64-bit read, Horowitz 2014)",
    ]
    if static_j is not None:
        parts.append(f"static {idle_w:g} W x {latency_s:g} s")
    if upper is not None:
        parts.append(f"upper bound TDP {tdp_w:g} W x {latency_s:g} s")
        if base + dram_min_j > upper:
            parts.append("45 nm per-op figures exceed the TDP bound: trust the bound")
    return EnergyEstimate(
        energy_j=base + (dram_min_j + dram_max_j) / 2,
        energy_min_j=base + dram_min_j,
        energy_max_j=base + dram_max_j,
        compute_j=compute_j,
        dram_min_j=dram_min_j,
        dram_max_j=dram_max_j,
        static_j=static_j,
        upper_bound_j=upper,
        precision=prec,
        method="; ".join(parts),
    )
