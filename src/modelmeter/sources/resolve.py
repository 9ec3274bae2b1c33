"""Resolve a model spec to a `LoadedModel` (layer 1): the one entry point of `sources`.

Spec forms, tried in this order:

1. a shipped preset name (`resnet50`, `llama3-8b`, ... ; `list_presets()`),
2. `torchvision:NAME` / `timm:NAME` (random init; the package must be installed),
3. a path to a `torch.export` archive (`*.pt2`),
4. a local folder with a transformers `config.json`,
5. `pkg.module:factory` (importable from the current directory),
6. a Hugging Face Hub model id `owner/name` (its config.json only, cached; `hub.py`),

anything else is an UnknownModelError that suggests the closest preset.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from ..core.errors import UnknownModelError, UserInputError
from ..core.precision import parse_precision
from ..presets import load_preset, preset_names
from . import hf, hub
from .base import LoadedModel
from .build import BUILT_ON_CPU_THEN_META, to_meta
from .inputs import check_positive, inputs_origin
from .others import (
    build_library_model,
    image_size_of,
    inputs_from_specs,
    load_factory,
    split_example,
)
from .pt2 import load_pt2

# resnet50 is the default because it is the field's reference benchmark (published
# params and MACs to cross-check against), has no attention or sequence length to
# choose, and runs a real forward on CPU in well under a second.
DEFAULT_MODEL = "resnet50"
DEVICES = ("meta", "cpu")
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


EMPTY_SPEC = ("empty model spec: name a preset (`modelmeter models` lists them), a folder with config.json, "
              "a .pt2 file, torchvision:NAME or timm:NAME, or package.module:factory")


def check_model_spec(spec: str | None) -> str | None:
    """`spec` as given (None: the default model); an empty or blank one is its own one-line error."""
    if spec is not None and not isinstance(spec, str):  # a module where only a spec will do (`llm`)
        raise UserInputError(f"expected a model spec string (a preset, a folder with config.json, a .pt2 "
                             f"file or package.module:factory), got {type(spec).__name__}")
    if spec is not None and not spec.strip():
        raise UnknownModelError(EMPTY_SPEC)
    return spec


def list_presets() -> list[tuple[str, str]]:
    """(name, one-line description) of every shipped preset, sorted by name."""
    return [(name, load_preset(name)["description"]) for name in preset_names()]


def resolve_model(
    spec: str | None,
    *,
    inputs: list[str] | None = None,
    batch: int | None = None,
    seq: int | None = None,
    device: str = "meta",
    dtype: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Build the model a spec names, with the example inputs of one forward call.

    device: 'meta' (no weights allocated, meta inputs) or 'cpu' (random-init or
    local weights, random inputs). dtype: a precision name; parameters and
    float inputs are cast to it (None keeps fp32). The module is in eval mode.
    """
    if device not in DEVICES:
        raise UserInputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    check_positive(batch, "batch")
    check_positive(seq, "seq")
    torch_dtype = _torch_dtype(dtype)
    spec = DEFAULT_MODEL if spec is None else check_model_spec(spec).strip()  # type: ignore[union-attr]

    if spec in preset_names():
        loaded = _from_preset(spec, inputs, batch, seq, device)
    elif spec.startswith(("torchvision:", "timm:")):
        loaded = _from_library(spec, inputs, batch, device)
    elif spec.endswith(".pt2") and Path(spec).is_file():
        loaded = _from_pt2(Path(spec), inputs, batch, device)
    elif Path(spec).is_dir() and (Path(spec) / "config.json").is_file():
        loaded = _from_folder(Path(spec), inputs, batch, seq, device, trust_remote_code)
    elif _FACTORY_RE.match(spec):
        loaded = _from_factory(spec, inputs, batch, device)
    elif hub.looks_like_hub_id(spec):
        loaded = _from_hub(spec, inputs, batch, seq, device, trust_remote_code)
    else:
        raise UnknownModelError(_unknown_message(spec))
    if torch_dtype is not None:
        _cast(loaded, torch_dtype)
    return loaded


def _torch_dtype(dtype: str | None) -> Any:
    if dtype is None:
        return None
    import torch

    precision = parse_precision(dtype)
    if precision.torch_dtype is None or precision.torch_dtype.startswith("float8"):
        raise UserInputError(
            f"cannot build a model in {precision.name}: trace in fp32, fp16 or bf16 and ask "
            f"for {precision.name} sizes with the precision option instead"
        )
    return getattr(torch, precision.torch_dtype)


