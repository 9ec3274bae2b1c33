"""`run_bench`, the `measured` section and `modelmeter bench` on real models on CPU.

Library tests time a tiny real call with min-time 0.03-0.05 s; energy meters
read a real sysfs-shaped RAPL tree in tmp_path; the CLI runs in child
processes (bad input, Ctrl-C) and in-process through `main()` (JSON report).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modelmeter.cli.main import main
from modelmeter.core.errors import UserInputError
from modelmeter.measure.bench import Prediction, measured_section, run_bench
from modelmeter.measure.energy import RaplMeter, select_meter

# malloc="default": library tests leave this pytest process's C allocator alone;
# the "retain" policy is tested in child processes (tests/test_allocator.py, the CLI).
FAST = dict(min_time_s=0.05, min_iters=5, warmup_s=0.0, warmup_iters=1, malloc="default")
LATENCY_KEYS = {"min", "mean", "std", "p50", "p90", "p99", "iterations"}
TOP_KEYS = {"device", "latency_s", "throughput_per_s", "peak_memory_bytes", "energy_j_per_inference",
            "energy_source", "carbon_g_per_1000", "sweep", "conditions", "best_batch", "interrupted"}
ROW_KEYS = {"batch", "status", "latency_s", "throughput_per_s", "peak_memory_bytes",
            "energy_j_per_inference", "energy_source", "carbon_g_per_1000", "predicted_latency_s",
            "roofline_efficiency"}

TINY_MODEL = """
import torch

