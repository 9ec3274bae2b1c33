"""`torch.export` archives (`.pt2`), loaded so that nothing in the file can run code (layer 1).

`torch.export.load` trusts its file. Reading torch's loader, an archive can run
code through: pickled or opaque constants and weights (`pickle.loads`,
`torch.load(weights_only=False)`), TorchScript custom objects
(`torch._C._pickle_load_obj`), legacy `data/weights/<model>.pt` members and the
pre-2.8 zip layout (`torch.load` retried with `weights_only=False`), the sample
inputs (the same retry), AOTInductor members (shared libraries it dlopens), and
symbolic sizes, which it parses with `sympy.sympify` (that is `eval`).

So, in two layers:
1. the archive is inspected with torch's own reader (`PyTorchFileReader`, whose
   name lookup ignores case): names that collide ignoring case, compiled code,
   legacy pickles, pickled/custom/opaque payloads and symbolic expressions that
   are not plain arithmetic are refused before torch sees the file;
2. during `torch.export.load` every unpickling entry point torch uses refuses
   (and `torch.load` is held to `weights_only=True`), the AOTInductor loader
   refuses, and `sympy.sympify` accepts only plain arithmetic. Everything is
   put back when the load ends, however it ends; torch's export loggers and
   warnings are silenced for that time only, so a refusal is one line.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.errors import UnknownModelError
from .symexpr import MAX_BITS, is_plain_arithmetic, magnitude_bits

HOW_TO_SAVE = "save one with torch.export.save(torch.export.export(model, args), path)"
TRUSTED_ALTERNATIVE = (
    "modelmeter runs no code from a file; if you trust this one, load it with torch.export.load "
    "and pass its .module() to the Python API (modelmeter.count(module, inputs))"
)

# Members torch reads by (case-insensitive) name, lower-cased.
_WEIGHTS_DIR, _CONSTANTS_DIR = "data/weights/", "data/constants/"
_CODE_DIRS = ("data/aotinductor/",)  # compiled shared libraries torch would dlopen
# What a payload entry's file may be called: raw tensor bytes only.
_RAW_PREFIX = {_WEIGHTS_DIR: "weight_", _CONSTANTS_DIR: "tensor_"}

# What a member may ask of memory. torch writes weights stored (ratio 1) and
# JSON deflated at about 5-20x; a zip bomb inflates 1000x. JSON members are read
# whole, so they are also bounded in size (the graph of a 671 B model is tens of MB).
MAX_RATIO = 200
RATIO_FROM_BYTES = 1 << 20  # below 1 MiB inflated, any ratio is harmless
MAX_JSON_BYTES = 512 << 20
_QUIET_LOGGERS = ("torch.export", "torch._export", "torch.serialization")


class _Refused(Exception):
    """Raised inside torch's loader by a guarded entry point (never a RuntimeError,
    which torch.export.load would catch and answer with its legacy fallback)."""


def load_pt2(path: Path) -> tuple[Any, tuple[tuple[Any, ...], dict[str, Any]] | None]:
    """A `torch.export` archive -> (module, stored example inputs or None).

    The module is the exported graph. `train()`/`eval()` only set its flag: the
    graph runs as it was exported (torch's own module refuses both calls).
    """
    import torch

    inspect_archive(path)
    refusals: list[str] = []
    try:
        with _no_code_from_file(refusals):
            program = torch.export.load(str(path))
            # check_guards=False: no generated guard module; a shape other than the
            # exported one is a RuntimeError naming the input, caught by the trace.
            module = program.module(check_guards=False)
    except Exception as exc:
        if refusals:
            raise UnknownModelError(f"{path} {refusals[0]}; {TRUSTED_ALTERNATIVE}") from exc
        raise UnknownModelError(
            f"cannot read {str(path)!r} as a torch.export archive: {type(exc).__name__}: "
            f"{_one_line(exc)}; {HOW_TO_SAVE}"
        ) from exc
    if refusals:  # a refusal torch caught and worked around is still a refusal
        raise UnknownModelError(f"{path} {refusals[0]}; {TRUSTED_ALTERNATIVE}")
    # torch.export pins train()/eval() to NotImplementedError on the instance; drop
    # the pins so callers can set the mode flag like on any module.
    for name in ("train", "eval"):
        module.__dict__.pop(name, None)
    _constants_as_buffers(module)
    return module, getattr(program, "example_inputs", None)


def _constants_as_buffers(module: Any) -> None:
    """Lifted tensor constants are plain attributes, which `.to(device)` leaves behind;
    as non-persistent buffers they move with the module (to meta, to cuda)."""
    import torch

    for sub in module.modules():
        for name, value in list(vars(sub).items()):
            if isinstance(value, torch.Tensor) and not name.startswith("_"):
                delattr(sub, name)
                sub.register_buffer(name, value, persistent=False)


# ------------------------------------------------------------------ static inspection


def inspect_archive(path: Path) -> None:
    """Raise UnknownModelError unless the archive holds only data torch reads without code."""
    import torch

    def refuse(what: str) -> UnknownModelError:
        return UnknownModelError(f"{path} {what}; {TRUSTED_ALTERNATIVE}")

    members = _member_sizes(path)  # before torch inflates anything
    try:
        reader = torch._C.PyTorchFileReader(str(path))
        names = list(reader.get_all_records())
        fmt = bytes(reader.get_record("archive_format")).decode()
    except (RuntimeError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise UnknownModelError(
            f"{path} is not a torch.export archive ({_one_line(exc) or type(exc).__name__}); {HOW_TO_SAVE}"
        ) from exc
    if fmt != "pt2":
        raise UnknownModelError(f"{path} is not a torch.export archive (format {fmt!r}); {HOW_TO_SAVE}")
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.lower(), name)
        if other is not name:
            # torch's reader finds a member ignoring case: two such names make what
            # we inspect and what torch loads two different files.
            raise refuse(f"holds two members whose names differ only in case ({other!r}, {name!r})")
    for name in names:
        low = name.lower()
        if low.startswith(_CODE_DIRS):
            raise refuse(f"holds compiled code ({name!r})")
        for folder in _RAW_PREFIX:
            if low.startswith(folder) and low.endswith((".pt", ".pkl", ".pickle", ".pth", ".bin")):
                raise refuse(f"holds a pickled {folder.split('/')[1]} file ({name!r})")
            if low.startswith(folder) and low.endswith(".json"):
                _check_payload_config(name, _read_json(path, name, members), folder, refuse)
        if low.startswith("models/") and low.endswith(".json"):
            _check_expressions(name, _read_json(path, name, members), refuse)


def _member_sizes(path: Path) -> dict[str, zipfile.ZipInfo]:
    """Every member's entry by the name torch's reader gives it (lower case, without the
    archive's top folder), refused in one line when it would inflate past the bounds."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnknownModelError(f"{path} is not a torch.export archive ({_one_line(exc)}); {HOW_TO_SAVE}") from exc
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FROM_BYTES and ratio > MAX_RATIO:
            raise UnknownModelError(
                f"{path}: member {info.filename!r} inflates {ratio:,.0f}x ({info.compress_size:,} to "
                f"{info.file_size:,} bytes), at most {MAX_RATIO}x is read: a zip bomb or a damaged file")
    return {info.filename.partition("/")[2].lower(): info for info in infos}


def _read_json(path: Path, name: str, members: dict[str, zipfile.ZipInfo]) -> Any:
    """A JSON member, read through a bound: its declared size, and what inflating it gives."""
    info = members.get(name.lower())
    if info is None:  # torch's reader lists it, zipfile does not: two views of one file
        raise UnknownModelError(f"{path}: member {name!r} is not in the zip directory; {HOW_TO_SAVE}")
    if info.file_size > MAX_JSON_BYTES:
        raise UnknownModelError(f"{path}: member {name!r} declares {info.file_size:,} bytes, at most "
                                f"{MAX_JSON_BYTES:,} are read for a JSON member; {HOW_TO_SAVE}")
    try:
        with zipfile.ZipFile(path) as archive, archive.open(info) as member:
            data = member.read(info.file_size + 1)
        if len(data) != info.file_size:
            raise ValueError(f"it holds {len(data):,} bytes, its entry says {info.file_size:,}")
        return json.loads(data)
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError) as exc:
        raise UnknownModelError(f"{path}: member {name!r} is not valid JSON ({_one_line(exc)}); {HOW_TO_SAVE}") from exc


def _check_payload_config(name: str, data: Any, folder: str, refuse: Any) -> None:
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise refuse(f"has a malformed payload config {name!r}")
    for fqn, meta in config.items():
        file = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
        if not isinstance(meta, dict) or meta.get("use_pickle") or not file.startswith(_RAW_PREFIX[folder]):
            raise refuse(f"stores {fqn!r} as a pickled or opaque object ({file or 'no file'!s}), "
                         "which modelmeter does not unpickle")


def _check_expressions(name: str, data: Any, refuse: Any) -> None:
    for expr in _values_of(data, "expr_str"):
        if isinstance(expr, str) and magnitude_bits(expr) > MAX_BITS:
            raise refuse(f"has a symbolic size whose constants exceed 2**{MAX_BITS} in {name!r}: "
                         f"{expr[:60]!r}")
        if not isinstance(expr, str) or not is_plain_arithmetic(expr):
            raise refuse(f"has a symbolic size that is not plain arithmetic in {name!r}: {str(expr)[:60]!r}")


def _values_of(data: Any, key: str) -> Iterator[Any]:
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if k == key:
                    yield v
                else:
                    stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)


