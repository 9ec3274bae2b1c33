"""The measurement layer (layer 3): timer, throughput sweep, measured memory,
energy meters and carbon. Everything here runs real code on real tensors;
every figure keeps its raw data and says how it was obtained.
"""

from __future__ import annotations

from .carbon import CarbonIntensity, carbon_g, carbon_intensity, list_regions, parse_pue
from .energy import (
    EnergyEstimate,
    EnergyMeasurement,
    EnergyMeter,
    EnergyResult,
    estimate_energy,
    measure_energy,
    select_meter,
)
from .memory import MemoryMeasurement, PeakMemory
from .sweep import SweepResult, SweepRow, parse_batches, throughput_sweep
from .timer import LatencyStats, measure_latency

__all__ = [
    "CarbonIntensity",
    "EnergyEstimate",
    "EnergyMeasurement",
    "EnergyMeter",
    "EnergyResult",
    "LatencyStats",
    "MemoryMeasurement",
    "PeakMemory",
    "SweepResult",
    "SweepRow",
    "carbon_g",
    "carbon_intensity",
    "estimate_energy",
    "list_regions",
    "measure_energy",
    "measure_latency",
    "parse_batches",
    "parse_pue",
    "select_meter",
    "throughput_sweep",
]
