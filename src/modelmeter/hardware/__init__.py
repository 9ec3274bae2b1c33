"""Hardware layer (layer 2): sourced device database, lookup, CPU detection, calibration.

Public names are re-exported here; the modules behind them are implementation.
Calibration imports torch only when it runs, so looking a device up stays cheap.
The calibration code lives in `calibration.py` (not `calibrate.py`) so the
re-exported function `calibrate` never shadows a submodule of the same name.
"""

from __future__ import annotations

from .calibration import CalibrationResult, CalibrationSettings, calibrate
from .lookup import get_hardware, list_hardware
from .profile import load_local_profile, local_profile_path, save_local_profile
from .specs import (
    Hardware,
    carbon_intensity,
    cpu_peak_method,
    energy_per_op,
    mamf_efficiency,
    sources_table,
)

__all__ = [
    "CalibrationResult",
    "CalibrationSettings",
    "Hardware",
    "calibrate",
    "carbon_intensity",
    "cpu_peak_method",
    "energy_per_op",
    "get_hardware",
    "list_hardware",
    "load_local_profile",
    "local_profile_path",
    "mamf_efficiency",
    "save_local_profile",
    "sources_table",
]

