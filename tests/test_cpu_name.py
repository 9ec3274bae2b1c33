"""One reader of the CPU's name: timer conditions, bench rows, run records and calibration agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelmeter.hardware.detect import cpu_name, cpu_name_in, read_cpu_info
from modelmeter.hardware.environment import environment_fingerprint
from modelmeter.measure.timer import measure_latency

X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n"
# A Raspberry Pi kernel: no 'model name' on some versions, the SoC and board at the end.
ARM = "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B\n"


def test_name_keys_in_file_order() -> None:
    assert cpu_name_in(X86) == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert cpu_name_in(ARM) == "BCM2835"
    assert cpu_name_in("processor\t: 0\nmodel name\t:\n") is None  # an empty value names nothing
    assert cpu_name_in("") is None


def test_a_fake_tree_names_its_own_cpu_not_this_machines(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(ARM)
    assert read_cpu_info(tmp_path).model_name == "BCM2835"  # was 'unknown CPU'
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\n")
    assert read_cpu_info(tmp_path).model_name == "unknown CPU"


def test_every_record_of_this_machine_uses_the_same_name() -> None:
    name = cpu_name()
    assert name
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and cpu_name_in(cpuinfo.read_text()):
        assert name == cpu_name_in(cpuinfo.read_text())
    else:
        pytest.skip("no /proc/cpuinfo name here: the platform fallback is used")
    assert read_cpu_info().model_name == name
    assert environment_fingerprint()["cpu"] == name
    # The timer's conditions used platform.processor() ('x86_64' on Linux) before.
    stats = measure_latency(lambda: None, min_time_s=0.001, min_iters=3, warmup_s=0.0, warmup_iters=0)
    assert stats.conditions["device_name"] == name
