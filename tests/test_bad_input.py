"""Every bad-input case, through the CLI: one line on stderr, exit 2, no traceback, nothing lost.

`CASES` is the table: each row is the arguments of one `modelmeter` call (with
`{tmp}` for the test's folder), the files it needs (`setup`), a fragment the
one line must hold, and what must not happen: files in `keep` stay
byte-identical (a store, a weights file), `before_work` rows are refused before
any work (nothing on stdout), and no temp file is left behind. Rows run in this
process (`main(argv)`, fast); `isolated` rows run in a child process under an
address-space limit, so a build that was never refused cannot take the machine.

Below the table: the cases where bad input must *not* fail the whole command
(an unreadable row in the history, a read-only store), the export escaping,
the atomic writer, and the SDPA fallback for custom code.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modelmeter.cli.main import main
from modelmeter.store import RunStore

BIG = "1" + "0" * 30  # 10**30: past int64, which torch unpacks sizes into

# ------------------------------------------------------------------ model files the rows use

TINY = """
import torch

def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)), (torch.randn(1, 8),)
"""

BADNET = """
import torch

def build():
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    return net, torch.randn(1, 8)
"""

FROZEN = """
import torch

def build():
    net = torch.nn.Linear(4, 2)
    net.requires_grad_(False)
    return net, torch.randn(2, 4)
"""

# A forward that asks for more memory than any machine has: Python raises MemoryError at once.
MEMORY_HOG = """
import torch

class Hog(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        bytearray(1 << 62)
        return self.fc(x)

def build():
    return Hog(), torch.randn(1, 4)
"""

TINY_LLAMA_CONFIG = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 128,
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 256,
}
# The same architecture as custom code (trust_remote_code) that refuses SDPA, as
# transformers does for a class with `_supports_sdpa = False`.
CUSTOM_CONFIG = """
from transformers import LlamaConfig

class MmTinyConfig(LlamaConfig):
    model_type = "mmtiny"
"""
CUSTOM_MODELING = """
from transformers import LlamaForCausalLM

from .configuration_mmtiny import MmTinyConfig

class MmTinyForCausalLM(LlamaForCausalLM):
    config_class = MmTinyConfig
    _supports_sdpa = False
    _supports_flash_attn = False
    _supports_flex_attn = False
"""


def _factory(name: str, source: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / f"{name}.py").write_text(source)
    return setup


def _corrupt_weights(tmp: Path) -> None:
    folder = tmp / "corrupt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    # A header that promises more tensor bytes than the file holds: a truncated download.
    header = json.dumps({"model.embed_tokens.weight": {
        "dtype": "F32", "shape": [128, 32], "data_offsets": [0, 16384]}}).encode()
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(100))


def _custom_code(tmp: Path) -> None:
    folder = tmp / "custom"
    folder.mkdir()
    (folder / "configuration_mmtiny.py").write_text(CUSTOM_CONFIG)
    (folder / "modeling_mmtiny.py").write_text(CUSTOM_MODELING)
    config = {**TINY_LLAMA_CONFIG, "model_type": "mmtiny", "architectures": ["MmTinyForCausalLM"],
              "auto_map": {"AutoConfig": "configuration_mmtiny.MmTinyConfig",
                           "AutoModelForCausalLM": "modeling_mmtiny.MmTinyForCausalLM"}}
    (folder / "config.json").write_text(json.dumps(config))


def _config(name: str, **sizes: object) -> Callable[[Path], None]:
    """A folder holding a tiny llama config.json with `sizes` written over it."""
    def setup(tmp: Path) -> None:
        (tmp / name).mkdir()
        (tmp / name / "config.json").write_text(json.dumps({**TINY_LLAMA_CONFIG, **sizes}))
    return setup


def onnx_matmul(path: Path, extra_dims: list[int], input_dims: list[int] | None = None) -> None:
    """x[1, 4] @ w[4, 2], and a weight `extra` fed to an Identity, whose dims are written as
    given (no data): what a damaged or hand-edited file holds."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(torch.ones(4, 2).numpy(), "w")
    extra = TensorProto(name="extra", data_type=TensorProto.FLOAT, dims=extra_dims)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Identity", ["extra"], ["e"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_dims or [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("e", TensorProto.FLOAT, None)], [weight, extra])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _onnx(weight_dims: list[int], input_dims: list[int] | None = None) -> Callable[[Path], None]:
    return lambda tmp: onnx_matmul(tmp / "m.onnx", weight_dims, input_dims)


def export_double(path: Path) -> None:
    """A genuine archive with a symbolic batch: `x * 2` exported with a dynamic dim 0."""
    import torch

    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    program = torch.export.export(Double(), (torch.randn(4, 3),),
                                  dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, str(path))


def rewrite_member(src: Path, dst: Path, suffix: str, edit: Callable[[bytes], bytes]) -> None:
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(suffix):
                data = edit(data)
                info.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(info, data)


def _pt2_symbolic(prefix: str) -> Callable[[Path], None]:
    """The genuine archive with `prefix` put before each symbolic size (an edited file)."""
    def setup(tmp: Path) -> None:
        export_double(tmp / "genuine.pt2")
        rewrite_member(tmp / "genuine.pt2", tmp / "m.pt2", "models/model.json",
                       lambda data: data.replace(b'"expr_str": "Symbol(', f'"expr_str": "{prefix}Symbol('.encode()))
    return setup


def _pt2_bomb(tmp: Path) -> None:
    # Valid JSON that inflates 1000x: 64 MiB of spaces after the graph, deflated to about 64 KiB.
    export_double(tmp / "genuine.pt2")
    rewrite_member(tmp / "genuine.pt2", tmp / "m.pt2", "models/model.json",
                   lambda data: data + b" " * (64 << 20))


def _report_doc(name: str = "resnet18", macs: int = 1_000) -> dict:
    return {"schema": "modelmeter.report/1", "model": {"name": name}, "settings": {},
            "totals": {"params": 10, "macs": macs, "flops": 2 * macs}, "modules": [],
            "uncounted_ops": [], "padding": "x" * 3000}  # several pages per store


def _store(tmp: Path, runs: int = 3) -> list[str]:
    with RunStore(tmp / "runs.sqlite") as store:
        return [store.save(_report_doc(macs=1000 + i)) for i in range(runs)]


def _damaged_store(tmp: Path) -> None:
    _store(tmp, runs=6)
    db = tmp / "runs.sqlite"
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page * 2: page * 3] = b"\xa5" * page  # garbage over the third page; the header stays valid
    db.write_bytes(bytes(data))


