"""SDPA is traced on the kernel the real call takes: torch's CPU rules, on cpu as on meta."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from modelmeter.trace import trace_model

# Four SDPA calls that torch's CPU rules (select_sdp_backend_cpp) send to different kernels.
MIX = '''
import torch
import torch.nn.functional as F
from torch import nn


class Mix(nn.Module):
    def __init__(self, d=32, heads=4):
        super().__init__()
        self.qkv, self.heads = nn.Linear(d, 3 * d), heads
        self.narrow = nn.Linear(d, d // 2)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)          # bool mask: flash
        y = y + F.scaled_dot_product_attention(q, k, v, is_causal=True)      # flash
        vn = self.narrow(x).view(b, n, self.heads, -1).transpose(1, 2)
        z = F.scaled_dot_product_attention(q, k, vn)                         # v narrower (MLA): math
        w = F.scaled_dot_product_attention(q[0], k[0], v[0])                 # 3-D: math
        return y.sum() + z.sum() + w.sum()


def build():
    return Mix(), torch.randn(2, 16, 32)
'''


@pytest.fixture()
def mix(tmp_path, monkeypatch):
    (tmp_path / "sdpamix.py").write_text(MIX)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import sys
    sys.modules.pop("sdpamix", None)
    return importlib.import_module("sdpamix")


def _real_flops(module, x, backward):
    # FlopCounterMode has no formula for the fused CPU kernel: count the math form, whose two
    # products per head are the same MACs (counted densely, causal or not).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = module(x)
        if backward:
            out.backward()
    return counter.get_total_flops()


def test_bool_mask_counts_on_cpu(run_main, mix):
    # Plain PyTorch runs it; the trace used to call the fused CPU kernel with the bool mask itself.
    code, out, err = run_main("count", "sdpamix:build", "--device", "cpu", "--json", "-")
    assert code == 0, err
    report = json.loads(out)
    module, x = mix.build()
    with torch.no_grad():
        assert report["totals"]["flops"] == _real_flops(module, x, backward=False)
    assert report["settings"]["attention"]["kernels"] == {"flash": 2, "math": 2}


def test_meta_and_cpu_trace_the_same_kernels(run_main, mix):
    reports = {}
    for device in ("meta", "cpu"):
        code, out, err = run_main("memory", "sdpamix:build", "--train", "--device", device, "--json", "-")
        assert code == 0, err
        reports[device] = json.loads(out)
    meta, cpu = (reports[d]["totals"] for d in ("meta", "cpu"))
    for key in ("peak_inference_bytes", "saved_for_backward_bytes", "peak_train_forward_bytes",
                "peak_backward_bytes"):
        assert meta["activations"][key] == cpu["activations"][key], key
    assert meta["backward_flops"] == cpu["backward_flops"]
    # The two fused calls' backward recomputes Q·Kᵀ (b·h·L·S·E = 2·4·16·16·8 MACs each), which
    # the math form FlopCounterMode counts keeps; everything else is the same.
    recompute = 2 * (2 * 4 * 16 * 16 * 8)
    real = _real_flops(*mix.build(), backward=True) - meta["flops"]
    assert meta["backward_macs"] * 2 == real + 2 * recompute
    assert meta["backward_attention"]["fused_calls"] == 2
    assert meta["backward_attention"]["recompute_macs"] == recompute
    assert "2.5x" in meta["backward_attention"]["convention"]
    assert reports["meta"]["settings"]["attention"]["kernels"] == {"flash": 2, "math": 2}
    assert "select_sdp_backend_cpp" in reports["meta"]["settings"]["attention"]["kernel_rules"]


@pytest.mark.parametrize("backward", [False, True])
def test_each_call_takes_the_cpu_kernel(mix, backward):
    # The ops recorded on meta are the ops a real CPU run dispatches, call by call.
    torch.manual_seed(0)
    real, x = mix.build()
    meta = mix.Mix().to_empty(device="meta")
    ops = [[e.op for e in trace_model(m, (t,), attention="flash", backward=backward).events]
           for m, t in ((real, x), (meta, x.to("meta")))]
    assert ops[0] == ops[1]
    assert sum(op.startswith("aten._scaled_dot_product_flash_attention_for_cpu.") for op in ops[1]) == 2


@pytest.mark.slow
def test_training_trace_says_dropout_and_can_drop_it(run_main):
    reports = {}
    for flag in ((), ("--no-dropout",)):
        code, out, err = run_main("memory", "gpt2", "--seq", "64", "--train", *flag, "--json", "-")
        assert code == 0, err
        reports[flag] = json.loads(out)
    on, off = reports[()], reports[("--no-dropout",)]
    # GPT-2: embedding dropout, then per layer attention, attention-output and MLP dropout.
    assert on["training"]["dropout"]["active"] and on["training"]["dropout"]["mask_ops"] == 1 + 12 * 3
    assert off["training"]["dropout"] == {**off["training"]["dropout"], "active": False, "mask_ops": 0}
    # At least the 25 one-byte residual masks (s x h) and the 12 fp32 attention masks (heads x s x s).
    s, h, heads = 64, 768, 12
    saved = [r["totals"]["activations"]["saved_for_backward_bytes"] for r in (on, off)]
    assert saved[0] - saved[1] >= 25 * s * h + 12 * heads * s * s * 4
    code, out, _ = run_main("memory", "gpt2", "--seq", "64", "--train")
    assert code == 0 and "37 masks saved" in out


def test_no_dropout_needs_train(run_main):
    code, _, err = run_main("memory", "gpt2", "--no-dropout")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--train" in err
