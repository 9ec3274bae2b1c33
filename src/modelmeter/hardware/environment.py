"""Where a run ran, besides the model: versions, machine, code revision (layer 2).

`environment_fingerprint` is what a report's ``environment`` section and a
stored run record: the platform, Python, modelmeter and torch versions, the
CPU (`detect.cpu_name`), a hash of the host name, and the git state of the
working directory. It reads, never imports: torch's version comes from the
installed package metadata unless torch is already loaded.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from .detect import cpu_name

__all__ = ["environment_fingerprint"]

_GIT_TIMEOUT_S = 2.0


def environment_fingerprint(hardware: str | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """What a run depends on besides the model: versions, machine, code revision.

    Keys: ``platform``, ``machine``, ``python``, ``modelmeter``, ``cpu``,
    ``cpu_count``, ``host`` (a hash: enough to tell machines apart without
    storing their names), and when known ``torch``, ``hardware`` and
    ``git`` = {commit, dirty} of the repository containing `cwd` (default: the
    current directory). torch is not imported: its version comes from the
    installed package metadata.
    """
    fp: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "modelmeter": _package_version("modelmeter"),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "host": hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12],
    }
    torch_version = _torch_version()  # None when torch is not installed
    if torch_version:
        fp["torch"] = torch_version
    if hardware:
        fp["hardware"] = hardware
    try:
        where = cwd if cwd is not None else Path.cwd()
    except OSError:  # the current directory was deleted under us
        where = None
    git = _git_state(where) if where is not None else None
    if git:
        fp["git"] = git
    return fp


def _torch_version() -> str | None:
    torch = sys.modules.get("torch")  # already imported: its own word is exact
    if torch is not None and isinstance(getattr(torch, "__version__", None), str):
        return str(torch.__version__)
    return _package_version("torch")


def _package_version(name: str) -> str | None:
    # Installed metadata, not an import: reading torch's version must not cost
    # the seconds importing torch takes.
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_state(cwd: Path) -> dict[str, Any] | None:
    """{commit, dirty} of the repository around `cwd`; None outside one or without git."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=_GIT_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit or not commit.strip():
        return None
    # Untracked files don't change what ran; modified tracked files do.
    status = git("status", "--porcelain", "--untracked-files=no")
    state: dict[str, Any] = {"commit": commit.strip()}
    if status is not None:
        state["dirty"] = bool(status.strip())
    return state
