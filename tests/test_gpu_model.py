"""The shape-aware GPU performance model: hand-worked tile/wave cases, sources, and its use.

Numbers are checked against arithmetic done by hand from the published formulas (tile and
wave quantisation, the K ramp) and against the published figures the constants come from,
never against a copy of the model's own output.
"""

from __future__ import annotations

import json
import math
from importlib import resources

import pytest

from modelmeter.hardware import get_hardware, mamf_efficiency
from modelmeter.hardware.gpumodel import fit_k_half, gpu_model, has_gpu_model, wave_utilisation


def _data() -> dict:
    return json.loads(resources.files("modelmeter.hardware").joinpath("gpu_perf.json").read_text())


# ------------------------------------------------------------------ tiles, waves, K ramp


def test_wave_quantisation_matches_the_worked_example():
    # ml-engineering's example: Llama-3.1-8B's up-projection at 8k tokens, 8192 x 14336 at
    # 128 x 256 tiles = 64 x 56 = 3,584 blocks: 25 waves on 148 SMs, 24 on 152.
    blocks = math.ceil(8192 / 128) * math.ceil(14336 / 256)
    assert blocks == 3584
    for sms, waves in ((148, 25), (152, 24)):
        util = wave_utilisation(1, 8192, 14336, sms, (128, 256))
        assert util == pytest.approx(8192 * 14336 / (waves * sms * 128 * 256))


def test_a_full_wave_wastes_nothing_and_one_block_over_costs_a_wave():
    # 132 SMs x one 256 x 128 tile each: exactly one wave; one row more adds a second wave.
    assert wave_utilisation(1, 256 * 12, 128 * 11, 132, (256, 128)) == pytest.approx(1.0)
    over = wave_utilisation(1, 256 * 12 + 1, 128 * 11, 132, (256, 128))
    assert over == pytest.approx((256 * 12 + 1) * 128 * 11 / (2 * 132 * 256 * 128))


def test_gemm_efficiency_by_hand_on_h100():
    g = gpu_model(get_hardware("h100-sxm"))
    # 2048 x 4096 x 4096: 256 blocks of 256 x 128 on 132 SMs = 2 waves (264 slots); the K ramp
    # 4096 / (4096 + 230) relative to the MAMF shape's K = 13312.
    util = 256 / 264
    ramp = (4096 / (4096 + 230)) / (13312 / (13312 + 230))
    eff, choice = g.efficiency(1, 2048, 4096, 4096, "bf16")
    assert eff == pytest.approx(util * ramp, rel=1e-9)
    assert choice is not None and choice[2] == 1  # no split-K: the tiles fill the SMs
    flops = 2 * 2048 * 4096 * 4096
    rate = 989.5e12 * 0.803 * g.sustained_compute * util * ramp
    assert g.gemm_s(1, 2048, 4096, 4096, "bf16", 0.0) == pytest.approx(flops / rate, rel=1e-9)


def test_few_tiles_split_k_to_fill_the_sms():
    g = gpu_model(get_hardware("h100-sxm"))
    # 256 x 256 output, K = 16384: 2 tiles of 256 x 128 for 132 SMs; splitting K by 8 gives 16
    # blocks of K = 2048 each, far better than 2 blocks of K = 16384 on 2 SMs.
    eff, (tm, tn, split) = g.efficiency(1, 256, 256, 16384, "bf16")
    assert split == 8
    k0, ref = 230, 13312 / (13312 + 230)
    blocks = math.ceil(256 / tm) * math.ceil(256 / tn) * split
    waves = math.ceil(blocks / 132)
    tile_eff = min(1.0, tm * tn / (tm + tn) / 64)
    expected = (256 * 256 * 16384 / 132) / (waves * tm * tn * (16384 / split + k0) / tile_eff) / ref
    assert eff == pytest.approx(expected, rel=1e-9)


def test_a_decode_gemm_is_priced_by_its_bytes():
    g = gpu_model(get_hardware("h100-sxm"))
    weight = 4096 * 4096 * 2  # one token through a 4096 x 4096 bf16 projection: 33.5 MB of weight
    t = g.gemm_s(1, 1, 4096, 4096, "bf16", weight)
    # 33.5 MB is in the 10-100 MB step of the size ramp (0.75 / 0.90 of the top step).
    bw = 3.35e12 * 0.796 * g.sustained_bandwidth * (0.75 / 0.90)
    assert t == pytest.approx(weight / bw, rel=1e-3)


