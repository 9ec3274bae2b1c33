"""The calibrated prediction: model fitting, interpolation, cache keying, refusal under load, JSON keys.

No timing thresholds: the fitting is checked on synthetic points built from a
known model, the refusal with an injected load average, the keys through
run_bench and the CLI with a profile seeded in a temp MODELMETER_HOME.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from modelmeter import api
from modelmeter.analysis.predict import predict, prediction_section
from modelmeter.analysis.roofline import roofline
from modelmeter.hardware import Hardware
from modelmeter.hardware.local import (
    AUTO_ENV,
    CalibrationRefused,
    cache_key,
    default_threads,
    load_cached,
    load_warning,
    local_profile,
    profile_cache_path,
    refusal_reason,
    save_cached,
)
from modelmeter.hardware.perfmodel import TINY, Peaks, PerfModel, Point, fit, op_class
from modelmeter.hardware.plausible import InvalidProfile
from modelmeter.hardware.profile import local_profile_path
from modelmeter.measure.bench import Prediction, measured_section, run_bench
from modelmeter.measure.timer import load_conditions

PEAKS = Peaks(matmul_flops=100e9, vector_flops=10e9, bandwidth_bytes_per_s=20e9)


def _gemm(label: str, flops: float, bytes_: float, overhead: float, eff: float) -> Point:
    bound = PEAKS.bound_s(flops, 0.0, bytes_)
    return Point("gemm", label, flops, 0.0, bytes_, overhead + bound / eff)


def _model(overhead: float = 5e-6) -> PerfModel:
    points = [
        Point("gemm", TINY, 1e3, 0.0, 1e3, overhead),
        _gemm("small", 1e6, 1e5, overhead, 0.1),
        _gemm("large", 1e9, 1e7, overhead, 0.5),
        Point("elementwise", TINY, 0.0, 8.0, 96.0, 2e-6),
        Point("elementwise", "add 1M", 0.0, 1e6, 12e6, 2e-6 + 12e6 / 20e9 / 0.8),
    ]
    return fit(points, PEAKS, view_s=1e-6, module_call_s=2e-6, conditions={"threads": 1})


# ------------------------------------------------------------------ fitting and interpolation


def test_fit_recovers_overhead_and_reproduces_every_measured_point() -> None:
    model = _model()
    assert model.classes["gemm"].overhead_s == 5e-6
    for p in model.points:
        if p.label != TINY:
            assert model.op_seconds(p.op_class, p.matrix_flops, p.vector_flops, p.bytes) == pytest.approx(p.seconds)
    # The efficiencies are the ones the synthetic points were made with.
    effs = sorted(10 ** k[2] for k in model.classes["gemm"].knots)
    assert effs == pytest.approx([0.1, 0.5])


def test_interpolation_stays_between_neighbours_and_never_extrapolates() -> None:
    cm = _model().classes["gemm"]
    # Same intensity (10 FLOP/B) as both knots: halfway in log size lies between their efficiencies.
    mid_bound = PEAKS.bound_s(1e7 * 3, 0.0, 3e6)
    e = cm.efficiency(mid_bound, 10.0)
    assert 0.1 < e < 0.5
    # Far beyond the largest point: its efficiency, not a trend carried on.
    assert cm.efficiency(PEAKS.bound_s(1e14, 0.0, 1e13), 10.0) == pytest.approx(0.5, rel=0.05)
    assert cm.efficiency(1e-15, 10.0) == pytest.approx(0.1, rel=0.05)


def test_small_ops_cost_their_dispatch_overhead_and_views_their_view_cost() -> None:
    model = _model(overhead=7e-6)
    # Smaller than the smallest measured op: the overhead plus its bound at that op's efficiency (0.1).
    assert model.op_seconds("gemm", 2.0, 0.0, 16.0) == pytest.approx(7e-6 + 16 / 20e9 / 0.1)
    assert model.op_seconds("view", 0.0, 0.0, 0.0) == 1e-6
    # A class never measured falls back to the elementwise model.
    assert model.op_seconds("reduction", 0.0, 8.0, 96.0) == pytest.approx(model.op_seconds("elementwise", 0.0, 8.0, 96.0))


def test_fit_refuses_a_non_positive_time() -> None:
    with pytest.raises(ValueError, match="non-positive"):
        fit([Point("gemm", "x", 1.0, 0.0, 1.0, 0.0)], PEAKS, view_s=0.0, module_call_s=0.0)


def test_model_round_trips_through_json() -> None:
    model = _model()
    again = PerfModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model
    with pytest.raises(ValueError, match="schema"):
        PerfModel.from_dict({**model.to_dict(), "schema": "other"})


@pytest.mark.parametrize(("op", "category", "cls"), [
    ("aten.addmm.default", "contraction", "gemm"),
    ("aten.mm.default", "contraction", "gemm"),
    ("aten.bmm.default", "contraction", "gemm"),
    ("aten.convolution.default", "contraction", "conv"),
    ("aten._scaled_dot_product_flash_attention_for_cpu.default", "contraction", "attention"),
    ("aten.native_batch_norm.default", "other", "norm"),
    ("aten.native_layer_norm.default", "other", "norm"),
    ("aten._softmax.default", "other", "norm"),
    ("aten.mean.dim", "other", "reduction"),
    ("aten.max_pool2d_with_indices.default", "other", "reduction"),
    ("aten.add.Tensor", "other", "elementwise"),
    ("aten.hardtanh.default", "other", "elementwise"),
    ("aten.gelu.default", "other", "elementwise"),
    ("aten.cat.default", "data", "data"),
    ("aten.embedding.default", "data", "data"),
    ("aten.view.default", "view", "view"),
    ("aten.empty.memory_format", "data", "view"),
])
def test_op_classes(op: str, category: str, cls: str) -> None:
    assert op_class(op, category) == cls


# ------------------------------------------------------------------ threads, load, refusal


@pytest.mark.parametrize(("physical", "logical", "want"), [
    (4, 8, 4),  # physical cores, not hyper-threads
    (2, 2, 2),  # whatever the load: one default every run (the load warning says a busy machine)
    (None, 8, 8),  # physical count unknown: the logical CPUs
    (0, 0, 1),  # never below one
])
def test_default_threads(physical: int | None, logical: int, want: int) -> None:
    assert default_threads(physical, logical) == want


def test_load_above_the_cores_is_flagged_in_words() -> None:
    assert load_warning(1.5, 2) is None
    assert "load average was 4.20 on 2 CPUs" in load_warning(4.2, 2)
    cond = load_conditions(lambda: 1e6)
    assert cond["load_average"] == 1e6 and "other programs" in cond["load_warning"]
    assert load_conditions(lambda: 0.0)["load_warning"] is None


def test_refusal_reasons() -> None:
    assert refusal_reason(0.5, 2, 50e9, 300e9) is None
    busy = refusal_reason(6.0, 2, 50e9, 300e9)
    assert "not saved" in busy and "quiet" in busy
    starved = refusal_reason(0.5, 2, 1e9, 300e9)
    assert "0.3% of the ISA peak" in starved and "quiet" in starved


def test_a_calibration_under_load_is_refused_and_nothing_is_saved(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    monkeypatch.setenv(AUTO_ENV, "1")
    with pytest.raises(CalibrationRefused, match="load average"):
        local_profile(loadavg=lambda: 1000.0)
    assert not any(tmp_path.rglob("*.json"))
    assert not local_profile_path().exists()


@pytest.mark.slow
def test_hardware_calibrate_under_load_says_why_and_saves_nothing(tmp_path, monkeypatch, run_main) -> None:
    from modelmeter.hardware import CalibrationSettings

    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    tiny = CalibrationSettings(repeats=1, min_sample_s=0.0005, matmul_sizes=(64,), matmul_target_s=0.0,
                               stream_bytes_per_array=2**20, budget_s=1.0, precisions=("fp32",))
    monkeypatch.setattr(CalibrationSettings, "quick", classmethod(lambda cls: tiny))
    monkeypatch.setattr("modelmeter.hardware.local.system_load", lambda: 1000.0)
    code, _out, err = run_main("hardware", "calibrate", "--quick", "--device", "cpu")
    assert code == 2
    assert "not saved" in err and "load average was 1000.00" in err and "quiet" in err
    assert not local_profile_path().exists()


def test_automatic_calibration_can_be_turned_off(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    monkeypatch.setenv(AUTO_ENV, "0")
    assert local_profile(loadavg=lambda: 0.0) is None


# ------------------------------------------------------------------ the cache


def _hardware() -> Hardware:
    return Hardware(id="local", name="Test CPU (1 thread)", vendor="Intel", kind="cpu", memory_bytes=2**33,
                    memory_bandwidth_bytes_per_s=PEAKS.bandwidth_bytes_per_s,
                    peak_flops={"fp32": PEAKS.matmul_flops}, vector_flops={"fp32": PEAKS.vector_flops},
                    tdp_w=None, year=None, source="calibrated", sources={})


def test_cache_key_separates_cpu_threads_and_torch() -> None:
    base = cache_key("Intel(R) Xeon(R) Processor", 2, "2.13.0+cpu")
    assert base == "cpu-intel-r-xeon-r-processor-2t-torch2.13.0-cpu"
    assert len({base, cache_key("Intel(R) Xeon(R) Processor", 1, "2.13.0+cpu"),
                cache_key("Intel(R) Xeon(R) Processor", 2, "2.12.0+cpu"),
                cache_key("AMD EPYC 9654", 2, "2.13.0+cpu")}) == 4


def test_cached_profile_is_reused_for_its_key_only(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    monkeypatch.setenv(AUTO_ENV, "1")
    from modelmeter.hardware.detect import cpu_name

    key = cache_key(cpu_name(), torch.get_num_threads(), torch.__version__)
    save_cached(key, _hardware(), _model(), None)
    assert load_cached(key) == (_hardware(), _model())
    # The cached profile is served without calibrating (an injected overload would refuse one).
    prof = local_profile(loadavg=lambda: 1000.0)
    assert prof is not None and not prof.calibrated_now and prof.model == _model()
    # Another thread count is another machine: it is not served this profile.
    with pytest.raises(CalibrationRefused):
        local_profile(threads=torch.get_num_threads() + 1, loadavg=lambda: 1000.0)
    # A damaged cache file is never trusted: it is set aside (kept, renamed) and named.
    path = profile_cache_path(key)
    path.write_text("{not json")
    with pytest.raises(InvalidProfile, match="unreadable.*set aside"):
        load_cached(key)
    assert not path.exists() and [p.read_text() for p in path.parent.glob(f"{path.name}.invalid-*")] == ["{not json"]
    assert load_cached(key) is None


# ------------------------------------------------------------------ predictions on a real trace


def _counts():
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    return api.analyse(model, (torch.randn(4, 64),)).counts


def test_predict_sums_ops_and_module_calls_per_module_and_in_total() -> None:
    counts = _counts()
    model = _model()
    roof = roofline(counts, _hardware())
    pred = predict(counts, roof, model)
    assert pred is not None
    ops = sum(p.predicted_latency_s for p in pred.ops)
    calls = sum(m.calls for m in counts.modules)
    assert pred.module_calls == calls == 4  # the Sequential and its three children
    assert pred.predicted_latency_s == pytest.approx(ops + calls * model.module_call_s)
    assert pred.modules[""] == pytest.approx(pred.predicted_latency_s)
    first = [p for p in pred.ops if p.module == "0"]
    assert pred.modules["0"] == pytest.approx(sum(p.predicted_latency_s for p in first) + model.module_call_s)
    assert pred.roofline_latency_s == roof.latency_s
    # Every op is costed at least its bound at the model's peaks (efficiencies here are <= 1).
    for p, o in zip(pred.ops, roof.ops, strict=True):
        assert p.predicted_latency_s >= PEAKS.bound_s(o.flops, o.other_flops, o.bytes) * (1 - 1e-9)
    section = prediction_section(pred)
    assert {"predicted_latency_s", "roofline_latency_s", "by_class_s", "modules", "method"} <= set(section)
    json.dumps(section)


def test_no_prediction_at_a_precision_that_was_not_calibrated() -> None:
    counts = _counts()
    hw = Hardware(**{**_hardware().__dict__, "peak_flops": {"fp32": 1e11, "bf16": 2e11},
                     "vector_flops": {"fp32": 1e10, "bf16": 1e10}})
    assert predict(counts, roofline(counts, hw, dtype="bf16"), _model()) is None


# ------------------------------------------------------------------ JSON keys


def test_bench_rows_carry_bound_calibrated_prediction_and_its_error() -> None:
    model = torch.nn.Linear(16, 16).eval()
    x = torch.randn(1, 16)

    def make_call(_batch: int):
        return lambda: model(x)

    pred = Prediction(flops=1.0, dram_bytes=1.0, precision="fp32", latency_s=1e-7, hardware="local",
                      calibrated_latency_s=3e-6)
    result = run_bench(make_call, [1], predict=lambda _b: pred, min_time_s=0.02, min_iters=3,
                       warmup_s=0.0, warmup_iters=1)
    section = measured_section(result)
    row = section["sweep"][0]
    p50 = row["latency_s"]["p50"]
    assert row["predicted_latency_s"] == row["roofline_latency_s"] == 1e-7  # the old key keeps its meaning
    assert row["calibrated_latency_s"] == 3e-6
    assert row["calibrated_prediction_error"] == pytest.approx(3e-6 / p50 - 1)
    assert row["prediction_error"] is None  # still the text of a failed prediction
    assert section["calibrated_prediction_error"] == row["calibrated_prediction_error"]
    assert "load_average" in section["conditions"] and "load_warning" in section["conditions"]


@pytest.mark.slow
def test_report_shows_calibrated_and_measured_latency_from_a_cached_profile(tmp_path, monkeypatch) -> None:
    """`report` on a home holding only the cached profile: bound, calibrated prediction, measurement, error.

    A child process: the report command makes glibc retain freed memory for the rest of its process.
    """
    import os
    import subprocess
    import sys

    from modelmeter.hardware.detect import cpu_name, read_cpu_info

    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(AUTO_ENV, "1")
    env = dict(os.environ)
    # Every thread count the command may pick from the load at its start.
    for threads in range(1, (read_cpu_info().physical_cores or 1) + 1):
        save_cached(cache_key(cpu_name(), threads, torch.__version__), _hardware(), _model(), None)
    (tmp_path / "mm_pred_net.py").write_text(
        "import torch\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU()), (torch.randn(2, 32),)\n")
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "report", "mm_pred_net:build",
                           "--json", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.read_text())
    rl = data["roofline"]
    assert rl["hardware"] == "local"
    assert rl["calibrated"]["predicted_latency_s"] == rl["predicted_latency_s"] > 0
    assert rl["roofline_latency_s"] == rl["latency_s"]
    m = data["measured"]
    assert m["calibrated_latency_s"] == pytest.approx(rl["predicted_latency_s"])
    assert m["calibrated_prediction_error"] == pytest.approx(
        rl["predicted_latency_s"] / m["latency_s"]["p50"] - 1)
    assert "calibrated" in done.stdout and "measured latency" in done.stdout
    assert not math.isnan(m["calibrated_prediction_error"])
    _validate(data, "report")  # every added key is in the contract


def _validate(document: dict, which: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from modelmeter.core.schema import load_schema

    jsonschema.Draft202012Validator(load_schema(which)).validate(document)


def test_bench_through_the_pipeline_predicts_each_batch_with_the_cached_profile(tmp_path, monkeypatch) -> None:
    """`api.bench` on cpu with no --hardware: the cached 'local' profile gives the bound and the
    calibrated prediction of each batch (nothing calibrated: the cache is there); the JSON validates."""
    from modelmeter.hardware.detect import cpu_name

    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(AUTO_ENV, "1")
    monkeypatch.syspath_prepend(str(tmp_path))
    save_cached(cache_key(cpu_name(), torch.get_num_threads(), torch.__version__), _hardware(), _model(), None)
    (tmp_path / "mm_pred_bench.py").write_text(
        "import torch\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU()), (torch.randn(2, 32),)\n")
    rep = api.bench("mm_pred_bench:build", batches=[1, 4], min_time_s=0.02, min_iters=3, warmup_s=0.0)
    data = rep.to_dict()
    rows = data["measured"]["sweep"]
    assert [r["batch"] for r in rows] == [1, 4]
    for r in rows:
        assert r["roofline_latency_s"] == r["predicted_latency_s"] > 0
        assert r["calibrated_latency_s"] > r["roofline_latency_s"]  # dispatch costs on top of the bound
        assert r["calibrated_prediction_error"] == pytest.approx(
            r["calibrated_latency_s"] / r["latency_s"]["p50"] - 1)
    # The first batch's roofline carries the calibrated prediction it came from.
    rl = data["roofline"]
    assert rl["calibrated"]["predicted_latency_s"] == rl["predicted_latency_s"] == rows[0]["calibrated_latency_s"]
    assert not local_profile_path().exists()  # cached: no calibration ran (it would have saved one)
    _validate(data, "report")


# ------------------------------------------------------------------ LLM steps here


def test_llm_fit_check_names_what_is_needed_and_available() -> None:
    from modelmeter.pipeline.llm_measure import check_fits

    assert check_fits(1_000_000, 4, 0.0, 2**30) is None
    why = check_fits(1_100_000_000, 4, 2**30, 4 * 2**30)
    assert why is not None and "5.1 GiB" in why and "4.0 GiB is available" in why
    assert check_fits(10**12, 4, 0.0, None) is None  # memory unknown: not refused here


@pytest.mark.slow
def test_llm_measure_prints_and_writes_predicted_and_measured_steps(tmp_path, monkeypatch, run_main) -> None:
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    from modelmeter.hardware.detect import cpu_name
    from modelmeter.hardware.profile import save_local_profile
    from modelmeter.pipeline.calibrated import apply_threads

    threads = apply_threads(None, "cpu")
    save_cached(cache_key(cpu_name(), threads, torch.__version__), _hardware(), _model(), None)
    save_local_profile(_hardware())
    out = tmp_path / "llm.json"
    code, stdout, err = run_main("llm", "gpt2", "--hardware", "local", "--dtype", "fp32", "--prompt", "8",
                                 "--gen", "2", "--measure", "--json", str(out))
    assert code == 0, err
    local = json.loads(out.read_text())["llm"]["local"]
    m = local["measured"]
    assert m["ttft_s"] > 0 and m["tpot_s"] > 0 and m["decode_steps"] == 2
    assert m["tokens_per_s"] == pytest.approx(1 / m["tpot_s"])
    assert local["ttft_bound_s"] > 0 and local["tpot_predicted_s"] > 0 and local["ttft_predicted_s"] > 0
    assert local["tpot_prediction_error"] == pytest.approx(local["tpot_predicted_s"] / m["tpot_s"] - 1)
    assert "TTFT" in stdout and "measured decode" in stdout and "predicted (calibrated)" in stdout
    _validate(json.loads(out.read_text()), "llm_document")


def test_a_refused_calibration_still_leaves_a_saved_profile_as_the_bound(tmp_path, monkeypatch) -> None:
    from modelmeter.hardware.profile import save_local_profile
    from modelmeter.pipeline.calibrated import local_hardware

    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    monkeypatch.setenv(AUTO_ENV, "1")
    monkeypatch.setattr("modelmeter.hardware.local.system_load", lambda: 1000.0)
    hw, why = local_hardware()
    assert hw is None and "not saved" in why and "load average was 1000.00" in why
    save_local_profile(_hardware())
    hw, why = local_hardware()
    assert hw == _hardware() and why is None


# ------------------------------------------------------------------ roofline --hardware local


def _seed_profiles() -> None:
    """The cached per-op-class profile for every thread count a command may pick, and 'local' saved."""
    from modelmeter.hardware.detect import cpu_name, read_cpu_info
    from modelmeter.hardware.profile import save_local_profile

    for threads in range(1, max(read_cpu_info().physical_cores or 1, torch.get_num_threads()) + 1):
        save_cached(cache_key(cpu_name(), threads, torch.__version__), _hardware(), _model(), None)
    save_local_profile(_hardware())


def test_roofline_on_local_shows_the_calibrated_prediction_beside_the_bound(tmp_path, monkeypatch,
                                                                            run_main) -> None:
    """`roofline --hardware local` with a cached profile: terminal and JSON carry the calibrated
    prediction per op, per module and in total beside the bound; ops and modules add up."""
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    _seed_profiles()
    (tmp_path / "mm_pred_roof.py").write_text(
        "import torch\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)),"
        " (torch.randn(2, 32),)\n")
    out = tmp_path / "roof.json"
    code, stdout, err = run_main("roofline", "mm_pred_roof:build", "--hardware", "local", "--json", str(out))
    assert code == 0, err
    assert "calibrated prediction (this machine)" in stdout and "predicted (calibrated)" in stdout
    data = json.loads(out.read_text())
    rl = data["roofline"]
    cal = rl["calibrated"]
    assert rl["predicted_latency_s"] == cal["predicted_latency_s"] > rl["latency_s"] == rl["roofline_latency_s"]
    # Per op: every op the roofline costed, the bound summing to the roofline's total.
    ops = cal["ops"]
    assert [o["op"] for o in ops].count("aten.addmm.default") == 2
    assert sum(o["roofline_latency_s"] for o in ops) == pytest.approx(rl["latency_s"])
    assert sum(o["predicted_latency_s"] for o in ops) + cal["module_call_overhead_s"] == pytest.approx(
        cal["predicted_latency_s"])
    # Per module, in the report's module rows: the calibrated figure beside the bound.
    rows = {m["path"]: m for m in data["modules"]}
    assert rows[""]["predicted_latency_s"] == pytest.approx(cal["predicted_latency_s"])
    bound = {m["path"]: m["latency_s"] for m in rl["modules"]}
    assert rows["0"]["roofline_latency_s"] == pytest.approx(bound["0"])
    first = sum(o["predicted_latency_s"] for o in ops if o["module"] == "0")
    assert rows["0"]["predicted_latency_s"] == pytest.approx(first + _model().module_call_s)
    _validate(data, "report")
    # A database device has no calibration: no calibrated keys.
    code, stdout, err = run_main("roofline", "mm_pred_roof:build", "--hardware", "h100-sxm", "--json", "-")
    assert code == 0, err
    assert "calibrated" not in json.loads(stdout)["roofline"]


# ------------------------------------------------------------------ hardware calibrate refines the model


@pytest.mark.slow
def test_hardware_calibrate_reruns_the_microbenchmarks_and_refines_the_cached_model(tmp_path, monkeypatch,
                                                                                     run_main) -> None:
    """`hardware calibrate` measures the peaks, then the per-op-class microbenchmarks again, and
    replaces the cached prediction model of this key; a refusal after them saves nothing."""
    from modelmeter.hardware import CalibrationSettings, microbench
    from modelmeter.hardware.detect import cpu_name

    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    tiny = CalibrationSettings(repeats=1, min_sample_s=0.0005, matmul_sizes=(64,), matmul_target_s=0.0,
                               stream_bytes_per_array=2**20, budget_s=1.0, precisions=("fp32",))
    monkeypatch.setattr(CalibrationSettings, "quick", classmethod(lambda cls: tiny))
    real = microbench.run_microbench
    runs: list[float] = []

    def counted(device: str = "cpu", **kw):
        runs.append(kw["budget_s"])
        return real(device, **{**kw, "budget_s": 0.0})  # real timings, the tiny cases only

    monkeypatch.setattr(microbench, "run_microbench", counted)
    verdicts: list[str | None] = []

    def refusal(_result):  # the logic, not the load: quiet before the microbenchmarks, loaded after
        return verdicts.pop(0)

    monkeypatch.setattr("modelmeter.hardware.local.calibration_refusal", refusal)
    # A 64x64 matmul on a loaded CI runner can fall below the ISA floor: this test is about the
    # rerun and the refit, the floors have their own tests (test_plausible).
    monkeypatch.setattr("modelmeter.hardware.plausible.isa_floors", lambda *_a, **_k: {})
    key = cache_key(cpu_name(), torch.get_num_threads(), torch.__version__)
    save_cached(key, _hardware(), _model(), None)  # an earlier (short) calibration's model

    verdicts[:] = [None, "calibration not saved: the 1-minute load average was 9.00 on 2 CPUs"]
    code, _out, err = run_main("hardware", "calibrate", "--quick", "--device", "cpu")
    assert code == 2 and "load average was 9.00" in err
    assert len(runs) == 1  # the microbenchmarks ran...
    assert load_cached(key)[1] == _model() and not local_profile_path().exists()  # ...nothing was saved

    verdicts[:] = [None, None]
    code, out, err = run_main("hardware", "calibrate", "--quick", "--device", "cpu")
    assert code == 0, err
    assert len(runs) == 2 and runs[1] > 0
    assert "saved as hardware id 'local'" in out and "calibrated prediction model" in out
    hw, model = load_cached(key)
    assert model != _model()  # refined: refitted to the points just measured...
    assert {p.op_class for p in model.points} == {"gemm", "conv", "attention", "elementwise", "norm",
                                                  "reduction", "data"}
    assert all(p.seconds > 0 for p in model.points)
    assert model.conditions["threads"] == torch.get_num_threads()
    # ...against the peaks just measured, which are also the saved 'local' profile.
    from modelmeter.hardware.profile import load_local_profile

    assert hw == load_local_profile()
    assert model.peaks.matmul_flops == hw.peak_flops["fp32"]
    prof = local_profile(auto_calibrate=False)
    assert prof is not None and prof.model == model


# ------------------------------------------------------------------ calibration progress through Hooks


def test_first_use_calibration_reports_progress_through_the_pipeline_hooks(tmp_path, monkeypatch) -> None:
    """A fresh home: `run.report` calibrates this machine once and says how far it got through
    `Hooks.on_calibration` (else as status lines through `on_status`); the cached profile is then
    reused with no progress at all. Real calibration code, at the tiniest sizes and an injected load."""
    from modelmeter.hardware import CalibrationSettings, calibration, microbench
    from modelmeter.pipeline import run
    from modelmeter.pipeline.options import ModelOptions, ReportOptions

    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(AUTO_ENV, "1")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("modelmeter.hardware.local.system_load", lambda: 0.0)
    monkeypatch.setattr("modelmeter.hardware.local.refusal_reason", lambda *a: None)  # tiny sizes are slow
    # ... and their rates may read as implausible for this CPU at its default threads: the test is
    # about progress, so the profile checks (tested in test_plausible.py) let these tiny ones pass.
    monkeypatch.setattr("modelmeter.hardware.local.implausible_reason", lambda *a: None)
    monkeypatch.setattr("modelmeter.hardware.profile.check_hardware", lambda hw, threads: hw)
    tiny = CalibrationSettings(repeats=1, min_sample_s=0.0005, matmul_sizes=(64,), matmul_target_s=0.0,
                               stream_bytes_per_array=2**20, budget_s=1.0, precisions=("fp32",))
    real_cal, real_bench = calibration.calibrate, microbench.run_microbench
    monkeypatch.setattr(calibration, "calibrate", lambda device, **kw: real_cal(device, **{**kw, "settings": tiny}))
    monkeypatch.setattr(microbench, "run_microbench",
                        lambda device, **kw: real_bench(device, **{**kw, "budget_s": 0.0}))
    (tmp_path / "mm_pred_hooks.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Linear(8, 8), (torch.randn(2, 8),)\n")
    model = ModelOptions("mm_pred_hooks:build")
    options = ReportOptions(measure=False, energy=False, environment=False)

    steps: list[tuple[str, int, int]] = []
    statuses: list[str] = []
    sections = run.report(model, options, run.Hooks(on_status=statuses.append,
                                                    on_calibration=lambda *s: steps.append(s)))
    assert sections.roofline is not None and sections.roofline.calibrated is not None
    assert len(steps) > 5 and all(total == 100 for _d, _n, total in steps)
    done = [n for _d, n, _t in steps]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 100
    assert {d for d, _n, _t in steps} >= {"matmul fp32", "dispatch overhead", "done"}
    assert not any("calibrating" in s for s in statuses)  # on_calibration took it

    # Without on_calibration, the percentage reaches on_status (another home: calibrated again).
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path / "home2"))
    statuses.clear()
    run.report(model, options, run.Hooks(on_status=statuses.append))
    shown = [s for s in statuses if s.startswith("calibrating this machine once")]
    assert len(shown) > 5 and shown[-1].endswith(": 100%")

    # Cached now: no calibration, so no progress.
    steps.clear()
    statuses.clear()
    run.report(model, options, run.Hooks(on_status=statuses.append, on_calibration=lambda *s: steps.append(s)))
    assert steps == [] and not any("calibrating" in s for s in statuses)


def test_llm_on_local_bounds_with_the_profile_of_its_own_thread_count(tmp_path, monkeypatch, run_main) -> None:
    """The saved 'local' file may come from another thread count (the first calibration, or
    `hardware calibrate`): `llm --hardware local` prices the bound with the cached profile of the
    threads it runs with, so bound, calibrated prediction and measurement describe one setting
    (found on a 2-core VM: a 1-thread file put the 2-thread TTFT bound at 5.8 s, above the 3.2 s
    measured)."""
    import dataclasses

    from modelmeter.hardware.detect import cpu_name
    from modelmeter.hardware.profile import save_local_profile
    from modelmeter.pipeline.calibrated import apply_threads

    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    threads = apply_threads(None, "cpu")
    slow = dataclasses.replace(_hardware(), name="Test CPU (another thread count)",
                               peak_flops={"fp32": PEAKS.matmul_flops / 4})
    save_local_profile(slow)
    save_cached(cache_key(cpu_name(), threads, torch.__version__), _hardware(), _model(), None)
    code, out, err = run_main("llm", "gpt2", "--hardware", "local", "--dtype", "fp32", "--prompt", "8",
                              "--gen", "2", "--json", "-")
    assert code == 0, err
    section = json.loads(out)["llm"]
    assert section["hardware_detail"]["peak_flops"] == PEAKS.matmul_flops  # not the saved file's quarter
