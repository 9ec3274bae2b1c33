"""Models that fail to build or to run on meta, and inputs a model takes by name (issue 11 §4).

Run as a user runs them: `python -m modelmeter.cli.main count ...` in a child
process. torchvision and timm are not installed here, so each is replaced by a
package written into tmp_path with their documented API (`get_model_builder`,
`get_model_weights`, a Weights enum with `transforms` and `meta`; timm's
`create_model` and `pretrained_cfg`), put on the child's PYTHONPATH only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

BUILT_FALLBACK = "cpu, then meta (construction needs real values)"

# --- factories written by the tests ---------------------------------------------

FACTORIES = '''
import torch
from torch import nn


class WidthsFromTensors(nn.Module):
    """Like torchvision's RegNet: stage widths come from tensor maths and .tolist()."""

    def __init__(self):
        super().__init__()
        widths = torch.linspace(8, 32, 3).round().int().tolist()  # [8, 20, 32]
        layers, c = [], 3
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.ReLU()]
            c = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, 10)
        self.head2 = nn.Linear(c, 10)
        self.head2.weight = self.head.weight  # tied: counted once, on meta too

    def forward(self, x):
        y = self.body(x).mean(dim=(2, 3))
        return self.head(y) + self.head2(y)


def regnet_like():
    return WidthsFromTensors(), torch.randn(1, 3, 16, 16)


class Huge(nn.Module):
    def __init__(self):
        super().__init__()
        n = int(torch.tensor(10 ** 6).item())  # needs a real value, then 4 TB of weights
        self.fc = nn.Linear(n, n)

    def forward(self, x):
        return self.fc(x)


def huge():
    return Huge()


def out_of_memory_building():
    raise MemoryError("simulated: no memory for the weights")