def test_a_tiny_kernel_costs_its_launch():
    eager = gpu_model(get_hardware("h100-sxm"), "eager")
    graphs = gpu_model(get_hardware("h100-sxm"), "graphs")
    assert eager.vector_s(10, 64, "bf16") == pytest.approx(5e-6)  # 4-6 us per submitted kernel
    assert graphs.vector_s(10, 64, "bf16") == pytest.approx(0.5e-6)  # 3.4 - 2.9 us from a graph


def test_k_half_is_the_fit_of_the_published_k_sweep():
    gemm = _data()["gemm"]
    k0, e = fit_k_half([tuple(p) for p in gemm["k_sweep_fp8_tflops"]["value"]])
    assert k0 == pytest.approx(gemm["k_half_fp8"]["value"], abs=5)
    for k, tflops in gemm["k_sweep_fp8_tflops"]["value"]:
        assert e * k / (k + k0) == pytest.approx(tflops, rel=0.02)  # residuals under 2 %
    assert gemm["k_half_16bit"]["value"] == gemm["k_half_fp8"]["value"] / 2


def test_mamf_constants_are_the_published_table():
    published = mamf_efficiency()["by_precision"]
    mamf = _data()["mamf"]["by_device"]
    for dev in ("a100-sxm-80gb", "h100-sxm"):
        assert mamf[dev]["bf16"] == published["bf16"][dev]["fraction_of_peak"]
    assert mamf["h100-sxm"]["fp8"] == published["fp8"]["h100-sxm"]["fraction_of_peak"]
    # The table's own figure: 794.5 of 989 TFLOP/s on H100, 271.2 of 312 on A100.
    assert mamf["h100-sxm"]["bf16"] == pytest.approx(794.5 / 989, abs=1e-3)
    assert mamf["a100-sxm-80gb"]["bf16"] == pytest.approx(271.2 / 312, abs=1e-3)


def test_every_constant_names_a_source():
    data = _data()
    known = set(data["sources"]) | {"fitted"}
    seen = 0

    def walk(node, path):
        nonlocal seen
        if isinstance(node, dict):
            if "value" in node:
                assert "source" in node, path
            if "source" in node:
                seen += 1
                for name in str(node["source"]).replace(" ", "").split(","):
                    assert name in known, (path, name)
            for k, v in node.items():
                if k != "sources":
                    walk(v, f"{path}.{k}")

    walk(data, "")
    assert seen >= 15
    for key, src in data["sources"].items():
        assert src["title"] and src["url"].startswith("https://"), key
    assert data["fitted"]["sustained_compute"]["source"] == "fitted"


def test_only_gpus_with_peaks_get_the_model():
    assert has_gpu_model(get_hardware("h100-sxm"))
    assert not has_gpu_model(get_hardware("epyc-9654"))
    assert not has_gpu_model(get_hardware("apple-m2-max-gpu"))  # no peak in the database


# ------------------------------------------------------------------ in the commands

LINEAR = """
import torch
from torch import nn


def build():
    return nn.Linear(4096, 4096, bias=False).to(torch.bfloat16)


def with_inputs():
    return build(), (torch.zeros(1, 2048, 4096, dtype=torch.bfloat16),)
"""


def test_roofline_prices_a_linear_by_its_shape(run_main, tmp_path, monkeypatch):
    (tmp_path / "lin.py").write_text(LINEAR)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run_main("roofline", "lin:build", "--input", "2048x4096", "--hardware", "h100-sxm",
                              "--dtype", "bf16", "--json", "-")
    assert code == 0, err
    rl = json.loads(out)["roofline"]
    assert rl["prediction"] == "gpu-shape-model/1" and rl["latency_s"] == rl["roofline_latency_s"]
    (mm,) = [o for o in rl["predicted"]["ops"] if o["op_class"] == "gemm"]
    g = gpu_model(get_hardware("h100-sxm"))
    util, ramp = 256 / 264, (4096 / (4096 + 230)) / (13312 / (13312 + 230))
    compute = 2 * 2048 * 4096 * 4096 / (989.5e12 * 0.803 * g.sustained_compute * util * ramp)
    assert mm["predicted_latency_s"] == pytest.approx(compute, rel=1e-6)
    assert mm["predicted_latency_s"] > mm["roofline_latency_s"]  # never faster than the bound here
    code, out, err = run_main("roofline", "lin:build", "--input", "2048x4096", "--hardware", "h100-sxm",
                              "--dtype", "bf16")
    assert code == 0, err
    assert "predicted (GPU shape model, estimated)" in out


