"""Energy meters against real temp sysfs trees and a fake NVML module; the estimate; the factory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from modelmeter.core.errors import MeasurementError, UserInputError
from modelmeter.measure.energy import (
    EnergyMeasurement,
    EnergyMeter,
    NvmlMeter,
    RaplMeter,
    ZeusMeter,
    estimate_energy,
    measure_energy,
    select_meter,
)
from modelmeter.measure.energy.nvml import integrate_trapezoid

# --- RAPL: a real sysfs-shaped tree ------------------------------------------------


def make_zone(path: Path, name: str, energy_uj: int, max_range_uj: int = 262143328850) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return path


def set_energy(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture()
def powercap(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "powercap"
    pkg0 = make_zone(root / "intel-rapl:0", "package-0", 1_000_000)
    core0 = make_zone(pkg0 / "intel-rapl:0:0", "core", 500_000)
    dram0 = make_zone(pkg0 / "intel-rapl:0:1", "dram", 2_000_000)
    pkg1 = make_zone(root / "intel-rapl:1", "package-1", 3_000_000)
    psys = make_zone(root / "intel-rapl:2", "psys", 9_000_000)
    # The real /sys/class/powercap also lists subzones flat, as symlinks.
    (root / "intel-rapl:0:1").symlink_to(dram0)
    (root / "intel-rapl").mkdir()  # the control type directory, not a zone
    return {"root": root, "pkg0": pkg0, "core0": core0, "dram0": dram0, "pkg1": pkg1, "psys": psys}


def test_rapl_discovers_packages_and_dram_only(powercap: dict[str, Path]) -> None:
    meter = RaplMeter(powercap["root"])
    assert meter.available(), meter.unavailable_reason
    assert [z.domain for z in meter.zones] == ["package-0", "dram-0", "package-1"]
    assert isinstance(meter, EnergyMeter)


def test_rapl_window_converts_microjoules_to_joules(powercap: dict[str, Path]) -> None:
    meter = RaplMeter(powercap["root"])
    meter.begin_window("w")
    set_energy(powercap["pkg0"], 1_000_000 + 5_000_000)  # +5 J
    set_energy(powercap["dram0"], 2_000_000 + 1_500_000)  # +1.5 J
    set_energy(powercap["pkg1"], 3_000_000 + 2_000_000)  # +2 J
    set_energy(powercap["core0"], 500_000 + 4_000_000)  # inside package: not added
    set_energy(powercap["psys"], 9_000_000 + 99_000_000)  # contains packages: not added
    m = meter.end_window("w")
    assert m.source == "rapl"
    assert m.domains == pytest.approx({"package-0": 5.0, "dram-0": 1.5, "package-1": 2.0})
    assert m.energy_j == pytest.approx(8.5)
    assert m.duration_s > 0 and m.average_power_w == pytest.approx(8.5 / m.duration_s)


def test_rapl_counter_wrap_around(tmp_path: Path) -> None:
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 999_000, max_range_uj=1_000_000)
    meter = RaplMeter(tmp_path)
    meter.begin_window("w")
    set_energy(zone, 500)  # wrapped: 1_000 µJ to the top, 1 step to 0, then 500
    m = meter.end_window("w")
    assert m.energy_j == pytest.approx(1501e-6)


def test_rapl_overlapping_windows(powercap: dict[str, Path]) -> None:
    meter = RaplMeter(powercap["root"])
    meter.begin_window("outer")
    set_energy(powercap["pkg0"], 2_000_000)
    meter.begin_window("inner")
    set_energy(powercap["pkg0"], 4_000_000)
    inner = meter.end_window("inner")
    set_energy(powercap["pkg0"], 7_000_000)
    outer = meter.end_window("outer")
    assert inner.domains["package-0"] == pytest.approx(2.0)
    assert outer.domains["package-0"] == pytest.approx(6.0)
    with pytest.raises(MeasurementError):
        meter.end_window("outer")


def test_rapl_unreadable_counter_when_energy_uj_is_a_directory(tmp_path: Path) -> None:
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 0)
    (zone / "energy_uj").unlink()
    (zone / "energy_uj").mkdir()
    meter = RaplMeter(tmp_path)
    assert not meter.available()
    assert "energy_uj" in (meter.unavailable_reason or "")
    with pytest.raises(MeasurementError):
        meter.begin_window("w")


def test_rapl_root_only_counter_reported_unavailable_via_injected_reader(tmp_path: Path) -> None:
    # Tests run as root, which ignores file modes; a reader stands in for a 5.10+ kernel.
    make_zone(tmp_path / "intel-rapl:0", "package-0", 0)

    def root_only_reader(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text()

    meter = RaplMeter(tmp_path, reader=root_only_reader)
    assert not meter.available()
    reason = meter.unavailable_reason or ""
    assert "root" in reason and "CVE-2020-8694" in reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_rapl_chmod_000_counter_unavailable_for_non_root(tmp_path: Path) -> None:
    zone = make_zone(tmp_path / "intel-rapl:0", "package-0", 0)
    (zone / "energy_uj").chmod(0)
    assert not RaplMeter(tmp_path).available()


def test_rapl_absent_tree(tmp_path: Path) -> None:
    meter = RaplMeter(tmp_path / "nothing")
    assert not meter.available() and "no RAPL package zones" in (meter.unavailable_reason or "")


# --- NVML: a fake module object ------------------------------------------------------


class FakeNvmlError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNvml:
    """Implements the few pynvml functions the meter calls, with pynvml's units."""

    NVMLError = FakeNvmlError
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_DRIVER_NOT_LOADED = 9

    def __init__(self, *, energy_counter: bool, power_mw: int | None = 100_000,
                 driver: bool = True) -> None:
        self.energy_counter = energy_counter
        self.power_mw = power_mw
        self.driver = driver
        self.energy_mj = 10_000_000
        self.opened_indices: list[int] = []
        self.power_reads = 0
        self.shutdowns = 0

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        if not self.driver:
            raise FakeNvmlError(self.NVML_ERROR_DRIVER_NOT_LOADED)

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:  # noqa: N802
        self.opened_indices.append(index)
        return f"handle{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:  # noqa: N802
        return f"handle-{uuid}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:  # noqa: N802
        if not self.energy_counter:
            raise FakeNvmlError(self.NVML_ERROR_NOT_SUPPORTED)
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:  # noqa: N802
        if self.power_mw is None:
            raise FakeNvmlError(self.NVML_ERROR_NOT_SUPPORTED)
        self.power_reads += 1
        return self.power_mw


