"""Measured time per module (forward hooks), in the report's JSON and plotted in its HTML.

The hook bookkeeping is checked on small modules whose call structure is known
(calls per pass, hooked calls inside, hooks removed afterwards); the figures on
a real preset (mobilenet-v2, batch 1) through the CLI, against the whole-model
measurement taken without hooks: positive, and adding up to it within a sane factor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from modelmeter.measure.module_times import module_times_section, time_modules


class _Shared(torch.nn.Module):
    """One ReLU applied twice inside a block: two calls per pass of the same module."""

    def __init__(self) -> None:
        super().__init__()
        self.block = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 16))
        self.act = torch.nn.ReLU()
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.block(self.act(x))))


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_count_calls_nesting_and_are_removed() -> None:
    model = _Shared().eval()
    x = torch.randn(2, 16)
    paths = ["", "block", "block.0", "block.1", "act", "head", "no.such"]
    times = time_modules(model, lambda: model(x), paths, repeats=3)
    rows = times.by_path()
    assert set(rows) == {"", "block", "block.0", "block.1", "act", "head"}
    assert times.missing == ("no.such",)
    assert rows["act"].calls == 2 and rows["block"].calls == 1
    # Inside the root: block, its two linears, act twice, head = 6 hooked calls; inside block: 2.
    assert rows[""].hooked_calls_inside == 6 and rows["block"].hooked_calls_inside == 2
    assert rows["block.0"].hooked_calls_inside == 0
    assert all(m.latency_s > 0 for m in times.modules) and times.hook_overhead_s >= 0
    # Nested intervals: a module's median is at least each child's (same passes, hooks inside).
    assert rows[""].latency_s >= rows["block"].latency_s >= rows["block.0"].latency_s
    assert times.hooked_latency_s == rows[""].latency_s
    assert _hook_count(model) == 0  # nothing left behind
    assert times.unhooked_latency_s > 0
    section = module_times_section(times, {"": 0, "block": 1})
    assert section["hook_inflation"] == pytest.approx(rows[""].latency_s / times.unhooked_latency_s - 1)
    row = next(r for r in section["modules"] if r["path"] == "")
    assert row["depth"] == 0 and row["hook_overhead_estimate_s"] == pytest.approx(6 * times.hook_overhead_s)


def test_hooks_are_removed_when_the_forward_fails() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))

    with pytest.raises(RuntimeError):
        time_modules(model, lambda: model(torch.randn(2, 5)), ["", "0"], repeats=2)
    assert _hook_count(model) == 0


def _seed_local_profile() -> None:
    """A cached calibrated profile for every thread count the command may pick, and 'local' saved
    (in $MODELMETER_HOME)."""
    from modelmeter.hardware import Hardware
    from modelmeter.hardware.detect import cpu_name, read_cpu_info
    from modelmeter.hardware.local import cache_key, save_cached
    from modelmeter.hardware.perfmodel import TINY, Peaks, Point, fit
    from modelmeter.hardware.profile import save_local_profile

    peaks = Peaks(matmul_flops=50e9, vector_flops=5e9, bandwidth_bytes_per_s=10e9)
    hw = Hardware(id="local", name="Test CPU", vendor="Intel", kind="cpu", memory_bytes=2**33,
                  memory_bandwidth_bytes_per_s=peaks.bandwidth_bytes_per_s,
                  peak_flops={"fp32": peaks.matmul_flops}, vector_flops={"fp32": peaks.vector_flops},
                  tdp_w=None, year=None, source="calibrated", sources={})
    model = fit([Point("conv", TINY, 1e3, 0.0, 1e3, 5e-6), Point("conv", "big", 1e9, 0.0, 1e7, 0.05),
                 Point("elementwise", TINY, 0.0, 8.0, 96.0, 2e-6)], peaks, view_s=1e-6, module_call_s=2e-6)
    for threads in range(1, max(read_cpu_info().physical_cores or 1, torch.get_num_threads()) + 1):
        save_cached(cache_key(cpu_name(), threads, torch.__version__), hw, model, None)
    save_local_profile(hw)


@pytest.mark.slow
def test_report_times_each_module_of_a_real_preset_and_plots_it_against_the_prediction(
        tmp_path, monkeypatch) -> None:
    """`report mobilenet-v2 --batch 1`: every module to depth 2 measured with hooks (JSON rows,
    module_timing, the HTML chart), beside the calibrated prediction of a cached profile.

    A child process: the report command makes glibc retain freed memory for the rest of its process.
    """
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELMETER_AUTO_CALIBRATE", "1")
    _seed_local_profile()
    out, page = tmp_path / "r.json", tmp_path / "r.html"
    done = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "report", "mobilenet-v2", "--batch", "1",
                           "--measure", "--json", str(out), "--html", str(page)],
                          cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.read_text())
    m = data["measured"]
    p50 = m["latency_s"]["p50"]
    timing = m["module_timing"]
    rows = {r["path"]: r for r in timing["modules"]}
    counted = {r["path"] for r in data["modules"] if r["depth"] <= 2 and r["calls"] > 0}
    assert set(rows) == counted and timing["missing"] == []
    assert all(r["latency_s"] > 0 for r in rows.values())
    # The top-level children, timed under hooks, add up to the unhooked whole within a sane factor
    # (hooks and a busy machine move it; a mix-up of units or passes would be far off).
    children = sum(r["latency_s"] for p, r in rows.items() if p and "." not in p)
    assert p50 / 3 < children < 3 * p50
    assert children <= rows[""]["latency_s"] * 1.05  # inside the root's own interval
    assert p50 / 3 < timing["hooked_latency_s"] < 3 * p50
    assert p50 / 3 < timing["unhooked_latency_s"] < 3 * p50
    # Module rows carry the measured figure beside the calibrated prediction and the bound.
    body = {r["path"]: r for r in data["modules"]}
    for path, r in rows.items():
        assert body[path]["measured_latency_s"] == r["latency_s"]
        # (>= 0: dropout in eval mode runs no op, only its module call, which the prediction charges)
        assert body[path]["predicted_latency_s"] > 0 and body[path]["roofline_latency_s"] >= 0
    html = page.read_text()
    assert "Measured against predicted per module" in html
    assert 'aria-label="per-module measured against predicted time chart"' in html
    assert "includes the hooks" in html and "measured (hooks)" in done.stdout
    jsonschema = pytest.importorskip("jsonschema")
    from modelmeter.core.schema import load_schema

    jsonschema.Draft202012Validator(load_schema("report")).validate(data)
