"""Writing output files safely: whole or not at all, checked before the work (layer 0).

Every file modelmeter writes (JSON, CSV, Markdown, HTML, plots, the hardware
profile) goes through `atomic_write`: the bytes go to a temp file with a
unique name in the target's own folder, are flushed to disk, then renamed over
the target. A reader never sees half a file, a failure leaves the old file (or
none) and no temp file behind, and two runs writing the same target cannot
clobber each other's temp file (the name is drawn by `tempfile.mkstemp`).

A symlink is written through (its target is replaced, the link stays), and a
target that is not a regular file (a named pipe, `/dev/null`, `/dev/stdout`) is
opened and written in place: renaming a temp file over it would replace the
pipe or the device node itself.

`check_writable` lets a command refuse a bad output path *before* minutes of
tracing or measuring, instead of throwing the finished result away.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import UserInputError

__all__ = ["atomic_open", "atomic_write", "check_writable"]


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_writable(target: str | os.PathLike[str], what: str = "", *, make_folders: bool = False) -> Path:
    """Refuse (UserInputError) a path that cannot be written, without leaving anything behind.

    The folder must exist and take a new file (tried for real with a temp file:
    permission bits alone miss read-only mounts and root), and the target
    itself must not be a folder or an unwritable file. With `make_folders` the
    writer creates missing folders first, so the nearest existing one is tried.
    """
    label = f"{what} {target}" if what else str(target)
    path = _resolved(target)
    if _is_special(path):
        if not os.access(path, os.W_OK):
            raise UserInputError(f"cannot write {label}: permission denied")
        return path
    folder = path.parent
    if make_folders:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
    if not folder.is_dir():
        raise UserInputError(
            f"cannot write {label}: folder {folder} does not exist"
            if not folder.exists() else f"cannot write {label}: {folder} is not a folder"
        )
    if path.is_dir():
        raise UserInputError(f"cannot write {label}: it is a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise UserInputError(f"cannot write {label}: {_reason(exc)}") from None
    os.close(fd)
    os.unlink(probe)
    if path.exists() and not os.access(path, os.W_OK):
        # The rename would still succeed in a writable folder, but the user
        # protected this file: respect that.
        raise UserInputError(f"cannot write {label}: the file is read-only")
    return path


@contextlib.contextmanager
def atomic_open(
    target: str | os.PathLike[str], mode: str = "w", *, what: str = "", encoding: str = "utf-8"
) -> Iterator[IO[Any]]:
    """Open a temp file beside `target`; on a clean exit it replaces `target` atomically.

    `mode` is "w" (text, `encoding`) or "wb". On any exception the temp file is
    removed and `target` is left as it was; an OSError becomes a one-line
    UserInputError naming the file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', not {mode!r}")
    label = f"{what} {target}" if what else str(target)
    path = _resolved(target)
    if _is_special(path):
        with _open_in_place(path, mode, label, encoding) as fh:
            yield fh
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserInputError(f"cannot write {label}: {_reason(exc)}") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": encoding, "newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates the file 0600: give it the mode the old file had, or
        # the one a plain open() would have given a new file.
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise UserInputError(f"cannot write {label}: {_reason(exc)}") from None
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(target: str | os.PathLike[str], data: str | bytes, *, what: str = "") -> Path:
    """Write `data` (text as UTF-8, or bytes) to `target` whole, or not at all."""
    with atomic_open(target, "wb" if isinstance(data, bytes) else "w", what=what) as fh:
        fh.write(data)
    return Path(target)


def _resolved(target: str | os.PathLike[str]) -> Path:
    """The file a path names: a symlink's target (so the link survives the rename)."""
    path = Path(target)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _is_special(path: Path) -> bool:
    """An existing target that is not a regular file or folder: a pipe, a device, a socket."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextlib.contextmanager
def _open_in_place(path: Path, mode: str, label: str, encoding: str) -> Iterator[IO[Any]]:
    try:
        fh = open(path, mode, **({} if "b" in mode else {"encoding": encoding, "newline": ""}))  # noqa: SIM115
    except OSError as exc:
        raise UserInputError(f"cannot write {label}: {_reason(exc)}") from None
    try:
        with fh:
            yield fh
    except OSError as exc:
        raise UserInputError(f"cannot write {label}: {_reason(exc)}") from None


def _remove(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    # Read without os.umask(), which would change the process's mask even briefly.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
