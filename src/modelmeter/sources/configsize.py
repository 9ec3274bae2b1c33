"""What a transformers config asks for, bounded before anything is built (layer 1).

A config.json is data from a file: `hidden_size: 1e12` overflows torch's
storage-size arithmetic deep inside a constructor, and `num_hidden_layers: 1e9`
builds and traces layer after layer for hours. So before the build, every size
field (and every nested sub-config's) must be a positive integer within
`MAX_DIM`, the parameter count a rough closed form gives must stay within
`MAX_PARAMS`, and the trace's op count within `MAX_TRACE_OPS`. The estimates
err high (every layer dense and MoE, embeddings untied), so no real model nears
the limits: the largest shipped preset, deepseek-v3 (671 G parameters, 61
layers), estimates at about 0.73 T parameters and 22 K ops.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import UserInputError
from .inputs import MAX_DIM

# 100 T parameters: 50x the largest published model (about 2 T); far below the
# 2**63 bytes at which torch's storage size overflows.
MAX_PARAMS = 10**14
# A llama layer runs about 100 aten ops on meta (102 measured on a 2- and 12-layer
# llama); a MoE layer adds about one per expert. 200 K ops is about 2,000 layers,
# a minute of tracing; the deepest published models have under 130.
OPS_PER_LAYER = 100
MAX_TRACE_OPS = 200_000

# Standard names (transformers maps gpt2's n_layer, n_embd... onto them through
# the config's attribute_map), then the other spellings of the same size.
_LAYERS = ("num_hidden_layers", "num_layers", "n_layers", "encoder_layers", "decoder_layers",
           "num_decoder_layers", "num_encoder_layers")
_WIDTH = ("hidden_size", "d_model", "dim", "embed_dim")
_FFN = ("intermediate_size", "n_inner", "d_ff", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim")
_EXPERTS = ("num_local_experts", "n_routed_experts", "num_experts")
_EXPERT_FFN = ("moe_intermediate_size", "expert_intermediate_size")
_VOCAB = ("vocab_size",)
# A size field: one of the above, or a name shaped like one.
_SIZE_SUFFIXES = ("_size", "_dim", "_layers", "_experts", "_heads", "_embeddings", "_rank")
_NOT_SIZES = frozenset({"pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id",
                        "decoder_start_token_id", "sliding_window", "chunk_size_feed_forward"})


def check_config_size(conf: Any, what: str) -> None:
    """Raise UserInputError when `conf` (a transformers config) asks for more than can be built."""
    configs = list(_configs(conf))
    for sub, where in configs:
        _check_fields(sub, f"{what}{where}")
        _check_rope(sub, f"{what}{where}")
    params = sum(_params(sub) for sub, _ in configs)
    layers = sum(_layers(sub) for sub, _ in configs)
    ops = sum(_layers(sub) * (OPS_PER_LAYER + _first(sub, _EXPERTS)) for sub, _ in configs)
    if params > MAX_PARAMS:
        raise UserInputError(
            f"{what} asks for about {params:.3g} parameters (from its layer, width, vocabulary and "
            f"expert sizes): at most {MAX_PARAMS:.0e} can be counted; check config.json")
    if ops > MAX_TRACE_OPS:
        raise UserInputError(
            f"{what} has {layers:,} layers: its trace would run about {ops:.3g} ops, at most "
            f"{MAX_TRACE_OPS:,} are traced (about {MAX_TRACE_OPS // OPS_PER_LAYER:,} layers); "
            "check config.json")


def _configs(conf: Any, where: str = "") -> Any:
    """The config and every sub-config in it (text_config, vision_config, ...), with where it is."""
    yield conf, where
    for key, value in vars(conf).items():
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            yield from _configs(value, f"{where} {key}")


def _is_size_name(name: str) -> bool:
    if name in _NOT_SIZES:
        return False
    return (name in (*_LAYERS, *_WIDTH, *_FFN, *_EXPERTS, *_EXPERT_FFN, *_VOCAB)
            or name.endswith(_SIZE_SUFFIXES) or name.startswith(("num_", "n_")))


def _check_fields(conf: Any, what: str) -> None:
    names = {k for k in vars(conf) if not k.startswith("_")}
    names |= set(getattr(conf, "attribute_map", {}) or {})
    primary = (*_LAYERS, *_WIDTH, *_FFN, *_EXPERTS, *_EXPERT_FFN, *_VOCAB)
    # The sizes a user writes come first: hidden_size is named, not the head_dim derived from it.
    for name in sorted(names, key=lambda n: (n not in primary, n)):
        if not _is_size_name(name):
            continue
        value = getattr(conf, name, None)
        if value is None or isinstance(value, (bool, str, list, tuple, dict)) or hasattr(value, "to_dict"):
            continue  # absent, a flag, or a structure (per-layer lists are checked by transformers)
        if not isinstance(value, (int, float)) or value != value:
            raise UserInputError(f"{what}: {name} must be a whole number, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise UserInputError(f"{what}: {name} must be a whole number, got {value!r}")
        if value > MAX_DIM:
            shown = value if isinstance(value, int) else f"{value:.6g}"
            raise UserInputError(f"{what}: {name} {shown} is too large: at most {MAX_DIM} (2**31 - 1)")
        if value < 0 or (value == 0 and name in (*_LAYERS[:1], *_WIDTH[:1], *_FFN[:1], *_VOCAB)):
            raise UserInputError(f"{what}: {name} must be positive, got {value!r}")


def _first(conf: Any, names: tuple[str, ...]) -> int:
    for name in names:
        value = getattr(conf, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return int(value)
    return 0


def _layers(conf: Any) -> int:
    # Encoder-decoder configs give both stacks; others one of the spellings.
    both = _first(conf, ("encoder_layers", "num_encoder_layers")) + _first(
        conf, ("decoder_layers", "num_decoder_layers"))
    return max(_first(conf, _LAYERS[:3]), both)


def _params(conf: Any) -> int:
    """Upper-side closed form: untied embeddings and head, 4 H^2 of attention and a gated
    MLP per layer, plus every expert's gated MLP in every layer."""
    width = _first(conf, _WIDTH)
    ffn = _first(conf, _FFN) or 4 * width
    experts = _first(conf, _EXPERTS)
    expert_ffn = _first(conf, _EXPERT_FFN) or ffn
    per_layer = 4 * width * width + 3 * width * ffn + experts * 3 * width * expert_ffn
    return 2 * _first(conf, _VOCAB) * width + _layers(conf) * per_layer


def _check_rope(conf: Any, what: str) -> None:
    """A rope type transformers has no initialiser for is a KeyError deep in the build."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for name in ("rope_parameters", "rope_scaling"):
        rope = getattr(conf, name, None)
        # Per-layer-type configs (gemma3) map each layer type to its own parameters.
        items = rope.values() if isinstance(rope, dict) and all(
            isinstance(v, dict) for v in rope.values()) and rope else [rope]
        for params in items:
            if not isinstance(params, dict):
                continue
            kind = params.get("rope_type", params.get("type", "default"))
            if kind != "default" and kind not in ROPE_INIT_FUNCTIONS:
                known = ", ".join(["default", *sorted(ROPE_INIT_FUNCTIONS)])
                raise UserInputError(f"{what}: unknown rope type {str(kind)[:40]!r} in {name} "
                                     f"(transformers knows {known}); check config.json")
