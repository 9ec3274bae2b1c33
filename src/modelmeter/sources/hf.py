"""transformers architectures from a config: shipped presets and local folders (layer 1).

Nothing is downloaded: presets carry their config in JSON, folders are read
with `local_files_only=True`, and remote code runs only with
`trust_remote_code=True`. On the meta device the module is built under
`torch.device("meta")`, so no weight is allocated or initialised.

Attention path. Text models and ViT are built with `attn_implementation="sdpa"`
(the "eager" path only for an architecture without SDPA support); the CNN
presets have no attention. Every SDPA call is `F.scaled_dot_product_attention`,
which dispatches differently per device (TorchDispatchMode op listing, torch
2.13 CPU build / transformers 5.24, `attention_mask=None`):

    meta  math decomposition per layer: aten.bmm (Q.K^T), aten._safe_softmax,
          aten.bmm (.V); GQA models first widen K/V with aten.expand
    cpu   one fused aten._scaled_dot_product_flash_attention_for_cpu per layer

for gpt2, bert-base, vit-base, tinyllama, llama3-8b/70b and mistral-7b (the
last three checked on meta only: their fp32 weights do not fit a small
machine; on cpu they take the same code path as tinyllama).
So a counter must handle both: the bmm pair on meta and the fused CPU kernel
(which torch's FlopCounterMode leaves uncounted).

Decoders need `use_cache=True`: with it off, transformers 5.x's mask
preprocessing calls `.all()` on a meta tensor and fails, so the
cache flag is forced on and `attention_mask=None` is passed.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.errors import MissingDependencyError, ShapeError, UnknownModelError, UserInputError
from .build import BUILT_ON_CPU, construct
from .configsize import check_config_size
from .inputs import is_integer_dtype, make_tensor, parse_input_spec, parse_named_input, with_batch

DEFAULT_SEQ = 128
KINDS = ("vision", "encoder", "decoder")
# Forward parameters an unnamed --input after the first may feed, in the
# forward's order: tensors shaped like the main input. Others (labels,
# past_key_values, use_cache, output_* flags) are not example inputs: a tensor
# there makes the model compute a loss or fail on a flag.
EXTRA_INPUTS = (
    "attention_mask", "token_type_ids", "position_ids", "pixel_mask", "bbox",
    "decoder_input_ids", "decoder_attention_mask",
)


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # a hard dependency, but say what to do if it is broken
        raise MissingDependencyError(
            f"transformers cannot be imported ({exc}); `pip install transformers`"
        ) from exc
    return transformers


@contextmanager
def quiet_config_read() -> Iterator[None]:
    """transformers' warnings off while a config is read, then as they were.

    Reading a config.json with an unknown rope type logs a warning before our
    check names the field in one line; two lines on stderr would break the rule.
    """
    logging = import_transformers().utils.logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def config_from_dict(config: dict[str, Any]) -> Any:
    """A transformers config object from a config.json dict (no hub access)."""
    transformers = import_transformers()
    values = dict(config)
    model_type = values.pop("model_type", None)
    # The stored dtype says how the checkpoint was saved; the trace dtype is the caller's choice.
    values.pop("torch_dtype", None)
    values.pop("dtype", None)
    if model_type is None:
        raise UnknownModelError("config has no 'model_type'; it is not a transformers config.json")
    try:
        with quiet_config_read():
            return transformers.AutoConfig.for_model(model_type, **values)
    except (ValueError, KeyError) as exc:
        raise UnknownModelError(
            f"transformers {transformers.__version__} does not know model_type {model_type!r}: {exc}"
        ) from exc


def guess_kind(conf: Any, architecture: str | None) -> str:
    """'vision', 'encoder' or 'decoder' from the architecture name and config."""
    arch = architecture or ""
    if arch.endswith(("ForCausalLM", "LMHeadModel")) or getattr(conf, "is_decoder", False):
        return "decoder"
    if "Image" in arch or "Vision" in arch or (
        getattr(conf, "num_channels", None) is not None and getattr(conf, "vocab_size", None) is None
    ):
        return "vision"
    return "encoder"


def model_class(architecture: str | None, kind: str) -> Any:
    """The transformers class for `architecture`, else an Auto class for the kind."""
    transformers = import_transformers()
    cls = getattr(transformers, architecture, None) if architecture else None
    if cls is not None and hasattr(cls, "_from_config"):
        return cls
    return transformers.AutoModelForCausalLM if kind == "decoder" else transformers.AutoModel


def _attn_choice(cls: Any, requested: str | None) -> str | None:
    # Auto classes pick per architecture; concrete classes say whether they support SDPA.
    if requested is None:
        return None
    if requested == "sdpa" and not getattr(cls, "_supports_sdpa", True):
        return "eager"
    return requested


def build_module(
    conf: Any, cls: Any, kind: str, device: str, attn: str | None, folder: Path | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, bool, str]:
    """Build the module; returns (module, weights_loaded, how it was built).

    Weights are loaded only on cpu from a folder holding safetensors files. On
    meta, a model whose construction needs real values is built on cpu, then
    moved to meta (sources/build.py).
    """
    import torch

    what = folder.name if folder is not None else getattr(cls, "__name__", "the model")
    check_config_size(conf, what)
    if kind == "decoder":
        # Without a cache, transformers 5.x's mask preprocessing calls .all() on meta tensors.
        conf.use_cache = True
    attn = _attn_choice(cls, attn)
    extra: dict[str, Any] = {"dtype": torch.float32}
    if attn is not None:
        extra["attn_implementation"] = attn
    auto = cls.__name__.startswith("Auto")
    if auto:
        # Only Auto classes resolve `auto_map` custom code; it stays off unless asked for.
        extra["trust_remote_code"] = trust_remote_code
    if device == "cpu" and folder is not None and _has_safetensors(folder):
        module = _load_weights(cls, folder, conf, extra)
        return module.eval(), True, BUILT_ON_CPU
    build = cls.from_config if auto else cls._from_config
    module, how = construct(lambda: _attn_fallback(lambda kw: build(conf, **kw), extra), device, what)
    return module.eval(), False, how


def _attn_fallback(make: Any, extra: dict[str, Any]) -> Any:
    """`make(extra)`; if the model refuses SDPA, again with eager attention.

    A class without SDPA support normally says so (`_supports_sdpa = False`,
    see `_attn_choice`), but custom code (trust_remote_code) behind an Auto
    class only tells by raising when SDPA is asked for. Eager attention runs
    the same matmuls (softmax(Q·K^T)·V), so the counts do not change.
    """
    try:
        return make(extra)
    except ValueError as exc:
        text = str(exc).lower()
        if extra.get("attn_implementation") != "sdpa" or not any(
            word in text for word in ("sdpa", "scaled_dot_product", "attn_implementation")
        ):
            raise
    return make({**extra, "attn_implementation": "eager"})


def _load_weights(cls: Any, folder: Path, conf: Any, extra: dict[str, Any]) -> Any:
    """from_pretrained on the folder's safetensors; a file that cannot be read is a UserInputError."""
    try:
        return _attn_fallback(
            lambda kw: cls.from_pretrained(folder, config=conf, local_files_only=True, **kw), extra
        )
    except MemoryError:
        raise  # not the file's fault: the CLI says what to do about memory
    except Exception as exc:  # noqa: BLE001 - safetensors and transformers raise many kinds
        text = str(exc).strip()
        if isinstance(exc, RuntimeError) and ("allocate" in text or "out of memory" in text.lower()):
            raise  # out of memory, not a bad file
        first = text.splitlines()[0] if text else type(exc).__name__
        raise UserInputError(
            f"cannot load the weights in {folder} ({type(exc).__name__}: {first}); the safetensors "
            "file may be corrupt, truncated or not match config.json",
            hint="--device meta counts the model without reading them", hint_option="--device meta",
        ) from exc


