"""`bench --backend compile|onnxruntime` / `--compile`: each backend timed beside eager.

The backends' calls are checked against the eager module's own output (a wrong
feed or a stale compile would differ), then timed through the CLI on a tiny real
model. Tests needing ONNX Runtime skip with the reason where it is not installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from modelmeter.core.errors import UserInputError
from modelmeter.measure import backends
from modelmeter.measure.backends import check_backend, parse_backends, prepare_call

HAS_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime", "onnxscript"))
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnx/onnxruntime/onnxscript not installed "
                               "(pip install \"modelmeter[onnx]\")")
needs_cxx = pytest.mark.skipif(backends.cxx_compiler() is None,
                               reason="no C++ compiler: torch.compile on CPU cannot build kernels")

TINY_MODEL = """
import torch

def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    return model, (torch.randn(1, 64),)
"""


class TwoInputs(torch.nn.Module):
    """Two named inputs: the ONNX feeds must go to the right graph inputs by name."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(8, 4)
        self.b = torch.nn.Linear(6, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.a(x)) * self.b(y)


@pytest.fixture()
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tinymodel.py").write_text(TINY_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_parse_backends_keeps_eager_first_and_merges_compile_flag() -> None:
    assert parse_backends(None) == ["eager"]
    assert parse_backends(["onnxruntime,compile", "eager"]) == ["eager", "onnxruntime", "compile"]
    assert parse_backends([], compile_flag=True) == ["eager", "compile"]
    with pytest.raises(UserInputError, match="unknown backend 'tensorrt'"):
        parse_backends(["tensorrt"])


@needs_ort
@pytest.mark.slow
def test_onnxruntime_call_feeds_inputs_by_name_and_matches_eager() -> None:
    torch.manual_seed(0)
    model = TwoInputs().eval()
    x, y = torch.randn(3, 8), torch.randn(3, 6)
    prepared = prepare_call("onnxruntime", model, (), {"y": y, "x": x}, "cpu")  # kwargs out of order
    out = prepared.call()
    with torch.inference_mode():
        want = model(x, y)
    assert torch.allclose(torch.from_numpy(out[0]), want, atol=1e-5)
    assert prepared.setup_s > 0 and prepared.detail["provider"] == "CPUExecutionProvider"


@needs_cxx
@pytest.mark.slow
def test_compile_call_matches_eager_and_times_its_first_call() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4)).eval()
    x = torch.randn(2, 16)
    prepared = prepare_call("compile", model, (x,), {}, "cpu")
    with torch.inference_mode():
        want = model(x)
    assert torch.allclose(prepared.call(), want, atol=1e-5)
    assert prepared.setup_s > 0 and prepared.detail["compiler"] == "inductor"


