"""PyTorch's flop_registry as the oracle of our formulas (issue 11, section 2).

Every op both registries know is run on small shapes (hypothesis draws them)
through the real trace, and our count must equal PyTorch's figure for that
very call, except where `EXPECTED_DIFFERENCES` says why not: there, the
difference itself is asserted, so a stale entry fails too. The counter uses
our figure whenever we have a formula; PyTorch's only fills gaps (the
fallback tests at the end).
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import flop_registry, register_flop_formula

import modelmeter
from modelmeter.count import count_op, count_trace, registered_ops
from modelmeter.count.contractions import attention_backward_macs, attention_macs, conv_macs
from modelmeter.trace import trace_model

A = torch.ops.aten
ORACLE = settings(max_examples=12, deadline=None)
SHARED = sorted(set(registered_ops()) & {str(op) for op in flop_registry})

# Ops on which we disagree with PyTorch on purpose, and why. Each is checked below.
EXPECTED_DIFFERENCES = {
    # conv_backward_flop counts the weight gradient with every input channel, ignoring
    # `groups`: g times the real work (C times for a depthwise conv). Equal when g == 1.
    "aten.convolution_backward": "PyTorch ignores groups in the weight gradient",
    # conv_flop reads `transposed` as the 7th positional argument; _slow_conv2d_forward
    # (input, weight, kernel_size, bias, stride, padding) has six, so PyTorch's formula
    # raises a TypeError (FlopCounterMode itself crashes on this op). Ours counts it.
    "aten._slow_conv2d_forward": "PyTorch's formula cannot read this op's arguments",
    # The kernels below SDPA take q, k, v as [B, L, H, E]; PyTorch's formulas read them as
    # [B, H, L, E] (heads and length swapped): right only when H == L == S. Ours transposes.
    "aten._flash_attention_forward": "PyTorch reads [B, L, H, E] as [B, H, L, E]",
    "aten._flash_attention_backward": "PyTorch reads [B, L, H, E] as [B, H, L, E]",
    "aten._efficient_attention_forward": "PyTorch reads [B, L, H, E] as [B, H, L, E]",
    "aten._efficient_attention_backward": "PyTorch reads [B, L, H, E] as [B, H, L, E]",
}


def pytorch_figure_expected(op: str, event, ours) -> int | None:
    """What PyTorch's formula must give for this call: ours, except as listed above."""
    if op == "aten._slow_conv2d_forward":
        return None  # its formula raises a TypeError
    if op == "aten.convolution_backward":
        # Equal except the weight gradient, which PyTorch counts g times.
        grad_out, x, w = (t.shape for t in event.inputs[:3])
        transposed, groups, mask = event.args[7], event.args[9], event.args[10]
        grad_weight = conv_macs(x, w, grad_out, transposed) if mask[1] else 0
        return ours.flops + 2 * (groups - 1) * grad_weight
    if op.startswith(("aten._flash_attention", "aten._efficient_attention")):
        first = 1 if op.endswith("backward") else 0
        q, k, v = (t.shape for t in event.inputs[first:first + 3])  # as PyTorch reads them
        if q[1] % k[1]:  # "heads" that do not divide: its assert rejects the call
            return None
        count = attention_backward_macs if op.endswith("backward") else attention_macs
        return 2 * count(q, k, v)
    return ours.flops


class Call(nn.Module):
    """A module whose forward is one call: what the trace sees is exactly that op."""

    def __init__(self, fn: Callable[..., object]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *tensors: torch.Tensor) -> object:
        return self.fn(*tensors)


def meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, device="meta", dtype=dtype)


@pytest.fixture(scope="module")
def meta_kernels():
    """Meta kernels for the device-only convolutions (cuDNN, out-of-tree backends), so
    that they run here; removed again after this module's tests."""
    lib = torch.library.Library("aten", "IMPL")

    def overrideable(x, w, b, stride, padding, dilation, transposed, output_padding, groups):
        return A.convolution(x, w, b, stride, padding, dilation, transposed, output_padding, groups)

    def cudnn(x, w, padding, stride, dilation, groups, *flags):
        return A.convolution(x, w, None, stride, padding, dilation, False, [0] * len(padding), groups)

    lib.impl("convolution_overrideable", overrideable, "Meta")
    lib.impl("cudnn_convolution", cudnn, "Meta")
    yield
    lib._destroy()


# --- cases: op -> builder(draw) -> (function, input tensors) ------------------------------

def _mm(draw):
    m, k, n = (draw(st.integers(1, 12)) for _ in range(3))
    return A.mm, (torch.randn(m, k), torch.randn(k, n))


def _addmm(draw):
    m, k, n = (draw(st.integers(1, 12)) for _ in range(3))
    return A.addmm, (torch.randn(n), torch.randn(m, k), torch.randn(k, n))