def _has_safetensors(folder: Path) -> bool:
    # Only safetensors are loaded: a pickle checkpoint (pytorch_model.bin) is never opened.
    return (folder / "model.safetensors").is_file() or (
        folder / "model.safetensors.index.json"
    ).is_file()


def make_hf_inputs(
    module: Any,
    conf: Any,
    kind: str,
    *,
    name: str,
    inputs: list[str] | None,
    default_inputs: list[str] | None,
    batch: int | None,
    seq: int | None,
    device: str,
) -> dict[str, Any]:
    """Forward kwargs: `pixel_values` for vision, `input_ids` (+ attention_mask=None) for text.

    A named `--input NAME=SHAPE` feeds the forward parameter NAME (Whisper's
    `input_features`, `decoder_input_ids`, ...). Each unnamed `--input` maps, in
    order, to the forward's parameters: the first to the model's main input
    (`inputs_embeds` instead of `input_ids` when it is a float tensor of a text
    model), the rest to the next parameters not named. `batch` replaces every
    input's leading dimension and, for text models, `seq` the second one of
    token inputs.
    """
    if inputs:
        specs = [parse_named_input(s) for s in inputs]
    elif kind == "vision":
        specs = [(None, *parse_input_spec(s)) for s in (default_inputs or [_default_image_spec(conf)])]
    elif default_inputs:  # a preset's own (what `modelmeter models` lists)
        specs = [(None, *parse_input_spec(s)) for s in default_inputs]
    else:
        specs = [(None, (1, DEFAULT_SEQ), "int64")]

    params = [p for p in inspect.signature(module.forward).parameters if p not in ("self", "kwargs")]
    main = getattr(module, "main_input_name", params[0] if params else "input_ids")
    named = [key for key, _, _ in specs if key is not None]
    for key in named:
        if key not in params:
            raise UserInputError(
                f"{name}'s forward takes no input named {key!r}; it takes {', '.join(params[:12])}"
            )
        if named.count(key) > 1:
            raise UserInputError(f"--input {key}= is given twice")
    # Unnamed inputs feed the main input, then the usual extra inputs (masks, ids) in order.
    extras = [p for p in params if p in EXTRA_INPUTS and p != main and p not in named]
    unnamed = sum(1 for key, _, _ in specs if key is None)
    if unnamed > 1 + len(extras):
        takes = ", ".join([main, *extras])
        raise UserInputError(
            f"{name} takes at most {1 + len(extras)} unnamed --input ({takes}); {unnamed} were given"
        )
    kwargs: dict[str, Any] = {}
    vocab = int(getattr(conf, "vocab_size", None) or 2)
    positional = 0
    for key, shape, dtype in specs:
        if key is None:
            key = _positional_key(name, extras, main, positional, dtype, set(named) | set(kwargs))
            positional += 1
        shape = with_batch(shape, batch)
        if kind != "vision" and seq is not None and len(shape) >= 2 and (
            is_integer_dtype(dtype) or key == "inputs_embeds"
        ):
            shape = (shape[0], seq, *shape[2:])
        _check_shape(name, conf, kind, key, shape, dtype)
        kwargs[key] = make_tensor(shape, dtype, device, high=vocab)
    if kind != "vision" and "attention_mask" in params and "attention_mask" not in kwargs:
        kwargs["attention_mask"] = None
    decoder_given = {"decoder_input_ids", "decoder_inputs_embeds"} & set(kwargs)
    if getattr(conf, "is_encoder_decoder", False) and not decoder_given:
        first = kwargs.get(main, next(iter(kwargs.values())))
        if first.dtype.is_floating_point:
            # Features in (audio, images): the decoder starts from one token per sequence.
            first = make_tensor((first.shape[0], 1), "int64", device, high=vocab)
        kwargs["decoder_input_ids"] = first
    return kwargs