def _newer_store(tmp: Path) -> None:
    _store(tmp, runs=1)
    conn = sqlite3.connect(tmp / "runs.sqlite")
    conn.execute("PRAGMA user_version = 99")
    conn.close()


def _foreign_db(tmp: Path) -> None:
    conn = sqlite3.connect(tmp / "runs.sqlite")
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.commit()
    conn.close()


def _not_sqlite(tmp: Path) -> None:
    (tmp / "runs.sqlite").write_text("these are my notes, not a database\n")


def _paths(tmp: Path) -> None:
    (tmp / "afile").write_text("a regular file, so afile/x cannot be created\n")
    (tmp / "adir").mkdir()


def _reports(tmp: Path) -> None:
    (tmp / "a.json").write_text(json.dumps(_report_doc()))
    (tmp / "bad.json").write_text("{truncated")
    (tmp / "other.json").write_text(json.dumps({"name": "package", "version": "1.0"}))


def _all(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for s in setups:
            s(tmp)
    return setup


_tiny = _factory("mm_bad_tiny", TINY)


def _torchvision_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None


def _cuda_present() -> bool:
    import torch

    return torch.cuda.is_available()



# ------------------------------------------------------------------ crafted calibration profiles

def _profile_text(**overrides: str) -> str:
    """A 'local' profile as `hardware calibrate` writes it, with raw JSON text for some fields.

    The plausible figures of a small CPU (50 GFLOP/s fp32 matmul, 5 GFLOP/s elementwise,
    10 GB/s): valid on any machine the tests run on. An override is the field's JSON text
    as a file on disk would hold it ('1e999', 'NaN', '-8e9'), which json.dumps cannot write.
    """
    hw = {"id": "local", "name": "crafted CPU (1 thread)", "vendor": "Intel", "kind": "cpu",
          "memory_bytes": "@memory_bytes@", "memory_bandwidth_bytes_per_s": "@bandwidth@",
          "peak_flops": {"fp32": "@peak@"}, "vector_flops": {"fp32": "@vector@"}, "tdp_w": None,
          "year": None, "source": "calibrated", "sources": {"calibration": "crafted in a test"}, "notes": []}
    text = json.dumps({"schema": "modelmeter.hardware-profile/1", "hardware": hw, "calibration": None}, indent=1)
    values = {"memory_bytes": str(8 * 2**30), "bandwidth": "10e9", "peak": "50e9", "vector": "5e9", **overrides}
    for key, raw in values.items():
        text = text.replace(f'"@{key}@"', raw)
    return text


def _local_profile(**overrides: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        folder = tmp / "home" / "hardware"
        folder.mkdir(parents=True)
        (folder / "local.json").write_text(_profile_text(**overrides))
    return setup


def _cached_profile(**overrides: str) -> Callable[[Path], None]:
    """The per-thread-count cache the automatic calibration reads, for every thread count a run may pick."""
    def setup(tmp: Path) -> None:
        import torch

        from modelmeter.hardware.detect import cpu_name, read_cpu_info
        from modelmeter.hardware.local import CACHE_SCHEMA, cache_key
        from modelmeter.hardware.perfmodel import Peaks, fit

        folder = tmp / "home" / "hardware" / "profiles"
        folder.mkdir(parents=True)
        model = fit([], Peaks(50e9, 5e9, 10e9), view_s=1e-6, module_call_s=2e-6).to_dict()
        hw = json.loads(_profile_text())["hardware"]
        for threads in range(1, max(read_cpu_info().physical_cores, torch.get_num_threads(), os.cpu_count() or 1) + 1):
            key = cache_key(cpu_name(), threads, torch.__version__)
            text = json.dumps({"schema": CACHE_SCHEMA, "key": key, "hardware": hw, "model": model,
                               "calibration": None}, indent=1)
            for field, raw in overrides.items():
                text = text.replace(f'"{field}": {{\n   "fp32": 5000000000.0', f'"{field}": {{\n   "fp32": {raw}')
            assert raw in text
            (folder / f"{key}.json").write_text(text)
    return setup


# ------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    needle: str  # must be in the one line
    setup: Callable[[Path], None] | None = None
    keep: tuple[str, ...] = ()  # files (under {tmp}) that must stay byte-identical
    before_work: bool = False  # refused before any work: nothing on stdout
    absent: str | None = None  # must not be in the line
    isolated: bool = False  # child process under an address-space limit
    skip: Callable[[], bool] | None = None
    code: int = 2  # 0: the command goes on, and the one line is a warning
    set_aside: str | None = None  # a file (under {tmp}) renamed beside itself, bytes kept, never deleted
    timeout_s: float | None = None  # a hang before its fix: fail after this long, not hang the suite


def case(id: str, *args: str, needle: str, **kw) -> Case:
    return Case(id, args, needle, **kw)


HW = ("--hardware", "h100-sxm")
CASES = [
    # --- model specs, precisions, shapes (from test_cli_count, test_sources)
    case("unknown-model", "count", "resnet5", needle="resnet50"),
    case("unknown-precision", "count", "gpt2", "--dtype", "fp7", needle="unknown precision"),
    case("wrong-channels", "count", "resnet50", "--input", "1x4x224x224", needle="channel"),
    case("batch-zero", "count", "gpt2", "--batch", "0", needle="batch"),
    case("input-junk", "count", "--input", "1xx3", needle="bad --input"),
    case("input-zero-dim", "count", "--input", "1x0x3", needle="> 0"),
    case("input-bad-dtype", "count", "--input", "1x3:nope", needle="bad dtype"),
    case("missing-torchvision", "count", "torchvision:resnet18", needle="torchvision",
         skip=_torchvision_installed),
    case("missing-package", "count", "nosuchpkg.models:build", needle="nosuchpkg"),
    case("shape-mismatch-names-layer", "count", "mm_bad_net:build", needle="do not fit",
         setup=_factory("mm_bad_net", BADNET)),
    case("too-many-inputs", "count", "resnet50", "--input", "1x3x224x224", "--input", "1x3x224x224",
         needle="takes at most 1 unnamed --input"),
    case("bad-device", "count", "gpt2", "--device", "tpu", needle="--device"),
    case("bad-depth", "count", "gpt2", "--depth", "-1", needle="--depth"),
    # --- an empty model spec is its own line, on every command that takes a model, before any other check
    *[case(f"empty-spec-{cmd}", cmd, spec, *extra, needle="empty model spec", absent="has no config.json", before_work=True)
      for cmd, extra in (("count", ()), ("memory", ()), ("roofline", ()), ("bench", ()), ("report", ()),
                         ("llm", ()), ("plan", ("--hardware", "h100-sxm")), ("compare", ("gpt2",)))
      for spec in ("", "  ")],
    # --- integer overflow: a sane upper bound, named
    case("input-overflow", "count", "--input", "99999999999999999999x3", needle="at most 2147483647"),
    case("batch-overflow", "count", "--batch", BIG, needle="at most 2147483647"),
    case("seq-overflow", "count", "gpt2", "--seq", BIG, needle="at most 2147483647"),
    case("seq-overflow-rotary", "count", "tinyllama", "--seq", BIG, needle="at most 2147483647"),
    case("elements-overflow", "count", "tinyllama", "--batch", "2000000000", "--seq", "2000000000",
         needle="elements"),
    case("memory-batch-overflow", "memory", "gpt2", "--batch", BIG, needle="at most"),
    case("roofline-batch-overflow", "roofline", "gpt2", *HW, "--batch", BIG, needle="at most"),
    case("report-batch-overflow", "report", "gpt2", "--no-measure", "--batch", BIG, needle="at most"),
    case("compare-batch-overflow", "compare", "gpt2", "--batch", f"1,{BIG}", needle="at most"),
    case("bench-batch-overflow", "bench", "mm_bad_tiny:build", "--batch", f"1,{BIG}", needle="at most",
         setup=_tiny, before_work=True),
    case("bench-seq-overflow", "bench", "mm_bad_tiny:build", "--seq", BIG, needle="at most",
         setup=_tiny, before_work=True),
    case("llm-prompt-overflow", "llm", "tinyllama", *HW, "--prompt", BIG, needle="at most"),
    case("llm-batch-overflow", "llm", "gpt2", *HW, "--batch", BIG, needle="at most"),
    # --- memory
    case("memory-seq-zero", "memory", "gpt2", "--seq", "0", needle="seq"),
    case("memory-batch-negative", "memory", "gpt2", "--batch", "-2", needle="batch"),
    case("memory-bad-optimizer", "memory", "gpt2", "--train", "--optimizer", "lion", needle="lion"),
    case("memory-frozen-train", "memory", "mm_bad_frozen:build", "--train", needle="no trainable parameters",
         setup=_factory("mm_bad_frozen", FROZEN)),
    case("out-of-memory-in-forward", "count", "mm_bad_hog:build", needle="out of memory",
         setup=_factory("mm_bad_hog", MEMORY_HOG)),
    case("cpu-build-too-big-count", "count", "llama3-8b", "--device", "cpu", "--seq", "8",
         needle="--device meta", isolated=True),
    case("cpu-build-too-big-memory", "memory", "llama3-8b", "--device", "cpu", "--seq", "8",
         needle="--device meta", isolated=True),
    case("cpu-build-too-big-bench", "bench", "llama3-8b", "--seq", "8", needle="roofline",
         isolated=True),
    case("cpu-build-too-big-report", "report", "llama3-8b", "--seq", "8", "--measure", *HW,
         needle="--measure", isolated=True),
    # --- model files
    case("corrupt-safetensors", "count", "{tmp}/corrupt", "--device", "cpu", needle="cannot load the weights",
         setup=_corrupt_weights, keep=("corrupt/model.safetensors",)),
    case("corrupt-safetensors-bench", "bench", "{tmp}/corrupt", "--seq", "8", needle="cannot load the weights",
         absent="--device meta", setup=_corrupt_weights, keep=("corrupt/model.safetensors",)),
    case("custom-code-hint-only-where-the-flag-exists", "count", "{tmp}/custom", needle="custom code",
         absent="--trust-remote-code", setup=_custom_code),
    case("custom-code-hint-names-the-flag-on-llm", "llm", "{tmp}/custom", *HW, needle="--trust-remote-code",
         setup=_custom_code),
    # --- hostile sizes in a config.json: refused before the build
    case("config-hidden-1e12", "count", "{tmp}/c", needle=f"hidden_size {10**12} is too large",
         setup=_config("c", hidden_size=10**12)),
    case("config-hidden-a-float", "count", "{tmp}/c", needle="expected int, got float",
         setup=_config("c", hidden_size=1e12)),
    case("config-vocab-2**62", "count", "{tmp}/c", needle=f"vocab_size {2**62} is too large",
         setup=_config("c", vocab_size=2**62)),
    case("config-width-negative", "count", "{tmp}/c", needle="intermediate_size must be positive",
         setup=_config("c", intermediate_size=-64)),
    case("config-layers-1e5", "count", "{tmp}/c", needle="100,000 layers", timeout_s=30,
         setup=_config("c", num_hidden_layers=10**5)),
    case("config-layers-1e9", "memory", "{tmp}/c", needle="at most 200,000 are traced", timeout_s=30,
         setup=_config("c", num_hidden_layers=10**9)),
    case("config-params-past-the-limit", "count", "{tmp}/c", needle="at most 1e+14",
         setup=_config("c", hidden_size=2**20, intermediate_size=2**21, num_attention_heads=2**10,
                       num_key_value_heads=2**10, num_hidden_layers=100)),
    case("config-rope-type", "count", "{tmp}/c", needle="unknown rope type '<script>'",
         setup=_config("c", rope_scaling={"rope_type": "<script>", "factor": 2.0})),
    # --- ONNX dims: negative or absurd is a damaged file, never a count
    case("onnx-initialiser-negative", "count", "{tmp}/m.onnx", needle=f"dimension {-2**62}",
         setup=_onnx([4, -2**62])),
    case("onnx-initialiser-absurd", "count", "{tmp}/m.onnx", needle=f"dimension {2**40} is too large",
         setup=_onnx([2**40, 2**40])),
    case("onnx-initialisers-past-the-limit", "count", "{tmp}/m.onnx", needle="at most 1e+14",
         setup=_onnx([4, 2**31 - 1, 2**31 - 1])),
    case("onnx-input-negative", "count", "{tmp}/m.onnx", needle="negative dimension (-7)",
         setup=_onnx([2], [-7, 4])),
    case("onnx-input-absurd", "count", "{tmp}/m.onnx", needle="at most 2147483647",
         setup=_onnx([2], [2**40, 4])),
    # --- archive sizes: what a .pt2 member may inflate to, and its symbolic sizes' magnitude
    case("pt2-zip-bomb", "count", "{tmp}/m.pt2", needle="inflates", setup=_pt2_bomb,
         keep=("m.pt2",)),
    case("pt2-symbolic-power-hangs", "count", "{tmp}/m.pt2", needle="exceed 2**256",
         setup=_pt2_symbolic("9**9**9**9+"), isolated=True, timeout_s=60),
    case("pt2-symbolic-constant-too-large", "count", "{tmp}/m.pt2", needle="exceed 2**256",
         setup=_pt2_symbolic("9**9**2+")),
    case("pt2-symbolic-shift", "count", "{tmp}/m.pt2", needle="exceed 2**256",
         setup=_pt2_symbolic("LShift(1, 10**12)+")),
    # --- roofline (test_roofline)
    case("unknown-hardware", "roofline", "gpt2", "--seq", "8", "--hardware", "h100-nope",
         needle="unknown hardware"),
    case("precision-without-peak", "roofline", "gpt2", "--seq", "8", *HW, "--dtype", "int4",
         needle="no matmul peak for int4"),
    case("no-hardware-no-profile", "roofline", "gpt2", "--seq", "8", needle="calibrate"),
    case("bad-efficiency", "roofline", "gpt2", "--seq", "8", *HW, "--efficiency", "fast",
         needle="--efficiency"),
    # --- bench (test_bench)
    case("bench-cuda-absent", "bench", "mm_bad_tiny:build", "--device", "cuda", needle="cuda",
         setup=_tiny, skip=_cuda_present),
    case("bench-device-xpu", "bench", "mm_bad_tiny:build", "--device", "xpu", needle="unknown device", setup=_tiny),
    case("bench-device-junk", "bench", "mm_bad_tiny:build", "--device", "banana", needle="unknown device",
         setup=_tiny),
    case("bench-batch-junk", "bench", "mm_bad_tiny:build", "--batch", "1,x", needle="not an integer", setup=_tiny),
    case("bench-batch-zero", "bench", "mm_bad_tiny:build", "--batch", "0", needle="positive", setup=_tiny),
    case("bench-min-time-zero", "bench", "mm_bad_tiny:build", "--min-time", "0", needle="--min-time", setup=_tiny),
    case("bench-unknown-region", "bench", "mm_bad_tiny:build", "--region", "atlantis",
         needle="unknown carbon region", setup=_tiny),
    case("bench-unknown-malloc", "bench", "mm_bad_tiny:build", "--malloc", "jemalloc", needle="--malloc",
         setup=_tiny),
    # --- llm (test_llm)
    case("llm-not-a-decoder", "llm", "bert-base", *HW, needle="not a decoder"),
    case("llm-batch-zero", "llm", "gpt2", *HW, "--gen", "4", "--batch", "1,0", needle="bad batch size"),
    case("llm-prompt-zero", "llm", "gpt2", *HW, "--gen", "4", "--prompt", "0", needle="--prompt"),
    case("llm-past-positions", "llm", "gpt2", *HW, "--prompt", "1000", "--gen", "100",
         needle="learned positions"),
    case("llm-int4-activations", "llm", "gpt2", *HW, "--gen", "4", "--dtype", "int4", needle="--weights"),
    # --- report, compare, hardware
    case("report-unknown-hardware", "report", "mobilenet-v2", "--hardware", "no-such-chip",
         needle="unknown hardware"),
    case("compare-bad-batch-list", "compare", "gpt2", "--batch", "1,x", needle="--batch"),
    case("hardware-show-unknown", "hardware", "show", "nope", needle="unknown hardware 'nope'"),
    # --- calibration profiles: an invalid one is named, set aside (renamed, kept) and never used
    case("profile-memory-overflow-list", "hardware", "list", needle="memory_bytes = inf", code=0,
         setup=_local_profile(memory_bytes="1e999"), set_aside="home/hardware/local.json"),
    case("profile-memory-overflow-show", "hardware", "show", "local", needle="memory_bytes = inf",
         setup=_local_profile(memory_bytes="1e999"), set_aside="home/hardware/local.json"),
    case("profile-nan-bandwidth-roofline", "roofline", "gpt2", "--seq", "8", "--hardware", "local",
         needle="memory_bandwidth_bytes_per_s = nan", setup=_local_profile(bandwidth="NaN"),
         set_aside="home/hardware/local.json"),
    case("profile-zero-peak-show", "hardware", "show", "local", needle="peak_flops.fp32 = 0",
         setup=_local_profile(peak="0"), set_aside="home/hardware/local.json"),
    case("profile-negative-peak-roofline", "roofline", "gpt2", "--seq", "8", "--hardware", "local",
         needle="peak_flops.fp32 = -8.18e+09", setup=_local_profile(peak="-8178368512"),
         set_aside="home/hardware/local.json"),
    case("profile-negative-vector-llm", "llm", "gpt2", "--hardware", "local", "--prompt", "8", "--gen", "2",
         needle="vector_flops.fp32 = -5e+09", setup=_local_profile(vector="-5e9"),
         set_aside="home/hardware/local.json"),
    case("profile-nan-vector-llm", "llm", "gpt2", "--hardware", "local", "--prompt", "8", "--gen", "2",
         needle="vector_flops.fp32 = nan", setup=_local_profile(vector="NaN"), set_aside="home/hardware/local.json"),
    case("profile-text-rate", "hardware", "show", "local", needle="peak_flops.fp32 = 'fast'",
         setup=_local_profile(peak='"fast"'), set_aside="home/hardware/local.json"),
    # The busy-machine calibration: 16.5 MFLOP/s elementwise beside a 50 GFLOP/s matmul.
    case("profile-starved-vector-roofline", "roofline", "resnet50", "--hardware", "local",
         needle="vector_flops.fp32 = 1.65e+07", setup=_local_profile(vector="16.5e6"),
         set_aside="home/hardware/local.json"),
    case("profile-starved-vector-default", "roofline", "gpt2", "--seq", "8", needle="vector_flops.fp32 = 1.65e+07",
         setup=_local_profile(vector="16.5e6"), set_aside="home/hardware/local.json"),
    case("profile-starved-cache-report", "report", "gpt2", "--seq", "8", "--no-measure",
         needle="vector_flops.fp32 = 1.65e+07", code=0, setup=_cached_profile(vector_flops="16.5e6")),
    # --- output paths: refused before the work, on every command that writes one
    case("count-json-no-folder", "count", "gpt2", "--json", "{tmp}/nodir/o.json", needle="does not exist",
         before_work=True),
    case("count-json-under-a-file", "count", "gpt2", "--json", "{tmp}/afile/o.json", needle="not a folder",
         setup=_paths, before_work=True, keep=("afile",)),
    case("count-json-is-a-folder", "count", "gpt2", "--json", "{tmp}/adir", needle="it is a folder",
         setup=_paths, before_work=True),
    case("memory-json", "memory", "gpt2", "--json", "{tmp}/nodir/o.json", needle="cannot write",
         before_work=True),
    case("roofline-json", "roofline", "gpt2", *HW, "--json", "{tmp}/nodir/o.json", needle="cannot write",
         before_work=True),
    case("roofline-plot-suffix", "roofline", "gpt2", *HW, "--plot", "{tmp}/p.txt", needle="cannot write plot",
         before_work=True),
    case("roofline-plot-no-folder", "roofline", "gpt2", "--seq", "8", *HW, "--plot", "/nonexistent-dir/x.png",
         needle="cannot write plot", before_work=True),
    case("report-json", "report", "gpt2", "--no-measure", "--json", "{tmp}/nodir/r.json",
         needle="cannot write", before_work=True),
    case("report-csv", "report", "gpt2", "--no-measure", "--csv", "{tmp}/afile/r.csv", needle="cannot write",
         setup=_paths, before_work=True),
    case("report-md", "report", "gpt2", "--no-measure", "--md", "{tmp}/adir", needle="cannot write",
         setup=_paths, before_work=True),
    case("report-html", "report", "gpt2", "--no-measure", "--html", "{tmp}/nodir/r.html",
         needle="cannot write", before_work=True),
    case("report-same-file-twice", "report", "gpt2", "--no-measure", "--json", "{tmp}/r.out",
         "--md", "{tmp}/r.out", needle="same file", before_work=True),
    case("compare-json", "compare", "gpt2", "--json", "{tmp}/nodir/c.json", needle="cannot write",
         before_work=True),
    case("compare-md", "compare", "gpt2", "--md", "{tmp}/nodir/c.md", needle="cannot write",
         before_work=True),
    case("bench-json", "bench", "mm_bad_tiny:build", "--min-time", "0.2", "--json", "{tmp}/nodir/b.json",
         needle="cannot write", setup=_tiny, before_work=True),
    case("bench-json-is-a-folder", "bench", "mm_bad_tiny:build", "--min-time", "0.2", "--json", "{tmp}/adir",
         needle="it is a folder", setup=_all(_tiny, _paths), before_work=True),
    case("llm-json", "llm", "gpt2", *HW, "--gen", "4", "--json", "{tmp}/nodir/l.json", needle="cannot write",
         before_work=True),
    case("llm-plot-no-folder", "llm", "gpt2", *HW, "--gen", "4", "--plot", "/no/such/dir/p.png",
         needle="cannot write plot", before_work=True),
    case("calibrate-json", "hardware", "calibrate", "--quick", "--no-save", "--json", "{tmp}/nodir/c.json",
         needle="cannot write", before_work=True),
    # --- run store: refused untouched (test_store, test_diff)
    case("save-into-damaged-store", "report", "gpt2", "--no-measure", "--save", "--db", "{tmp}/runs.sqlite",
         needle="damaged", setup=_damaged_store, keep=("runs.sqlite",), before_work=True),
    case("save-into-newer-store", "report", "gpt2", "--no-measure", "--save", "--db", "{tmp}/runs.sqlite",
         needle="newer modelmeter", setup=_newer_store, keep=("runs.sqlite",), before_work=True),
    case("save-into-foreign-db", "report", "gpt2", "--no-measure", "--save", "--db", "{tmp}/runs.sqlite",
         needle="not a modelmeter run store", setup=_foreign_db, keep=("runs.sqlite",), before_work=True),
    case("save-into-non-sqlite", "report", "gpt2", "--no-measure", "--save", "--db", "{tmp}/runs.sqlite",
         needle="not an SQLite file", setup=_not_sqlite, keep=("runs.sqlite",), before_work=True),
    case("history-non-sqlite", "history", "--db", "{tmp}/runs.sqlite", needle="not an SQLite file",
         setup=_not_sqlite, keep=("runs.sqlite",)),
    case("history-newer-store", "history", "--db", "{tmp}/runs.sqlite", needle="newer modelmeter",
         setup=_newer_store, keep=("runs.sqlite",)),
    case("history-folder", "history", "--db", "{tmp}", needle="is a directory"),
    case("history-limit-zero", "history", "--limit", "0", needle="--limit"),
    case("diff-unknown-run", "diff", "deadbeef", "deadbeef", needle="no run 'deadbeef'"),
    case("diff-not-a-run", "diff", "not-a-run", "x", needle="neither a report file nor a stored run id"),
    case("diff-unknown-metric", "diff", "{tmp}/a.json", "{tmp}/a.json", "--fail-on", "latency>5%",
         needle="unknown metric", setup=_reports),
    case("diff-bad-gate", "diff", "{tmp}/a.json", "{tmp}/a.json", "--fail-on", "flops>>5",
         needle="cannot read gate", setup=_reports),
    case("diff-bad-json", "diff", "{tmp}/bad.json", "{tmp}/a.json", needle="not valid JSON", setup=_reports),
    case("diff-not-a-report", "diff", "{tmp}/other.json", "{tmp}/a.json", needle="not a modelmeter report",
         setup=_reports),
]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(tmp: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")
                  if p.name.endswith((".tmp", ".probe")) and "hf" not in p.parts)


def _env(tmp: Path) -> dict[str, str]:
    # Own data dir (no calibrated profile, an empty default store) and HF module cache.
    return {"MODELMETER_HOME": str(tmp / "home"), "HF_HOME": str(tmp / "hf"), "COLUMNS": "200",
            "MODELMETER_DEBUG": ""}


def run_in_process(args: list[str], tmp: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    for key, value in _env(tmp).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp)  # `module:factory` specs import from the working directory
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


# Far below what llama3-8b's fp32 weights need (32 GB): a build that was not
# refused fails on this limit instead of taking the machine's memory.
ISOLATED_ADDRESS_SPACE = 8 * 2**30


def run_isolated(args: list[str], tmp: Path, timeout_s: float | None = None) -> tuple[int, str, str]:
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ISOLATED_ADDRESS_SPACE, ISOLATED_ADDRESS_SPACE))

    env = {**os.environ, **_env(tmp)}
    try:
        proc = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", *args], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=timeout_s or 300, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"modelmeter {' '.join(args)} still ran after {timeout_s} s: a hang, not a refusal")
    return proc.returncode, proc.stdout, proc.stderr


