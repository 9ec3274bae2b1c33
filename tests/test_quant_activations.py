"""--activations int8|fp8: W8A8 / W4A8 / fp8 what-ifs at the device's int8/fp8 matrix peaks."""

from __future__ import annotations

import json

import pytest

from modelmeter.analysis.llm import llm_estimate
from modelmeter.hardware import get_hardware
from modelmeter.pipeline.llm_trace import measure_llm_costs

H100 = get_hardware("h100-sxm")


@pytest.fixture(scope="module")
def llama8b():
    return measure_llm_costs("llama3-8b", prompt=512, gen=32, dtype="fp16")


@pytest.mark.slow
def test_w8a8_decode_is_the_weight_bytes_ratio(llama8b):
    fp16 = llm_estimate(llama8b, H100)
    w8a8 = llm_estimate(llama8b, H100, activations="int8")
    assert (w8a8.weights, w8a8.kv_dtype, w8a8.activations) == ("int8", "int8", "int8")
    # Llama 3 8B: embedding and lm_head 128256 x 4096 each, 65 RMSNorm weights of 4096; the rest
    # are the blocks' linear weights. Decode reads every weight but the embedding table (one row).
    params, head, norms = 8_030_261_248, 128_256 * 4096, 65 * 4096
    linear = params - 2 * head - norms
    read_fp16 = 2 * (linear + head + norms)
    read_w8a8 = 1 * linear + 2 * (head + norms)  # head and norms kept 16-bit
    for b in (fp16.batches[0], w8a8.batches[0]):
        assert b.decode.bound == "memory"
    assert w8a8.batches[0].tpot_s / fp16.batches[0].tpot_s == pytest.approx(read_w8a8 / read_fp16, rel=0.01)


@pytest.mark.slow
def test_w8a8_prefill_is_the_peak_ratio(llama8b):
    fp16 = llm_estimate(llama8b, H100, batches=(16,))
    w8a8 = llm_estimate(llama8b, H100, batches=(16,), activations="int8")
    peaks = H100.peak_flops["fp16"] / H100.peak_flops["int8"]  # specs.json: 989.5 / 1979 TFLOP/s
    assert w8a8.peak_flops == H100.peak_flops["int8"]
    a, b = fp16.batches[0].prefill, w8a8.batches[0].prefill
    assert a.bound == b.bound == "compute"
    # Vector work (norms, softmax, SiLU) stays at the 16-bit rate: a little above the peak ratio.
    assert b.t_compute_s / a.t_compute_s == pytest.approx(peaks, rel=0.02)
    assert b.time_s / a.time_s == pytest.approx(peaks, rel=0.05)
    # W4A8: same compute, fewer weight bytes.
    w4a8 = llm_estimate(llama8b, H100, batches=(16,), activations="int8", weights="int4")
    assert w4a8.batches[0].prefill.t_compute_s == b.t_compute_s
    assert w4a8.weight_bytes < w8a8.weight_bytes


def test_roofline_w8a8_and_fp8(run_main):
    rows = {}
    for flags in ((), ("--activations", "int8"), ("--activations", "int8", "--weights", "int4"),
                  ("--activations", "fp8")):
        code, out, err = run_main("roofline", "gpt2", "--seq", "256", "--hardware", "h100-sxm",
                                  "--dtype", "fp16", *flags, "--json", "-")
        assert code == 0, err
        rows[flags[1] + (flags[3] if len(flags) > 2 else "") if flags else "fp16"] = json.loads(out)["roofline"]
    assert rows["int8"]["precision"] == rows["int8"]["weights"] == rows["int8"]["activations"] == "int8"
    assert rows["int8"]["hardware_detail"]["peak_flops"] == H100.peak_flops["int8"]
    assert rows["fp8"]["hardware_detail"]["peak_flops"] == H100.peak_flops["fp8"]
    assert rows["int8int4"]["weights"] == "int4"
    # Matrix time halves (the int8 peak is twice fp16's); vector time does not.
    assert rows["int8"]["t_compute_s"] < rows["fp16"]["t_compute_s"]
    assert rows["int8"]["bytes"] == pytest.approx(rows["fp16"]["bytes"] / 2, rel=0.15)
    assert rows["int8int4"]["bytes"] < rows["int8"]["bytes"]


@pytest.mark.parametrize("args, needle", [
    (("roofline", "gpt2", "--hardware", "a100-sxm-80gb", "--activations", "fp8"), "h100-sxm"),
    (("roofline", "gpt2", "--hardware", "h100-sxm", "--activations", "int4"), "int8 or fp8"),
    (("llm", "gpt2", "--hardware", "a100-sxm-80gb", "--activations", "fp8"), "devices with one"),
])
def test_device_without_the_peak(run_main, args, needle):
    code, _, err = run_main(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err


@pytest.mark.slow
def test_llm_table_and_plot_labels_in_plain_words(run_main, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modelmeter import api
    from modelmeter.report.llm_plots import _roofline

    code, out, err = run_main("llm", "gpt2", "--hardware", "h100-sxm", "--prompt", "64", "--gen", "8",
                              "--batch", "1,2,4", "--activations", "int8")
    assert code == 0, err
    assert "limited by" in out and "memory / memory" in out and "com/mem" not in out
    assert "int8 activations" in out and "flash attention" in out
    section = api.llm("gpt2", hardware="h100-sxm", prompt=64, gen=8, batches=(1, 2, 4)).to_dict()
    fig, ax = plt.subplots()
    _roofline(ax, section)
    texts = [t.get_text() for t in ax.texts]
    plt.close(fig)
    # Each batch is named once per phase; coinciding points share one label.
    for batch in ("1", "2", "4"):
        assert sum(batch in t.removeprefix("batch ").split(", ") for t in texts) == 2, texts
    assert all(t.startswith("batch ") for t in texts)
