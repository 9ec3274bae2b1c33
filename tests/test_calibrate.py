"""Calibration of this machine (quick settings) and CPU detection on a fake sysfs tree."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelmeter.cli.main import cli
from modelmeter.core.errors import UserInputError
from modelmeter.hardware import CalibrationSettings, calibrate, get_hardware, load_local_profile
from modelmeter.hardware.detect import isa_class, isa_peak, read_cpu_info

# Small enough for a loaded 2-core box: a few seconds in all.
TINY = CalibrationSettings(
    repeats=3,
    min_sample_s=0.001,
    matmul_sizes=(64, 128),
    matmul_target_s=0.002,
    stream_bytes_per_array=16 * 2**20,
    budget_s=10.0,
)


@pytest.fixture(scope="module")
def calibrated():
    steps = []
    hw, result = calibrate("cpu", settings=TINY, progress=lambda d, i, n: steps.append((d, i, n)))
    return hw, result, steps


@pytest.mark.slow
def test_quick_calibration_gives_positive_finite_rates(calibrated):
    hw, result, _ = calibrated
    assert hw.id == "local" and hw.source == "calibrated" and hw.kind == "cpu"
    for table in (hw.peak_flops, hw.vector_flops):
        assert {"fp32", "fp64"} <= set(table)
        assert all(math.isfinite(v) and v > 0 for v in table.values())
    assert hw.memory_bandwidth_bytes_per_s > 1e9  # triad above 1 GB/s on anything modern
    assert result.rate("copy") > 1e9
    # fp32 matmul beats elementwise fp32 (cache-resident addcmul does 2 FLOPs per 16 bytes).
    assert hw.peak_flops["fp32"] > hw.vector_flops["fp32"]
    assert hw.ridge_point("fp32") == pytest.approx(hw.peak_flops["fp32"] / hw.memory_bandwidth_bytes_per_s)


@pytest.mark.slow
def test_result_keeps_raw_samples_and_conditions(calibrated):
    hw, result, _ = calibrated
    assert result.threads >= 1 and result.torch_version
    m = result.best["matmul.fp32"]
    assert len(m.samples_s) >= TINY.repeats
    assert m.spec.work_per_call == 2 * m.spec.size**3
    triad, copy = result.best["triad"], result.best["copy"]
    assert triad.spec.work_per_call == 3 * triad.spec.size * 8  # STREAM byte counting
    assert copy.spec.work_per_call == 2 * copy.spec.size * 8
    assert any("torch" in v and "thread" in v for v in hw.sources.values())
    assert "matmul.tf32" in dict(result.skipped)
    json.dumps(result.to_dict())  # serialisable as is


@pytest.mark.slow
def test_progress_reaches_the_end(calibrated):
    _, _, steps = calibrated
    assert steps[0][1] == 0
    assert steps[-1][1] == steps[-1][2]


@pytest.mark.slow
def test_isa_peak_reported_beside_measurement(calibrated):
    hw, result, _ = calibrated
    if result.isa_peak is None:
        pytest.skip("no ISA table entry for this CPU")
    assert result.isa_peak.peak_flops["fp32"] > 0
    assert any(n.startswith("ISA peak fp32") for n in hw.notes)


def test_bad_device_and_threads_are_user_errors():
    with pytest.raises(UserInputError):
        calibrate("tpu", settings=TINY)
    with pytest.raises(UserInputError):
        calibrate("cpu", settings=TINY, threads=0)


@pytest.mark.slow
def test_cli_calibrate_saves_local(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    monkeypatch.setattr(CalibrationSettings, "quick", classmethod(lambda cls: TINY))
    # Saving is what is tested here; the refusal under load (tests/test_predict.py) is not.
    monkeypatch.setattr("modelmeter.hardware.local.calibration_refusal", lambda _result: None)
    # One thread: two on two busy cores can collapse the elementwise rate, which is then refused.
    result = CliRunner().invoke(cli, ["hardware", "calibrate", "--quick", "--device", "cpu", "--threads", "1"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "triad" in result.output and "saved as hardware id 'local'" in result.output
    hw = load_local_profile()
    assert hw is not None and get_hardware("local") == hw
    saved = json.loads((tmp_path / "hardware" / "local.json").read_text())
    assert saved["calibration"]["best"]["triad"]["samples_s"]


@pytest.mark.slow
def test_cli_calibrate_no_save(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    monkeypatch.setattr(CalibrationSettings, "quick", classmethod(lambda cls: TINY))
    result = CliRunner().invoke(cli, ["hardware", "calibrate", "--quick", "--no-save", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "hardware" / "local.json").exists()


# ------------------------------------------------------- detection (fake sysfs)


def _fake_root(tmp_path: Path, flags: str, vendor: str = "GenuineIntel", family: int = 6,
               model_name: str = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", cpus: int = 4,
               smt: int = 2) -> Path:
    blocks = []
    for i in range(cpus):
        blocks.append(
            f"processor\t: {i}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: 106\n"
            f"model name\t: {model_name}\ncpu MHz\t\t: 2600.000\nphysical id\t: 0\n"
            f"core id\t\t: {i // smt}\nflags\t\t: {flags}\n"
        )
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("\n".join(blocks))
    (tmp_path / "proc/meminfo").write_text("MemTotal:       16384000 kB\nMemAvailable:    8192000 kB\n")
    for idx, (level, ctype, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"),
                                                (2, "Unified", "1280K"), (3, "Unified", "48M")]):
        d = tmp_path / f"sys/devices/system/cpu/cpu0/cache/index{idx}"
        d.mkdir(parents=True)
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{ctype}\n")
        (d / "size").write_text(f"{size}\n")
        (d / "shared_cpu_list").write_text("0-3\n")
    return tmp_path


def test_detect_reads_a_fake_tree(tmp_path):
    info = read_cpu_info(_fake_root(tmp_path, "fpu sse2 avx avx2 fma avx512f"))
    assert info.logical_cpus == 4 and info.physical_cores == 2  # SMT siblings counted once
    assert info.llc_bytes == 48 * 2**20 and info.cache_bytes(2) == 1280 * 2**10
    assert info.clock_hz == 2.0e9 and "model name" in info.clock_source  # base clock beats 'cpu MHz'
    assert info.memory_bytes == 16384000 * 1024
    peak = isa_peak(info, threads=4)
    assert peak is not None and peak.cores == 2  # hyperthreads share FMA units
    assert peak.peak_flops["fp32"] == 2 * 2.0e9 * 64
    assert peak.peak_flops["fp64"] == 2 * 2.0e9 * 32


def test_isa_classes(tmp_path):
    def cls(flags, vendor="GenuineIntel", family=6, sub="x"):
        root = tmp_path / sub
        root.mkdir()
        return isa_class(read_cpu_info(_fake_root(root, flags, vendor, family)))[0]

    assert cls("sse2 avx avx2 fma", sub="a").startswith("avx2_fma")
    # Zen 4 has avx512f but double-pumps it: AVX2-class throughput.
    assert cls("sse2 avx avx2 fma avx512f", "AuthenticAMD", 25, sub="b").startswith("avx2_fma")
    assert cls("sse2 avx avx2 fma avx512f", "AuthenticAMD", 26, sub="c").startswith("avx512_2fma")
    assert cls("sse2 avx", sub="d") == "avx_sandy_ivy_bridge"


def test_amx_adds_bf16_and_int8_rates(tmp_path):
    info = read_cpu_info(_fake_root(tmp_path, "sse2 avx avx2 fma avx512f amx_bf16 amx_int8 amx_tile", cpus=2, smt=1))
    peak = isa_peak(info, threads=2)
    assert peak.flops_per_cycle["bf16"] == 1024 and peak.flops_per_cycle["int8"] == 2048
    assert "amx_wiki" in peak.sources


@pytest.mark.parametrize("device", ["bogus", "mps"])
def test_a_device_calibration_cannot_measure_prints_nothing_on_stdout(run_main, device, tmp_path, monkeypatch):
    # The progress bar drew (and left) a blank line on stdout before the one-line error.
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    code, out, err = run_main("hardware", "calibrate", "--device", device, "--no-save")
    assert code == 2 and out == "" and err.count("\n") == 1, (out, err)