def test_missing_onnx_extra_is_one_line_naming_it(run_main, tiny: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    code, out, err = run_main("bench", "tinymodel:build", "--backend", "onnxruntime", "--min-time", "0.05")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert 'pip install "modelmeter[onnx]"' in lines[0] and "onnxruntime" in lines[0]
    assert "measured" not in out  # refused before any model ran


def test_compile_without_a_cxx_compiler_is_one_line(run_main, tiny: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends.shutil, "which", lambda name: None)
    code, _, err = run_main("bench", "tinymodel:build", "--compile", "--min-time", "0.05")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "C++ compiler" in lines[0], err


def test_unknown_backend_is_one_line(run_main, tiny: Path) -> None:
    code, _, err = run_main("bench", "tinymodel:build", "--backend", "tvm")
    assert code == 2 and err.count("\n") == 1 and "unknown backend 'tvm'" in err, err


def test_onnxruntime_on_cuda_is_refused() -> None:
    if HAS_ORT:
        with pytest.raises(UserInputError, match="CPU"):
            check_backend("onnxruntime", "cuda")


@needs_ort
@needs_cxx
@pytest.mark.slow
def test_bench_times_each_backend_beside_eager(run_main, tiny: Path) -> None:
    out = tiny / "b.json"
    code, printed, err = run_main("bench", "tinymodel:build", "--batch", "2", "--min-time", "0.05",
                                  "--warmup", "0", "--malloc", "default", "--backend", "onnxruntime",
                                  "--compile", "--json", str(out))
    assert code == 0, err
    assert "backends" in printed and "vs eager" in printed
    m = json.loads(out.read_text())["measured"]
    assert "sweep" in m and m["sweep"][0]["batch"] == 2  # the eager section is unchanged
    entries = {e["backend"]: e for e in m["backends"]}
    assert list(entries) == ["eager", "onnxruntime", "compile"]
    eager_p50 = m["sweep"][0]["latency_s"]["p50"]
    assert entries["eager"]["rows"][0]["latency_s"]["p50"] == eager_p50
    for name in ("onnxruntime", "compile"):
        e = entries[name]
        assert e["error"] is None, e["error"]
        (row,) = e["rows"]
        assert row["status"] == "ok" and row["batch"] == 2
        assert set(row["latency_s"]) == {"min", "mean", "std", "p50", "p90", "p99", "iterations"}
        assert row["latency_s"]["iterations"] >= 10  # the same timer and minimum as eager
        assert row["speedup_vs_eager"] == pytest.approx(eager_p50 / row["latency_s"]["p50"])
        assert row["throughput_per_s"] == pytest.approx(2 / row["latency_s"]["p50"])
        assert row["setup_s"] > 0
    assert entries["compile"]["rows"][0]["compile_time_s"] == entries["compile"]["rows"][0]["setup_s"]
    assert entries["onnxruntime"]["rows"][0]["compile_time_s"] is None
    assert entries["onnxruntime"]["detail"]["provider"] == "CPUExecutionProvider"
    _validate(json.loads(out.read_text()))


def _validate(report: dict) -> None:
    """The report, `measured.backends` included, against the shipped JSON Schema."""
    jsonschema = pytest.importorskip("jsonschema")
    from modelmeter.core.schema import load_schema

    jsonschema.Draft202012Validator(load_schema()).validate(report)


@needs_ort
@pytest.mark.slow
def test_api_bench_backends_keyword_times_onnxruntime_beside_eager(tiny: Path) -> None:
    """`modelmeter.bench(..., backends=[...])` runs the backend inside the pipeline's bench path,
    with its progress callback, and the report holds `measured.backends` as the schema says."""
    import modelmeter

    seen: list[tuple[int, str]] = []
    report = modelmeter.bench("tinymodel:build", batches=[3], min_time_s=0.02, min_iters=3, warmup_s=0,
                              backends=["onnxruntime"], on_progress=lambda b, phase, n, s: seen.append((b, phase)))
    data = report.to_dict()
    entries = {e["backend"]: e for e in data["measured"]["backends"]}
    assert list(entries) == ["eager", "onnxruntime"]
    (row,) = entries["onnxruntime"]["rows"]
    assert row["status"] == "ok" and row["batch"] == 3 and row["latency_s"]["iterations"] >= 3
    eager_p50 = data["measured"]["sweep"][0]["latency_s"]["p50"]
    assert row["speedup_vs_eager"] == pytest.approx(eager_p50 / row["latency_s"]["p50"])
    assert row["setup_s"] > 0 and row["compile_time_s"] is None
    assert seen and all(b == 3 for b, _ in seen)
    _validate(data)


def test_bench_options_validate_backends_at_the_boundary() -> None:
    from modelmeter.pipeline.options import BenchOptions

    assert BenchOptions().backends == ("eager",)
    assert BenchOptions(backends=("eager",)).backends == ("eager",)
    with pytest.raises(UserInputError, match="unknown backend 'tvm'"):
        BenchOptions(backends=("tvm",))
    if HAS_ORT:
        assert BenchOptions(backends=("ONNXRuntime",)).backends == ("eager", "onnxruntime")
        with pytest.raises(UserInputError, match="onnxruntime runs on CPU"):
            BenchOptions(device="cuda", backends=("onnxruntime",))
