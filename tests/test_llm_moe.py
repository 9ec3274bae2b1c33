"""The LLM view of mixture-of-experts and latent-attention models: experts read per batch, MLA cache."""

from __future__ import annotations

import json

import pytest

from modelmeter import formulas
from modelmeter.analysis.llm import llm_estimate, llm_section
from modelmeter.analysis.llm_steps import MATMUL
from modelmeter.cli.main import main
from modelmeter.count.moe import expected_touched
from modelmeter.hardware import get_hardware
from modelmeter.pipeline.llm_trace import DecoderTracer, measure_llm_costs


@pytest.fixture(scope="module")
def mixtral():
    return measure_llm_costs("mixtral-8x7b", prompt=512, gen=128, dtype="bf16")


@pytest.mark.slow
def test_mixtral_batch_1_decode_reads_the_active_weights(mixtral):
    hw = get_hardware("h100-sxm")
    result = llm_estimate(mixtral, hw, batches=(1, 64))
    one, many = result.batches
    assert one.decode.bound == "memory"
    # Published: 12.9 B active parameters, bf16.
    assert one.tpot_s == pytest.approx(12.9e9 * 2 / hw.memory_bandwidth_bytes_per_s, rel=0.05)
    assert one.experts_read_per_layer == pytest.approx(2.0)
    # Batch 64 reaches E·(1 − (1 − 2/8)^64) ≈ 8 experts per layer: nearly every weight is read.
    assert many.experts_read_per_layer == pytest.approx(expected_touched(8, 2, 64)) and many.experts_read_per_layer > 7.99
    assert many.decode.weight_bytes > 0.99 * (46.7e9 - 32000 * 4096) * 2
    # Memory fit counts every expert resident.
    assert result.weight_bytes == 46_702_792_704 * 2


@pytest.mark.slow
def test_mixtral_llm_section_states_routing_and_active_params(mixtral):
    section = llm_section(llm_estimate(mixtral, "h100-sxm", batches=(1,)))
    assert section["settings"]["routing"] == "balanced (assumed on meta)"
    assert (section["settings"]["experts"], section["settings"]["top_k"]) == (8, 2)
    assert section["params"] == 46_702_792_704 and section["active_params"] == 12_879_925_248
    assert any("E·(1 − (1 − k/E)^T)" in n for n in section["notes"])
    assert section["closed_form_decode_flops_per_token"] == formulas.decoder_flops_per_token(mixtral.config, 513)


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v3"])
@pytest.mark.slow
def test_moe_decode_matmul_flops_equal_the_closed_form(name):
    tracer = DecoderTracer(name)
    step = tracer.step(1, 1, 32)
    assert sum(v[MATMUL] for v in step.ops.values()) == formulas.decoder_flops_per_token(tracer.config, 33)
    assert step.kv_elems_per_token * 2 == formulas.kv_cache_bytes(tracer.config, 1, 2)


@pytest.mark.slow
def test_deepseek_v3_llm_from_the_cli_caches_the_latent(capsys):
    code = main(["llm", "deepseek-v3", "--hardware", "h200-sxm", "--dtype", "bf16", "--json", "-"])
    assert code in (0, None)
    section = json.loads(capsys.readouterr().out)["llm"]
    # kv_lora_rank + qk_rope_head_dim = 576 per token and layer, 61 layers, 2 bytes.
    assert section["kv_cache_bytes_per_token"] == 61 * 576 * 2 == 70_272
    assert section["kv_cache_bytes_per_token_closed_form"] == 70_272
    assert section["params"] == 671_026_404_352
    assert section["decode"]["bound"] == "memory"
    assert section["batches"][0]["experts_read_per_layer"] == pytest.approx(8.0)


@pytest.mark.slow
def test_gpt_oss_sliding_layers_hold_at_most_their_window():
    costs = measure_llm_costs("gpt-oss-20b", prompt=1024, gen=64, dtype="bf16")
    assert costs.sliding_window == 128 and costs.windowed_layers == tuple(range(0, 24, 2))
    result = llm_estimate(costs, "h200-sxm", batches=(4,))
    per_layer_token = 2 * 8 * 64 * 2  # K and V, 8 kv heads of 64, bf16
    # 12 full layers hold prompt + gen tokens, 12 sliding layers 128 of them.
    assert result.batches[0].kv_cache_bytes == 4 * per_layer_token * (12 * (1024 + 64) + 12 * 128)
    section = llm_section(result)
    assert section["settings"]["sliding_window_layers"] == list(range(0, 24, 2))
    assert any("12 sliding-window layers" in n for n in section["notes"])
