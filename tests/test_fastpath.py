"""nn.TransformerEncoderLayer / nn.MultiheadAttention: the trace takes the fast path the real call takes.

In eval under no_grad torch runs each layer as one fused kernel
(`_transformer_encoder_layer_fwd`, `_native_multi_head_attention`). Oracles: the
allocator's peak of the real call (the profiler's [memory] events at op boundaries,
as tests/test_memory.py reads them), the op torch really ran (a bare dispatch mode
over the real call), the closed form of the layer's matmuls, and FlopCounterMode
on the same model with the fast path off (it has no formula for the fused kernel:
it counts 0 for the real call).
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_memory import _inference_step, _profiler_peak
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from modelmeter.count import count_trace
from modelmeter.count.liveness import live_peak
from modelmeter.trace import trace_model

FUSED = "aten._transformer_encoder_layer_fwd.default"
FUSED_MHA = "aten._native_multi_head_attention.default"

FACTORY = """
import torch
def build():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(256, 4, batch_first=True)
    net = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    return net, torch.randn(8, 128, 256)
"""


def encoder(d_model: int = 256, heads: int = 4, layers: int = 2, d_ff: int = 2048, **kw) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model, heads, d_ff, batch_first=True, **kw)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()


def closed_form_macs(batch: int, seq: int, d_model: int, layers: int, d_ff: int) -> int:
    tokens = batch * seq
    # q, k, v and out projections; Q.K^T and A.V; the feed-forward's two projections.
    return layers * (4 * tokens * d_model**2 + 2 * batch * seq**2 * d_model + 2 * tokens * d_model * d_ff)


def on_meta(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    return copy.deepcopy(model).to_empty(device="meta"), x.to("meta")


class _Ops(TorchDispatchMode):
    """The aten ops a real call runs (a dispatch mode: no torch-function mode in the way)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def torch_runs(model: nn.Module, *args, grad: bool = False) -> list[str]:
    with torch.set_grad_enabled(grad), _Ops() as mode:
        model(*args)
    return mode.ops


@contextmanager
def fast_path_off():
    """The decomposed layer, its SDPA as math (FlopCounterMode counts 0 for the CPU flash kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def fcm_flops(model: nn.Module, *args) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*args)
    return counter.get_total_flops()


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_cli_memory_and_count_follow_the_fused_path(run_main, tmp_path, monkeypatch, device):
    """Failed before the fix: the trace took the decomposed path, 18.9 MB (meta) / 11.5 MB (cpu)
    against the real call's 2.1 MB."""
    (tmp_path / "enc.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main("memory", "enc:build", "--device", device, "--json", "-")
    assert code == 0, err
    report = json.loads(out)
    predicted = report["totals"]["activations"]["peak_inference_bytes"]
    model, x = encoder(), torch.randn(8, 128, 256)
    measured = _profiler_peak(_inference_step(model, (x,), {}))
    assert abs(predicted / measured - 1) < 0.05, (predicted, measured)
    assert report["settings"]["attention"]["fast_paths"]["calls"] == {"_transformer_encoder_layer_fwd": 2}
    code, out, err = run_main("count", "enc:build", "--device", device, "--json", "-")
    assert code == 0, err
    totals = json.loads(out)["totals"]
    assert fcm_flops(model, x) == 0  # FlopCounterMode has no formula for the fused kernel
    with fast_path_off():
        assert totals["flops"] == fcm_flops(model, x) == 2 * closed_form_macs(8, 128, 256, 2, 2048)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(head_dim=st.sampled_from([8, 16]), heads=st.sampled_from([2, 4]), layers=st.integers(1, 3),
       d_ff=st.sampled_from([16, 64]), seq=st.integers(1, 24), batch=st.integers(1, 3),
       gelu=st.booleans(), norm_first=st.booleans())
def test_fused_layers_meta_equals_cpu_and_closed_forms(head_dim, heads, layers, d_ff, seq, batch, gelu,
                                                       norm_first):
    d_model = head_dim * heads
    model = encoder(d_model, heads, layers, d_ff, activation="gelu" if gelu else "relu",
                    norm_first=norm_first)
    x = torch.randn(batch, seq, d_model)
    real = trace_model(model, (x,))
    meta_model, mx = on_meta(model, x)
    meta = trace_model(meta_model, (mx,))
    assert [e.op for e in real.events] == [e.op for e in meta.events] == [FUSED] * layers
    assert torch_runs(model, x).count(FUSED) == layers  # what torch ran
    assert live_peak(meta).peak_bytes == live_peak(real).peak_bytes
    macs = count_trace(meta).totals.macs
    assert macs == count_trace(real).totals.macs == closed_form_macs(batch, seq, d_model, layers, d_ff)
    with fast_path_off():
        assert 2 * macs == fcm_flops(model, x)


def _hooked(m: nn.Module) -> nn.Module:
    m.layers[0].linear1.register_forward_hook(lambda *a: None)
    return m


# Each case rules the fast path out (or in) in torch; the trace must agree on meta and cpu.
CASES = {
    "plain": (lambda: encoder(32, 4, 1, 64), True),
    "odd heads": (lambda: encoder(24, 3, 1, 64), False),
    "no bias": (lambda: encoder(32, 4, 1, 64, bias=False), False),
    "custom activation": (lambda: encoder(32, 4, 1, 64, activation=torch.tanh), False),
    "a module hook": (lambda: _hooked(encoder(32, 4, 1, 64)), False),
    "training": (lambda: encoder(32, 4, 1, 64, dropout=0.0).train(), False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_decision_matches_torch(case):
    build, fused = CASES[case]
    model = build()
    x = torch.randn(2, 5, model.layers[0].self_attn.embed_dim)
    assert (FUSED in torch_runs(model, x)) is fused
    meta, mx = on_meta(model, x)
    for traced in (trace_model(model, (x,), backward=model.training),
                   trace_model(meta, (mx,), backward=model.training)):
        assert (FUSED in {e.op for e in traced.events}) is fused


def test_training_trace_stays_decomposed():
    model = encoder(32, 4, 2, 64)
    x = torch.randn(2, 5, 32)
    meta, mx = on_meta(model, x)
    for traced in (trace_model(model, (x,), backward=True), trace_model(meta, (mx,), backward=True)):
        ops = {e.op for e in traced.events}
        assert FUSED not in ops and FUSED_MHA not in ops
        assert traced.saved_tensors  # autograd kept what the decomposition needs
        assert dict(traced.attention_kernels) == {}
    assert not model.training  # put back


def test_grad_enabled_on_trainable_weights_decomposes_like_torch():
    model = encoder(32, 4, 1, 64)
    x = torch.randn(2, 5, 32)
    assert FUSED not in torch_runs(model, x, grad=True)


def test_multihead_attention_fast_path():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x, other = torch.randn(2, 6, 32), torch.randn(2, 6, 32)
    assert FUSED_MHA in torch_runs(mha, x, x, x)
    assert FUSED_MHA not in torch_runs(mha, x, other, other)  # cross-attention: decomposed
    meta, mx = on_meta(mha, x)
    for module, args in ((mha, (x, x, x)), (meta, (mx, mx, mx))):
        traced = trace_model(module, args)
        assert [e.op for e in traced.events] == [FUSED_MHA]
        # q, k, v and out projections, Q.K^T and A.V: closed form.
        assert count_trace(traced).totals.macs == 4 * 12 * 32 * 32 + 2 * 2 * 6 * 6 * 32
    cross = trace_model(mha, (x, other, other))
    assert FUSED_MHA not in {e.op for e in cross.events}
