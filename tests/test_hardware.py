"""Hardware database, lookups, the local profile and the `modelmeter hardware` CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

import modelmeter.hardware as hwpkg
from modelmeter.cli.main import cli
from modelmeter.core.errors import UnknownHardwareError, UserInputError
from modelmeter.hardware import (
    Hardware,
    energy_per_op,
    get_hardware,
    list_hardware,
    load_local_profile,
    mamf_efficiency,
    save_local_profile,
)
from modelmeter.hardware.specs import PRECISION_KEYS, sources_table

REFERENCE = Path("/work/shared/reference/hardware.json")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    return tmp_path


def test_public_api():
    assert sorted(hwpkg.__all__) == [
        "CalibrationResult", "CalibrationSettings", "Hardware", "calibrate", "carbon_intensity",
        "cpu_peak_method", "energy_per_op", "get_hardware", "list_hardware", "load_local_profile",
        "local_profile_path", "mamf_efficiency", "save_local_profile", "sources_table",
    ]
    for name in hwpkg.__all__:
        assert getattr(hwpkg, name) is not None


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared reference data not present")
def test_every_reference_device_is_in_the_database_with_its_figures():
    ref = json.loads(REFERENCE.read_text())
    ids = {hw.id for hw in list_hardware()}
    assert ids == {d["id"] for d in ref["devices"]}
    for d in ref["devices"]:
        hw = get_hardware(d["id"])
        assert hw.source == "database"
        assert hw.memory_bandwidth_bytes_per_s == pytest.approx(d["memory_bandwidth_gbps"] * 1e9)
        assert hw.tdp_w == d["tdp_w"] and hw.year == d["year"]
        for p, tf in d["peak_tflops"].items():
            if tf is None:
                assert p not in hw.peak_flops
                continue
            # The reference's value is the matrix rate, or the vector rate where we split them.
            assert tf * 1e12 in (
                pytest.approx(hw.peak_flops[p]), pytest.approx(hw.vector_flops[p])
            ), (d["id"], p)
            assert f"peak_flops.{p}" in hw.sources, (d["id"], p)
        assert "memory_bandwidth_bytes_per_s" in hw.sources
        for p in hw.vector_flops:
            assert f"vector_flops.{p}" in hw.sources


def test_sources_resolve_to_titles_and_urls():
    table = sources_table()
    hw = get_hardware("h100-sxm")
    assert hw.sources["peak_flops.bf16"].startswith("[nv_h100_ds] NVIDIA H100")
    assert table["nv_h100_ds"]["url"] in hw.sources["peak_flops.bf16"]
    assert all(src["url"].startswith("http") for src in table.values())


def test_units_are_base_units():
    hw = get_hardware("h100-sxm")
    assert hw.memory_bytes == 80 * 2**30  # 5 HBM3 stacks of 16 GiB: memory "GB" are binary
    assert hw.memory_bandwidth_bytes_per_s == 3.35e12
    assert hw.peak_flops["bf16"] == 989.5e12  # dense: the datasheet's sparse 1979 halved
    assert get_hardware("tpu-v4").memory_bytes == 32 * 2**30  # Google states GiB


def test_matrix_and_vector_rates():
    h100 = get_hardware("h100-sxm")
    assert h100.peak_flops_for("fp64") == 67e12  # FP64 tensor core
    assert h100.peak_flops_for("fp64", "vector") == 34e12
    assert h100.peak_flops_for("fp32", "matmul") == 67e12  # CUDA cores; tf32 is separate
    assert h100.peak_flops_for("tf32") == 494.5e12
    # Elementwise 16-bit math runs in fp32 (opmath): the fp32 vector rate, documented in sources.
    assert h100.peak_flops_for("bf16", "vector") == 67e12
    assert "opmath" in h100.sources["vector_flops.bf16"]
    mi250x = get_hardware("mi250x")
    assert mi250x.peak_flops_for("fp32") == 95.7e12 and mi250x.peak_flops_for("fp32", "vector") == 47.9e12


def test_ridge_point_is_peak_over_bandwidth():
    for hw in list_hardware():
        for p in hw.peak_flops:
            assert hw.ridge_point(p) == pytest.approx(hw.peak_flops[p] / hw.memory_bandwidth_bytes_per_s)
    assert get_hardware("h100-sxm").ridge_point("bf16") == pytest.approx(989.5e12 / 3.35e12)


def test_precision_the_device_lacks_is_an_error_naming_what_it_has():
    with pytest.raises(UserInputError, match=r"h100-sxm has no matmul peak for int4.*fp8, int8"):
        get_hardware("h100-sxm").peak_flops_for("int4")
    with pytest.raises(UserInputError, match="no matmul peak for fp8"):
        get_hardware("a100-sxm-80gb").peak_flops_for("fp8")
    # nf4 computes on the int4 units.
    assert get_hardware("a100-sxm-80gb").peak_flops_for("nf4") == 1248e12
    with pytest.raises(UserInputError, match="unknown precision"):
        get_hardware("t4").peak_flops_for("fp7")
    with pytest.raises(UserInputError, match="op class"):
        get_hardware("t4").peak_flops_for("fp16", "conv")


def test_tf32_without_tf32_units_is_fp32_documented_fallback():
    t4 = get_hardware("t4")
    assert "tf32" not in t4.peak_flops
    assert t4.peak_flops_for("tf32") == t4.peak_flops["fp32"]


def test_lookup_is_case_insensitive_and_takes_aliases():
    assert get_hardware(" H100-SXM ").id == "h100-sxm"
    assert get_hardware("xeon-8480+").id == "xeon-8480plus"


def test_unknown_id_suggests_neighbours():
    with pytest.raises(UnknownHardwareError) as err:
        get_hardware("h100")
    msg = str(err.value)
    assert "did you mean h100-sxm, h100-pcie?" in msg and "modelmeter hardware list" in msg
    assert "\n" not in msg
    with pytest.raises(UnknownHardwareError, match="did you mean.*a100"):
        get_hardware("a100-sxm-80")


def test_local_without_profile_says_to_calibrate(home):
    with pytest.raises(UnknownHardwareError, match="modelmeter hardware calibrate"):
        get_hardware("local")


def _fake_local() -> Hardware:
    return Hardware(
        id="local", name="test cpu", vendor="Intel", kind="cpu", memory_bytes=8 * 2**30,
        memory_bandwidth_bytes_per_s=20e9, peak_flops={"fp32": 3e11, "bf16": 1e12},
        vector_flops={"fp32": 2e10}, tdp_w=None, year=None, source="calibrated",
        sources={"calibration": "unit test"}, notes=("made in a test",),
    )


def test_local_profile_round_trip(home):
    hw = _fake_local()
    path = save_local_profile(hw, {"raw": [1, 2, 3]})
    assert path == home / "hardware" / "local.json"
    assert load_local_profile() == hw
    assert get_hardware("LOCAL") == hw
    assert [h.id for h in list_hardware(include_local=True)][-1] == "local"
    assert [p.name for p in path.parent.iterdir()] == ["local.json"]  # no temp file left


def test_to_dict_from_dict_round_trip_for_every_device():
    for hw in list_hardware():
        again = Hardware.from_dict(json.loads(json.dumps(hw.to_dict())))
        assert again == hw


def test_corrupt_profile_is_a_user_error(home):
    (home / "hardware").mkdir()
    (home / "hardware" / "local.json").write_text("{not json")
    with pytest.raises(UserInputError, match="unreadable.*calibrate"):
        get_hardware("local")


def test_energy_and_mamf_tables_carry_sources():
    e = energy_per_op()
    h = e["horowitz_isscc2014_45nm_0p9v"]
    assert h["fp32_mult"] == 3.7 and "Horowitz" in h["source"]
    e["horowitz_isscc2014_45nm_0p9v"]["fp32_mult"] = 0  # callers get a copy
    assert energy_per_op()["horowitz_isscc2014_45nm_0p9v"]["fp32_mult"] == 3.7
    m = mamf_efficiency()
    assert "stas00" in m["source"]
    h100 = m["by_precision"]["bf16"]["h100-sxm"]
    assert h100["fraction_of_peak"] == 0.803
    assert h100["achieved_flops"] == pytest.approx(794.5e12)
    assert set(m["by_precision"]["bf16"]) <= {hw.id for hw in list_hardware()}


def test_every_vector_rate_is_finite_and_not_above_matrix_rate():
    for hw in list_hardware():
        for p, v in hw.vector_flops.items():
            assert math.isfinite(v) and v > 0
            assert p in PRECISION_KEYS
            if p in hw.peak_flops:
                assert v <= hw.peak_flops[p]


# ------------------------------------------------------------------- CLI


def test_cli_list_shows_devices(home):
    result = CliRunner().invoke(cli, ["hardware", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "h100-sxm" in result.output and "xeon-8480plus" in result.output


def test_cli_list_json(home):
    result = CliRunner().invoke(cli, ["hardware", "list", "--json"])
    assert result.exit_code == 0
    assert {d["id"] for d in json.loads(result.output)} == {hw.id for hw in list_hardware()}


def test_cli_show_prints_sources_and_notes(home):
    result = CliRunner().invoke(cli, ["hardware", "show", "H100-SXM"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "[nv_h100_ds]" in result.output  # source keys survive rich markup
    assert "FP64 Tensor Core" in result.output


def test_cli_show_json_is_the_record(home):
    result = CliRunner().invoke(cli, ["hardware", "show", "l4", "--json"])
    assert result.exit_code == 0
    assert Hardware.from_dict(json.loads(result.output)) == get_hardware("l4")


def test_cli_show_unknown_exits_2_with_one_line(home, run_main):
    code, _, err = run_main("hardware", "show", "nope")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "unknown hardware 'nope'" in lines[0], err
    assert "Traceback" not in err


def test_cli_show_local_reads_the_profile(home):
    save_local_profile(_fake_local())
    result = CliRunner().invoke(cli, ["hardware", "show", "local", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["source"] == "calibrated"


def test_cli_list_survives_a_corrupt_profile(home):
    (home / "hardware").mkdir()
    (home / "hardware" / "local.json").write_text("{not json")
    result = CliRunner().invoke(cli, ["hardware", "list", "--json"])
    assert result.exit_code == 0
    assert "local" not in {d["id"] for d in json.loads(result.stdout)}


def test_hardware_is_hashable():
    assert {get_hardware("l4"): 1}[get_hardware("L4")] == 1


# Installed capacity as the vendor states it, in binary units (JEDEC: a memory "GB" is 2^30 B).
CAPACITY_GIB = {
    "h200-sxm": 141, "h100-sxm": 80, "h100-pcie": 80, "a100-sxm-80gb": 80, "a100-pcie-40gb": 40,
    "l40s": 48, "l4": 24, "a10": 24, "t4": 16, "v100-sxm2": 32, "rtx-4090": 24, "rtx-3090": 24,
    "jetson-agx-orin-64gb": 64, "jetson-orin-nano-8gb": 8, "mi300x": 192, "mi250x": 128,
    "tpu-v4": 32, "tpu-v5e": 16, "gaudi2": 96, "apple-m2-max-gpu": 96, "apple-m3-max-gpu": 128,
}


@pytest.mark.parametrize("device, gib", sorted(CAPACITY_GIB.items()))
def test_device_memory_is_stored_in_binary_units_with_its_sources(device, gib):
    hw = get_hardware(device)
    assert hw.memory_bytes == gib * 2**30
    assert "memory_bytes" in hw.sources and "JEDEC" in hw.sources["memory_bytes.units"]


def test_driver_reported_totals_sit_just_below_the_capacity():
    """What nvidia-smi prints (cited in the sources): the capacity less a driver reserve,
    or 15/16 of it on GDDR parts with ECC on; never the decimal figure the database held."""
    reported_mib = {"h100-sxm": 81559, "a100-sxm-80gb": 81920, "a100-pcie-40gb": 40960, "l40s": 46068,
                    "l4": 23034, "a10": 23028, "t4": 15360}
    for device, mib in reported_mib.items():
        hw = get_hardware(device)
        assert str(mib) in hw.sources["memory_bytes.driver"] or any(str(mib) in n for n in hw.notes)
        assert 15 / 16 * hw.memory_bytes - 2**24 <= mib * 2**20 <= hw.memory_bytes


@pytest.mark.slow
def test_llm_max_batch_on_h100_uses_80_gib(capsys):
    """`llm --max-batch`: the largest batch is the closed form over 80 GiB, not 80 GB."""
    from modelmeter import formulas
    from modelmeter.cli.main import main
    from modelmeter.pipeline.llm_trace import measure_llm_costs

    prompt, gen = 256, 32
    with pytest.raises(SystemExit) as exc:
        main(["llm", "gpt2", "--hardware", "h100-sxm", "--prompt", str(prompt), "--gen", str(gen),
              "--max-batch", "--json", "-"])
        raise SystemExit(0)
    assert exc.value.code in (0, None)
    section = json.loads(capsys.readouterr().out)["llm"]
    assert section["hardware_detail"]["memory_bytes"] == 80 * 2**30
    costs = measure_llm_costs("gpt2", prompt=prompt, gen=gen)
    config = costs.config
    weights = formulas.decoder_params(config) * 2  # fp16
    kv_per_seq = formulas.kv_cache_bytes(config, prompt + gen, 2)
    assert section["weight_bytes"] == weights
    assert section["kv_cache_bytes_per_token"] * (prompt + gen) == kv_per_seq

    def closed_form(memory: float) -> int:
        # weights + B x KV per sequence + activation peak (a + b.B, traced) <= memory.
        return min(math.floor((memory - weights - a) / (kv_per_seq + b))
                   for a, b in (costs.prefill_peak, costs.decode_peak))

    # Fits are tested against the usable memory: 80 GiB less the runtime's headroom (10 %).
    from modelmeter.hardware import get_hardware
    from modelmeter.hardware.headroom import usable_memory_bytes

    usable = usable_memory_bytes(get_hardware("h100-sxm"))
    assert usable == pytest.approx(0.9 * 80 * 2**30)
    assert section["max_batch"] == closed_form(usable)
    assert closed_form(80 * 2**30) > closed_form(80e9) * 1.07  # the decimal figure was ~7 % short
