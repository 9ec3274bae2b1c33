"""Calibrated profiles are checked on write and on read: floors from the ISA, set aside when invalid."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from modelmeter.hardware import Hardware
from modelmeter.hardware.detect import CpuInfo, cpu_name
from modelmeter.hardware.local import (
    AUTO_ENV,
    CalibrationRefused,
    cache_key,
    implausible_reason,
    local_profile,
    profile_cache_path,
    save_cached,
)
from modelmeter.hardware.perfmodel import Peaks, fit
from modelmeter.hardware.plausible import (
    InvalidProfile,
    ProfileSetAside,
    check_hardware,
    isa_floors,
)
from modelmeter.hardware.profile import local_profile_path, save_local_profile

# A 4-core AVX-512 part at 2 GHz: 64 fp32 FLOPs per cycle per core (2 FMA units x 16 lanes x 2).
AVX512 = CpuInfo(model_name="test cpu", vendor="GenuineIntel", family=6, model=143,
                 flags=frozenset({"sse2", "avx", "avx2", "fma", "avx512f"}), logical_cpus=4, physical_cores=4,
                 clock_hz=2e9, clock_source="test", max_clock_hz=None, caches=(), memory_bytes=2**34,
                 memory_available_bytes=2**33)


def _cpu(matmul: float = 50e9, vector: float = 5e9) -> Hardware:
    return Hardware(id="local", name="test cpu (1 thread)", vendor="Intel", kind="cpu", memory_bytes=2**33,
                    memory_bandwidth_bytes_per_s=10e9, peak_flops={"fp32": matmul}, vector_flops={"fp32": vector},
                    tdp_w=None, year=None, source="calibrated", sources={})


def test_floors_are_the_isa_peak_share_and_the_scalar_loop_of_the_matmuls_cycles() -> None:
    floors = isa_floors(_cpu(matmul=200e9), threads=2, cpu=AVX512)
    # 3 % of 2 cores x 2 GHz x 64 FLOP/cycle.
    assert floors["peak_flops.fp32"][0] == pytest.approx(0.03 * 2 * 2e9 * 64)
    # 200 GFLOP/s / 64 FLOP/cycle = 3.125e9 core-cycles/s, x 0.5 FLOP/cycle (scalar loop) / 4 (call overhead).
    assert floors["vector_flops.fp32"][0] == pytest.approx(200e9 / 64 * 0.5 / 4)
    # A database device is not held to this CPU's floors.
    assert isa_floors(dataclasses.replace(_cpu(), source="database"), 2, AVX512) == {}


def test_the_busy_machine_profile_is_refused_and_a_healthy_one_kept() -> None:
    # Measured here on a quiet moment: matmul 186 GFLOP/s, elementwise 23 GFLOP/s (2 threads).
    assert check_hardware(_cpu(186e9, 23.1e9), threads=2, cpu=AVX512) is not None
    # The same run's fp64 elementwise under load: 13.5 MFLOP/s, 27 times under the floor (186e9 / 64 x 0.5 / 4).
    with pytest.raises(InvalidProfile, match=r"vector_flops.fp32 = 1.35e\+07, plausible at least 3.63e\+08"):
        check_hardware(_cpu(186e9, 13.5e6), threads=2, cpu=AVX512)
    # A matmul at 1 % of the ISA peak: starved.
    with pytest.raises(InvalidProfile, match="peak_flops.fp32 = 5.12e\\+09, plausible at least 7.68e\\+09"):
        check_hardware(_cpu(5.12e9, 1e9), threads=2, cpu=AVX512)
    assert implausible_reason(_cpu(186e9, 13.5e6), 1).startswith("calibration not saved: vector_flops.fp32")


def test_an_implausible_profile_is_never_written(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    starved = _cpu(vector=16.5e6)
    with pytest.raises(InvalidProfile, match="not saved: vector_flops.fp32 = 1.65e\\+07"):
        save_local_profile(starved, {"threads": 1})
    model = fit([], Peaks(50e9, 16.5e6, 10e9), view_s=1e-6, module_call_s=2e-6)
    with pytest.raises(InvalidProfile, match="not saved"):
        save_cached("k", starved, model, None)
    for bad in (float("nan"), float("inf"), 0.0, -1e9):
        with pytest.raises(InvalidProfile, match="memory_bandwidth_bytes_per_s"):
            save_local_profile(dataclasses.replace(_cpu(), memory_bandwidth_bytes_per_s=bad))
    assert not local_profile_path().exists() and not profile_cache_path("k").exists()


def test_an_invalid_cached_profile_is_set_aside_and_measured_again(tmp_path, monkeypatch) -> None:
    """With automatic calibration on, the run says so and calibrates (here refused at once by
    an injected overload, so that no 15 s calibration runs): the bad file is never served."""
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    monkeypatch.setenv(AUTO_ENV, "1")
    key = cache_key(cpu_name(), torch.get_num_threads(), torch.__version__)
    save_cached(key, _cpu(), fit([], Peaks(50e9, 5e9, 10e9), view_s=1e-6, module_call_s=2e-6), None)
    path = profile_cache_path(key)
    payload = json.loads(path.read_text())
    payload["hardware"]["vector_flops"]["fp32"] = 16.5e6
    path.write_text(json.dumps(payload))
    with pytest.warns(ProfileSetAside, match="vector_flops.fp32 = 1.65e\\+07.*set aside.*calibrating now"):
        with pytest.raises(CalibrationRefused):
            local_profile(loadavg=lambda: 1000.0)
    kept = list(path.parent.glob(f"{path.name}.invalid-*"))
    assert not path.exists() and len(kept) == 1 and json.loads(kept[0].read_text()) == payload
