"""Which device an id names: the database or the calibrated 'local' profile (layer 2).

The one place that knows both sources of a `Hardware`: `specs` (the sourced
database) and `profile` (the saved calibration). It sits above both so that
neither imports the other.
"""

from __future__ import annotations

import re

from ..core.errors import UnknownHardwareError
from .profile import load_local_profile, local_profile_path
from .specs import LOCAL_ID, Hardware, database_hardware, find_in_database


def list_hardware(include_local: bool = False) -> list[Hardware]:
    """Every device in the database, in file order; the calibrated 'local' last if asked and present."""
    devices = database_hardware()
    if include_local:
        local = load_local_profile()
        if local is not None:
            devices.append(local)
    return devices


def get_hardware(hw_id: str) -> Hardware:
    """Look a device up by id or alias (case-insensitive); 'local' is the calibrated profile."""
    if hw_id.strip().lower() == LOCAL_ID:
        local = load_local_profile()
        if local is None:
            raise UnknownHardwareError(
                f"no calibrated 'local' profile at {local_profile_path()}; "
                "run `modelmeter hardware calibrate` first"
            )
        return local
    return find_in_database(hw_id)


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def match_gpu_name(device_name: str) -> Hardware | None:
    """The database GPU whose model number (H100, A100, 4090, L40S) is in a driver's device name.

    Ties go to the entry sharing the most words with the name; None when no
    entry's model number appears in it.
    """
    have = _tokens(device_name)
    best, best_score = None, 0
    for hw in database_hardware():
        if hw.kind != "gpu":
            continue
        words = _tokens(hw.name)
        model_words = [w for w in words if any(c.isdigit() for c in w) and any(c.isalpha() for c in w)
                       or w.isdigit() and len(w) == 4]
        if not model_words or not any(w in have for w in model_words):
            continue
        score = len(words & have)
        if score > best_score:
            best, best_score = hw, score
    return best