# ------------------------------------------------------------------ the load-time guard


@contextmanager
def _no_code_from_file(refusals: list[str]) -> Iterator[None]:
    """Every way torch's loader could run code refuses while the block runs; all restored after.

    The stand-ins refuse only while the block runs and otherwise do what the real
    function does: a module first imported during the load may keep one
    (`from pickle import loads`, `class X(pickle.Unpickler)` in torch's lazy
    imports) and must still work afterwards.
    """
    # torch's loader is imported before the guard, so it binds the real functions.
    import pickle

    import sympy
    import torch
    import torch._export.serde.serialize  # noqa: F401
    import torch.export.pt2_archive._package  # noqa: F401
    import torch.serialization

    active = [True]
    real_load, real_sympify, real_unpickler = torch.serialization.load, sympy.sympify, pickle.Unpickler

    def refuse(reason: str) -> None:
        refusals.append(reason)
        raise _Refused(reason)

    def refusing(real: Any, what: str) -> Any:
        @functools.wraps(real)
        def stand_in(*args: Any, **kwargs: Any) -> Any:
            if active[0]:
                refuse(f"asks to {what}, which modelmeter does not do")
            return real(*args, **kwargs)
        return stand_in

    class GuardedUnpickler(real_unpickler):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if active[0]:
                refuse("asks to unpickle an object, which modelmeter does not do")
            super().__init__(*args, **kwargs)

    @functools.wraps(real_load)
    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        if active[0]:
            if kwargs.get("weights_only") is False or kwargs.get("pickle_module") is not None:
                refuse("asks to unpickle arbitrary objects (torch.load without weights_only)")
            kwargs["weights_only"] = True  # explicit: no environment variable can turn it off
        return real_load(*args, **kwargs)

    @functools.wraps(real_sympify)
    def arithmetic_only(a: Any, *args: Any, **kwargs: Any) -> Any:
        if active[0] and isinstance(a, str) and not is_plain_arithmetic(a):
            refuse(f"has a symbolic size that is not plain arithmetic: {a[:60]!r}")
        return real_sympify(a, *args, **kwargs)

    unpickle = "unpickle an object"
    patches: list[tuple[Any, str, Any]] = [
        (pickle, "loads", refusing(pickle.loads, unpickle)),
        (pickle, "load", refusing(pickle.load, unpickle)),
        (pickle, "Unpickler", GuardedUnpickler),
        (torch._C, "_pickle_load_obj", refusing(torch._C._pickle_load_obj, "unpickle a TorchScript object")),
        (torch, "load", weights_only_load),
        (torch.serialization, "load", weights_only_load),
        (sympy, "sympify", arithmetic_only),
    ]
    aoti = getattr(torch._C, "_aoti", None)
    if aoti is not None and hasattr(aoti, "AOTIModelPackageLoader"):
        # Compiled code is refused by inspect_archive; this is the second lock.
        patches.append((aoti, "AOTIModelPackageLoader",
                        _GuardedClass(aoti.AOTIModelPackageLoader, active, refuse)))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    quiet = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    quiet += [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict)
              if n.startswith(tuple(q + "." for q in _QUIET_LOGGERS))]
    was_disabled = [lg.disabled for lg in quiet]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for lg in quiet:
                lg.disabled = True  # torch logs tracebacks of what it catches
            for owner, name, value in patches:
                setattr(owner, name, value)
            yield
    finally:
        active[0] = False
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)
        for lg, disabled in zip(quiet, was_disabled, strict=True):
            lg.disabled = disabled


class _GuardedClass:
    """Stands in for a class (AOTInductor's package loader): while the guard is on,
    constructing it or reaching any attribute (its static loaders) is a refusal."""

    def __init__(self, real: Any, active: list[bool], refuse: Any) -> None:
        self._real, self._active, self._refuse = real, active, refuse

    def _check(self) -> None:
        if self._active[0]:
            self._refuse("asks to load compiled code (AOTInductor), which modelmeter does not do")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return self._real(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        self._check()
        return getattr(self._real, name)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