def _bmm(draw):
    b, m, k, n = (draw(st.integers(1, 6)) for _ in range(4))
    return A.bmm, (torch.randn(b, m, k), torch.randn(b, k, n))


def _baddbmm(draw):
    b, m, k, n = (draw(st.integers(1, 6)) for _ in range(4))
    return A.baddbmm, (torch.randn(b, m, n), torch.randn(b, m, k), torch.randn(b, k, n))


def _scaled_mm(draw):
    # fp8 matmul: meta only here. mat2 must be column-major.
    m, k, n = (16 * draw(st.integers(1, 3)) for _ in range(3))
    f8 = torch.float8_e4m3fn
    b = meta(n, k, dtype=f8).t()

    def scaled(a, s):
        return A._scaled_mm(a, b, s, s, out_dtype=torch.bfloat16)

    return scaled, (meta(m, k, dtype=f8), meta())


def _conv_case(draw, transposed_ok: bool = True):
    g = draw(st.sampled_from([1, 2, 3]))
    dims = draw(st.sampled_from([1, 2]))
    transposed = transposed_ok and draw(st.booleans())
    c_in, c_out = g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    stride, padding, dilation = draw(st.integers(1, 2)), draw(st.integers(0, 1)), draw(st.integers(1, 2))
    size = draw(st.integers(6, 9))
    x = torch.randn(draw(st.integers(1, 2)), c_in, *(size,) * dims)
    w_shape = (c_in, c_out // g) if transposed else (c_out, c_in // g)
    w = torch.randn(*w_shape, *(k,) * dims)
    return x, w, [stride] * dims, [padding] * dims, [dilation] * dims, transposed, [0] * dims, g


def _convolution(draw):
    x, w, stride, padding, dilation, transposed, out_pad, g = _conv_case(draw)
    return (lambda x, w: A.convolution(x, w, None, stride, padding, dilation, transposed, out_pad, g)), (x, w)


def _convolution_private(draw):
    x, w, stride, padding, dilation, transposed, out_pad, g = _conv_case(draw)
    return (lambda x, w: A._convolution(x, w, None, stride, padding, dilation, transposed, out_pad, g,
                                        False, False, True, True)), (x, w)


def _convolution_overrideable(draw):
    x, w, stride, padding, dilation, transposed, out_pad, g = _conv_case(draw)
    return (lambda x, w: A.convolution_overrideable(x, w, None, stride, padding, dilation, transposed,
                                                    out_pad, g)), (x.to("meta"), w.to("meta"))


def _cudnn_convolution(draw):
    x, w, stride, padding, dilation, _, _, g = _conv_case(draw, transposed_ok=False)
    return (lambda x, w: A.cudnn_convolution(x, w, padding, stride, dilation, g, False, False, True)), (
        x.to("meta"), w.to("meta"))


def _slow_conv2d(draw):
    c_in, c_out, k, size = (draw(st.integers(1, 4)) for _ in range(4))
    stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, 1))
    x, w = torch.randn(1, c_in, size + 4, size + 4), torch.randn(c_out, c_in, k, k)
    return (lambda x, w: A._slow_conv2d_forward(x, w, [k, k], None, [stride] * 2, [padding] * 2)), (x, w)


def _convolution_backward(draw):
    x, w, stride, padding, dilation, transposed, out_pad, g = _conv_case(draw)
    out = A.convolution(x, w, None, stride, padding, dilation, transposed, out_pad, g)
    mask = [draw(st.booleans()), draw(st.booleans()), False]

    def backward(grad, x, w):
        return A.convolution_backward(grad, x, w, None, stride, padding, dilation, transposed,
                                      out_pad, g, mask)

    return backward, (torch.randn_like(out), x, w)


def _qkv(draw, layout: str = "bhle"):
    """q, k, v on meta, grouped-query heads included (q heads a multiple of kv heads)."""
    b, hk, group = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.sampled_from([1, 2]))
    lq, s, e = draw(st.integers(1, 9)), draw(st.integers(1, 9)), 8 * draw(st.integers(1, 2))
    if layout == "blhe":  # the kernels below SDPA
        return meta(b, lq, hk * group, e), meta(b, s, hk, e), meta(b, s, hk, e)
    return meta(b, hk * group, lq, e), meta(b, hk, s, e), meta(b, hk, s, e)


def _flash(draw):
    return (lambda q, k, v: A._scaled_dot_product_flash_attention(q, k, v)), _qkv(draw)


def _efficient(draw):
    return (lambda q, k, v: A._scaled_dot_product_efficient_attention(q, k, v, None, True)), _qkv(draw)


