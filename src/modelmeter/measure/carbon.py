"""Carbon from energy: regional grid intensity and data-centre PUE (layer 3).

    carbon_g = energy_j / 3.6e6 J/kWh × PUE × intensity (gCO2e/kWh)

Intensities are operational annual averages with their year and source
(``measure/data/carbon.json``); the default PUE is 1.0 (a local machine,
CodeCarbon's default), with named presets for an average and a hyperscale
data centre.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from ..core.errors import UserInputError
from .data import load

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class CarbonIntensity:
    region: str
    name: str
    g_per_kwh: float
    year: int | None
    source: str


def carbon_data() -> dict[str, Any]:
    """The sourced grid intensities and PUE presets (measure/data/carbon.json)."""
    return load("carbon.json")


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def list_regions() -> list[CarbonIntensity]:
    """Every region we carry, in file order (aliases not repeated)."""
    return [carbon_intensity(key) for key in carbon_data()["regions"]]


def carbon_intensity(region: str) -> CarbonIntensity:
    """Look a region up by key or alias ('fr', 'france', 'eu27', 'usa', ...)."""
    data = carbon_data()
    key = _normalise(region)
    key = data["aliases"].get(key, key)
    entry = data["regions"].get(key)
    if entry is None:
        names = sorted([*data["regions"], *data["aliases"]])
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserInputError(
            f"unknown carbon region {region!r}; {hint}known regions: {', '.join(data['regions'])}"
        )
    return CarbonIntensity(key, entry["name"], float(entry["value"]), entry["year"], entry["source"])


def parse_pue(value: str | float) -> float:
    """A PUE from a number (>= 1) or a preset name: 'local', 'industry', 'hyperscale'."""
    presets = {k: v for k, v in carbon_data()["pue"].items() if isinstance(v, dict)}
    if isinstance(value, str):
        key = _normalise(value)
        if key in presets:
            return float(presets[key]["value"])
        try:
            number = float(key)
        except ValueError:
            raise UserInputError(
                f"PUE must be a number >= 1.0 or one of {', '.join(presets)}, got {value!r}"
            ) from None
    else:
        number = float(value)
    _check_pue(number)
    return number


def _check_pue(pue: float) -> None:
    if not pue >= 1.0:  # also rejects NaN
        raise UserInputError(f"PUE must be >= 1.0 (facility energy / IT energy), got {pue}")


def carbon_g(energy_j: float, region: str = "world", pue: float = 1.0) -> float:
    """Grams CO2e for ``energy_j`` joules drawn in ``region`` behind a facility of ``pue``."""
    if not energy_j >= 0:
        raise UserInputError(f"energy must be a non-negative number of joules, got {energy_j}")
    _check_pue(pue)
    return energy_j / J_PER_KWH * pue * carbon_intensity(region).g_per_kwh