def cpu_side(meter: NvmlMeter) -> NvmlMeter:
    # No CUDA here: window edges must not try to synchronise a device.
    meter.device = "cpu"
    return meter


def test_nvml_energy_counter_in_millijoules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeNvml(energy_counter=True)
    meter = cpu_side(NvmlMeter("cuda:0", nvml=fake))
    assert meter.available() and meter.mode == "counter"
    meter.begin_window("w")
    fake.energy_mj += 2_500  # 2.5 J
    m = meter.end_window("w")
    assert m.energy_j == pytest.approx(2.5) and m.domains == {"gpu0": pytest.approx(2.5)}
    assert m.source == "nvml" and "counter" in m.method


def test_nvml_falls_back_to_power_sampling_when_counter_not_supported() -> None:
    fake = FakeNvml(energy_counter=False, power_mw=100_000)  # 100 W, pre-Volta
    meter = cpu_side(NvmlMeter("cuda", nvml=fake, poll_interval_s=0.005))
    assert meter.available() and meter.mode == "sampling"
    meter.begin_window("w")
    time.sleep(0.2)
    m = meter.end_window("w")
    assert fake.power_reads >= 10  # the background thread sampled
    assert m.energy_j == pytest.approx(100.0 * m.duration_s, rel=0.05)
    assert m.average_power_w == pytest.approx(100.0, rel=0.05)
    assert "sampling" in m.method
    assert meter._thread is None  # sampler stopped once no window is open