class _Hung(BaseException):
    """Raised by the alarm in a row that hangs: a BaseException, so no handler in the CLI takes it."""


def run_with_deadline(run: Callable[[], tuple[int, str, str]], timeout_s: float | None,
                      what: str) -> tuple[int, str, str]:
    """`run()`, failed (not waited for) past `timeout_s` seconds: a hang in Python code."""
    import signal

    if timeout_s is None:
        return run()

    def hung(signum: int, frame: object) -> None:
        raise _Hung

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return run()
    except _Hung:
        pytest.fail(f"{what} still ran after {timeout_s} s: a hang, not a refusal")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# The cases run in a child process under a memory limit are the slow ones (a fresh interpreter each).
@pytest.mark.parametrize("row", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.isolated else [])
                                 for c in CASES])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(row: Case, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    if row.skip is not None and row.skip():
        pytest.skip(f"{row.id}: not bad input on this machine")
    if row.setup is not None:
        row.setup(tmp_path)
    before = {name: _digest(tmp_path / name) for name in row.keep}
    profile = _digest(tmp_path / row.set_aside) if row.set_aside is not None else None
    args = [a.replace("{tmp}", str(tmp_path)) for a in row.args]
    if row.isolated:
        code, out, err = run_isolated(args, tmp_path, row.timeout_s)
    else:
        code, out, err = run_with_deadline(lambda: run_in_process(args, tmp_path, monkeypatch, capsys),
                                           row.timeout_s, f"modelmeter {' '.join(args)}")

    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert code == row.code, (code, out[-2000:], err[-2000:])
    kind = "error" if row.code == 2 else "warning"
    assert len(lines) == 1 and lines[0].startswith(f"modelmeter: {kind}: "), err
    assert row.needle in lines[0], lines[0]
    if row.absent is not None:
        assert row.absent not in lines[0], lines[0]
    if row.before_work:
        assert out.strip() == "", f"work was done before the refusal:\n{out[-2000:]}"
    for name, digest in before.items():
        assert _digest(tmp_path / name) == digest, f"{name} was changed"
    assert _leftovers(tmp_path) == []
    if row.set_aside is not None:
        original = tmp_path / row.set_aside
        kept = sorted(original.parent.glob(f"{original.name}.invalid-*"))
        assert not original.exists() and len(kept) == 1, sorted(original.parent.iterdir())
        assert kept[0].name in lines[0], lines[0]  # the line says where it went
        assert _digest(kept[0]) == profile  # renamed as it was: the user can look at it


# ------------------------------------------------------------------ hostile sizes, drawn

# Sizes a config or an ONNX file may hold: small and real, with some replaced by ones no model has.
BAD_SIZES = st.sampled_from([-8, 0, 2**31, 10**12, 2**62, 10**30])
REAL_CONFIG = st.fixed_dictionaries({
    "hidden_size": st.sampled_from([8, 16, 32]), "intermediate_size": st.sampled_from([4, 64]),
    "vocab_size": st.sampled_from([2, 100]), "num_hidden_layers": st.integers(1, 3)})
BAD_CONFIG = st.one_of(
    st.dictionaries(st.sampled_from(["hidden_size", "intermediate_size", "vocab_size", "num_hidden_layers"]),
                    BAD_SIZES, max_size=2),
    st.sampled_from([{"num_hidden_layers": 10**5}, {"num_hidden_layers": 10**9}]))


def _llama_params(hidden: int, inter: int, vocab: int, layers: int) -> int:
    """TINY_LLAMA_CONFIG's closed form: 4 heads, 2 KV heads, untied head."""
    kv = hidden // 4 * 2
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter + 2 * hidden
    return 2 * vocab * hidden + layers * per_layer + hidden


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(real=REAL_CONFIG, bad=BAD_CONFIG)
@example(real={"hidden_size": 16, "intermediate_size": 64, "vocab_size": 100, "num_hidden_layers": 2}, bad={})
def test_any_config_size_is_counted_exactly_or_refused_in_one_line(
        real: dict[str, int], bad: dict[str, int], tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    tmp = tmp_path_factory.mktemp("cfg")
    sizes = {**real, **bad}
    _config("c", **sizes)(tmp)
    code, out, err = run_with_deadline(
        lambda: run_in_process(["count", str(tmp / "c"), "--seq", "4", "--json", "-"], tmp, monkeypatch, capsys),
        30, f"count of {sizes}")
    if not bad:
        assert code == 0, err
        assert json.loads(out)["totals"]["params"] == _llama_params(
            sizes["hidden_size"], sizes["intermediate_size"], sizes["vocab_size"], sizes["num_hidden_layers"])
        return
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    # The line names the field, or the total it breaks (parameters, or the trace's layers).
    assert any(k in lines[0] for k in bad) or "at most 1e+14" in lines[0] or (
        "num_hidden_layers" in bad and "layers" in lines[0]), lines[0]


ONNX_BAD_DIMS = st.sampled_from([-1, -7, -2**62, 2**31, 2**40])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dims=st.lists(st.integers(1, 64), min_size=3, max_size=3),
       bad=st.dictionaries(st.integers(0, 2), ONNX_BAD_DIMS, max_size=2))
@example(dims=[3, 5, 2], bad={})
def test_any_onnx_dims_are_counted_exactly_or_refused_in_one_line(
        dims: list[int], bad: dict[int, int], tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    tmp = tmp_path_factory.mktemp("onnx")
    rows, cols, batch = (bad.get(i, d) for i, d in enumerate(dims))
    onnx_matmul(tmp / "m.onnx", [rows, cols], [batch, 4])
    code, out, err = run_in_process(["count", str(tmp / "m.onnx"), "--json", "-"], tmp, monkeypatch, capsys)
    if not bad:
        assert code == 0, err
        totals = json.loads(out)["totals"]
        assert (totals["params"], totals["macs"]) == (4 * 2 + rows * cols, batch * 4 * 2)
        return
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, out[-500:], err)
    assert "dimension" in lines[0] or "at most 2147483647" in lines[0], lines[0]


# ------------------------------------------------------------------ a genuine symbolic size is measured

def test_a_data_dependent_size_within_its_range_is_counted_quietly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # nonzero's output size is an unbacked symbol: torch writes its range as
    # LessThan(Symbol('u0'), Integer(12)), plain arithmetic.
    class Picks(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3, 5)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.fc(x), torch.nonzero(x > 0)

    program = torch.export.export(Picks(), (torch.randn(4, 3),))
    torch.export.save(program, str(tmp_path / "picks.pt2"))
    code, out, err = run_in_process(["count", str(tmp_path / "picks.pt2"), "--device", "cpu", "--json", "-"],
                                    tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert err == ""  # no torch symbolic_shapes warning before or instead of the result
    totals = json.loads(out)["totals"]
    assert (totals["params"], totals["macs"]) == (3 * 5 + 5, 4 * 3 * 5)


# ------------------------------------------------------------------ no remote code without the flag

MARKING_CONFIG = CUSTOM_CONFIG + "\nimport pathlib\npathlib.Path({marker!r}).write_text('config ran')\n"
MARKING_MODELING = CUSTOM_MODELING + "\nimport pathlib\npathlib.Path({marker!r}).write_text('model ran')\n"


def _marking_repo(folder: Path, marker: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "configuration_mmtiny.py").write_text(MARKING_CONFIG.format(marker=str(marker)))
    (folder / "modeling_mmtiny.py").write_text(MARKING_MODELING.format(marker=str(marker)))
    config = {**TINY_LLAMA_CONFIG, "model_type": "mmtiny", "architectures": ["MmTinyForCausalLM"],
              "auto_map": {"AutoConfig": "configuration_mmtiny.MmTinyConfig",
                           "AutoModelForCausalLM": "modeling_mmtiny.MmTinyForCausalLM"}}
    (folder / "config.json").write_text(json.dumps(config))


def test_no_path_without_the_flag_runs_remote_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import huggingface_hub.constants

    marker = tmp_path / "remote-code-ran"
    _marking_repo(tmp_path / "custom", marker)
    # The same repo in a private Hugging Face cache, as `hf download mm-test/custom` leaves it.
    hub = tmp_path / "hf" / "hub" / "models--mm-test--custom"
    revision = "0" * 40
    _marking_repo(hub / "snapshots" / revision, marker)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    folder = str(tmp_path / "custom")
    calls = [
        ["count", folder], ["count", "mm-test/custom"], ["memory", folder], ["models"],
        ["report", folder, "--no-measure"], ["report", "mm-test/custom", "--no-measure"],
        ["plan", folder, *HW], ["llm", folder, *HW], ["llm", "mm-test/custom", *HW],
        ["roofline", folder, *HW], ["compare", folder, "mm-test/custom"],
    ]
    for args in calls:
        code, _, err = run_in_process(args, tmp_path, monkeypatch, capsys)
        assert not marker.exists(), f"modelmeter {' '.join(args)} ran the repo's code"
        if args == ["models"]:
            assert code == 0, err
        else:
            assert code == 2 and "custom code" in err and len(err.strip().splitlines()) == 1, (args, err)


# ------------------------------------------------------------------ bad data that must not fail everything


def _history(tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **_env(tmp)}
    return subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "history", "--db",
                           str(tmp / "runs.sqlite"), *extra], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp)


