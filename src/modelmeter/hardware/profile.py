"""Where the calibrated 'local' profile lives, and its atomic save/load (layer 2).

The profile is JSON at `<base>/hardware/local.json`, where `<base>` is
`$MODELMETER_HOME` when set (tests point it at a temp dir) and otherwise
`platformdirs.user_data_dir("modelmeter")`. Writes go to a temp file in the
same directory and are renamed over the old file, so a crash mid-write never
leaves a half-written profile behind.

Every profile is checked (`plausible`) when it is written and when it is read:
one that cannot be parsed or holds a figure no device can have is refused on
write, and on read is renamed to `<name>.invalid-<UTC time>` beside itself
(kept to look at, never used again) with one line naming the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from ..core.files import atomic_write
from .plausible import InvalidProfile, check_hardware, check_record, profile_threads, set_aside
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


RECALIBRATE = "run `modelmeter hardware calibrate` to measure this machine again"


def save_local_profile(hw: Hardware, calibration: dict[str, Any] | None = None) -> Path:
    """Write `hw` (and optionally the raw calibration record) as the 'local' profile.

    Refused (InvalidProfile, nothing written) when a figure is implausible (`plausible`).
    """
    check_saveable(hw, calibration)
    path = local_profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"schema": PROFILE_SCHEMA, "hardware": hw.to_dict(), "calibration": calibration}
    # Whole or not at all: a crash mid-write leaves the previous profile untouched.
    atomic_write(path, json.dumps(payload, indent=1), what="hardware profile")
    return path


def check_saveable(hw: Hardware, calibration: dict[str, Any] | None) -> None:
    """InvalidProfile ('profile not saved: <field> ...') when `hw` may not be written."""
    try:
        check_hardware(hw, profile_threads(calibration))
    except InvalidProfile as exc:
        raise InvalidProfile(f"hardware profile not saved: {exc}; calibrate again when the machine is quiet") from exc


def read_profile(path: Path, schema: str, then: str = RECALIBRATE,
                 key: str | None = None) -> tuple[dict[str, Any], Hardware] | None:
    """(payload, checked Hardware) of the profile at `path`; None when there is none.

    A file that is not a profile of `schema` (and `key`), or holds an implausible
    figure, is set aside and InvalidProfile says which field, where it went and `then`.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"the hardware profile {path} is unreadable ({exc}); {then}") from exc
    try:
        payload = json.loads(text)
        if not isinstance(payload, dict) or payload.get("schema") != schema:
            raise UserInputError(f"schema {payload.get('schema') if isinstance(payload, dict) else None!r}, "
                                 f"expected {schema!r}")
        if key is not None and payload.get("key") != key:
            raise UserInputError(f"key {payload.get('key')!r}, expected {key!r}")
        hw = check_hardware(check_record(payload.get("hardware")), profile_threads(payload.get("calibration")))
    except (ValueError, UserInputError) as exc:
        state = "unreadable" if isinstance(exc, ValueError) else "invalid"
        kept = set_aside(path)
        raise InvalidProfile(f"the hardware profile {path} is {state}: {exc}; set aside as {kept}, "
                             f"not used; {then}") from exc
    return payload, hw


def load_local_profile() -> Hardware | None:
    """The saved 'local' profile, or None when none has been saved (InvalidProfile: see `read_profile`)."""
    found = read_profile(local_profile_path(), PROFILE_SCHEMA)
    return None if found is None else found[1]
