"""Non-transformers model sources: torchvision/timm, `pkg.module:factory`, `.pt2` files (layer 1).

Each returns the module plus its example inputs as (args, kwargs). Optional
packages are imported only when their spec is used; a missing one is a
MissingDependencyError that names the install command and the alternative.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

from ..core.errors import MissingDependencyError, UnknownModelError, UserInputError
from .inputs import make_tensor, parse_input_spec, with_batch

DEFAULT_IMAGE_INPUT = "1x3x224x224"


def inputs_from_specs(
    inputs: list[str] | None, default: list[str] | None, batch: int | None, device: str
) -> tuple[Any, ...] | None:
    """Positional tensors from `--input` specs (else the default specs); None if neither."""
    specs = inputs or default
    if not specs:
        return None
    tensors = []
    for text in specs:
        shape, dtype = parse_input_spec(text)
        tensors.append(make_tensor(with_batch(shape, batch), dtype, device))
    return tuple(tensors)


def build_library_model(library: str, name: str, device: str) -> Any:
    """`torchvision:NAME` / `timm:NAME` with random init (never downloads weights)."""
    import torch

    try:
        lib = importlib.import_module("torchvision.models" if library == "torchvision" else "timm")
    except ImportError as exc:
        raise MissingDependencyError(
            f"{library} is not installed; `pip install {library}` "
            "(or use a shipped preset: `modelmeter models`)"
        ) from exc
    with torch.device(device):
        if library == "torchvision":
            try:
                return lib.get_model(name, weights=None).eval()
            except ValueError as exc:
                known = lib.list_models()
                raise UnknownModelError(
                    f"torchvision has no model {name!r}; some it has: {', '.join(known[:12])}, ..."
                ) from exc
        if not lib.is_model(name):
            raise UnknownModelError(
                f"timm has no model {name!r}; list them with `python -c \"import timm; print(timm.list_models())\"`"
            )
        return lib.create_model(name, pretrained=False).eval()


def load_factory(spec: str, device: str) -> tuple[Any, Any]:
    """`pkg.module:factory` -> (module, example_inputs or None).

    The current directory is importable, as with `python -m`, while the module is
    imported and the factory runs (it may import its siblings), and only then:
    sys.path is put back as it was, also when either fails. The imported module
    stays in `sys.modules`, as after any import (the model's classes live there).
    The factory is called with no arguments and returns an nn.Module or
    (module, example_inputs).
    """
    import torch

    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        try:
            mod = importlib.import_module(module_name)
        except Exception as exc:  # the user's module: any failure is a bad spec
            raise UnknownModelError(
                f"cannot import {module_name!r} for {spec!r}: {type(exc).__name__}: {_one_line(exc)}; "
                "run from the directory that holds it or put it on PYTHONPATH"
            ) from exc
        factory = mod
        for part in attr.split("."):
            factory = getattr(factory, part, None)
            if factory is None:
                raise UnknownModelError(f"{module_name!r} has no attribute {attr!r} (from {spec!r})")
        try:
            if callable(factory) and not isinstance(factory, torch.nn.Module):
                with torch.device(device):
                    made = factory()
            else:
                made = factory
        except Exception as exc:
            raise UnknownModelError(
                f"factory {spec!r} raised {type(exc).__name__}: {_one_line(exc)}"
            ) from exc
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)  # the first occurrence: the one inserted above
    example = None
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        made, example = made
    if not isinstance(made, torch.nn.Module):
        raise UnknownModelError(
            f"factory {spec!r} returned {type(made).__name__}; it must return an nn.Module "
            "or (module, example_inputs)"
        )
    return made, example


def split_example(example: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A tensor, a tuple/list of tensors or a dict of kwargs -> (args, kwargs)."""
    import torch

    if isinstance(example, torch.Tensor):
        return (example,), {}
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, (tuple, list)):
        return tuple(example), {}
    raise UserInputError(
        f"example inputs must be a tensor, a tuple of tensors or a dict, got {type(example).__name__}"
    )


def load_pt2(
    path: Path, trust: bool = False
) -> tuple[Any, tuple[tuple[Any, ...], dict[str, Any]] | None]:
    """A `torch.export` archive -> (module, stored example inputs or None).

    `torch.export.load` is not pickle-free: pickled weights/constants, custom
    and opaque objects are unpickled, and the sample inputs fall back to
    `torch.load(weights_only=False)`. So, unless `trust` (the user's
    --trust-remote-code), an archive declaring any pickled payload is refused
    and every `torch.load` during the load is forced to `weights_only=True`.
    """
    import torch

    if not trust:
        _refuse_pickled_payloads(path)
    real_load = torch.load

    def safe_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    try:
        if not trust:
            # Process-wide for the duration of the load; loads run one at a time.
            torch.load = safe_load
        program = torch.export.load(str(path))
    except Exception as exc:
        raise UnknownModelError(
            f"cannot read {str(path)!r} as a torch.export archive: {type(exc).__name__}: "
            f"{_one_line(exc)}; save one with torch.export.save(torch.export.export(m, args), path)"
            + ("" if trust else " (or pass --trust-remote-code if it holds pickled objects you trust)")
        ) from exc
    finally:
        torch.load = real_load
    example = getattr(program, "example_inputs", None)
    return program.module(), example


def _refuse_pickled_payloads(path: Path) -> None:
    """Raise UnknownModelError when the archive's payload configs declare pickled data."""
    try:
        with zipfile.ZipFile(path) as archive:
            for entry in archive.namelist():
                if not entry.endswith(("weights_config.json", "constants_config.json")):
                    continue
                config = json.loads(archive.read(entry)).get("config", {})
                for fqn, meta in config.items():
                    name = str(meta.get("path_name", ""))
                    if meta.get("use_pickle") or name.startswith(("custom_obj_", "opaque_obj_")):
                        raise UnknownModelError(
                            f"{path} stores {fqn!r} as a pickled object, which modelmeter does not "
                            "unpickle; pass --trust-remote-code only if you trust the file"
                        )
    except (zipfile.BadZipFile, OSError, ValueError, AttributeError) as exc:
        raise UnknownModelError(
            f"{path} is not a torch.export archive ({type(exc).__name__}: {_one_line(exc)}); "
            "save one with torch.export.save"
        ) from exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
