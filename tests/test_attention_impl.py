"""--attention flash|math: the SDPA kernel assumed changes bytes and memory, never MACs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modelmeter import api
from modelmeter.count.liveness import live_peak, saved_for_backward
from modelmeter.trace import trace_model


class TinyAttention(nn.Module):
    def __init__(self, d: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.qkv, self.out, self.heads = nn.Linear(d, 3 * d), nn.Linear(d, d), heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, length, d))


@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.slow
def test_meta_flash_matches_the_cpu_kernel(backward):
    # Real CPU tensors run the real fused kernel; the meta trace must keep the same tensors alive.
    torch.manual_seed(0)
    real, x = TinyAttention(), torch.randn(2, 128, 64)
    meta, xm = TinyAttention().to_empty(device="meta"), torch.empty(2, 128, 64, device="meta")
    for impl in ("flash", "math"):
        r = trace_model(real, (x,), attention=impl, backward=backward)
        m = trace_model(meta, (xm,), attention=impl, backward=backward)
        assert r.attention == m.attention == impl
        assert live_peak(m).peak_bytes == live_peak(r).peak_bytes
        assert saved_for_backward(m).total_bytes == saved_for_backward(r).total_bytes
    flash = live_peak(trace_model(meta, (xm,), attention="flash", backward=backward)).peak_bytes
    math_ = live_peak(trace_model(meta, (xm,), attention="math", backward=backward)).peak_bytes
    # The math form materialises 2 x 4 x 128 x 128 fp32 scores (and probabilities): 512 KiB each.
    assert math_ - flash >= 2 * 4 * 128 * 128 * 4


@pytest.mark.parametrize(("name", "layers"), [("gpt2", 12), ("tinyllama", 22)])
@pytest.mark.slow
def test_macs_are_the_same_bytes_are_not(name, layers):
    flash = api.count(name, seq=256, attention="flash").to_dict()
    math_ = api.count(name, seq=256, attention="math").to_dict()
    assert flash["totals"]["macs"] == math_["totals"]["macs"]
    moved = [r["totals"]["bytes_read"] + r["totals"]["bytes_written"] for r in (flash, math_)]
    assert moved[0] < moved[1]
    assert flash["settings"]["attention"]["implementation"] == "flash"
    assert "default" in flash["settings"]["attention"]["why"] or "what-if" in flash["settings"]["attention"]["why"]
    assert {k: math_["settings"]["attention"][k] for k in ("implementation", "why")} == {
        "implementation": "math", "why": "--attention math (what-if)"}
    # One SDPA call per layer; in eval, with a 4-D mask or is_causal, torch's CPU rules pick flash.
    assert math_["settings"]["attention"]["kernels"] == {"math": layers}
    assert flash["settings"]["attention"]["kernels"] == {"flash": layers}


def test_model_without_sdpa_says_so(run_main, tmp_path, monkeypatch):
    (tmp_path / "mlp.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Linear(8, 8), torch.randn(2, 8)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run_main("count", "mlp:build", "--attention", "math", "--json", "-")
    assert code == 0, err
    assert json.loads(out)["settings"]["attention"]["implementation"] == "as written"


@pytest.mark.slow
def test_cli_memory_shows_both(run_main):
    # Dropout off: with it, torch's CPU rules send every attention call to the math form.
    code, out, err = run_main("memory", "gpt2", "--seq", "128", "--train", "--no-dropout", "--json", "-")
    assert code == 0, err
    report = json.loads(out)
    by = report["totals"]["activations"]["activations_by_attention"]
    assert by["flash"]["assumed"] and not by["math"]["assumed"]
    assert by["flash"]["peak_train_forward_bytes"] < by["math"]["peak_train_forward_bytes"]
    assert report["training"]["activation_bytes"] == by["flash"]["peak_train_forward_bytes"]
    code, out, _ = run_main("memory", "gpt2", "--seq", "128", "--attention", "math")
    assert code == 0 and "attention assumed" in out and "math" in out


def test_cli_bad_attention(run_main):
    code, _, err = run_main("count", "gpt2", "--attention", "bogus")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bogus" in err


@pytest.mark.slow
def test_llama3_8b_training_activations_with_flash():
    """Saved activations per layer with a fused kernel, Korthikanti et al. 2022's count adapted to
    Llama (bf16, b = 1): each RMSNorm keeps its fp32 input (4h), the bf16 normalised value (2h)
    and its output (2h); attention keeps q (2h), k and v (2·2·h_kv), the output (2h, also the
    o_proj input); the SwiGLU MLP keeps gate, silu(gate), up and their product (4·2·I). No term
    grows with s: GPT's 34·s·b·h has 5·a·s/h more for the scores, Llama's is 49·s·b·h."""
    s, h, h_kv, inter, layers = 4096, 4096, 1024, 14336, 32
    per_layer = s * (2 * (4 + 2 + 2) * h + 2 * h + 4 * h_kv + 2 * h + 8 * inter)
    assert per_layer == 49 * s * h
    head = s * ((4 + 2 + 2) * h + 2 * h)  # final norm and lm_head input
    report = api.memory("llama3-8b", seq=4096, dtype="bf16", train=True).to_dict()
    act = report["totals"]["activations"]
    assert act["saved_for_backward_bytes"] == pytest.approx(layers * per_layer + head, rel=0.02)
    assert act["saved_for_backward_bytes"] <= report["training"]["activation_bytes"]
    assert report["training"]["activation_bytes"] < 1.15 * act["saved_for_backward_bytes"]
    # The unfused figure (Korthikanti's 5·a·s/h term) is beside it, not assumed.
    math_ = act["activations_by_attention"]["math"]
    assert 80e9 < math_["peak_train_forward_bytes"] < 120e9