def test_nvml_unavailable_when_neither_method_works() -> None:
    fake = FakeNvml(energy_counter=False, power_mw=None)
    meter = NvmlMeter("cuda", nvml=fake)
    assert not meter.available() and "neither" in (meter.unavailable_reason or "")
    assert fake.shutdowns == 1  # NVML released when it is no use


def test_nvml_unavailable_without_driver() -> None:
    meter = NvmlMeter("cuda", nvml=FakeNvml(energy_counter=True, driver=False))
    assert not meter.available() and "NVML could not open" in (meter.unavailable_reason or "")


def test_nvml_maps_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    fake = FakeNvml(energy_counter=True)
    NvmlMeter("cuda:1", nvml=fake)
    assert fake.opened_indices == [5]


def test_nvml_without_pynvml_names_the_extra() -> None:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        meter = NvmlMeter("cuda")
        assert not meter.available()
        assert "modelmeter[gpu]" in (meter.unavailable_reason or "")
    else:
        pytest.skip("pynvml is installed here")


def test_trapezoid() -> None:
    assert integrate_trapezoid([(0.0, 10.0), (1.0, 20.0), (3.0, 20.0)]) == pytest.approx(55.0)
    assert integrate_trapezoid([(0.0, 10.0)]) == 0.0


# --- Zeus ------------------------------------------------------------------------------


class FakeZeusMeasurement:
    def __init__(self) -> None:
        self.time = 2.0
        self.gpu_energy = {0: 30.0}
        self.cpu_energy = {0: 8.0}
        self.dram_energy = None


class FakeZeusMonitor:
    def __init__(self) -> None:
        self.open: set[str] = set()

    def begin_window(self, key: str) -> None:
        self.open.add(key)

    def end_window(self, key: str) -> FakeZeusMeasurement:
        self.open.remove(key)
        return FakeZeusMeasurement()


def test_zeus_measurement_translated() -> None:
    meter = ZeusMeter("cpu", monitor=FakeZeusMonitor())
    assert meter.available()
    meter.begin_window("w")
    m = meter.end_window("w")
    assert m.energy_j == 38.0 and m.domains == {"gpu0": 30.0, "cpu0": 8.0}
    assert m.average_power_w == 19.0 and m.source == "zeus"


def test_zeus_absent_is_unavailable_with_reason() -> None:
    try:
        import zeus  # noqa: F401
    except ImportError:
        meter = ZeusMeter("cpu")
        assert not meter.available() and "modelmeter[zeus]" in (meter.unavailable_reason or "")
    else:
        pytest.skip("zeus is installed here")


# --- factory ------------------------------------------------------------------------------


def test_select_meter_names(powercap: dict[str, Path], tmp_path: Path) -> None:
    assert select_meter("none") is None
    assert isinstance(select_meter("rapl", rapl_root=powercap["root"]), RaplMeter)
    assert isinstance(select_meter("auto", "cpu", rapl_root=powercap["root"]), RaplMeter)
    with pytest.raises(UserInputError, match="auto, nvml, rapl, zeus, none"):
        select_meter("wattmeter")
    with pytest.raises(UserInputError, match="unavailable"):
        select_meter("rapl", rapl_root=tmp_path / "nothing")


def test_select_meter_auto_without_any_meter(tmp_path: Path) -> None:
    try:
        import zeus  # noqa: F401
        pytest.skip("zeus is installed here")
    except ImportError:
        pass
    assert select_meter("auto", "cpu", rapl_root=tmp_path / "nothing") is None


# --- measure_energy -----------------------------------------------------------------------


def test_measure_energy_with_rapl(powercap: dict[str, Path]) -> None:
    meter = RaplMeter(powercap["root"])
    state = {"uj": 1_000_000}

    def work() -> None:
        state["uj"] += 200_000  # each call costs 0.2 J on package-0
        set_energy(powercap["pkg0"], state["uj"])

    result = measure_energy(meter, work, 10)
    assert result.source == "rapl" and result.measured and result.warning is None
    assert result.energy_per_iteration_j == pytest.approx(0.2)


