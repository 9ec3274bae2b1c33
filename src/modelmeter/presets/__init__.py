"""Shipped model presets: published architecture configs as JSON (layer 1, stdlib only).

Each `NAME.json` in this package holds one architecture, never weights:

    name               the preset name users type (`modelmeter count llama3-8b`)
    description        one line, ending with the hub repo whose config.json it copies
    config_source      that hub repo id (documentation only: nothing is downloaded)
    kind               'vision' | 'encoder' | 'decoder'
    architecture       the transformers class to build (e.g. "LlamaForCausalLM")
    attn_implementation  (text models, ViT) the attention path to request: "sdpa"
    inputs             default `--input` specs, e.g. ["1x3x224x224"] or ["1x128:int64"]
    params             parameters of the built model, counted (a test recounts them), so
                       listing presets needs no build
    active_params      parameters one token uses (mixtures of experts: top_k of the routed
                       experts); = params for a dense model
    omitted            (optional) config.json keys left out and why (e.g. the checkpoint's
                       quantisation_config, which describes stored weights, not the architecture)
    config             the published config.json; the 1000-entry `id2label` tables of
                       the vision configs are replaced by the equivalent `num_labels`

`modelmeter.sources` turns a preset into a module; this package only reads files,
so listing presets never imports torch.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def preset_names() -> tuple[str, ...]:
    """Names of all shipped presets, sorted."""
    files = resources.files(__name__).iterdir()
    return tuple(sorted(f.name[: -len(".json")] for f in files if f.name.endswith(".json")))


@cache
def _read(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")


def preset_summary(name: str) -> dict[str, Any]:
    """name, family (the config's model_type), kind, params, active_params, description and
    the default inputs (`--input` specs, e.g. ['1x128:int64'])."""
    data = load_preset(name)
    return {"name": name, "family": data["config"].get("model_type", ""), "kind": data["kind"],
            "params": data["params"], "active_params": data["active_params"],
            "description": data["description"], "inputs": list(data["inputs"])}


def load_preset(name: str) -> dict[str, Any]:
    """The parsed JSON of one preset (a fresh dict each call, safe to mutate).

    Raises KeyError for a name that is not shipped; callers turn that into a
    user-facing error with suggestions.
    """
    if name not in preset_names():
        raise KeyError(name)
    data: dict[str, Any] = json.loads(_read(name))
    return data
