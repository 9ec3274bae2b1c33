"""Model sources: presets, transformers folders, factories, .pt2 files, input specs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import modelmeter.sources as sources
from modelmeter.core.errors import (
    MissingDependencyError,
    ShapeError,
    UnknownModelError,
    UserInputError,
)
from modelmeter.presets import load_preset, preset_names
from modelmeter.sources import DEFAULT_MODEL, list_presets, parse_input_spec, resolve_model


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def first_tensor(out: object) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple):
        return first_tensor(out[0])
    return first_tensor(next(iter(out.values())))  # transformers ModelOutput


def test_public_api() -> None:
    assert sorted(sources.__all__) == sorted(
        ["DEFAULT_MODEL", "LoadedModel", "list_presets", "parse_input_spec", "resolve_model"]
    )


def test_import_is_cheap() -> None:
    code = "import modelmeter.sources, sys; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- presets -----------------------------------------------------------------

REQUIRED = {
    "resnet50", "mobilenet-v2", "vit-base", "bert-base", "gpt2",
    "llama3-8b", "llama3-70b", "mistral-7b", "tinyllama",
}


def test_presets_listed_with_sourced_descriptions() -> None:
    listed = dict(list_presets())
    assert REQUIRED <= set(listed)
    assert DEFAULT_MODEL in listed
    for name, description in listed.items():
        preset = load_preset(name)
        assert "\n" not in description and preset["config_source"] in description
        assert preset["kind"] in ("vision", "encoder", "decoder")
        assert preset["architecture"] in preset["config"]["architectures"] or name == "bert-base"


@pytest.mark.parametrize(
    "name, params",
    [
        ("llama3-8b", 8_030_261_248),
        ("llama3-70b", 70_553_706_496),
        ("resnet50", 25_557_032),
        ("vit-base", 86_567_656),
        ("bert-base", 109_482_240),
        ("gpt2", 124_439_808),
        ("mistral-7b", 7_241_732_096),
        ("tinyllama", 1_100_048_384),
    ],
)
def test_preset_parameter_counts_on_meta(name: str, params: int) -> None:
    loaded = resolve_model(name)
    assert n_params(loaded.module) == params
    assert all(p.is_meta for p in loaded.module.parameters())
    assert loaded.source == "preset" and loaded.config == load_preset(name)["config"]
    assert not loaded.module.training


def test_llama3_published_config_values() -> None:
    for name, hidden, layers, heads, inter in (
        ("llama3-8b", 4096, 32, 32, 14336), ("llama3-70b", 8192, 80, 64, 28672)
    ):
        c = load_preset(name)["config"]
        assert (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"]) == (hidden, layers, heads)
        assert (c["num_key_value_heads"], c["intermediate_size"], c["vocab_size"]) == (8, inter, 128256)
        assert c["rope_theta"] == 500000.0 and c["tie_word_embeddings"] is False


def test_gpt2_embeddings_tied() -> None:
    module = resolve_model("gpt2").module
    assert module.lm_head.weight is module.transformer.wte.weight


@pytest.mark.slow
def test_llama3_70b_builds_fast_and_small() -> None:
    # A fresh process, so the peak RSS is this build's and not the test session's.
    code = textwrap.dedent(
        """
        import resource, time
        t = time.perf_counter()
        from modelmeter.sources import resolve_model
        m = resolve_model("llama3-70b", seq=8)
        print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, rss_kib = out.stdout.split()
    assert float(seconds) < 20  # includes importing torch + transformers
    assert int(rss_kib) * 1024 < 4 * 2**30  # real fp32 weights would be 282 GB


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_preset_runs_forward_on_meta(name: str) -> None:
    loaded = resolve_model(name, seq=8)
    with torch.no_grad():
        out = first_tensor(loaded.module(*loaded.args, **loaded.kwargs))
    assert out.is_meta


def test_meta_inputs_shapes_and_names() -> None:
    vision = resolve_model("resnet50", batch=4)
    assert list(vision.kwargs) == ["pixel_values"]
    assert vision.kwargs["pixel_values"].shape == (4, 3, 224, 224)
    assert vision.kind == "vision"
    text = resolve_model("llama3-8b", batch=2, seq=64)
    assert text.kwargs["input_ids"].shape == (2, 64) and text.kwargs["input_ids"].dtype == torch.int64
    assert text.kwargs["attention_mask"] is None and text.kind == "decoder"
    assert resolve_model("bert-base").kwargs["input_ids"].shape == (1, 128)


@pytest.mark.slow
def test_cpu_forward_small_presets() -> None:
    loaded = resolve_model("resnet50", device="cpu")
    with torch.no_grad():
        out = first_tensor(loaded.module(**loaded.kwargs))
    assert out.shape == (1, 1000) and not out.is_meta and torch.isfinite(out).all()
    gpt2 = resolve_model("gpt2", device="cpu", seq=16)
    ids = gpt2.kwargs["input_ids"]
    assert int(ids.max()) < 50257
    with torch.no_grad():
        logits = first_tensor(gpt2.module(**gpt2.kwargs))
    assert logits.shape == (1, 16, 50257) and torch.isfinite(logits).all()