def _cast(loaded: LoadedModel, torch_dtype: Any) -> None:
    """Cast parameters, buffers and float inputs; integer inputs (token ids) stay."""
    import torch

    loaded.module.to(torch_dtype)

    def cast(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(torch_dtype)
        return value

    loaded.args = tuple(cast(a) for a in loaded.args)
    loaded.kwargs = {k: cast(v) for k, v in loaded.kwargs.items()}


def _from_preset(
    name: str, inputs: list[str] | None, batch: int | None, seq: int | None, device: str
) -> LoadedModel:
    preset = load_preset(name)
    kind = preset["kind"]
    conf = hf.config_from_dict(preset["config"])
    cls = hf.model_class(preset["architecture"], kind)
    module, _, how = hf.build_module(conf, cls, kind, device, preset.get("attn_implementation"))
    kwargs = hf.make_hf_inputs(
        module, conf, kind, name=name, inputs=inputs, default_inputs=preset["inputs"],
        batch=batch, seq=seq, device=device,
    )
    return LoadedModel(
        name=name, module=module, kwargs=kwargs, kind=kind,
        description=preset["description"] + _built_note(how),
        config=preset["config"], source="preset", build=how,
        inputs_from=inputs_origin("preset default", inputs, batch, seq),
    )


def _from_hub(
    repo_id: str, inputs: list[str] | None, batch: int | None, seq: int | None, device: str,
    trust_remote_code: bool,
) -> LoadedModel:
    folder = hub.fetch_config_folder(repo_id, trust_remote_code)
    loaded = _from_folder(folder, inputs, batch, seq, device, trust_remote_code, load_weights=False)
    state = "no weights (meta)" if device == "meta" else "random init"
    architecture = (loaded.config or {}).get("architectures") or [type(loaded.module).__name__]
    loaded.name = repo_id
    loaded.source = "hub"
    loaded.description = f"{architecture[0]} from the Hugging Face Hub ({repo_id} config.json), {state}"
    return loaded


def _from_folder(
    folder: Path, inputs: list[str] | None, batch: int | None, seq: int | None, device: str,
    trust_remote_code: bool, load_weights: bool = True,
) -> LoadedModel:
    transformers = hf.import_transformers()
    try:
        with hf.quiet_config_read():
            conf = transformers.AutoConfig.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=trust_remote_code
            )
    except Exception as exc:  # malformed JSON, unknown model_type, remote code refused
        # A validation error says the field on its first line and what is wrong on the next.
        first = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2]) or type(exc).__name__
        # The hint names a flag only some commands have; the CLI drops it elsewhere.
        hint = None if trust_remote_code else "custom code needs --trust-remote-code, if you trust it"
        raise UnknownModelError(f"cannot read {folder}/config.json: {first}", hint=hint,
                                hint_option="--trust-remote-code") from exc
    architecture = (getattr(conf, "architectures", None) or [None])[0]
    kind = hf.guess_kind(conf, architecture)
    cls = hf.model_class(architecture, kind)
    attn = "sdpa" if kind != "vision" else None
    module, weights, how = hf.build_module(
        conf, cls, kind, device, attn, folder=folder if load_weights else None,
        trust_remote_code=trust_remote_code,
    )
    kwargs = hf.make_hf_inputs(
        module, conf, kind, name=folder.name, inputs=inputs, default_inputs=None,
        batch=batch, seq=seq, device=device,
    )
    state = "weights from model.safetensors" if weights else (
        "no weights (meta)" if device == "meta" else "random init"
    )
    return LoadedModel(
        name=folder.name, module=module, kwargs=kwargs, kind=kind,
        description=f"{architecture or type(module).__name__} from {folder}, {state}{_built_note(how)}",
        config=conf.to_dict(), source="hf-folder", build=how,
        inputs_from=inputs_origin(hf.default_inputs_origin(conf, kind), inputs, batch, seq),
    )