def _cudnn_attention(draw):
    return (lambda q, k, v: A._scaled_dot_product_cudnn_attention(q, k, v, None, True)), _qkv(draw)


def _flash_backward(draw):
    q, k, v = _qkv(draw)
    o = A._scaled_dot_product_flash_attention(q, k, v)

    def backward(grad, q, k, v):
        return A._scaled_dot_product_flash_attention_backward(grad, q, k, v, o[0], o[1], o[2], o[3],
                                                              o[4], o[5], 0.0, False, o[6], o[7])

    return backward, (meta(*q.shape), q, k, v)


def _efficient_backward(draw):
    q, k, v = _qkv(draw)
    o = A._scaled_dot_product_efficient_attention(q, k, v, None, True)

    def backward(grad, q, k, v):
        return A._scaled_dot_product_efficient_attention_backward(grad, q, k, v, None, o[0], o[1], o[2],
                                                                  o[3], 0.0, [True, True, True, False])

    return backward, (meta(*q.shape), q, k, v)


def _cudnn_attention_backward(draw):
    q, k, v = _qkv(draw)
    o = A._scaled_dot_product_cudnn_attention(q, k, v, None, True)

    def backward(grad, q, k, v):
        return A._scaled_dot_product_cudnn_attention_backward(grad, q, k, v, o[0], o[1], o[6], o[7], None,
                                                              o[2], o[3], o[4], o[5], 0.0, False)

    return backward, (meta(*q.shape), q, k, v)


def _flash_kernel(draw):
    q, k, v = _qkv(draw, "blhe")
    return (lambda q, k, v: A._flash_attention_forward(q, k, v, None, None, q.shape[1], k.shape[1], 0.0,
                                                       False, False)), (q, k, v)


def _efficient_kernel(draw):
    q, k, v = _qkv(draw, "blhe")
    return (lambda q, k, v: A._efficient_attention_forward(q, k, v, None, None, None, q.shape[1], k.shape[1],
                                                           0.0, 0, True)), (q, k, v)


def _flash_kernel_backward(draw):
    q, k, v = _qkv(draw, "blhe")
    lq, s = q.shape[1], k.shape[1]
    o = A._flash_attention_forward(q, k, v, None, None, lq, s, 0.0, False, False)

    def backward(grad, q, k, v):
        return A._flash_attention_backward(grad, q, k, v, o[0], o[1], None, None, lq, s, 0.0, False,
                                           o[2], o[3])

    return backward, (meta(*q.shape), q, k, v)


def _efficient_kernel_backward(draw):
    q, k, v = _qkv(draw, "blhe")
    lq, s = q.shape[1], k.shape[1]
    o = A._efficient_attention_forward(q, k, v, None, None, None, lq, s, 0.0, 0, True)

    def backward(grad, q, k, v):
        return A._efficient_attention_backward(grad, q, k, v, None, o[0], None, None, lq, s, o[1], 0.0,
                                               o[2], o[3], 0, False)

    return backward, (meta(*q.shape), q, k, v)


CASES: dict[str, Callable] = {
    "aten._flash_attention_forward": _flash_kernel,
    "aten._efficient_attention_forward": _efficient_kernel,
    "aten._flash_attention_backward": _flash_kernel_backward,
    "aten._efficient_attention_backward": _efficient_kernel_backward,
    "aten.mm": _mm,
    "aten.addmm": _addmm,
    "aten.bmm": _bmm,
    "aten.baddbmm": _baddbmm,
    "aten._scaled_mm": _scaled_mm,
    "aten.convolution": _convolution,
    "aten._convolution": _convolution_private,
    "aten.convolution_overrideable": _convolution_overrideable,
    "aten.cudnn_convolution": _cudnn_convolution,
    "aten._slow_conv2d_forward": _slow_conv2d,
    "aten.convolution_backward": _convolution_backward,
    "aten._scaled_dot_product_flash_attention": _flash,
    "aten._scaled_dot_product_efficient_attention": _efficient,
    "aten._scaled_dot_product_cudnn_attention": _cudnn_attention,
    "aten._scaled_dot_product_flash_attention_backward": _flash_backward,
    "aten._scaled_dot_product_efficient_attention_backward": _efficient_backward,
    "aten._scaled_dot_product_cudnn_attention_backward": _cudnn_attention_backward,
}


def test_every_op_both_registries_know_has_an_oracle_case():
    # A formula added on either side joins SHARED; it must get a case here.
    assert sorted(CASES) == SHARED


def _events_of(op: str, fn, tensors):
    events = [e for e in trace_model(Call(fn), tensors).events if e.packet == op]
    assert len(events) == 1, [e.op for e in trace_model(Call(fn), tensors).events]
    return events[0]