def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    return model, (torch.randn(1, 64),)
"""


def linear_call(batch: int):
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 8)).eval()
    x = torch.randn(batch, 64)

    def call() -> None:
        with torch.inference_mode():
            model(x)

    return call


def tiny_prediction(batch: int) -> Prediction:
    macs = batch * (64 * 128 + 128 * 8)
    return Prediction(flops=2.0 * macs, dram_bytes=4.0 * (64 * 128 + 128 * 8), precision="fp32",
                      latency_s=1e-6 * batch, hardware="test-chip", tdp_w=100.0)


# ------------------------------------------------------------------ run_bench


def test_rows_percentiles_iterations_and_throughput() -> None:
    seen = []
    result = run_bench(linear_call, [1, 4], predict=tiny_prediction, on_row=seen.append, **FAST)
    assert [r.batch for r in result.rows] == [1, 4] == [r.batch for r in seen]
    assert not result.interrupted and not result.oom and result.largest_batch_that_fit == 4
    for row in result.rows:
        lat = row.sweep.latency
        assert row.status == "ok" and lat is not None
        assert lat.min_s <= lat.p50_s <= lat.p90_s <= lat.p99_s
        assert lat.iterations >= FAST["min_iters"]
        assert row.sweep.throughput_per_s == pytest.approx(row.batch / lat.p50_s, rel=1e-9)
        assert row.roofline_efficiency == pytest.approx(1e-6 * row.batch / lat.p50_s)
        assert row.energy is None  # not asked for
    section = measured_section(result)
    assert TOP_KEYS <= set(section)
    assert set(section["latency_s"]) == LATENCY_KEYS
    assert section["best_batch"] == result.best_batch.batch
    for r in section["sweep"]:
        assert ROW_KEYS <= set(r)
        assert r["throughput_per_s"] == pytest.approx(r["batch"] / r["latency_s"]["p50"], rel=1e-9)
    json.dumps(section)  # plain JSON data


def test_iteration_cap_and_minimum_are_honoured() -> None:
    capped = run_bench(linear_call, [2], min_time_s=5.0, min_iters=3, max_iters=7, warmup_s=0.0,
                       warmup_iters=0, malloc="default")
    assert capped.rows[0].sweep.latency.iterations == 7
    floor = run_bench(linear_call, [2], min_time_s=0.001, min_iters=40, warmup_s=0.0, warmup_iters=0,
                      malloc="default")
    assert floor.rows[0].sweep.latency.iterations >= 40


def test_unknown_malloc_policy_is_refused_before_anything_runs() -> None:
    built: list[int] = []
    with pytest.raises(UserInputError, match="malloc"):
        run_bench(lambda b: built.append(b) or linear_call(b), [1], **{**FAST, "malloc": "tcmalloc"})
    assert built == []


def test_no_meter_gives_a_labelled_estimate(tmp_path: Path) -> None:
    # A powercap root with no zones: 'auto' finds no meter on this CPU.
    meter = select_meter("auto", "cpu", rapl_root=tmp_path / "powercap")
    if meter is not None:  # zeus installed and working: not this test's subject
        pytest.skip(f"a {meter.name} meter is available here")
    result = run_bench(linear_call, [2], predict=tiny_prediction, energy=True, meter=None,
                       region="fr", **FAST)
    row = result.rows[0]
    assert row.energy is not None and row.energy.source == "estimate" and not row.energy.measured
    per_call = row.energy.estimate.energy_j
    assert row.energy_j_per_inference == pytest.approx(per_call / 2)
    assert row.carbon_g_per_1000 is not None and row.carbon_g_per_1000 > 0
    section = measured_section(result)
    assert section["energy_source"] == "estimate" and section["carbon_region"] == "fr"


def test_no_prediction_and_no_meter_means_no_energy() -> None:
    result = run_bench(linear_call, [1], energy=True, meter=None, **FAST)
    row = result.rows[0]
    assert row.energy.source == "none" and row.energy_j_per_inference is None
    assert row.carbon_g_per_1000 is None


def make_zone(path: Path, name: str, energy_uj: int) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text("262143328850\n")
    return path


def test_rapl_meter_measures_through_a_real_sysfs_tree(tmp_path: Path) -> None:
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 0)
    state = {"uj": 0}

    def make_call(batch: int):
        inner = linear_call(batch)

        def call() -> None:
            inner()
            state["uj"] += 1000  # the "package" burns 1 mJ per call
            (zone / "energy_uj").write_text(f"{state['uj']}\n")

        return call

    result = run_bench(make_call, [4], energy=True, meter=RaplMeter(tmp_path), **FAST)
    row = result.rows[0]
    assert row.energy.source == "rapl" and row.energy.warning is None
    assert row.energy_j_per_inference == pytest.approx(1e-3 / 4)
    assert row.average_power_w is not None and row.average_power_w > 0


def test_meter_failing_mid_run_completes_with_the_estimate_and_a_warning(tmp_path: Path) -> None:
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 5_000)
    meter = RaplMeter(tmp_path)
    assert meter.available()
    armed = {"on": False}

    def predict(batch: int) -> Prediction:
        armed["on"] = True  # runs after the timed loop, before the energy window
        return tiny_prediction(batch)

    def make_call(batch: int):
        inner = linear_call(batch)

        def call() -> None:
            inner()
            if armed["on"] and (zone / "energy_uj").exists():
                (zone / "energy_uj").unlink()  # the counter vanishes inside the window

        return call

    result = run_bench(make_call, [2, 4], predict=predict, energy=True, meter=meter, **FAST)
    assert [r.status for r in result.rows] == ["ok", "ok"]
    row = result.rows[0]
    assert row.energy.source == "estimate"
    assert "rapl meter failed" in (row.energy.warning or "")
    assert row.energy_j_per_inference == pytest.approx(row.energy.estimate.energy_j / 2)
    assert measured_section(result)["sweep"][0]["energy_warning"] == row.energy.warning


def test_keyboard_interrupt_keeps_finished_rows() -> None:
    def make_call(batch: int):
        if batch == 4:
            def stop() -> None:
                raise KeyboardInterrupt
            return stop
        return linear_call(batch)

    result = run_bench(make_call, [1, 2, 4, 8], **FAST)
    assert [r.status for r in result.rows] == ["ok", "ok", "interrupted"]
    assert result.interrupted and measured_section(result)["interrupted"] is True


# ------------------------------------------------------------------ the command


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    (tmp_path / "tinymodel.py").write_text(TINY_MODEL)
    return tmp_path


@pytest.mark.parametrize("args, fragment", [
    (["--device", "cuda"], "cuda"),
    (["--device", "xpu"], "unknown device"),
    (["--device", "banana"], "unknown device"),
    (["--batch", "1,x"], "not an integer"),
    (["--batch", "0"], "positive"),
    (["--min-time", "0"], "--min-time"),
    (["--region", "atlantis"], "unknown carbon region"),
    (["--malloc", "jemalloc"], "--malloc"),
])
def test_bad_input_is_one_line_and_exit_2(tiny: Path, args: list[str], fragment: str,
                                         monkeypatch: pytest.MonkeyPatch, run_main) -> None:
    if args == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.chdir(tiny)
    code, _, err = run_main("bench", "tinymodel:build", *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelmeter: error:") and fragment in lines[0]
    assert "Traceback" not in err


@pytest.mark.slow
def test_json_report_has_the_measured_section(tiny: Path) -> None:
    out = tiny / "bench.json"
    # A fresh process: in-process CLI tests that measured earlier may have retained freed
    # memory in this one (the CLI's default, for good), and this test checks it was left alone.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tiny), *sys.path]), "MODELMETER_DEBUG": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "modelmeter.cli.main", "bench", "tinymodel:build", "--batch", "1,8",
         "--min-time", "0.05", "--warmup", "0", "--energy", "--meter", "none", "--region", "fr",
         "--malloc", "default", "--json", str(out)],
        cwd=tiny, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout
    assert "[estimate]" in printed and "best" in printed
    data = json.loads(out.read_text())
    assert data["schema"] == "modelmeter.report/1" and data["totals"]["params"] == 64 * 256 + 256 + 2570
    m = data["measured"]
    assert TOP_KEYS <= set(m) and set(m["latency_s"]) == LATENCY_KEYS
    assert [r["batch"] for r in m["sweep"]] == [1, 8]
    assert m["energy_source"] == "estimate" and m["carbon_g_per_1000"] > 0
    assert m["best_batch"] in (1, 8) and m["interrupted"] is False
    c = m["conditions"]
    assert {"device", "device_name", "threads", "torch_version", "dtype", "batch"} <= set(c)
    assert "retained" not in c["allocator"]  # --malloc default left the allocator alone
    for r in m["sweep"]:
        assert ROW_KEYS <= set(r) and r["status"] == "ok"
        assert r["throughput_per_s"] == pytest.approx(r["batch"] / r["latency_s"]["p50"], rel=1e-9)


@pytest.mark.slow
def test_real_preset_mobilenet_v2_with_prediction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.json"
    main(["bench", "mobilenet-v2", "--batch", "1", "--min-time", "0.2", "--warmup", "0.1",
          "--hardware", "xeon-8480plus", "--malloc", "default", "--json", str(out)])
    capsys.readouterr()
    data = json.loads(out.read_text())
    m = data["measured"]
    row = m["sweep"][0]
    assert row["status"] == "ok" and row["latency_s"]["iterations"] >= 10
    assert row["predicted_latency_s"] > 0
    assert row["roofline_efficiency"] == pytest.approx(row["predicted_latency_s"] / row["latency_s"]["p50"])
    assert m["prediction_hardware"] == "xeon-8480plus"
    assert data["roofline"]["latency_s"] == pytest.approx(row["predicted_latency_s"])
    assert m["peak_memory_bytes"] is not None


@pytest.mark.slow
def test_ctrl_c_prints_and_saves_finished_rows_then_exits_130(tiny: Path) -> None:
    out = tiny / "out.json"
    env = {**os.environ, "PYTHONPATH": str(tiny), "MODELMETER_DEBUG": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelmeter.cli.main", "bench", "tinymodel:build", "--batch", "1,2,4,8",
         "--min-time", "1", "--warmup", "0", "--json", str(out)],
        cwd=tiny, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        first = proc.stdout.readline()  # rows are flushed as they finish
        if first.startswith("threads "):  # the header line says the thread count first
            first = proc.stdout.readline()
        assert first.startswith("batch 1:"), first + proc.stderr.read()
        assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert "interrupted" in rest  # the table is still printed
    m = json.loads(out.read_text())["measured"]
    assert m["interrupted"] is True
    if platform.libc_ver()[0] == "glibc":  # the CLI's default policy, recorded with the figures
        assert m["conditions"]["allocator"].startswith("glibc, freed memory retained")
    finished = [r for r in m["sweep"] if r["status"] == "ok"]
    assert finished and finished[0]["batch"] == 1
    assert all(r["latency_s"]["iterations"] >= 10 for r in finished)
    assert m["sweep"][-1]["status"] in ("ok", "interrupted")


def test_a_gpu_roofline_beside_a_cpu_measurement_gives_no_efficiency(tmp_path, monkeypatch):
    """`bench --hardware h100-sxm` on the cpu: the H100 roofline stays in the report, but a
    GPU's bound over a CPU's time is no efficiency, and the H100's TDP is no bound on the
    CPU's energy (found: roofline_efficiency 0.0033 in every row). `report` already said so."""
    from modelmeter import api

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "mm_gpu_on_cpu.py").write_text(
        "import torch\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU()), (torch.randn(2, 32),)\n")
    data = api.bench("mm_gpu_on_cpu:build", hardware="h100-sxm", device="cpu", energy=True,
                     min_time_s=0.02, min_iters=3, warmup_s=0.0).to_dict()
    assert data["roofline"]["hardware"] == "h100-sxm" and data["roofline"]["latency_s"] > 0
    for row in data["measured"]["sweep"]:
        assert row["roofline_efficiency"] is None
    notes = " ".join(data["measured"].get("notes") or [])
    assert "h100-sxm" in notes and "no roofline efficiency" in notes