class Nonzero(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        return y[torch.nonzero(y > 0, as_tuple=True)].sum()


def nonzero():
    return Nonzero(), torch.randn(2, 8)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        return y * 2 if y.sum() > 0 else y  # a Python if on a tensor


def branchy():
    return Branchy(), torch.randn(2, 8)


class Experts(nn.Module):
    """A mixture-of-experts matmul as transformers 5 runs it: aten._grouped_mm."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 16, 8))  # 2 experts, K=16, N=8
        self.register_buffer("offs", torch.tensor([4, 8], dtype=torch.int32))

    def forward(self, x):
        return torch._grouped_mm(x, self.w, offs=self.offs)


def experts():
    return Experts(), torch.randn(8, 16)


class OutOfMemory(nn.Module):
    def __init__(self, error):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.error = error

    def forward(self, x):
        y = self.fc(x)
        if not y.is_meta:
            raise self.error
        return y


def oom_python():
    return OutOfMemory(MemoryError()), torch.randn(2, 8)


def oom_torch():
    return OutOfMemory(torch.OutOfMemoryError("CPU out of memory (simulated)")), torch.randn(2, 8)


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x, *, shift=None):
        y = self.fc(x)
        return y if shift is None else y + shift


def scaled():
    return Scaled()
'''

# --- a stand-in torchvision with its documented model API ------------------------

WEIGHTS_API = '''
import enum
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable


class ImageClassification:
    def __init__(self, *, crop_size, resize_size=256, interpolation=None):
        self.crop_size = [crop_size]


class ObjectDetection:
    pass


@dataclass
class Weights:  # torchvision.models._api.Weights
    url: str
    transforms: Callable
    meta: dict = field(default_factory=dict)


class WeightsEnum(enum.Enum):  # torchvision.models._api.WeightsEnum: properties read the value
    @property
    def url(self):
        return self.value.url

    @property
    def transforms(self):
        return self.value.transforms

    @property
    def meta(self):
        return self.value.meta


class ViT_Tiny_Weights(WeightsEnum):  # shaped like ViT_H_14_Weights
    IMAGENET1K_SWAG_E2E_V1 = Weights(
        url="https://download.invalid/vit_tiny_swag.pth",
        transforms=partial(ImageClassification, crop_size=518, resize_size=518),
        meta={"min_size": (518, 518), "_ops": 1016.7},
    )
    IMAGENET1K_SWAG_LINEAR_V1 = Weights(
        url="https://download.invalid/vit_tiny_lc_swag.pth",
        transforms=partial(ImageClassification, crop_size=224, resize_size=224),
        meta={"min_size": (224, 224)},
    )
    DEFAULT = IMAGENET1K_SWAG_E2E_V1


class RegNet_Tiny_Weights(WeightsEnum):
    IMAGENET1K_V1 = Weights(
        url="https://download.invalid/regnet_tiny.pth",
        transforms=partial(ImageClassification, crop_size=64),
        meta={"min_size": (1, 1)},
    )
    DEFAULT = IMAGENET1K_V1


class Detector_Weights(WeightsEnum):  # detection weights publish no crop size
    COCO_V1 = Weights(url="https://download.invalid/det.pth", transforms=ObjectDetection,
                      meta={"min_size": (1, 1)})
    DEFAULT = COCO_V1
'''

TORCHVISION_MODELS = '''
import torch
from torch import nn

from ._api import Detector_Weights, RegNet_Tiny_Weights, ViT_Tiny_Weights


def _no_download(**named):
    for key, value in named.items():
        if value is not None:
            raise RuntimeError(f"would download {key}={value} (torchvision fetches it from the hub)")


class TinyViT(nn.Module):
    def __init__(self, image_size=224, patch=14, dim=8):
        super().__init__()
        self.image_size = image_size
        self.conv_proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2, dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        torch._assert(x.shape[2] == self.image_size, f"Wrong image height! Expected {self.image_size}")
        y = self.conv_proj(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(y.mean(1))


def vit_tiny(*, weights=None, progress=True, **kwargs):
    _no_download(weights=weights)
    return TinyViT(image_size=kwargs.pop("image_size", 224), **kwargs)


class TinyRegNet(nn.Module):
    def __init__(self):
        super().__init__()
        widths = torch.linspace(4, 12, 2).round().int().tolist()  # [4, 12], as RegNet does
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)
        self.stage = nn.Conv2d(widths[0], widths[1], 3, padding=1)
        self.fc = nn.Linear(widths[1], 10)

    def forward(self, x):
        return self.fc(self.stage(self.stem(x)).mean((2, 3)))


def regnet_tiny(*, weights=None, progress=True, **kwargs):
    _no_download(weights=weights)
    return TinyRegNet(**kwargs)


def seg_tiny(*, weights=None, progress=True, num_classes=None, aux_loss=None,
             weights_backbone="IMAGENET1K_V1", **kwargs):
    _no_download(weights=weights, weights_backbone=weights_backbone)
    return nn.Conv2d(3, num_classes or 21, 1)


def det_tiny(*, weights=None, progress=True, num_classes=None, weights_backbone="IMAGENET1K_V1",
             trainable_backbone_layers=None, **kwargs):
    _no_download(weights=weights, weights_backbone=weights_backbone)
    return nn.Conv2d(3, 4, 1)


BUILTIN = {"vit_tiny": vit_tiny, "regnet_tiny": regnet_tiny, "seg_tiny": seg_tiny, "det_tiny": det_tiny}
WEIGHTS = {"vit_tiny": ViT_Tiny_Weights, "regnet_tiny": RegNet_Tiny_Weights, "det_tiny": Detector_Weights}


def list_models(module=None):
    return sorted(BUILTIN)


def get_model_builder(name):
    try:
        return BUILTIN[name]
    except KeyError:
        raise ValueError(f"Unknown model {name}") from None


def get_model_weights(name):
    try:
        return WEIGHTS[name]
    except KeyError:
        raise ValueError(f"no weights for {name}") from None


def get_model(name, **config):
    return get_model_builder(name)(**config)
'''

TIMM = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        width = int(torch.tensor([6]).tolist()[0])
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.pretrained_cfg = {"input_size": (3, 96, 96)}

    def forward(self, x):
        return self.conv(x)


def is_model(name):
    return name == "net_96"


def create_model(name, pretrained=False, **kwargs):
    if pretrained:
        raise RuntimeError("would download")
    return Net()


def list_models():
    return ["net_96"]
'''


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path holding the factories (importable in-process) and the stand-in packages
    (only on a child process's path: transformers must never see a fake torchvision here)."""
    (tmp_path / "mm_meta_models.py").write_text(FACTORIES)
    vision = tmp_path / "torchvision" / "models"
    vision.mkdir(parents=True)
    (tmp_path / "torchvision" / "__init__.py").write_text("")
    (vision / "_api.py").write_text(WEIGHTS_API)
    (vision / "__init__.py").write_text(TORCHVISION_MODELS)
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "__init__.py").write_text(TIMM)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    sys.modules.pop("mm_meta_models", None)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Callable[..., Result]:
    """`modelmeter ARGS` in this process (the console entry point, exit code and all)."""
    from modelmeter.cli.main import main

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return invoke


Cli = Callable[..., Result]