@pytest.mark.parametrize("op", sorted(CASES))
@ORACLE
@given(data=st.data())
def test_our_formula_equals_pytorchs_on_every_shared_op(op, data, meta_kernels):
    fn, tensors = CASES[op](data.draw)
    event = _events_of(op, fn, tensors)
    ours = count_op(event)
    assert ours.source == "modelmeter"  # ours is the figure used, never PyTorch's
    assert event.torch_flops == pytorch_figure_expected(op, event, ours)
    if op == "aten._slow_conv2d_forward":  # no oracle: the closed form, out x c_in·k·k
        assert ours.macs == event.outputs[0].numel * prod(event.inputs[1].shape[1:])
    if op.startswith(("aten._flash_attention", "aten._efficient_attention")):
        # and the closed form, from the [B, L, H, E] shapes as the kernel reads them
        first = 1 if op.endswith("backward") else 0
        (b, lq, h, e), (_, s, _, _) = (t.shape for t in event.inputs[first:first + 2])
        per_head = (3 * e + 2 * e) if op.endswith("backward") else 2 * e
        assert ours.macs == b * h * lq * s * per_head


def test_depthwise_conv_backward_difference_is_real():
    """The listed difference exists (else the entry is stale): depthwise, C = 8."""
    x, w = torch.randn(1, 8, 6, 6), torch.randn(8, 1, 3, 3)
    grad = torch.randn(1, 8, 4, 4)
    event = _events_of("aten.convolution_backward", lambda g, x, w: A.convolution_backward(
        g, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 8, [True, True, False]), (grad, x, w))
    grad_input = grad_weight = 8 * 4 * 4 * 9  # each = the forward's MACs: 128 outputs x 3·3
    assert count_op(event).macs == grad_input + grad_weight
    assert event.torch_flops == 2 * (grad_input + 8 * grad_weight)


# --- the fallback: PyTorch's formula for ops we have none for ----------------------------

@pytest.fixture
def op_only_pytorch_knows():
    """A custom op with a FLOP formula in PyTorch's registry and none in ours, as a
    user's kernel or a new PyTorch op would be: (op, MACs of a [m, k] x [k, n] call)."""
    lib = torch.library.Library("mmtest", "DEF")
    lib.define("scale_mm(Tensor a, Tensor b) -> Tensor")
    lib.impl("scale_mm", lambda a, b: a @ b, "CompositeExplicitAutograd")
    op = torch.ops.mmtest.scale_mm

    @register_flop_formula(op)
    def _flops(a_shape, b_shape, *args, out_shape=None, **kwargs):
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]

    yield op
    del flop_registry[op]
    lib._destroy()


def test_pytorch_fallback_counts_an_op_we_lack_and_is_named_in_the_report(op_only_pytorch_knows):
    op = op_only_pytorch_knows
    assert str(op) not in registered_ops()

    def model(a, b):
        return torch.relu(op(a, b))

    report = modelmeter.count(Call(model), (torch.randn(3, 5), torch.randn(5, 7))).to_dict()
    totals = report["totals"]
    assert totals["macs"] == 3 * 5 * 7
    assert totals["fallback_ops"] == [{"op": "mmtest.scale_mm.default", "count": 1,
                                       "flops": 2 * 3 * 5 * 7, "source": "pytorch flop_registry"}]
    assert totals["fallback_flops"] == 2 * 3 * 5 * 7
    assert "fallback" in report["methods"]["formulas"]


def test_per_op_source_marks_ours_and_the_fallback(op_only_pytorch_knows):
    op = op_only_pytorch_knows
    counts = count_trace(trace_model(Call(lambda a, b: op(a, b) @ b.t()),
                                     (torch.randn(3, 5), torch.randn(5, 7))))
    sources = {o.op: o.source for o in counts.ops if o.category == "contraction"}
    assert sources == {"mmtest.scale_mm.default": "pytorch", "aten.mm.default": "modelmeter"}
    assert counts.fallback_ops == (("mmtest.scale_mm.default", 1, 2 * 3 * 5 * 7),)


def test_our_formula_wins_over_pytorchs_figure():
    """Even when PyTorch records a figure for the call, ours is used: mobilenet-style
    depthwise conv, backward traced through autograd."""
    conv = nn.Conv2d(16, 16, 3, padding=1, groups=16)
    trace = trace_model(conv, (torch.randn(2, 16, 8, 8),), backward=True)
    back = count_trace(trace, phase="backward")
    event = next(e for e in trace.events if e.packet == "aten.convolution_backward")
    forward_macs = 2 * 16 * 8 * 8 * 9
    assert back.totals.macs == forward_macs  # input has no grad: the weight gradient only
    assert event.torch_flops == 2 * 16 * forward_macs  # PyTorch: 16 x too much
    assert back.fallback_ops == ()
