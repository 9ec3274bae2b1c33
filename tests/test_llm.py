"""The LLM view: closed forms vs traces, the fits, the roofline claims, the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelmeter import formulas
from modelmeter.analysis.llm import (
    _sum_linear,
    _sum_max,
    llm_estimate,
    llm_section,
    parse_batches,
)
from modelmeter.analysis.llm_steps import ACT, KV_WRITE, MATMUL, VECTOR
from modelmeter.cli.main import main
from modelmeter.core.errors import UserInputError
from modelmeter.hardware import get_hardware
from modelmeter.pipeline.llm_trace import DecoderTracer, measure_llm_costs

DECODERS = ("gpt2", "llama3-8b", "llama3-70b", "mistral-7b", "tinyllama")
PROMPT = 32


def _total(step, field):
    return sum(v[field] for v in step.ops.values())


@pytest.fixture(scope="module")
def tracers():
    return {}


def _tracer(tracers, name):
    if name not in tracers:
        tracers[name] = DecoderTracer(name)
    return tracers[name]


@pytest.mark.parametrize("name", [pytest.param(d, marks=pytest.mark.slow) if d != "gpt2" else d
                                  for d in DECODERS])
def test_traced_matches_closed_form(tracers, name):
    tracer = _tracer(tracers, name)
    config = tracer.config
    assert tracer.params == formulas.decoder_params(config)
    prefill = tracer.step(1, PROMPT)
    decode = tracer.step(1, 1, PROMPT)
    traced_prefill = _total(prefill, MATMUL) + _total(prefill, VECTOR)
    traced_decode = _total(decode, MATMUL) + _total(decode, VECTOR)
    closed_prefill = formulas.decoder_prefill_flops(config, PROMPT)
    closed_decode = formulas.decoder_flops_per_token(config, PROMPT + 1)
    assert traced_prefill == pytest.approx(closed_prefill, rel=0.01)
    assert traced_decode == pytest.approx(closed_decode, rel=0.01)
    # Matrix FLOPs alone are exact: the 1 % is the elementwise work.
    assert _total(decode, MATMUL) == closed_decode
    # KV cache: the trace's appended cache tensors, exactly the closed form.
    itemsize = decode.kv_itemsize
    assert decode.kv_elems_per_token * itemsize == formulas.kv_cache_bytes(config, 1, itemsize)
    assert prefill.kv_elems_per_token == decode.kv_elems_per_token
    assert _total(decode, KV_WRITE) == decode.kv_elems_per_token


@pytest.mark.slow
def test_fits_predict_untraced_points(tracers):
    tracer = _tracer(tracers, "tinyllama")
    costs = measure_llm_costs(tracer, prompt=PROMPT, gen=8)
    assert costs.fit_max_rel_error < 1e-9
    # Prefill is linear in batch: predict batch 4 and trace it.
    direct = tracer.step(4, PROMPT)
    for field in (MATMUL, VECTOR, ACT):
        predicted = sum(a[field] + b[field] * 4 for a, b in costs.prefill.values())
        assert predicted == pytest.approx(_total(direct, field), rel=1e-9)
    # Decode is bilinear in (batch, cache length): predict (5, 77) and trace it.
    direct = tracer.step(5, 1, 77)
    for field in (MATMUL, VECTOR, ACT):
        predicted = sum(c0[field] + c1[field] * 5 + (c2[field] + c3[field] * 5) * 77
                        for c0, c1, c2, c3 in costs.decode.values())
        assert predicted == pytest.approx(_total(direct, field), rel=1e-9)


@pytest.fixture(scope="module")
def llama8b(tracers):
    return measure_llm_costs(_tracer(tracers, "llama3-8b"), prompt=1024, gen=16)


@pytest.mark.slow
def test_llama3_8b_on_h100(llama8b):
    hw = get_hardware("h100-sxm")
    fp16 = llm_estimate(llama8b, hw, weights="fp16")
    row = fp16.batches[0]
    assert row.decode.bound == "memory"
    assert row.prefill.bound == "compute"
    # Decode reads every weight once (the embedding table only gathers a row) plus the cache.
    dims = formulas.decoder_dims(llama8b.config)
    weights = (formulas.decoder_params(llama8b.config) - dims.vocab * dims.d_model) * 2
    assert row.decode.weight_bytes == pytest.approx(weights, rel=1e-4)
    mean_len = 1024 + (15 - 1) / 2 + 1  # keys attended per step, averaged over the decode steps
    kv = formulas.kv_cache_bytes(llama8b.config, mean_len, 2)
    assert row.decode.kv_bytes == pytest.approx(kv, rel=0.01)
    assert row.tpot_s == pytest.approx((weights + kv) / hw.memory_bandwidth_bytes_per_s, rel=0.03)
    int4 = llm_estimate(llama8b, hw, weights="int4").batches[0]
    # Weight-only int4: the blocks' linear weights at 4 bits, lm_head and norms stay fp16.
    linear = dims.layers * formulas.decoder_layer_matmul_params(dims)
    assert int4.decode.weight_bytes == pytest.approx(linear / 2 + (weights / 2 - linear) * 2, rel=1e-4)
    assert int4.tpot_s < row.tpot_s / 2.5
    # Memory holds every weight: the layout beside the naive every-parameter figure.
    params = formulas.decoder_params(llama8b.config)
    section = llm_section(llm_estimate(llama8b, hw, weights="int4"))
    assert section["weight_bytes"] == linear / 2 + (params - linear) * 2
    assert section["weight_bytes_naive"] == params / 2
    assert section["quantization"]["kept_precision"] == "fp16"
    assert fp16.kv_cache_bytes_per_token == fp16.kv_cache_bytes_per_token_closed_form == 131072
    fp8 = llm_estimate(llama8b, hw, kv_dtype="fp8")
    assert fp8.kv_cache_bytes_per_token == 65536


@pytest.mark.slow
def test_mistral_sliding_window_caps_the_cache_and_decode(tracers):
    # Prompt 8192 > window 4096: every decode step attends to 4096 keys (4095 cached + itself).
    costs = measure_llm_costs(_tracer(tracers, "mistral-7b"), prompt=8192, gen=64)
    assert costs.sliding_window == 4096 and any("sliding window of 4096" in n for n in costs.notes)
    hw = get_hardware("h100-sxm")
    capped = llm_estimate(costs, hw, batches=[1, 4])
    one, four = capped.batches
    config = costs.config
    window_kv = formulas.kv_cache_bytes(config, 4096, 2)
    assert one.kv_cache_bytes == window_kv and four.kv_cache_bytes == 4 * window_kv
    assert one.decode.kv_bytes == pytest.approx(window_kv, rel=0.01)
    dims = formulas.decoder_dims(config)
    weights = (formulas.decoder_params(config) - dims.vocab * dims.d_model) * 2
    assert one.decode.bound == "memory"
    assert one.tpot_s == pytest.approx((weights + window_kv) / hw.memory_bandwidth_bytes_per_s, rel=0.03)
    # The same traces without the window: the whole context, as transformers' DynamicCache holds it.
    full = llm_estimate(dataclasses.replace(costs, sliding_window=None), hw).batches[0]
    mean_keys = 8192 + (63 - 1) / 2 + 1
    assert full.decode.kv_bytes == pytest.approx(formulas.kv_cache_bytes(config, mean_keys, 2), rel=0.01)
    assert full.kv_cache_bytes == formulas.kv_cache_bytes(config, 8192 + 64, 2)
    assert full.tpot_s > one.tpot_s and full.ttft_s == one.ttft_s  # prefill is not windowed


@pytest.mark.slow
def test_generation_accounting_and_max_batch(llama8b):
    result = llm_estimate(llama8b, "h100-sxm", batches=[1, 8], max_batch=True)
    one, eight = result.batches[:2]
    assert one.e2e_s == pytest.approx(one.ttft_s + 15 * one.tpot_s)
    assert eight.tokens_per_s == pytest.approx(8 * 16 / eight.e2e_s)
    assert eight.tokens_per_s > one.tokens_per_s
    limit = result.max_batch
    assert limit and result.batches[-1].batch == limit
    # the device's memory less the runtime's headroom: max(10 %, 800 MiB) (hardware/specs.json)
    device = result.hardware.memory_bytes
    memory = device - max(0.1 * device, 800 * 2**20)
    at = llm_estimate(llama8b, "h100-sxm", batches=[limit, limit + 1])
    assert at.batches[0].memory_bytes <= memory < at.batches[1].memory_bytes
    assert at.batches[0].fits and not at.batches[1].fits
    section = llm_section(result)
    for key in ("prefill", "decode", "kv_cache_bytes_per_token", "ttft_s", "tpot_s", "tokens_per_s",
                "max_batch", "batches", "hardware", "settings"):
        assert key in section
    json.dumps(section)


@given(st.floats(-5, 5), st.floats(-1, 1), st.floats(-5, 5), st.floats(-1, 1),
       st.integers(0, 50), st.integers(0, 40))
def test_sum_max_matches_brute_force(a1, b1, a2, b2, start, n):
    brute = sum(max(a1 + b1 * x, a2 + b2 * x) for x in range(start, start + n))
    assert _sum_max(a1, b1, a2, b2, start, n) == pytest.approx(brute, abs=1e-6)
    assert _sum_linear(a1, b1, start, n) == pytest.approx(sum(a1 + b1 * x for x in range(start, start + n)),
                                                          abs=1e-6)


@pytest.mark.parametrize("bad", ["", "0", "1,-2", "1,x", "1.5"])
def test_bad_batch_lists(bad):
    with pytest.raises(UserInputError):
        parse_batches(bad)
    assert parse_batches("1, 8,8,32") == (1, 8, 32)


def _cli(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.slow
def test_cli_json_and_plot(capsys, tmp_path):
    target, plot = tmp_path / "llm.json", tmp_path / "llm.png"
    code, out, _ = _cli(capsys, "llm", "gpt2", "--hardware", "h100-sxm", "--prompt", "64", "--gen", "8",
                        "--batch", "1,4", "--kv-dtype", "fp8", "--json", str(target), "--plot", str(plot))
    assert code == 0
    data = json.loads(target.read_text())["llm"]
    assert [b["batch"] for b in data["batches"]] == [1, 4]
    assert data["settings"]["kv_dtype"] == "fp8"
    assert plot.stat().st_size > 0
    assert "gpt2 on h100-sxm" in out


@pytest.mark.parametrize("args, message", [
    (("bert-base",), "not a decoder"),
    (("gpt2", "--batch", "1,0"), "bad batch size"),
    (("gpt2", "--prompt", "0"), "--prompt"),
    (("gpt2", "--prompt", "1000", "--gen", "100"), "learned positions"),
    (("gpt2", "--plot", "/no/such/dir/p.png"), "cannot write plot"),
    (("gpt2", "--dtype", "int4"), "--weights"),
])
def test_cli_bad_input_exits_2(capsys, args, message):
    code, _, err = _cli(capsys, "llm", "--hardware", "h100-sxm", "--gen", "4", *args)
    assert code == 2
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_weights_exceeding_memory_warn_and_still_report(tracers):
    costs = measure_llm_costs(_tracer(tracers, "llama3-70b"), prompt=PROMPT, gen=4)
    result = llm_estimate(costs, "rtx-4090")
    assert result.max_batch == 0
    assert any("exceed" in n for n in result.notes)
    assert result.batches[0].tpot_s > 0 and result.batches[0].fits is False