def test_history_lists_the_readable_runs_beside_an_unreadable_one(tmp_path: Path) -> None:
    ids = _store(tmp_path, runs=3)
    conn = sqlite3.connect(tmp_path / "runs.sqlite")
    conn.execute("UPDATE runs SET report_json = '{\"truncated' WHERE id = ?", (ids[1],))
    conn.commit()
    conn.close()

    table = _history(tmp_path)
    assert table.returncode == 0, table.stderr
    assert all(run_id in table.stdout for run_id in ids)
    assert f"run {ids[1]} is unreadable" in table.stdout
    assert table.stdout.count("unreadable") == 2  # its row, and the line saying why

    listed = _history(tmp_path, "--json")
    assert listed.returncode == 0, listed.stderr
    runs = {run["id"]: run for run in json.loads(listed.stdout)["runs"]}
    assert set(runs) == set(ids)
    assert "unreadable" in runs[ids[1]] and "report" not in runs[ids[1]]
    assert runs[ids[0]]["report"]["totals"]["macs"] == 1000

    # diff on the unreadable run itself is bad input: one line.
    proc = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "diff", ids[1], ids[0], "--db",
                           str(tmp_path / "runs.sqlite")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **_env(tmp_path)})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "cannot be read" in proc.stderr and "Traceback" not in proc.stderr


