"""Roofline latency model, its plots and `modelmeter roofline` (issue 4, parts 3-5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelmeter.analysis.roofline import roofline, roofline_section
from modelmeter.core.errors import UserInputError
from modelmeter.core.results import Counts, CountTotals, ModuleCounts, OpCount
from modelmeter.hardware import get_hardware, list_hardware
from modelmeter.pipeline.sections import CountSection, RooflineSection, Sections

GPUS = [hw for hw in list_hardware() if hw.kind == "gpu" and hw.peak_flops]


def _matmul_counts(m: int, k: int, n: int, dtype: str = "float16", itemsize: int = 2) -> Counts:
    """One (m x k) @ (k x n) with a (k x n) weight, as the count engine would record it."""
    w = k * n * itemsize
    read = m * k * itemsize + w
    written = m * n * itemsize
    op = OpCount(index=0, op="aten.mm.default", module="fc", phase="forward",
                 category="contraction", macs=m * k * n, other_flops=0, bytes_read=read,
                 bytes_written=written, dtype=dtype, param_bytes_read=w)
    mods = tuple(
        ModuleCounts(path=p, type=t, depth=d, calls=1, params=k * n, own_params=k * n if p else 0,
                     param_bytes=w, macs=m * k * n, other_flops=0, bytes_read=read,
                     bytes_written=written, input_bytes=m * k * itemsize, output_bytes=written)
        for p, t, d in (("", "Model", 0), ("fc", "Linear", 1))
    )
    totals = CountTotals(params=k * n, trainable_params=k * n, buffers=0, buffer_bytes=0,
                         param_bytes=w, param_scale_bytes=0.0, macs=m * k * n, other_flops=0,
                         bytes_read=read, bytes_written=written)
    return Counts(totals, mods, (op,), ())


@pytest.mark.parametrize("hw", GPUS, ids=lambda h: h.id)
def test_gemv_memory_bound_gemm_compute_bound_on_every_gpu(hw):
    prec = "fp16" if "fp16" in hw.peak_flops else next(iter(hw.peak_flops))
    gemv = roofline(_matmul_counts(1, 4096, 4096), hw, dtype=prec)
    gemm = roofline(_matmul_counts(8192, 8192, 8192), hw, dtype=prec)
    assert gemv.bound == "memory" and gemv.ops[0].bound == "memory"
    assert gemm.bound == "compute" and gemm.ops[0].bound == "compute"
    assert gemv.ops[0].intensity < gemv.ridge_point < gemm.ops[0].intensity


def test_ridge_point_is_peak_over_bandwidth_and_times_follow_the_formulas():
    hw = get_hardware("h100-sxm")
    r = roofline(_matmul_counts(64, 1024, 2048), hw, dtype="fp16")
    assert r.ridge_point == pytest.approx(hw.peak_flops["fp16"] / hw.memory_bandwidth_bytes_per_s)
    assert r.ridge_point == pytest.approx(hw.ridge_point("fp16"))
    op = r.ops[0]
    assert op.t_compute_s == pytest.approx(2 * 64 * 1024 * 2048 / hw.peak_flops["fp16"])
    assert op.t_memory_s == pytest.approx((64 * 1024 + 1024 * 2048 + 64 * 2048) * 2 / 3.35e12)
    assert r.latency_s == pytest.approx(max(op.t_compute_s, op.t_memory_s))


def test_fp32_matmul_runs_at_fp32_not_tf32_unless_asked():
    hw = get_hardware("h100-sxm")
    counts = _matmul_counts(4096, 4096, 4096, dtype="float32", itemsize=4)
    fp32 = roofline(counts, hw)
    tf32 = roofline(counts, hw, dtype="tf32")
    assert fp32.precision == "fp32" and fp32.peak_flops == hw.peak_flops["fp32"]
    assert tf32.peak_flops == hw.peak_flops["tf32"]
    assert tf32.ops[0].bytes == fp32.ops[0].bytes  # tf32 still stores 32 bits


def test_int4_weights_quarter_of_fp16_parameter_bytes_activations_unchanged():
    hw = get_hardware("a100-sxm-80gb")
    counts = _matmul_counts(1, 4096, 4096)
    fp16 = roofline(counts, hw, dtype="fp16")
    int4 = roofline(counts, hw, dtype="fp16", weights="int4")
    assert int4.ops[0].param_bytes == pytest.approx(fp16.ops[0].param_bytes / 4)
    acts = fp16.ops[0].bytes - fp16.ops[0].param_bytes
    assert int4.ops[0].bytes - int4.ops[0].param_bytes == pytest.approx(acts)
    assert int4.weights == "int4" and int4.precision == "fp16"
    # Activations at a different dtype than traced: fp32 -> fp16 halves them.
    f32 = roofline(_matmul_counts(8, 64, 64, dtype="float32", itemsize=4), hw, dtype="fp16")
    assert f32.ops[0].bytes == pytest.approx((8 * 64 + 64 * 64 + 8 * 64) * 2)


def test_views_cost_nothing_data_and_uncounted_ops_memory_only():
    hw = get_hardware("h100-sxm")
    base = _matmul_counts(4, 8, 8)
    extra = tuple(
        OpCount(index=i, op=op, module="fc", phase="forward", category=cat, macs=0, other_flops=0,
                bytes_read=1000, bytes_written=1000, dtype="float16", param_bytes_read=0)
        for i, (op, cat) in enumerate((("aten.view", "view"), ("aten.clone", "data"),
                                       ("aten.weird", "uncounted")), start=1)
    )
    r = roofline(Counts(base.totals, base.modules, base.ops + extra, (("aten.weird", 1),)), hw)
    view, data, weird = r.ops[1:]
    assert view.latency_s == 0
    assert data.t_compute_s == 0 and data.t_memory_s == pytest.approx(2000 / 3.35e12)
    assert weird.flagged and weird.t_compute_s == 0 and r.uncounted_ops == ("aten.weird",)
    assert any("aten.weird" in n for n in r.notes)


def test_efficiency_derates_matrix_peak_and_validates():
    hw = get_hardware("h100-sxm")
    counts = _matmul_counts(8192, 8192, 8192)
    full = roofline(counts, hw, dtype="bf16")
    half = roofline(counts, hw, dtype="bf16", efficiency=0.5)
    assert half.latency_s == pytest.approx(2 * full.latency_s)
    mamf = roofline(counts, hw, dtype="bf16", efficiency="mamf")
    assert 0 < mamf.efficiency < 1
    with pytest.raises(UserInputError):
        roofline(counts, hw, dtype="bf16", efficiency=1.5)


def test_precision_without_peak_is_an_error_unless_weights_only():
    hw = get_hardware("h100-sxm")
    counts = _matmul_counts(1, 256, 256)
    with pytest.raises(UserInputError, match="--weights int4"):
        roofline(counts, hw, dtype="int4")
    assert roofline(counts, hw, dtype="fp16", weights="int4").weights == "int4"


def test_section_keys_and_module_columns_in_the_assembled_report():
    hw = get_hardware("l4")
    r = roofline(_matmul_counts(16, 512, 512), hw, dtype="fp16")
    s = roofline_section(r)
    for key in ("hardware", "latency_s", "latency_fused_s", "t_compute_s", "t_memory_s", "bound",
                "latency_module_s", "ridge_point", "precision", "weights", "modules"):
        assert key in s
    assert s["hardware"] == "l4" and s["bound"] in ("memory", "compute")
    json.dumps(s)  # plain JSON
    counted = CountSection(model={}, settings={}, totals={}, uncounted_ops=(), methods={},
                           modules=({"path": ""}, {"path": "fc"}, {"path": "gone"}))
    section = RooflineSection(r, module_keys=("t_compute_s", "t_memory_s", "bound"))
    report = Sections(counted, roofline=section).to_report()
    assert set(report.modules[1]) == {"path", "t_compute_s", "t_memory_s", "bound"}
    assert report.modules[1]["t_compute_s"] == s["modules"][1]["t_compute_s"]
    assert report.modules[2] == {"path": "gone"}
    assert report.to_dict()["roofline"] == s and report.methods["roofline"] == s["method"]
    assert counted.modules[1] == {"path": "fc"}  # assembled into new rows, the section untouched
    assert roofline_section(r, depth=0)["modules"] == [s["modules"][0]]


def test_tiny_real_model_totals_are_consistent():
    import torch

    from modelmeter import api

    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    a = api.analyse(model, torch.randn(4, 64))
    r = roofline(a.counts, get_hardware("a10"))
    assert r.latency_s == pytest.approx(sum(max(o.t_compute_s, o.t_memory_s) for o in r.ops))
    assert r.latency_fused_s <= r.latency_s
    assert r.t_compute_s > 0 and r.t_memory_s > 0
    assert {m.path for m in r.modules} >= {"", "0", "1", "2"}
    root = next(m for m in r.modules if m.path == "")
    assert root.latency_s == pytest.approx(r.latency_s)
    assert r.latency_module_s > 0 and {layer.path for layer in r.layers} == {"0", "1", "2"}


@pytest.fixture(scope="module")
def llama_decode():
    from modelmeter import api

    return api.analyse("llama3-8b", dtype="fp16", batch=1, seq=1)


def test_llama3_8b_decode_step_on_h100_is_weight_bandwidth_bound(llama_decode):
    """seq 1, no KV cache: the closest to a decode step the trace supports."""
    hw = get_hardware("h100-sxm")
    counts = llama_decode.counts
    fp16 = roofline(counts, hw, dtype="fp16")
    # A decode step reads every weight once, except the embedding table: its lookup
    # gathers one row (128256 x 4096 x 2 bytes = 1.05 GB are not read).
    embedding_table = 128_256 * 4096 * 2
    weight_time = (counts.totals.param_bytes - embedding_table) / hw.memory_bandwidth_bytes_per_s
    assert counts.totals.param_bytes == pytest.approx(16.06e9, rel=0.01)
    assert fp16.bound == "memory"
    # The back-of-envelope 16.06 GB / 3.35 TB/s = 4.8 ms counts the whole table.
    assert fp16.latency_s == pytest.approx(4.8e-3, rel=0.08)
    assert fp16.latency_s == pytest.approx(weight_time, rel=0.02)
    assert fp16.latency_fused_s == pytest.approx(weight_time, rel=0.02)
    # The seed's module-level figure charges each module all its parameters, the table included.
    full_table_time = counts.totals.param_bytes / hw.memory_bandwidth_bytes_per_s
    assert fp16.latency_module_s == pytest.approx(full_table_time, rel=0.02)
    int4 = roofline(counts, hw, dtype="fp16", weights="int4")
    assert int4.bound == "memory"
    # Weight-only int4: the blocks' linear weights at 4 bits; lm_head and norms stay fp16.
    from modelmeter.formulas import decoder_dims, decoder_layer_matmul_params

    dims = decoder_dims(llama_decode.loaded.config)
    linear = dims.layers * decoder_layer_matmul_params(dims)
    int4_weights = linear / 2 + (counts.totals.params - linear - 128_256 * 4096) * 2
    assert int4.latency_s == pytest.approx(int4_weights / hw.memory_bandwidth_bytes_per_s, rel=0.02)
    assert int4.latency_fused_s == pytest.approx(int4_weights / hw.memory_bandwidth_bytes_per_s, rel=0.02)
    assert int4.quantization is not None and int4.quantization.kept_precision == "fp16"


@pytest.mark.slow
def test_plots_png_svg_and_unwritable(tmp_path, llama_decode):
    from modelmeter.report.plots import plot_module_times, plot_roofline

    r = roofline(llama_decode.counts, get_hardware("h100-sxm"), dtype="fp16")
    png = plot_roofline(r, tmp_path / "r.png", title="t")
    assert png.read_bytes()[:4] == b"\x89PNG"
    svg = plot_module_times(r, tmp_path / "m.svg")
    assert "<svg" in svg.read_text()
    for bad in (tmp_path / "missing" / "r.png", tmp_path / "r.txt"):
        with pytest.raises(UserInputError, match="cannot write plot"):
            plot_roofline(r, bad)


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELMETER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "roofline", *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_cli_decode_json(tmp_path):
    out = tmp_path / "r.json"
    res = _cli("llama3-8b", "--seq", "1", "--batch", "1", "--hardware", "h100-sxm", "--dtype", "fp16",
               "--json", str(out), "--plot", str(tmp_path / "p.svg"), home=tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    rl = data["roofline"]
    assert rl["hardware"] == "h100-sxm" and rl["bound"] == "memory"
    assert rl["latency_s"] == pytest.approx(4.8e-3, rel=0.08)  # 4.49 ms: see the test above
    assert {"t_compute_s", "t_memory_s", "bound"} <= set(data["modules"][0])
    assert "predicted latency" in res.stdout and (tmp_path / "p.svg").exists()


@pytest.mark.parametrize("args, needle", [
    (("--hardware", "h100-nope"), "unknown hardware"),
    (("--hardware", "h100-sxm", "--dtype", "int4"), "no matmul peak for int4"),
    (("--hardware", "h100-sxm", "--plot", "/nonexistent-dir/x.png"), "cannot write plot"),
    ((), "calibrate"),  # no --hardware and no local profile in this MODELMETER_HOME
])
def test_cli_bad_input_one_line_exit_2(tmp_path, monkeypatch, run_main, args, needle):
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    code, _, err = run_main("roofline", "gpt2", "--seq", "8", *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err
