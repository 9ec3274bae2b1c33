"""The pipeline through the public API: options checked once, sections assembled, progress hooks."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

import modelmeter
from modelmeter.analysis.compare import Comparison
from modelmeter.core.errors import UnknownPrecisionError, UserInputError
from modelmeter.core.jsonable import to_json
from modelmeter.pipeline import run
from modelmeter.pipeline.options import (
    BenchOptions,
    MemoryOptions,
    ModelOptions,
    ReportOptions,
    TimingOptions,
)
from modelmeter.pipeline.sections import LLMSection

FAST = {"min_time_s": 0.05, "min_iters": 3, "warmup_s": 0.0, "malloc": "default"}

FACTORY = """
import torch

def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)), \\
        torch.randn(2, 16)
"""


@pytest.fixture(autouse=True)
def no_user_profile(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture
def factory(tmp_path, monkeypatch):
    (tmp_path / "mm_pipeline_mod.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    yield "mm_pipeline_mod:build"
    sys.modules.pop("mm_pipeline_mod", None)


def mlp() -> tuple[torch.nn.Module, torch.Tensor]:
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)), torch.randn(2, 16)


@pytest.mark.parametrize("call, message", [
    (lambda m, x: modelmeter.count(m, x, dtype="fp12"), "fp12"),
    (lambda m, x: modelmeter.count(m, x, group_size=0), "--group-size must be a positive integer"),
    (lambda m, x: modelmeter.count("gpt2", batch=0), "--batch must be a positive integer"),
    (lambda m, x: modelmeter.count(m, x, device="cuda"), "choose one of meta, cpu"),
    (lambda m, x: modelmeter.count(m), "needs example_inputs"),
    (lambda m, x: modelmeter.memory(m, x, optimizer="lion"), "choose one of sgd, sgd-momentum, adam, adamw"),
    (lambda m, x: modelmeter.roofline(m, x, hardware="h100-sxm", efficiency=1.5), "(0, 1]"),
    (lambda m, x: modelmeter.bench("gpt2", device="xpu"), "use 'cpu', 'cuda' or 'cuda:N'"),
    (lambda m, x: modelmeter.bench("gpt2", meter="joulemeter"), "auto, nvml, rapl, zeus, none"),
    (lambda m, x: modelmeter.bench("gpt2", malloc="jemalloc"), "retain or default"),
    (lambda m, x: modelmeter.bench("gpt2", min_time_s=0), "min_time_s must be > 0"),
    (lambda m, x: modelmeter.report(m, x, device="tpu"), "use 'cpu', 'cuda' or 'cuda:N'"),
    (lambda m, x: modelmeter.llm("gpt2", hardware="h100-sxm", prompt=0), "`prompt` must be a positive"),
    (lambda m, x: modelmeter.llm("gpt2", hardware="h100-sxm", batches="1,x"), "bad batch size"),
])
def test_bad_options_fail_at_the_boundary_naming_what_works(call, message):
    model, x = mlp()
    with pytest.raises(UserInputError) as info:
        call(model, x)
    assert message in str(info.value)


def test_options_are_frozen_and_normalised():
    options = ModelOptions("gpt2", dtype="BF16", inputs=["1x8"])
    assert options.dtype == "bf16" and options.inputs == ("1x8",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.dtype = "fp32"  # type: ignore[misc]
    assert BenchOptions(device="CUDA:1", region="FR").device == "cuda:1"
    with pytest.raises(UnknownPrecisionError):
        ModelOptions("gpt2", dtype="fp7")


def test_the_report_is_assembled_from_sections_and_frozen():
    model, x = mlp()
    sections = run.memory(ModelOptions(model, example_inputs=x), MemoryOptions(train=True))
    report = sections.to_report()
    # Totals: the counts' own, then the memory section's; closed form of the MACs.
    assert report.totals["macs"] == 2 * (16 * 32 + 32 * 4)
    counted = to_json(sections.count.totals)
    n = len(counted)
    assert list(report.totals)[:n] == list(counted)
    assert list(report.totals)[n:] == ["activations", "backward_flops", "backward_macs", "backward_fallback_ops",
                                          "backward_uncounted_ops"]
    assert report.totals["activations"] == sections.memory.activations
    assert report.training == sections.memory.training and report.methods["activations"].startswith("counted")
    # Module rows: the counted row plus that module's memory columns; sections untouched.
    first = report.modules[1]
    assert first["peak_share_bytes"] == sections.memory.module_bytes["0"]["peak_share_bytes"]
    assert "peak_share_bytes" not in to_json(sections.count.modules[1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.totals = {}  # type: ignore[misc]
    # What it holds is read-only too; its document is a fresh copy: editing one leaves the next as it was.
    with pytest.raises(TypeError):
        report.totals["macs"] = -1  # type: ignore[index]
    data = report.to_dict()
    data["totals"]["macs"] = -1
    assert sections.to_report().totals["macs"] == report.totals["macs"] == 2 * (16 * 32 + 32 * 4)


def test_report_reports_each_step_through_the_status_hook(factory):
    seen: list[str] = []
    report = modelmeter.report(factory, hardware="h100-sxm", measure=False, on_status=seen.append)
    assert seen == ["tracing and counting", "activation memory", "roofline on h100-sxm"]
    assert report.settings["measure"] == {"ran": False, "reason": "asked", "device": "cpu"}
    assert report.modules[1]["latency_s"] == next(m["latency_s"] for m in report.roofline["modules"]
                                                  if m["path"] == "0")


def test_bench_progress_hooks_name_the_batch_being_timed(factory):
    progress: list[int] = []
    rows: list[int] = []
    hooks = run.Hooks(on_progress=lambda batch, phase, n, s: progress.append(batch),
                      on_row=lambda row: rows.append(row.batch))
    sections = run.bench(ModelOptions(factory), BenchOptions(batches=(1, 3), timing=TimingOptions(**FAST)),
                         hooks)
    assert rows == [1, 3] and set(progress) == {1, 3} and progress == sorted(progress)
    report = sections.to_report()
    assert [r["batch"] for r in report.measured["sweep"]] == [1, 3]
    # The counts are those of the first batch predicted (batch 1), on the meta device.
    assert report.totals["macs"] == 1 * (16 * 32 + 32 * 4) and report.settings["batch"] == 1
    assert "dim 0 was tiled" in " ".join(report.measured["notes"])  # the factory's own batch is 2


@pytest.mark.slow
def test_llm_and_compare_return_typed_results(factory):
    section = modelmeter.llm("gpt2", hardware="h100-sxm", prompt=16, gen=4, batches=[1, 2])
    assert isinstance(section, LLMSection)
    data = section.to_dict()
    assert [b["batch"] for b in data["batches"]] == [1, 2]
    assert section.ttft_s == data["ttft_s"] and section.tpot_s == data["tpot_s"] > 0
    comparison = modelmeter.compare([factory], hardware="a100-sxm-80gb", dtypes=["fp32", "bf16"])
    assert isinstance(comparison, Comparison)
    assert comparison.row("param_bytes").ratios == (1.0, 0.5)
    reports, again = run.compare([factory], dtypes=["fp32", "bf16"],
                                 options=ReportOptions(hardware="a100-sxm-80gb", measure=False))
    assert again == comparison and [r.settings["dtype"] for r in reports] == ["fp32", "bf16"]