def child(workdir: Path, *args: str) -> Result:
    """`modelmeter ARGS` in a child process whose path starts at workdir (the stand-ins)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(workdir), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", *args], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=300)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def report_of(result: Result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_line_error(result: Result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def module_macs(report: dict, path: str) -> int:
    return next(m["macs"] for m in report["modules"] if m["path"] == path)


# --- 1. constructors that need real values: build on cpu, trace on meta ----------

# Convs 3->8->20->32 (3x3, padding 1) on 16x16, then two 32->10 linears.
REGNET_LIKE_MACS = 16 * 16 * 9 * (3 * 8 + 8 * 20 + 20 * 32) + 2 * 32 * 10
REGNET_LIKE_PARAMS = 9 * (3 * 8 + 8 * 20 + 20 * 32) + 32 * 10 + 2 * 10


def test_constructor_reading_values_builds_on_cpu_then_traces_on_meta(cli: Cli, workdir: Path) -> None:
    report = report_of(cli("count", "mm_meta_models:regnet_like", "--json", "-"))
    assert report["model"]["build"] == BUILT_FALLBACK
    assert "built on cpu, then moved to meta" in report["model"]["description"]
    assert report["settings"]["mode"] == "meta"
    assert report["totals"]["params"] == REGNET_LIKE_PARAMS  # the tied head counted once
    assert report["totals"]["macs"] == REGNET_LIKE_MACS
    on_cpu = report_of(cli("count", "mm_meta_models:regnet_like", "--device", "cpu", "--json", "-"))
    assert on_cpu["model"]["build"] == "cpu" and on_cpu["settings"]["mode"] == "real"
    assert on_cpu["totals"]["macs"] == REGNET_LIKE_MACS


def test_fallback_build_refuses_a_model_too_big_for_memory(cli: Cli, workdir: Path) -> None:
    line = one_line_error(cli("count", "mm_meta_models:huge"))
    assert "cannot be built on the meta device" in line and "would allocate over" in line
    assert "4.00 TB" in line  # the 10^6 x 10^6 fp32 weight, refused before it is allocated


def test_out_of_memory_while_building_on_cpu_says_so(cli: Cli, workdir: Path) -> None:
    line = one_line_error(cli("count", "mm_meta_models:out_of_memory_building",
                              "--device", "cpu"))
    assert "ran out of memory" in line and "--device meta" in line


@pytest.mark.slow
def test_torchvision_constructor_reading_values_counts_on_meta(workdir: Path) -> None:
    report = report_of(child(workdir, "count", "torchvision:regnet_tiny", "--json", "-"))
    assert report["model"]["build"] == BUILT_FALLBACK
    # 64 px: the crop size its (stand-in) default weights publish.
    assert report["settings"]["inputs"] == [{"shape": [1, 3, 64, 64], "dtype": "float32"}]
    assert report["totals"]["macs"] == 64 * 64 * 9 * (3 * 4 + 4 * 12) + 12 * 10


@pytest.mark.slow
def test_timm_constructor_reading_values_counts_on_meta_at_its_input_size(workdir: Path) -> None:
    report = report_of(child(workdir, "count", "timm:net_96", "--json", "-"))
    assert report["model"]["build"] == BUILT_FALLBACK
    assert report["settings"]["inputs"][0]["shape"] == [1, 3, 96, 96]
    assert report["totals"]["macs"] == 96 * 96 * 9 * 3 * 6


def test_meta_buildable_models_say_so(cli: Cli) -> None:
    assert report_of(cli("count", "gpt2", "--seq", "8", "--json", "-"))["model"]["build"] == "meta"


REMOTE_CONFIG = '''
from transformers import PretrainedConfig


class TinyConfig(PretrainedConfig):
    model_type = "mm_tiny_values"

    def __init__(self, hidden_size=8, **kwargs):
        self.hidden_size = hidden_size
        super().__init__(**kwargs)
'''

REMOTE_MODEL = '''
import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration_tiny import TinyConfig


class TinyModel(PreTrainedModel):
    config_class = TinyConfig
    main_input_name = "input_ids"
    _supports_sdpa = True

    def __init__(self, config):
        super().__init__(config)
        depth = int(torch.arange(3).sum().item())  # 3 layers, from a tensor
        self.embed = nn.Embedding(16, config.hidden_size)
        self.layers = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size)
                                    for _ in range(depth))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None):
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x)
        return x
'''


@pytest.mark.slow
def test_transformers_remote_code_reading_values_builds_on_cpu_then_meta(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "configuration_tiny.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_tiny.py").write_text(REMOTE_MODEL)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "mm_tiny_values", "hidden_size": 8, "architectures": ["TinyModel"],
        "auto_map": {"AutoConfig": "configuration_tiny.TinyConfig",
                     "AutoModel": "modeling_tiny.TinyModel"},
    }))
    code = textwrap.dedent(f"""
        from modelmeter.sources import resolve_model
        m = resolve_model({str(folder)!r}, inputs=["1x5:int64"], trust_remote_code=True)
        print(m.build, sum(p.numel() for p in m.module.parameters()),
              all(p.is_meta for p in m.module.parameters()))
    """)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [*BUILT_FALLBACK.split(), str(16 * 8 + 3 * (8 * 8 + 8)), "True"]


# --- 2. torchvision specs never download: every weights argument is None ----------


@pytest.mark.parametrize("name", ["seg_tiny", "det_tiny"])
@pytest.mark.slow
def test_torchvision_segmentation_and_detection_build_without_backbone_weights(
    workdir: Path, name: str
) -> None:
    report = report_of(child(workdir, "count", f"torchvision:{name}", "--json", "-"))
    assert report["totals"]["params"] > 0 and report["model"]["build"] == "meta"
    # det_tiny's weights publish no crop size and a (1, 1) min_size: the 224 default.
    assert report["settings"]["inputs"][0]["shape"] == [1, 3, 224, 224]


def test_no_weights_kwargs_on_real_signatures() -> None:
    from modelmeter.sources.others import no_weights_kwargs

    def segmentation(*, weights=None, progress=True, num_classes=None, aux_loss=None,
                     weights_backbone="IMAGENET1K_V1", **kwargs):
        pass

    def legacy(pretrained=False, progress=True, pretrained_backbone=True, num_classes=91):
        pass

    def keypoint(*, weights=None, weights_backbone="x", extra_weights="y", trainable_backbone_layers=None):
        pass

    assert no_weights_kwargs(segmentation) == {"weights": None, "weights_backbone": None}
    assert no_weights_kwargs(legacy) == {"pretrained": False, "pretrained_backbone": False}
    assert no_weights_kwargs(keypoint) == {
        "weights": None, "weights_backbone": None, "extra_weights": None}


# --- 3. image size from the weights' metadata, or from --input --------------------


def _weights_api(workdir: Path):
    spec = importlib.util.spec_from_file_location("mm_fake_tv_api", workdir / "torchvision/models/_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_weights_image_size_reads_torchvision_weights_metadata(workdir: Path) -> None:
    from modelmeter.sources.others import weights_image_size

    api = _weights_api(workdir)
    assert weights_image_size(api.ViT_Tiny_Weights.DEFAULT) == 518
    assert weights_image_size(api.ViT_Tiny_Weights.IMAGENET1K_SWAG_LINEAR_V1) == 224
    assert weights_image_size(api.RegNet_Tiny_Weights.DEFAULT) == 64
    assert weights_image_size(api.Detector_Weights.DEFAULT) is None  # (1, 1), no crop
    no_crop = api.Weights(url="", transforms=api.ObjectDetection, meta={"min_size": (518, 518)})
    assert weights_image_size(no_crop) == 518  # a ViT's fixed size, from min_size
    assert weights_image_size(None) is None


@pytest.mark.slow
def test_vit_counts_at_the_published_size_and_at_the_size_given(workdir: Path) -> None:
    default = report_of(child(workdir, "count", "torchvision:vit_tiny", "--json", "-"))
    assert default["model"]["build"] == "meta"
    assert default["settings"]["inputs"][0]["shape"] == [1, 3, 518, 518]
    assert module_macs(default, "conv_proj") == (518 // 14) ** 2 * 8 * 3 * 14 * 14
    assert "518x518" in default["model"]["description"]
    given = report_of(child(workdir, "count", "torchvision:vit_tiny", "--input", "2x3x224x224",
                            "--json", "-"))
    assert given["settings"]["inputs"][0]["shape"] == [2, 3, 224, 224]
    assert module_macs(given, "conv_proj") == 2 * 16 * 16 * 8 * 3 * 14 * 14
    other = report_of(child(workdir, "count", "torchvision:vit_tiny", "--input", "1x3x336x336",
                            "--json", "-"))
    assert module_macs(other, "conv_proj") == 24 * 24 * 8 * 3 * 14 * 14


# --- 4. named inputs: Whisper's input_features --------------------------------------

D_MODEL = 16


@pytest.fixture
def whisper_dir(tmp_path: Path) -> Path:
    import transformers

    config = transformers.WhisperConfig(
        d_model=D_MODEL, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
        max_target_positions=64, architectures=["WhisperForConditionalGeneration"],
    )
    folder = tmp_path / "whisper-tiny-dims"
    config.save_pretrained(folder)
    return folder


def test_whisper_folder_takes_named_float_features(cli: Cli, whisper_dir: Path) -> None:
    report = report_of(cli("count", str(whisper_dir), "--input", "input_features=1x80x3000",
                           "--input", "decoder_input_ids=1x4:int64", "--json", "-"))
    assert report["totals"]["macs"] > 0
    assert report["settings"]["inputs"] == [
        {"name": "input_features", "shape": [1, 80, 3000], "dtype": "float32"},
        {"name": "decoder_input_ids", "shape": [1, 4], "dtype": "int64"}]
    # conv1: 80 -> d_model, k=3, pad 1 over 3000 frames; conv2: d_model -> d_model, k=3, stride 2.
    assert module_macs(report, "model.encoder.conv1") == 3000 * D_MODEL * 80 * 3
    assert module_macs(report, "model.encoder.conv2") == 1500 * D_MODEL * D_MODEL * 3
    half = report_of(cli("count", str(whisper_dir), "--input", "input_features=1x80x3000:fp16",
                         "--dtype", "fp16", "--json", "-"))
    assert half["settings"]["inputs"][0] == {"name": "input_features", "shape": [1, 80, 3000],
                                             "dtype": "float16"}
    assert module_macs(half, "model.encoder.conv1") == 3000 * D_MODEL * 80 * 3


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        (("--input", "input_feature=1x80x3000"), "no input named 'input_feature'"),
        (("--input", "input_features=1x80x3000", "--input", "input_features=1x80x3000"), "twice"),
        (("--input", "input_features=1x0x3"), "every dimension must be > 0"),
    ],
)
def test_whisper_bad_named_inputs(cli: Cli, whisper_dir: Path, inputs: tuple, needle: str) -> None:
    line = one_line_error(cli("count", str(whisper_dir), *inputs))
    assert needle in line


def test_factory_takes_positional_and_named_inputs(cli: Cli, workdir: Path) -> None:
    report = report_of(cli("count", "mm_meta_models:scaled", "--input", "3x8", "--input", "shift=3x4",
                             "--json", "-"))
    assert [i["shape"] for i in report["settings"]["inputs"]] == [[3, 8], [3, 4]]
    assert report["totals"]["macs"] == 3 * 8 * 4


# --- 5. say what failed: meta-kernel limits and memory are not "inputs do not fit" ---


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("mm_meta_models:nonzero", ("nonzero", "--device cpu")),
        ("mm_meta_models:branchy", ("reads tensor values", "--device cpu")),
    ],
)
def test_meta_kernel_limits_say_what_to_do(cli: Cli, workdir: Path, spec: str, needles: tuple) -> None:
    line = one_line_error(cli("count", spec))
    assert "cannot trace on the meta device" in line
    assert "do not fit" not in line
    for needle in needles:
        assert needle in line, line
    assert report_of(cli("count", spec, "--device", "cpu", "--json", "-"))["settings"]["mode"] == "real"


def test_grouped_mm_runs_on_meta_in_any_float_dtype(cli: Cli, workdir: Path) -> None:
    # PyTorch's meta kernel of _grouped_mm takes bf16 only; the trace runs it on bf16
    # stand-ins and casts back, so an fp32 mixture of experts counts on meta as on cpu.
    bf16 = report_of(cli("count", "mm_meta_models:experts", "--dtype", "bf16", "--json", "-"))
    fp32 = report_of(cli("count", "mm_meta_models:experts", "--json", "-"))
    real = report_of(cli("count", "mm_meta_models:experts", "--device", "cpu", "--json", "-"))
    assert bf16["settings"]["mode"] == fp32["settings"]["mode"] == "meta"
    assert bf16["totals"]["macs"] == fp32["totals"]["macs"] == real["totals"]["macs"] > 0


@pytest.mark.parametrize("spec", ["mm_meta_models:oom_python", "mm_meta_models:oom_torch"])
def test_out_of_memory_during_the_trace_says_so(cli: Cli, workdir: Path, spec: str) -> None:
    line = one_line_error(cli("count", spec, "--device", "cpu"))
    assert "ran out of memory" in line and "--device meta" in line
    assert "do not fit" not in line
    assert report_of(cli("count", spec, "--json", "-"))["totals"]["macs"] == 2 * 8 * 8  # fine on meta
