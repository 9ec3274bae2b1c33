"""Non-transformers model sources: torchvision/timm, `pkg.module:factory` (layer 1).

`.pt2` archives have their own module, `pt2`.

Each returns the module plus its example inputs as (args, kwargs). Optional
packages are imported only when their spec is used; a missing one is a
MissingDependencyError that names the install command and the alternative.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any

from ..core.errors import MissingDependencyError, UnknownModelError, UserInputError
from .build import construct
from .inputs import make_tensor, parse_named_input, with_batch
from .vision_defaults import torchvision_defaults

_DEFAULT_SIZE = 224  # image size when neither --input nor the library gives one


def inputs_from_specs(
    inputs: list[str] | None, default: list[str] | None, batch: int | None, device: str
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """(positional, keyword) tensors from `--input` specs (else the default specs); None if neither.

    `NAME=SHAPE` specs become keyword arguments, the others positional ones in order.
    """
    specs = inputs or default
    if not specs:
        return None
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for text in specs:
        name, shape, dtype = parse_named_input(text)
        tensor = make_tensor(with_batch(shape, batch), dtype, device)
        if name is None:
            args.append(tensor)
        elif name in kwargs:
            raise UserInputError(f"--input {name}= is given twice")
        else:
            kwargs[name] = tensor
    return tuple(args), kwargs


@dataclass(frozen=True)
class LibraryModel:
    """A torchvision/timm model built with no weights, and the image size it takes."""

    module: Any
    build: str  # how it was built (sources/build.py)
    image_size: int  # the size to feed it when no --input says otherwise
    size_source: str  # where image_size comes from, for the description


def build_library_model(
    library: str, name: str, device: str, image_size: int | None = None
) -> LibraryModel:
    """`torchvision:NAME` / `timm:NAME` with random init (never downloads weights).

    `image_size` (from `--input`) overrides the size the library publishes for
    the model; a ViT whose size is fixed at construction is built for it.
    """
    try:
        lib = importlib.import_module("torchvision.models" if library == "torchvision" else "timm")
    except ImportError as exc:
        raise MissingDependencyError(
            f"{library} is not installed; `pip install {library}` "
            "(or use a shipped preset: `modelmeter models`)"
        ) from exc
    if library == "torchvision":
        return _build_torchvision(lib, name, device, image_size)
    if not lib.is_model(name):
        raise UnknownModelError(
            f"timm has no model {name!r}; list them with `python -c \"import timm; print(timm.list_models())\"`"
        )
    module, how = construct(lambda: lib.create_model(name, pretrained=False), device, f"timm:{name}")
    published = _timm_image_size(module)
    size, source = _choose_size(image_size, published, "timm's pretrained_cfg input_size")
    return LibraryModel(module.eval(), how, size, source)


def _build_torchvision(lib: Any, name: str, device: str, image_size: int | None) -> LibraryModel:
    try:
        builder = lib.get_model_builder(name)
    except (ValueError, KeyError) as exc:
        known = lib.list_models()
        raise UnknownModelError(
            f"torchvision has no model {name!r}; some it has: {', '.join(known[:12])}, ..."
        ) from exc
    published = weights_image_size(_default_weights(lib, name))
    source_text = "the image size torchvision publishes for its default weights"
    table = torchvision_defaults(name)
    if published is None and table is not None:  # segmentation weights publish a resize, no crop
        published, source_text = table.image_size, table.source
    size, source = _choose_size(image_size, published, source_text)
    kwargs = no_weights_kwargs(builder)
    if table is not None:  # the head the published figures include (aux_loss), when the builder takes it
        accepted = _parameters(builder)
        kwargs.update({k: v for k, v in table.build_kwargs.items() if accepted is None or k in accepted})
    what = f"torchvision:{name}"
    module, how = construct(lambda: builder(**kwargs), device, what)
    fixed = getattr(module, "image_size", None)
    if isinstance(fixed, int) and fixed != size:
        # ViTs fix their image size (position embeddings) at construction; torchvision
        # sets it from the weights' min_size, which weights=None skips: set it here.
        kwargs["image_size"] = size
        module, how = construct(lambda: builder(**kwargs), device, what)
    return LibraryModel(module.eval(), how, size, source)


def _parameters(builder: Any) -> set[str] | None:
    try:
        return set(inspect.signature(builder).parameters)
    except (TypeError, ValueError):
        return None


def no_weights_kwargs(builder: Any) -> dict[str, Any]:
    """Keyword arguments that make a torchvision builder download nothing.

    `weights=None` alone is not enough: segmentation and detection builders
    default `weights_backbone` to ImageNet weights, and download them. Every
    parameter named `weights` or `weights_*`/`*_weights` is set to None, and
    the legacy booleans `pretrained`/`pretrained_backbone` to False.
    """
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return {"weights": None}
    kwargs: dict[str, Any] = {}
    for name in params:
        if name == "weights" or name.startswith("weights_") or name.endswith("_weights"):
            kwargs[name] = None
        elif name == "pretrained" or name.startswith("pretrained_"):
            kwargs[name] = False
    if "weights" not in kwargs and any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs["weights"] = None
    return kwargs


def weights_image_size(weights: Any) -> int | None:
    """The square image size torchvision evaluates `weights` at, or None if it publishes none.

    Reads the documented Weights API: the crop size of `weights.transforms`
    (a `functools.partial` of ImageClassification), else `weights.meta["min_size"]`
    when it is above the 224 default (a ViT's fixed size; the (1, 1) of
    detection weights says nothing).
    """
    if weights is None:
        return None
    keywords = getattr(getattr(weights, "transforms", None), "keywords", None) or {}
    crop = keywords.get("crop_size")
    if isinstance(crop, (list, tuple)) and crop:
        crop = crop[0] if all(c == crop[0] for c in crop) else None
    if isinstance(crop, int) and crop > 0:
        return crop
    meta = getattr(weights, "meta", None) or {}
    low = meta.get("min_size") if isinstance(meta, dict) else None
    if isinstance(low, (list, tuple)) and len(low) == 2 and low[0] == low[1]:
        low = low[0]
    if isinstance(low, int) and low > _DEFAULT_SIZE:
        return low
    return None


def _default_weights(lib: Any, name: str) -> Any:
    # The weights enum's DEFAULT member: the figures torchvision's docs publish.
    try:
        enum = lib.get_model_weights(name)
    except Exception:  # noqa: BLE001 - models without weights: no published size
        return None
    default = getattr(enum, "DEFAULT", None)
    if default is None:
        default = next(iter(enum), None) if isinstance(enum, type) else None
    return default


def _timm_image_size(module: Any) -> int | None:
    cfg = getattr(module, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if isinstance(size, (list, tuple)) and len(size) == 3 and size[1] == size[2]:
        return int(size[1])
    return None


def _choose_size(given: int | None, published: int | None, source: str) -> tuple[int, str]:
    if given is not None:
        return given, "--input"
    if published is not None:
        return published, source
    return _DEFAULT_SIZE, "default"


def image_size_of(inputs: list[str] | None) -> int | None:
    """The square H=W of the first positional 4-D `--input` (NxCxHxW), else None."""
    for text in inputs or []:
        name, shape, _ = parse_named_input(text)
        if name is None:
            return shape[2] if len(shape) == 4 and shape[2] == shape[3] else None
    return None


def load_factory(spec: str, device: str) -> tuple[Any, Any, str | None]:
    """`pkg.module:factory` -> (module, example_inputs or None, how it was built).

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
        how = None
        try:
            if callable(factory) and not isinstance(factory, torch.nn.Module):
                made, how = construct(factory, device, f"factory {spec!r}")
            else:
                made = factory
        except UserInputError:
            raise  # already says what happened (out of memory, too big to build on cpu)
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
    return made, example, how


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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