def test_plan_prices_layouts_with_the_gpu_model(run_main, tmp_path, monkeypatch):
    (tmp_path / "lin.py").write_text(LINEAR)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    base = ["plan", "lin:with_inputs", "--hardware", "h100-sxm", "--train", "--devices", "1",
            "--micro-batch", "1", "--global-batch", "1", "--json", "-"]
    code, out, err = run_main(*base)
    assert code == 0, err
    plan = json.loads(out)["plan"]
    assert plan["settings"]["prediction"] == "gpu-shape-model/1"
    assert plan["settings"]["gpu_model"]["device"] == "h100-sxm"
    code, out, err = run_main(*base, "--efficiency", "mamf")
    assert code == 0, err
    assert json.loads(out)["plan"]["settings"]["prediction"] == "roofline"


def test_llm_serving_needs_a_gpu(run_main):
    code, _, err = run_main("llm", "tinyllama", "--hardware", "epyc-9654", "--rate", "2")
    assert code == 2 and err.count("\n") == 1 and "GPU performance model" in err
    code, _, err = run_main("llm", "tinyllama", "--hardware", "h100-sxm", "--rate", "-1")
    assert code == 2 and "rate" in err


def test_llm_predicts_beside_the_bound(run_main):
    code, out, err = run_main("llm", "tinyllama", "--hardware", "h100-sxm", "--dtype", "bf16", "--prompt", "128",
                              "--gen", "16", "--batch", "1,4", "--runtime", "graphs", "--rate", "1",
                              "--tpot-target", "50", "--json", "-")
    assert code == 0, err
    llm = json.loads(out)["llm"]
    p = llm["predicted"]
    assert llm["settings"]["prediction"] == "gpu-shape-model/1" and p["runtime"] == "graphs"
    bound = {b["batch"]: b for b in llm["batches"]}
    for b in p["batches"]:
        # The bound is a bound: the model's figures are never below it.
        assert b["tpot_s"] >= bound[b["batch"]]["tpot_s"] and b["ttft_s"] >= bound[b["batch"]]["ttft_s"]
        assert b["e2e_s"] == pytest.approx(b["ttft_s"] + 15 * b["tpot_s"])
    s = p["served"]
    # Little's law at the steady state it reports, and TTFT = 1.5 steps + the prefill alone.
    assert s["concurrency"] == pytest.approx(1.0 * (s["ttft_s"] + 15 * s["itl_s"]), rel=1e-4)
    assert s["ttft_s"] > p["batches"][0]["ttft_s"] + s["itl_s"]
    assert p["target"]["max_batch"] >= 4


# ------------------------------------------------------------------ training memory default


def test_training_keeps_fp32_master_weights_by_default(run_main):
    code, out, err = run_main("memory", "gpt2", "--dtype", "bf16", "--train", "--json", "-")
    assert code == 0, err
    default = json.loads(out)["training"]
    code, out, err = run_main("memory", "gpt2", "--dtype", "bf16", "--train", "--no-master-fp32", "--json", "-")
    assert code == 0, err
    pure = json.loads(out)["training"]
    n = default["param_bytes"] / 2  # bf16 weights
    assert default["master_fp32"] is True and pure["master_fp32"] is False
    # Mixed-precision AdamW: 2 (weights) + 2 (grads) + 8 (moments) + 4 (master) = 16 B/param.
    assert default["master_weight_bytes"] == 4 * n and pure["master_weight_bytes"] == 0
    states = default["param_bytes"] + default["grad_bytes"] + default["optimizer_bytes"] + default["master_weight_bytes"]
    assert states == 16 * n
    code, _, err = run_main("memory", "gpt2", "--no-master-fp32")
    assert code == 2 and "--train" in err


@pytest.mark.slow
def test_plan_llama3_8b_zero3_model_states_are_16_bytes_per_param(run_main):
    code, out, err = run_main("plan", "llama3-8b", "--hardware", "h100-sxm", "--devices", "8", "--train",
                              "--zero", "3", "--json", "-")
    assert code == 0, err
    best = json.loads(out)["plan"]["best"]
    params = 8_030_261_248
    assert best["model_states_bytes_per_device"] == pytest.approx(16 * params / 8, rel=1e-3)  # 16.06 GB