def _positional_key(
    name: str, params: list[str], main: str, index: int, dtype: str, taken: set[str]
) -> str:
    """The forward parameter the `index`-th unnamed --input feeds."""
    if index == 0 and main not in taken:
        if main == "input_ids" and not is_integer_dtype(dtype):
            return "inputs_embeds"
        return main
    free = [p for p in params if p not in taken and p not in (main, "inputs_embeds")]
    if not free:
        raise UserInputError(f"{name} takes no further input; give at most {len(taken)} --input")
    return free[0]


def default_inputs_origin(conf: Any, kind: str) -> str:
    """Where `make_hf_inputs` takes a config's inputs from when none are given, in words."""
    if kind != "vision":
        return f"default: 1 sequence of {DEFAULT_SEQ} tokens"
    size = getattr(conf, "image_size", None)
    return f"the config's image size ({size})" if isinstance(size, int) else "default: 224x224 images"


def _default_image_spec(conf: Any) -> str:
    size = getattr(conf, "image_size", None)
    size = size if isinstance(size, int) else 224
    return f"1x{getattr(conf, 'num_channels', None) or 3}x{size}x{size}"


def _check_shape(
    name: str, conf: Any, kind: str, key: str, shape: tuple[int, ...], dtype: str
) -> None:
    """Catch inputs that cannot fit before a forward (on meta some would pass silently)."""
    if kind == "vision" and key == "pixel_values":
        channels = getattr(conf, "num_channels", None)
        if len(shape) != 4:
            raise ShapeError(f"{name} takes images NxCxHxW, e.g. --input 1x{channels or 3}x224x224")
        if channels is not None and shape[1] != channels:
            raise ShapeError(
                f"{name} expects {channels} channels, got {'x'.join(map(str, shape))}; "
                f"use --input {shape[0]}x{channels}x{shape[2]}x{shape[3]}"
            )
        size = getattr(conf, "image_size", None)
        if getattr(conf, "patch_size", None) and isinstance(size, int) and shape[2:] != (size, size):
            # Patch models with learned position embeddings accept only their image size.
            raise ShapeError(
                f"{name} takes {size}x{size} images, got {shape[2]}x{shape[3]}; "
                f"use --input {shape[0]}x{channels or 3}x{size}x{size}"
            )
    if key == "input_ids":
        if len(shape) != 2:
            raise ShapeError(f"{name} takes token ids BATCHxSEQ, e.g. --input 1x128:int64")
        limit = _absolute_position_limit(conf)
        if limit is not None and shape[1] > limit:
            raise ShapeError(
                f"{name} has learned positions for at most {limit} tokens, got seq {shape[1]}; "
                f"use --seq {limit} or less"
            )
    if key == "inputs_embeds":
        hidden = getattr(conf, "hidden_size", None)
        if len(shape) != 3 or (hidden is not None and shape[2] != hidden):
            raise ShapeError(
                f"a float input to {name} is inputs_embeds BATCHxSEQx{hidden}; "
                "for token ids give an integer dtype, e.g. --input 1x128:int64"
            )


def _absolute_position_limit(conf: Any) -> int | None:
    # Rotary models can run past max_position_embeddings; learned tables cannot.
    if getattr(conf, "n_positions", None):
        return int(conf.n_positions)
    if getattr(conf, "position_embedding_type", None) == "absolute":
        return int(getattr(conf, "max_position_embeddings", 0)) or None
    return None