def _from_factory(spec: str, inputs: list[str] | None, batch: int | None, device: str) -> LoadedModel:
    module, example, how = load_factory(spec, device)
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    given = inputs_from_specs(inputs, None, batch, device)
    if given is not None:
        args, kwargs = given  # --input wins over the factory's example inputs
    elif example is not None:
        args, kwargs = split_example(example)
        args, kwargs = _to_device((args, kwargs), device)
    else:
        raise UserInputError(
            f"{spec} returned no example inputs; give them with --input, e.g. --input 1x3x224x224"
        )
    if device == "meta" and _has_real_tensors(module):
        module = to_meta(module)  # a module object, or built on cpu: tied weights stay tied
    return LoadedModel(
        name=spec, module=module.eval(), args=args, kwargs=kwargs, kind="custom",
        description=f"factory {spec}{_built_note(how)}", source="factory", build=how,
        inputs_from=inputs_origin("the factory's example inputs", inputs, batch),
    )


def _from_pt2(
    path: Path, inputs: list[str] | None, batch: int | None, device: str
) -> LoadedModel:
    # Never trusted, whatever trust_remote_code says: a .pt2 runs no code of its own.
    module, example = load_pt2(path)
    given = inputs_from_specs(inputs, None, batch, device)
    if given is not None:
        args, kwargs = given
    elif example is not None:
        args, kwargs = _to_device(example, device)
    else:
        raise UserInputError(f"{path} stores no example inputs; give them with --input")
    if device == "meta":
        module = module.to("meta")
    return LoadedModel(
        name=path.name, module=module, args=tuple(args), kwargs=dict(kwargs), kind="custom",
        description=f"torch.export program {path}", source="pt2",
        inputs_from=inputs_origin("the example inputs stored in the .pt2", inputs, batch),
    )


def _from_library(spec: str, inputs: list[str] | None, batch: int | None, device: str) -> LoadedModel:
    library, _, name = spec.partition(":")
    built = build_library_model(library, name, device, image_size_of(inputs))
    size = built.image_size
    args, kwargs = inputs_from_specs(inputs, [f"1x3x{size}x{size}"], batch, device) or ((), {})
    fed = "inputs from --input" if inputs else f"{size}x{size} images ({built.size_source})"
    return LoadedModel(
        name=spec, module=built.module, args=args, kwargs=kwargs, kind="vision",
        description=f"{library} {name}, random init, {fed}{_built_note(built.build)}",
        source=library, build=built.build,
        inputs_from=inputs_origin(_size_origin(built.size_source), inputs, batch),
    )


def _size_origin(size_source: str) -> str:
    # "published" only when the library published it: the 224 fallback is ours
    if size_source == "default":
        return "default image size (the library publishes none for this model)"
    return f"published image size ({size_source})"


def _built_note(how: str | None) -> str:
    # Only the unusual path is worth a word in the one-line description.
    return "; built on cpu, then moved to meta (construction needs real values)" if (
        how == BUILT_ON_CPU_THEN_META) else ""


def _has_real_tensors(module: Any) -> bool:
    return any(not p.is_meta for p in module.parameters()) or any(
        not b.is_meta for b in module.buffers()
    )


def _to_device(example: tuple[Any, Any], device: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    import torch

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, (tuple, list)):
            return type(value)(move(v) for v in value)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    args, kwargs = example
    return tuple(move(a) for a in args), {k: move(v) for k, v in (kwargs or {}).items()}


def _unknown_message(spec: str) -> str:
    names = preset_names()
    close = difflib.get_close_matches(spec.lower(), names, n=1, cutoff=0.6)
    guess = f" — did you mean {close[0]}?" if close else "."
    path = Path(spec)
    if spec.lower().endswith(".onnx"):
        # An ONNX graph has counts but no module to trace, measure or run the other views on.
        return (f"{spec!r} is an ONNX file: only `modelmeter count` (and modelmeter.count) reads ONNX "
                "graphs; the other views need the PyTorch model (a preset, pkg.module:factory, a .pt2 "
                "file, a config folder)" if path.is_file() else f"no such ONNX file: {spec}")
    if spec.endswith(".pt2") and not path.is_file():
        guess = f": no such .pt2 file{guess}"
    elif path.is_dir():
        guess = f": folder has no config.json{guess}"
    return (
        f"unknown model {spec!r}{guess} Shipped presets: {', '.join(names)}; "
        "or give pkg.module:factory, a folder with config.json, torchvision:NAME, timm:NAME, "
        "a .pt2 file, a Hugging Face model id owner/name"
    )