def test_meter_failing_mid_run_falls_back_to_estimate(powercap: dict[str, Path]) -> None:
    meter = RaplMeter(powercap["root"])
    est = estimate_energy(1e9, 1e6, "fp32")

    def work() -> None:
        (powercap["pkg0"] / "energy_uj").unlink()  # the counter vanishes mid-run

    result = measure_energy(meter, work, 1, estimate=est)
    assert result.source == "estimate" and not result.measured
    assert result.energy_per_iteration_j == est.energy_j
    assert result.warning and "rapl" in result.warning and "estimate" in result.warning


class RaisingMeter:
    name = "flaky"
    unavailable_reason = None

    def available(self) -> bool:
        return True

    def begin_window(self, key: str) -> None:
        raise OSError("device went away")

    def end_window(self, key: str) -> EnergyMeasurement:
        raise AssertionError("never reached")


def test_meter_failing_to_start_falls_back() -> None:
    est = estimate_energy(1e6, 0, "fp16")
    result = measure_energy(RaisingMeter(), lambda: None, 3, estimate=est)
    assert result.source == "estimate" and result.warning and "flaky" in result.warning


def test_no_meter_uses_estimate_silently_and_errors_in_fn_propagate(powercap: dict[str, Path]) -> None:
    est = estimate_energy(1e6, 0, "fp16")
    result = measure_energy(None, lambda: None, 1, estimate=est)
    assert result.source == "estimate" and result.warning is None
    assert measure_energy(None, lambda: None, 1).source == "none"

    meter = RaplMeter(powercap["root"])

    def broken() -> None:
        raise ValueError("model bug")

    with pytest.raises(ValueError, match="model bug"):
        measure_energy(meter, broken, 1)
    meter.begin_window("modelmeter.measure_energy")  # the failed run closed its window


def test_zero_energy_is_flagged(powercap: dict[str, Path]) -> None:
    result = measure_energy(RaplMeter(powercap["root"]), lambda: None, 1)
    assert result.energy_per_iteration_j == 0.0 and "0 J" in (result.warning or "")


# --- estimate -------------------------------------------------------------------------------


def test_estimate_is_labelled_and_linear_in_flops() -> None:
    one = estimate_energy(1e12, 0, "fp32")
    two = estimate_energy(2e12, 0, "fp32")
    assert one.source == "estimate" and "Horowitz" in one.method
    assert two.energy_j == pytest.approx(2 * one.energy_j)
    # fp32: (3.7 mult + 0.9 add) / 2 = 2.3 pJ per FLOP
    assert one.compute_j == pytest.approx(2.3)


def test_estimate_dram_range_and_bounds() -> None:
    e = estimate_energy(0, 8e9, "fp16", latency_s=0.5, tdp_w=100.0, idle_w=10.0)
    # 1.3-2.6 nJ per 8 bytes: 1e9 reads -> 1.3-2.6 J, plus 10 W x 0.5 s static
    assert e.dram_min_j == pytest.approx(1.3) and e.dram_max_j == pytest.approx(2.6)
    assert e.energy_min_j == pytest.approx(6.3) and e.energy_max_j == pytest.approx(7.6)
    assert e.energy_min_j < e.energy_j < e.energy_max_j
    assert e.upper_bound_j == pytest.approx(50.0)


def test_estimate_precisions() -> None:
    assert estimate_energy(1e12, 0, "bf16").compute_j == pytest.approx(0.75)
    assert estimate_energy(1e12, 0, "int8").compute_j == pytest.approx(0.15)  # int8 mult + int32 add
    with pytest.raises(UserInputError):
        estimate_energy(1e12, 0, "fp64")
    with pytest.raises(UserInputError):
        estimate_energy(-1, 0, "fp32")