def _read_only(path: Path, request: pytest.FixtureRequest) -> None:
    """Make `path` unwritable even for root (chattr +i), undone after the test."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        request.addfinalizer(lambda: path.chmod(mode))
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make {path} read-only as root here: {done.stderr.decode().strip()}")
    request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(path)], check=False))


@pytest.mark.slow
def test_a_read_only_store_can_be_read(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    with RunStore(folder / "runs.sqlite") as store:
        ids = [store.save(_report_doc(macs=m)) for m in (10, 20)]
    db = folder / "runs.sqlite"
    before = _digest(db)
    _read_only(db, request)
    _read_only(folder, request)

    env = {**os.environ, **_env(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "history", "--db", str(db)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert all(run_id in proc.stdout for run_id in ids)
    diff = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "diff", ids[0], ids[1], "--db",
                           str(db), "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert diff.returncode == 0, diff.stderr
    macs = next(c for c in json.loads(diff.stdout)["changes"] if c["metric"] == "macs")
    assert (macs["a"], macs["b"]) == (10, 20)
    # Saving there is refused in one line, before the work.
    save = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "report", "gpt2", "--no-measure",
                           "--save", "--db", str(db)], capture_output=True, text=True, timeout=300, env=env)
    assert save.returncode == 2 and save.stdout.strip() == "", save.stdout
    assert len(save.stderr.strip().splitlines()) == 1 and "cannot write run store" in save.stderr
    assert _digest(db) == before and sorted(p.name for p in folder.iterdir()) == ["runs.sqlite"]


def test_bench_json_into_a_read_only_folder_is_refused_before_measuring(
        tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _tiny(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    _read_only(folder, request)
    code, out, err = run_in_process(["bench", "mm_bad_tiny:build", "--min-time", "0.2", "--json",
                                     str(folder / "b.json")], tmp_path, monkeypatch, capsys)
    assert code == 2 and out.strip() == "", out
    assert len(err.strip().splitlines()) == 1 and "cannot write" in err



@pytest.mark.slow
def test_a_save_past_the_file_size_limit_says_so_and_writes_no_row(tmp_path: Path) -> None:
    """A real limit, not a mock: the child may write no file past 4 KiB (RLIMIT_FSIZE, with SIGXFSZ
    ignored so the write fails with EFBIG instead of killing it), the disk-full case as sqlite sees it."""
    import resource
    import signal

    _tiny(tmp_path)
    ids = _store(tmp_path, runs=3)  # 32 KiB already: the store's write-ahead log cannot take a page

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "report", "mm_bad_tiny:build",
                           "--no-measure", "--save", "--db", str(tmp_path / "runs.sqlite")], cwd=tmp_path,
                          env={**os.environ, **_env(tmp_path)}, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "file-size limit of 4096 bytes" in lines[0] and "no run was written" in lines[0], lines[0]
    assert "rollback" not in lines[0]
    with RunStore(tmp_path / "runs.sqlite") as store:
        assert sorted(run.id for run in store.list_runs()) == sorted(ids)

# ------------------------------------------------------------------ exports do not run what they show

EVIL = '''
import torch

def build():
    net = torch.nn.Sequential()
    net.add_module("=HYPERLINK(\\"http://evil\\")", torch.nn.Linear(4, 4))
    net.add_module("+cmd|' /C calc'!A0", torch.nn.ReLU())
    net.add_module("@SUM(1+1)", torch.nn.Linear(4, 4))
    net.add_module("-2+3", torch.nn.Linear(4, 2))
    net.add_module("<img src=x onerror=alert(1)>", torch.nn.ReLU())
    net.add_module("[click](https://evil)", torch.nn.Identity())
    net.add_module("*bold*_it_`code`|pipe", torch.nn.Identity())
    return net, torch.randn(1, 4)
'''


@pytest.mark.slow
def test_csv_and_markdown_neutralise_module_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mm_bad_evil.py").write_text(EVIL)
    code, _, err = run_in_process(["report", "mm_bad_evil:build", "--no-measure", "--csv",
                                   str(tmp_path / "r.csv"), "--md", str(tmp_path / "r.md")],
                                  tmp_path, monkeypatch, capsys)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    paths = [r["path"] for r in rows]
    # Every text cell a spreadsheet would evaluate starts with an apostrophe, and is otherwise kept.
    assert "'=HYPERLINK(\"http://evil\")" in paths and "'+cmd|' /C calc'!A0" in paths
    assert "'@SUM(1+1)" in paths and "'-2+3" in paths
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "@", "\t", "\r")), row
            assert not (value.startswith("-") and not re.fullmatch(r"-[\d.e+-]+", value)), row
    assert int(rows[0]["macs"]) == 4 * 4 + 4 * 4 + 4 * 2  # numbers stay numbers: 40 MACs

    md = (tmp_path / "r.md").read_text()
    assert not re.search(r"(?<!\\)<img", md) and "\\<img src=x onerror=alert(1)\\>" in md
    assert not re.search(r"(?<!\\)\[click(?<!\\)\]", md) and "\\[click\\](https://evil)" in md
    assert "\\*bold\\*\\_it\\_\\`code\\`\\|pipe" in md
    # The table still has its columns: no unescaped pipe inside a cell.
    module_rows = [line for line in md.splitlines() if "HYPERLINK" in line]
    assert module_rows and all(len(re.split(r"(?<!\\)\|", line)) == 8 for line in module_rows)


# ------------------------------------------------------------------ one atomic writer


def test_writes_are_whole_and_concurrent_writers_do_not_clobber(tmp_path: Path) -> None:
    from modelmeter.cli.options import write_json

    target = tmp_path / "out.json"
    payloads = [{"writer": i, "data": [i] * 50_000} for i in range(8)]
    errors: list[BaseException] = []

    def write(doc: dict) -> None:
        try:
            for _ in range(5):
                write_json(doc, str(target))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(target.read_text()) in payloads  # one writer's document, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    from modelmeter.cli.options import write_json
    from modelmeter.core.errors import UserInputError

    (tmp_path / "old.json").write_text('{"kept": true}\n')
    (tmp_path / "adir").mkdir()
    with pytest.raises(UserInputError, match="cannot write"):
        write_json({"x": 1}, str(tmp_path / "adir"))  # a folder cannot be replaced by a file
    with pytest.raises(TypeError):
        _write_then_fail(tmp_path / "old.json")  # the content fails half way through
    assert (tmp_path / "old.json").read_text() == '{"kept": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "old.json"]


def _write_then_fail(path: Path) -> None:
    from modelmeter.core.files import atomic_open

    with atomic_open(path) as fh:
        fh.write('{"half": ')
        raise TypeError("the renderer failed half way")


# ------------------------------------------------------------------ custom code without SDPA


@pytest.mark.slow
def test_custom_code_without_sdpa_falls_back_to_eager_attention(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from modelmeter.sources import resolve_model

    _custom_code(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    loaded = resolve_model(str(tmp_path / "custom"), trust_remote_code=True)
    assert type(loaded.module).__name__ == "MmTinyForCausalLM"
    assert loaded.module.config._attn_implementation == "eager"
    # Closed form: embeddings 128x32, per layer q,o 32x32, k,v 32x16, MLP 3x32x64, two norms
    # of 32; a final norm; an untied 128x32 head.
    per_layer = 2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64 + 2 * 32
    assert sum(p.numel() for p in loaded.module.parameters()) == 128 * 32 + 2 * per_layer + 32 + 128 * 32

    env = {**os.environ, **_env(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "llm", str(tmp_path / "custom"),
                           "--trust-remote-code", "--hardware", "h100-sxm", "--prompt", "8", "--gen", "4",
                           "--json", "-"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["llm"]["weight_bytes"] == 2 * (128 * 32 + 2 * per_layer + 32 + 128 * 32)