def test_dtype_casts_params_and_float_inputs_only() -> None:
    vision = resolve_model("vit-base", dtype="bf16")
    assert {p.dtype for p in vision.module.parameters()} == {torch.bfloat16}
    assert vision.kwargs["pixel_values"].dtype == torch.bfloat16
    text = resolve_model("tinyllama", dtype="fp16", seq=8)
    assert {p.dtype for p in text.module.parameters()} == {torch.float16}
    assert text.kwargs["input_ids"].dtype == torch.int64
    with torch.no_grad():
        assert first_tensor(text.module(**text.kwargs)).dtype == torch.float16
    assert {p.dtype for p in resolve_model("gpt2").module.parameters()} == {torch.float32}
    with pytest.raises(UserInputError, match="fp16"):
        resolve_model("gpt2", dtype="int4")


def test_explicit_inputs() -> None:
    loaded = resolve_model("resnet50", inputs=["2x3x160x160:fp16"])
    assert loaded.kwargs["pixel_values"].shape == (2, 3, 160, 160)
    assert loaded.kwargs["pixel_values"].dtype == torch.float16
    text = resolve_model("gpt2", inputs=["3x32:int64"])
    assert text.kwargs["input_ids"].shape == (3, 32)
    embeds = resolve_model("gpt2", inputs=["1x4x768"])
    assert embeds.kwargs["inputs_embeds"].shape == (1, 4, 768)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("resnet50", {"inputs": ["1x4x224x224"]}, "3 channels"),
        ("vit-base", {"inputs": ["1x3x256x256"]}, "224x224"),
        ("gpt2", {"seq": 2048}, "1024"),
        ("bert-base", {"inputs": ["1x3x8:int64"]}, "BATCHxSEQ"),
        ("gpt2", {"inputs": ["1x4x100"]}, "inputs_embeds"),
    ],
)
def test_inputs_that_cannot_fit(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        resolve_model(name, **kwargs)


@pytest.mark.parametrize("kwargs", [{"batch": 0}, {"seq": -1}, {"device": "tpu"}, {"batch": True}])
def test_bad_settings(kwargs: dict) -> None:
    with pytest.raises(UserInputError):
        resolve_model("gpt2", **kwargs)


# --- input specs -------------------------------------------------------------


def test_parse_input_spec() -> None:
    assert parse_input_spec("1x3x224x224") == ((1, 3, 224, 224), "float32")
    assert parse_input_spec("1x3x224x224:fp16") == ((1, 3, 224, 224), "float16")
    assert parse_input_spec("1x128:int64") == ((1, 128), "int64")
    assert parse_input_spec("8:bf16") == ((8,), "bfloat16")
    assert parse_input_spec("2X4:long") == ((2, 4), "int64")


@pytest.mark.parametrize("text", ["", "abc", "1x0x3", "1x-2", "1xx3", "1x3:int4", "1x3:nope", "x3"])
def test_parse_input_spec_rejects(text: str) -> None:
    with pytest.raises(UserInputError):
        parse_input_spec(text)


# --- unknown specs and optional libraries -------------------------------------


def test_unknown_model_suggests() -> None:
    with pytest.raises(UnknownModelError) as info:
        resolve_model("resnet5")
    message = str(info.value)
    assert "did you mean resnet50?" in message and "pkg.module:factory" in message
    assert all(name in message for name in preset_names())
    assert "\n" not in message


def test_default_model() -> None:
    assert resolve_model(None).name == DEFAULT_MODEL


@pytest.mark.parametrize("library", ["torchvision", "timm"])
def test_optional_vision_libraries(library: str) -> None:
    if importlib.util.find_spec(library) is None:
        with pytest.raises(MissingDependencyError, match=f"pip install {library}"):
            resolve_model(f"{library}:resnet18")
    else:
        loaded = resolve_model(f"{library}:resnet18")
        assert loaded.args[0].shape == (1, 3, 224, 224) and loaded.source == library


# --- transformers folders -------------------------------------------------------

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "vocab_size": 256, "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}


def test_folder_meta_and_cpu(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    meta = resolve_model(str(tmp_path), seq=16)
    assert meta.source == "hf-folder" and meta.kind == "decoder"
    assert all(p.is_meta for p in meta.module.parameters())
    assert first_tensor(meta.module(**meta.kwargs)).is_meta
    cpu = resolve_model(str(tmp_path), device="cpu", seq=16)
    assert "random init" in cpu.description
    assert first_tensor(cpu.module(**cpu.kwargs)).shape == (1, 16, 256)


def test_folder_loads_safetensors_on_cpu(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    model = resolve_model(str(tmp_path), device="cpu").module
    model.save_pretrained(tmp_path)
    loaded = resolve_model(str(tmp_path), device="cpu")
    assert "model.safetensors" in loaded.description
    assert torch.equal(loaded.module.lm_head.weight, model.lm_head.weight)


def test_folder_vision_defaults_to_config_image_size(tmp_path) -> None:
    config = {
        "architectures": ["ViTForImageClassification"], "model_type": "vit", "hidden_size": 32,
        "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 64,
        "image_size": 32, "patch_size": 8, "num_channels": 1,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = resolve_model(str(tmp_path), batch=2)
    assert loaded.kind == "vision" and loaded.kwargs["pixel_values"].shape == (2, 1, 32, 32)
    assert first_tensor(loaded.module(**loaded.kwargs)).is_meta


def test_folder_bad_config(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-arch"}))
    with pytest.raises(UnknownModelError, match="config.json"):
        resolve_model(str(tmp_path))
    remote = {"model_type": "mm-custom", "auto_map": {"AutoConfig": "configuration_x.XConfig"}}
    (tmp_path / "config.json").write_text(json.dumps(remote))
    with pytest.raises(UnknownModelError, match="trust-remote-code"):
        resolve_model(str(tmp_path))
    with pytest.raises(UnknownModelError, match="no config.json"):
        resolve_model(str(tmp_path / ".."))


# --- factories ------------------------------------------------------------------

FACTORY = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x, scale=1.0):
        return self.fc(x) * scale

def plain():
    return Net()

def with_tensor():
    return Net(), torch.randn(2, 8)

def with_dict():
    return Net(), {"x": torch.randn(5, 8), "scale": 2.0}

def broken():
    raise RuntimeError("no GPU here")

not_a_model = 3
"""


@pytest.fixture
def factory_dir(tmp_path, monkeypatch):
    (tmp_path / "mm_factory_mod.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path
    sys.modules.pop("mm_factory_mod", None)


def test_factory_forms(factory_dir) -> None:
    t = resolve_model("mm_factory_mod:with_tensor")
    assert t.args[0].shape == (2, 8) and t.args[0].is_meta and t.source == "factory"
    assert first_tensor(t.module(*t.args)).is_meta and not t.module.training
    d = resolve_model("mm_factory_mod:with_dict", device="cpu")
    assert d.kwargs["x"].shape == (5, 8) and d.kwargs["scale"] == 2.0
    assert d.module(*d.args, **d.kwargs).shape == (5, 4)
    given = resolve_model("mm_factory_mod:with_tensor", inputs=["3x8"], dtype="fp64")
    assert given.args[0].shape == (3, 8) and given.args[0].dtype == torch.float64
    assert resolve_model("mm_factory_mod:plain", inputs=["1x8"]).args[0].shape == (1, 8)
    with pytest.raises(UserInputError, match="--input"):
        resolve_model("mm_factory_mod:plain")


@pytest.mark.parametrize(
    "spec, match",
    [
        ("mm_no_such_module:make", "cannot import"),
        ("mm_factory_mod:missing", "no attribute"),
        ("mm_factory_mod:broken", "no GPU here"),
        ("mm_factory_mod:not_a_model", "nn.Module"),
    ],
)
def test_factory_errors(factory_dir, spec: str, match: str) -> None:
    with pytest.raises(UnknownModelError, match=match):
        resolve_model(spec)


# --- torch.export archives ---------------------------------------------------------


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.register_buffer("shift", torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x)) + self.shift


def test_pt2_archive(tmp_path) -> None:
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(_Tiny(), (torch.randn(2, 4),)), str(path))
    cpu = resolve_model(str(path), device="cpu")
    assert cpu.source == "pt2" and cpu.args[0].shape == (2, 4)
    assert cpu.module(*cpu.args).shape == (2, 3)
    meta = resolve_model(str(path))
    assert meta.args[0].is_meta and meta.module(*meta.args).is_meta
    assert resolve_model(str(path), inputs=["2x4"]).args[0].shape == (2, 4)


def test_pt2_refuses_pickled_payload_and_junk(tmp_path) -> None:
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(_Tiny(), (torch.randn(2, 4),)), str(path))
    import zipfile

    patched = tmp_path / "pickled.pt2"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(patched, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("weights_config.json"):
                data = data.replace(b'"use_pickle": false', b'"use_pickle": true')
            dst.writestr(item, data)
    with pytest.raises(UnknownModelError, match="pickled"):
        resolve_model(str(patched))
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    with pytest.raises(UnknownModelError, match="torch.export"):
        resolve_model(str(junk))
    with pytest.raises(UnknownModelError, match="no such .pt2"):
        resolve_model(str(tmp_path / "missing.pt2"))


def test_meta_build_is_quick() -> None:
    t = time.perf_counter()
    resolve_model("llama3-8b", seq=4)
    assert time.perf_counter() - t < 10
