"""Quantised weight what-ifs as deployments lay weights out (issue 11, section 3).

GPTQ/AWQ int4, bitsandbytes nf4, int8 and fp8 checkpoints quantise the weights of
linear (and convolution) layers; embeddings, the output head, norms and biases stay
16-bit. Every expected figure below is a closed form from the model's config, never
a copy of modelmeter's output; the naive "every parameter at N bits" figure stays
visible beside the realistic one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from math import ceil

import pytest

from modelmeter.presets import load_preset


def run(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelmeter.cli.main", *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def count_json(*args: str, cwd: str | None = None) -> dict:
    proc = run("count", *args, "--json", "-", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def llama3_8b_shapes() -> dict[str, int]:
    """Parameter counts of Llama 3 8B by role, from its config alone."""
    c = load_preset("llama3-8b")["config"]
    h, inter, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    head_dim = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim
    # q, k, v, o projections and gate, up, down of the MLP: every one a linear layer.
    per_layer = h * h + 2 * h * kv + h * h + 3 * h * inter
    linear = layers * per_layer
    embedding = vocab * h
    head = vocab * h  # untied lm_head
    norms = (2 * layers + 1) * h  # two RMSNorms per block and the final one
    return {"linear": linear, "embedding": embedding, "head": head, "norms": norms,
            "params": linear + embedding + head + norms, "h": h, "inter": inter, "kv": kv,
            "layers": layers}


@pytest.fixture(scope="module")
def llama_int4():
    proc = run("count", "llama3-8b", "--dtype", "int4", "--group-size", "128", "--seq", "8")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, count_json("llama3-8b", "--dtype", "int4", "--group-size", "128", "--seq", "8")


@pytest.mark.slow
def test_gptq_style_int4_keeps_embeddings_head_and_norms_in_16_bit(llama_int4):
    _, report = llama_int4
    s = llama3_8b_shapes()
    t = report["totals"]
    assert t["params"] == s["params"]
    # Linear weights of the blocks at 4 bits + one fp16 scale per group of 128 input
    # features per output row; embedding, lm_head and norms at 16 bits.
    scales = s["linear"] // 128 * 2
    kept = s["embedding"] + s["head"] + s["norms"]
    expected = s["linear"] * 4 / 8 + scales + kept * 2
    assert t["param_bytes"] == expected
    assert round(expected / 1e9, 2) == 5.70
    assert t["param_scale_bytes"] == scales
    q = t["quantization"]
    assert q["layout"] == "weight-only" and q["precision"] == "int4" and q["group_size"] == 128
    assert q["quantized_params"] == s["linear"] and q["quantized_tensors"] == 7 * s["layers"]
    assert q["kept_params"] == kept and q["kept_precision"] == "fp16"
    kept_by_kind = {k["kind"]: k["params"] for k in q["kept"]}
    assert kept_by_kind == {"embedding": s["embedding"], "head": s["head"], "norm": s["norms"]}
    assert {k["kind"]: k["example"] for k in q["kept"]}["head"] == "lm_head.weight"


@pytest.mark.slow
def test_naive_every_parameter_figure_stays_beside_it(llama_int4):
    _, report = llama_int4
    t = report["totals"]
    params = llama3_8b_shapes()["params"]
    naive = params * 4 / 8 + ceil(params / 128) * 2
    assert t["param_bytes_naive"] == naive == t["quantization"]["param_bytes_naive"]
    assert round(naive / 1e9, 2) == 4.14  # the seed's figure, still shown and labelled


def test_terminal_says_what_stays_16_bit_and_shows_the_naive_figure(llama_int4):
    out, _ = llama_int4
    assert "parameter size (int4)" in out and "5.70 GB" in out
    assert "kept fp16: embedding, head, norm" in out
    assert "naive: every tensor at int4" in out and "4.14 GB" in out


@pytest.mark.slow
def test_nf4_as_bitsandbytes_stores_it():
    report = count_json("llama3-8b", "--dtype", "nf4", "--seq", "8")
    s = llama3_8b_shapes()
    t = report["totals"]
    # bitsandbytes' default (no double quantisation): 4-bit codes and one fp32 absmax
    # per block of 64 elements of each flattened linear weight.
    absmax = s["linear"] // 64 * 4
    kept = s["embedding"] + s["head"] + s["norms"]
    assert t["param_bytes"] == s["linear"] / 2 + absmax + kept * 2
    assert t["param_scale_bytes"] == absmax
    q = t["quantization"]
    assert q["scale_bits"] == 32 and q["group_size"] == 64 and q["groups"] == "flat"
    assert t["param_bytes_naive"] == s["params"] / 2 + ceil(s["params"] / 64) * 4


@pytest.mark.parametrize("dtype", ["int8", "fp8"])
@pytest.mark.slow
def test_int8_and_fp8_quantise_the_same_tensors(dtype):
    t = count_json("llama3-8b", "--dtype", dtype, "--seq", "8")["totals"]
    s = llama3_8b_shapes()
    assert t["param_bytes"] == s["linear"] + (s["embedding"] + s["head"] + s["norms"]) * 2
    assert t["param_bytes_naive"] == s["params"]
    assert t["quantization"]["kept_precision"] == "fp16"


@pytest.mark.slow
def test_float_precisions_have_no_layout():
    t = count_json("gpt2", "--dtype", "bf16", "--seq", "8")["totals"]
    assert "quantization" not in t and "param_bytes_naive" not in t
    assert t["param_bytes"] == t["params"] * 2


@pytest.mark.slow
def test_tied_gpt2_keeps_its_shared_embedding_and_quantises_conv1d_projections():
    t = count_json("gpt2", "--dtype", "int4", "--seq", "8")["totals"]
    c = load_preset("gpt2")["config"]
    d, layers = c["n_embd"], c["n_layer"]
    # transformers' Conv1D (c_attn, c_proj, c_fc, mlp c_proj) is a linear layer.
    linear = layers * (d * 3 * d + d * d + 2 * d * 4 * d)
    assert t["quantization"]["quantized_params"] == linear
    kinds = {k["kind"] for k in t["quantization"]["kept"]}
    assert kinds == {"embedding", "norm", "bias"}  # lm_head is the embedding, tied: no head tensor
    assert t["param_bytes"] == linear / 2 + (t["params"] - linear) * 2


@pytest.mark.slow
def test_resnet50_quantises_convolutions_keeps_batch_norm_and_classifier():
    """A CNN is treated alike: conv weights quantised, batch norms and the classifier kept."""
    t = count_json("resnet50", "--dtype", "int8")["totals"]
    c = load_preset("resnet50")["config"]
    # Batch norms: the stem, three per bottleneck (c/4, c/4, c), one per stage's shortcut.
    bn_channels = c["embedding_size"] + sum(
        depth * (width // 4 * 2 + width) + width
        for depth, width in zip(c["depths"], c["hidden_sizes"], strict=True)
    )
    norms = 2 * bn_channels  # weight and bias
    head = c["hidden_sizes"][-1] * c["num_labels"] + c["num_labels"]
    q = t["quantization"]
    assert {k["kind"]: k["params"] for k in q["kept"]} == {"head": head, "norm": norms}
    assert q["quantized_params"] == t["params"] - head - norms
    assert t["param_bytes"] == q["quantized_params"] + (head + norms) * 2


FACTORY = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 64)
        self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
        self.conv = nn.Conv1d(64, 64, 3, padding=1)
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 100)

    def forward(self, ids):
        x = self.emb(ids)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        x = x + self.conv(x.transpose(1, 2)).transpose(1, 2)
        return self.head(self.norm(x))


def tiny():
    return Tiny()
'''


@pytest.mark.slow
def test_groups_run_along_each_output_row_and_attention_projections_count_as_linear(tmp_path):
    (tmp_path / "mm_quant_tiny.py").write_text(FACTORY)
    t = count_json("mm_quant_tiny:tiny", "--input", "1x8:int64", "--dtype", "int4",
                   "--group-size", "128", cwd=str(tmp_path))["totals"]
    in_proj, out_proj, conv = 3 * 64 * 64, 64 * 64, 64 * 64 * 3
    quantised = in_proj + out_proj + conv
    # One fp16 scale per started group of 128 along each row: in_proj and out_proj rows
    # hold 64 inputs (one group), the conv's rows 64 x 3 = 192 (two groups).
    scales = (3 * 64 * 1 + 64 * 1 + 64 * 2) * 2
    kept = 100 * 64 + (3 * 64 + 64 + 64) + 2 * 64 + (64 * 100 + 100)
    assert t["params"] == quantised + kept
    q = t["quantization"]
    assert q["quantized_params"] == quantised and q["scale_bytes"] == scales
    assert {k["kind"]: k["params"] for k in q["kept"]} == {
        "embedding": 100 * 64, "head": 64 * 100 + 100, "norm": 2 * 64, "bias": 3 * 64 + 64 + 64}
    assert t["param_bytes"] == quantised / 2 + scales + kept * 2


@pytest.mark.slow
def test_memory_stores_the_weights_in_the_layout_and_refuses_to_train_them(tmp_path):
    (tmp_path / "mm_quant_tiny.py").write_text(FACTORY)
    proc = run("memory", "mm_quant_tiny:tiny", "--input", "1x8:int64", "--dtype", "int4",
               "--json", "-", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    quantised = 3 * 64 * 64 + 64 * 64 + 64 * 64 * 3
    kept = report["totals"]["params"] - quantised
    assert report["totals"]["param_bytes"] == quantised / 2 + kept * 2
    # Training int4 weights directly is not a thing (the budget used to count int4 gradients):
    # one line, as plan --train does for the same precisions.
    proc = run("memory", "mm_quant_tiny:tiny", "--input", "1x8:int64", "--dtype", "int4", "--train",
               cwd=str(tmp_path))
    assert proc.returncode == 2 and "quantised weights are not trained" in proc.stderr, proc.stderr
