"""Where the calibrated 'local' profile lives, and its atomic save/load (layer 2).

The profile is JSON at `<base>/hardware/local.json`, where `<base>` is
`$MODELMETER_HOME` when set (tests point it at a temp dir) and otherwise
`platformdirs.user_data_dir("modelmeter")`. Writes go to a temp file in the
same directory and are renamed over the old file, so a crash mid-write never
leaves a half-written profile behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from ..core.files import atomic_write
from .specs import Hardware

PROFILE_SCHEMA = "modelmeter.hardware-profile/1"


def data_home() -> Path:
    """Base data dir: $MODELMETER_HOME, else the platform's user data dir."""
    env = os.environ.get("MODELMETER_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("modelmeter"))


def local_profile_path() -> Path:
    return data_home() / "hardware" / "local.json"


def save_local_profile(hw: Hardware, calibration: dict[str, Any] | None = None) -> Path:
    """Write `hw` (and optionally the raw calibration record) as the 'local' profile."""
    path = local_profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"schema": PROFILE_SCHEMA, "hardware": hw.to_dict(), "calibration": calibration}
    # Whole or not at all: a crash mid-write leaves the previous profile untouched.
    atomic_write(path, json.dumps(payload, indent=1), what="hardware profile")
    return path


def load_local_profile() -> Hardware | None:
    """The saved 'local' profile, or None when none has been saved."""
    path = local_profile_path()
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("schema") != PROFILE_SCHEMA:
            raise ValueError(f"schema {payload.get('schema')!r}")
        return Hardware.from_dict(payload["hardware"])
    except (OSError, ValueError, KeyError, AttributeError, UserInputError) as exc:
        raise UserInputError(
            f"the local hardware profile {path} is unreadable ({exc}); "
            "run `modelmeter hardware calibrate` to rewrite it"
        ) from exc
