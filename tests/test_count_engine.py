"""The counting engine against closed forms and PyTorch's own FlopCounterMode."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from modelmeter import formulas
from modelmeter.api import analyse
from modelmeter.count import count_trace
from modelmeter.trace import trace_model

FAST = settings(max_examples=15, deadline=None)


def macs_of(module: nn.Module, *args: torch.Tensor) -> int:
    return count_trace(trace_model(module, args)).totals.macs


def fcm_flops(module: nn.Module, *args: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*args)
    return counter.get_total_flops()


dims = st.integers(min_value=1, max_value=24)


@FAST
@given(batch=dims, c_in=dims, c_out=dims, bias=st.booleans())
def test_linear_matches_closed_form_and_flopcounter(batch, c_in, c_out, bias):
    layer = nn.Linear(c_in, c_out, bias=bias)
    x = torch.randn(batch, 3, c_in)
    report = count_trace(trace_model(layer, (x,)))
    assert report.totals.macs == formulas.linear_macs(c_in, c_out, vectors=batch * 3)
    assert report.totals.flops == fcm_flops(layer, x)
    assert report.totals.params == formulas.linear_params(c_in, c_out, bias)


conv_case = st.fixed_dictionaries({
    "groups": st.sampled_from([1, 2, 4]),
    "per_group_in": st.integers(1, 4),
    "per_group_out": st.integers(1, 4),
    "kernel": st.integers(1, 4),
    "stride": st.integers(1, 3),
    "padding": st.integers(0, 2),
    "dilation": st.integers(1, 2),
    "size": st.integers(8, 16),
    "batch": st.integers(1, 3),
})


@FAST
@given(case=conv_case)
def test_conv2d_grouped_matches_closed_form_and_flopcounter(case):
    g = case["groups"]
    c_in, c_out = g * case["per_group_in"], g * case["per_group_out"]
    conv = nn.Conv2d(c_in, c_out, case["kernel"], stride=case["stride"], padding=case["padding"],
                     dilation=case["dilation"], groups=g)
    x = torch.randn(case["batch"], c_in, case["size"], case["size"])
    out = formulas.conv_output_size(case["size"], case["kernel"], case["stride"], case["padding"],
                                    case["dilation"])
    expected = formulas.conv_macs(c_in, c_out, (case["kernel"],) * 2, (out, out), g, case["batch"])
    assert macs_of(conv, x) == expected
    assert 2 * expected == fcm_flops(conv, x)
    assert sum(p.numel() for p in conv.parameters()) == formulas.conv_params(
        c_in, c_out, (case["kernel"],) * 2, g)


@FAST
@given(channels=st.integers(1, 8), mult=st.integers(1, 3), kernel=st.integers(1, 5), size=st.integers(6, 12))
def test_depthwise_conv(channels, mult, kernel, size):
    conv = nn.Conv2d(channels, channels * mult, kernel, padding=kernel // 2, groups=channels)
    x = torch.randn(2, channels, size, size)
    out = formulas.conv_output_size(size, kernel, 1, kernel // 2)
    assert macs_of(conv, x) == formulas.conv_macs(channels, channels * mult, (kernel, kernel), (out, out),
                                                  channels, 2)


@FAST
@given(c_in=st.integers(1, 6), c_out=st.integers(1, 6), kernel=st.integers(1, 4), stride=st.integers(1, 3),
       padding=st.integers(0, 1), size=st.integers(3, 8), groups=st.sampled_from([1, 2]))
def test_conv_transpose2d(c_in, c_out, kernel, stride, padding, size, groups):
    c_in, c_out = c_in * groups, c_out * groups
    conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride=stride, padding=padding, groups=groups)
    x = torch.randn(1, c_in, size, size)
    expected = formulas.conv_transpose_macs(c_in, c_out, (kernel, kernel), (size, size), groups)
    assert macs_of(conv, x) == expected
    assert 2 * expected == fcm_flops(conv, x)


attention_case = st.fixed_dictionaries({
    "batch": st.integers(1, 2),
    "heads": st.sampled_from([2, 4, 8]),
    "kv_div": st.sampled_from([1, 2]),
    "q_len": st.integers(1, 12),
    "kv_len": st.integers(1, 12),
    "head_dim": st.sampled_from([4, 8]),
    "causal": st.booleans(),
})


def _sdpa_inputs(case, device):
    kv_heads = case["heads"] // case["kv_div"]
    q = torch.randn(case["batch"], case["heads"], case["q_len"], case["head_dim"], device=device)
    k = torch.randn(case["batch"], kv_heads, case["kv_len"], case["head_dim"], device=device)
    v = torch.randn(case["batch"], kv_heads, case["kv_len"], case["head_dim"], device=device)
    return q, k, v


class SDPA(nn.Module):
    def __init__(self, causal: bool, gqa: bool):
        super().__init__()
        self.causal, self.gqa = causal, gqa

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=self.gqa)


@FAST
@given(case=attention_case, device=st.sampled_from(["cpu", "meta"]))
def test_sdpa_every_path_counts_dense_attention(case, device):
    """CPU runs the fused flash kernel FlopCounterMode misses; meta runs the math path."""
    module = SDPA(case["causal"], case["kv_div"] > 1)
    q, k, v = _sdpa_inputs(case, device)
    expected = formulas.attention_score_macs(case["batch"], case["heads"], case["q_len"],
                                             case["kv_len"], case["head_dim"])
    assert macs_of(module, q, k, v) == expected


def test_sdpa_cpu_kernel_is_what_flopcounter_misses():
    case = {"batch": 1, "heads": 4, "kv_div": 1, "q_len": 16, "kv_len": 16, "head_dim": 8, "causal": False}
    q, k, v = _sdpa_inputs(case, "cpu")
    module = SDPA(False, False)
    ops = {e.op for e in trace_model(module, (q, k, v)).events}
    assert "aten._scaled_dot_product_flash_attention_for_cpu.default" in ops
    assert fcm_flops(module, q, k, v) == 0  # PyTorch's counter sees nothing here
    assert macs_of(module, q, k, v) == formulas.attention_score_macs(1, 4, 16, 16, 8)


@FAST
@given(embed=st.sampled_from([8, 16, 32]), heads=st.sampled_from([1, 2, 4]), seq=st.integers(1, 10),
       batch=st.integers(1, 3))
def test_multihead_attention_fast_and_slow_paths(embed, heads, seq, batch):
    mha = nn.MultiheadAttention(embed, heads, batch_first=True).eval()
    x = torch.randn(batch, seq, embed)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    model = SelfAttention().eval()
    expected = batch * formulas.attention_macs(seq, embed, heads)
    fast = count_trace(trace_model(model, (x,)))  # no_grad + eval: _native_multi_head_attention
    slow = count_trace(trace_model(model, (x,), backward=True))  # grad on: the composite path
    assert fast.totals.macs == expected
    assert slow.totals.macs == expected


@FAST
@given(b=st.integers(1, 3), m=st.integers(2, 24), k=st.integers(2, 24), n=st.integers(2, 24))
def test_matmul_bmm_einsum(b, m, k, n):
    # Sizes >= 2: with a contraction size of 1, einsum becomes a broadcast mul (other FLOPs).
    class Contractions(nn.Module):
        def forward(self, x, y, z):
            return torch.matmul(x, y), torch.bmm(x, y), torch.einsum("bmk,bkn->bmn", x, y), x[0] @ z

    x, y, z = torch.randn(b, m, k), torch.randn(b, k, n), torch.randn(k)
    module = Contractions()
    assert macs_of(module, x, y, z) == 3 * b * m * k * n + m * k
    # FlopCounterMode has no formula for mv; everything else must agree.
    assert fcm_flops(module, x, y, z) == 2 * 3 * b * m * k * n


class ModuleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 16)
        self.q = nn.Linear(16, 16)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1)
        h = self.fc(h)
        q = self.q(h).view(-1, 2, 1, 8)
        return F.scaled_dot_product_attention(q, q, q)


class FunctionalNet(nn.Module):
    def __init__(self, twin: ModuleNet):
        super().__init__()
        self.w = nn.ParameterDict({k.replace(".", "_"): v for k, v in twin.named_parameters()})

    def forward(self, x):
        w = self.w
        h = F.relu(F.conv2d(x, w["conv_weight"], w["conv_bias"], padding=1)).flatten(1)
        h = F.linear(h, w["fc_weight"], w["fc_bias"])
        q = (h @ w["q_weight"].t() + w["q_bias"]).view(-1, 2, 1, 8)
        return F.scaled_dot_product_attention(q, q, q)


def test_functional_twin_counts_the_same():
    net = ModuleNet()
    x = torch.randn(2, 3, 8, 8)
    a = count_trace(trace_model(net, (x,))).totals
    b = count_trace(trace_model(FunctionalNet(net), (x,))).totals
    assert (a.params, a.macs) == (b.params, b.macs)
    assert a.macs > 0


def test_ops_are_attributed_to_the_innermost_module():
    net = ModuleNet()
    trace = trace_model(net, (torch.randn(1, 3, 8, 8),))
    by_op = {e.op: e.module for e in trace.events}
    assert by_op["aten.convolution.default"] == "conv"
    assert by_op["aten.relu.default"] == ""  # torch.relu called in the root's forward
    assert by_op["aten.addmm.default"] in ("fc", "q")


def test_inplace_ops_and_views_are_seen():
    class InPlace(nn.Module):
        def forward(self, x):
            y = x * 2
            y.add_(1)
            return y.view(-1).relu_()

    counts = count_trace(trace_model(InPlace(), (torch.randn(4, 4),)))
    categories = {o.op: o.category for o in counts.ops}
    assert categories["aten.add_.Tensor"] == "other"
    assert categories["aten.view.default"] == "view"
    assert counts.totals.other_flops == 16 * 3


def test_unknown_arithmetic_is_listed_never_silent():
    class Spectral(nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()

    counts = count_trace(trace_model(Spectral(), (torch.randn(4, 16),)))
    assert counts.uncounted_ops and counts.uncounted_ops[0][0].startswith("aten._fft_r2c")
    assert counts.coverage < 1.0


def test_shared_parameters_counted_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = self.a

        def forward(self, x):
            return self.b(self.a(x))

    counts = count_trace(trace_model(Tied(), (torch.randn(2, 8),)))
    assert counts.totals.params == 72
    assert counts.totals.macs == 2 * 2 * 64


def test_resnet50_matches_torchvision_published_macs():
    analysis = analyse("resnet50")
    totals = analysis.counts.totals
    assert totals.params == 25_557_032
    assert abs(totals.macs / 4.089e9 - 1) < 0.01


def test_vit_base_matches_torchvision_published_macs():
    totals = analyse("vit-base").counts.totals
    assert abs(totals.macs / 17.564e9 - 1) < 0.01
    assert totals.params == 86_567_656


# --- Our formulas are the authority (issue 11, section 2) -------------------------------

def _cli_json(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", *args, "--json", "-"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_mobilenet_v2_backward_is_twice_forward_not_twenty_times():
    """PyTorch's conv_backward_flop ignores `groups` for the weight gradient (depthwise
    convolutions then cost C times too much); our formula is the one that counts.

    Backward of every conv and linear = grad-input + grad-weight = 2 x forward MACs,
    except the stem conv, whose input needs no gradient: 112·112·32 outputs x 3·3·3.
    """
    totals = _cli_json("memory", "mobilenet-v2", "--train")["totals"]
    stem = 112 * 112 * 32 * (3 * 3 * 3)
    assert 1.5 < totals["backward_macs"] / totals["macs"] < 2.1
    assert totals["backward_macs"] == 2 * totals["macs"] - stem


def _grad_input_macs(n, c_in, size_in, c_out, kernel, groups):
    # Each input element receives c_out/g x k x k products (stride 1, 'same' padding).
    return n * c_in * size_in * size_in * (c_out // groups) * kernel * kernel


def _grad_weight_macs(n, c_in, c_out, kernel, size_out, groups):
    # Each weight element sums one product per output position of every sample.
    return c_out * (c_in // groups) * kernel * kernel * n * size_out * size_out


@pytest.mark.slow
@FAST
@given(n=st.integers(1, 2), c=st.sampled_from([2, 4, 6]), mult=st.integers(1, 2),
       size=st.integers(3, 7), kernel=st.sampled_from([1, 3]))
def test_grouped_and_depthwise_conv_backward_matches_closed_form(n, c, mult, size, kernel):
    import modelmeter

    pad = kernel // 2
    model = nn.Sequential(
        nn.Conv2d(3, c, kernel, padding=pad),                          # stem: input has no grad
        nn.Conv2d(c, c * mult, kernel, padding=pad, groups=c),         # depthwise
        nn.Conv2d(c * mult, 2 * c, 1, groups=2),                       # grouped pointwise
    )
    x = torch.randn(n, 3, size, size)
    totals = modelmeter.memory(model, (x,), train=True).to_dict()["totals"]
    expected = (
        _grad_weight_macs(n, 3, c, kernel, size, 1)
        + _grad_input_macs(n, c, size, c * mult, kernel, c) + _grad_weight_macs(n, c, c * mult, kernel, size, c)
        + _grad_input_macs(n, c * mult, size, 2 * c, 1, 2) + _grad_weight_macs(n, c * mult, 2 * c, 1, size, 2)
    )
    assert totals["backward_macs"] == expected


# --- aten._grouped_mm: mixture-of-experts layers in transformers >= 5 -------------------

class GroupedMM(nn.Module):
    """One direct torch._grouped_mm call; offsets split the groups (sizes multiples of 8:
    the kernels need 16-byte strides)."""

    def __init__(self, offs: torch.Tensor | None) -> None:
        super().__init__()
        self.offs = offs

    def forward(self, a, b):
        return torch._grouped_mm(a, b, offs=self.offs)


def _offsets(total: int, groups: int, device: str) -> torch.Tensor:
    step = total // groups
    return torch.arange(step, total + 1, step, dtype=torch.int32, device=device)


@FAST
@given(variant=st.sampled_from(["2d3d", "3d2d", "2d2d", "3d3d"]), e=st.integers(1, 3),
       m=st.integers(1, 3), k=st.integers(1, 3), n=st.integers(1, 3),
       where=st.sampled_from([("cpu", torch.float32), ("cpu", torch.bfloat16), ("meta", torch.bfloat16)]))
def test_grouped_mm_every_variant_matches_closed_form(variant, e, m, k, n, where):
    import modelmeter

    device, dtype = where
    m, k, n = 8 * m, 8 * k, 8 * n

    def t(*shape):
        return torch.randn(*shape, dtype=dtype, device=device)

    if variant == "2d3d":  # tokens [e·m, k] sorted by expert x experts [e, k, n]: S·K·N
        a, b, offs, expected = t(e * m, k), t(e, k, n), _offsets(e * m, e, device), e * m * k * n
    elif variant == "3d2d":  # [e, m, k] x [k, e·n], offsets split N: each group M·K·N_g
        a, b, offs, expected = t(e, m, k), t(k, e * n), _offsets(e * n, e, device), m * k * e * n
    elif variant == "2d2d":  # [m, e·k] x [e·k, n], offsets split K, out [e, m, n]: M·K·N
        a, b, offs, expected = t(m, e * k), t(e * k, n), _offsets(e * k, e, device), m * e * k * n
    else:  # batched: [e, m, k] x [e, k, n]
        a, b, offs, expected = t(e, m, k), t(e, k, n), None, e * m * k * n
    totals = modelmeter.count(GroupedMM(offs), (a, b)).to_dict()["totals"]
    assert totals["macs"] == expected
    assert totals["flops"] == 2 * expected
    assert totals["fallback_ops"] == [] and totals["coverage"] == 1.0


class TinyMoE(nn.Module):
    """Router-free MoE block as transformers >= 5 runs it: tokens sorted by expert, one
    grouped matmul over the experts' weights, an activation."""

    def __init__(self, d: int, k: int, n: int, experts: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.proj = nn.Linear(d, k, bias=False, dtype=dtype)
        self.experts = nn.Parameter(torch.randn(experts, k, n, dtype=dtype))

    def forward(self, x):
        tokens = x.shape[0]
        offs = _offsets(tokens, self.experts.shape[0], x.device.type)
        return F.silu(torch._grouped_mm(self.proj(x), self.experts, offs=offs))


def test_grouped_mm_backward_is_grad_input_plus_grad_weight():
    import modelmeter

    s, d, k, n, experts = 24, 16, 16, 32, 3
    model = TinyMoE(d, k, n, experts, torch.float32)
    report = modelmeter.memory(model, (torch.randn(s, d),), train=True).to_dict()["totals"]
    assert report["macs"] == s * d * k + s * k * n
    # proj: weight gradient only (x needs none); experts: grad input [S, N] x [E, N, K]
    # = S·N·K and grad weight [K, S] x [S, N] per expert's token slice = K·S·N.
    assert report["backward_macs"] == s * d * k + 2 * s * k * n
    assert report["backward_fallback_ops"] == []


def test_grouped_mm_moe_on_meta_in_bf16():
    import modelmeter

    s, d, k, n, experts = 64, 32, 32, 64, 4
    model = TinyMoE(d, k, n, experts, torch.bfloat16).to("meta")
    totals = modelmeter.count(model, (torch.empty(s, d, dtype=torch.bfloat16, device="meta"),)).to_dict()
    assert totals["totals"]["macs"] == s * d * k + s * k * n
    assert totals["uncounted_ops"] == []


# --- coverage: call coverage and FLOP coverage, both named ------------------------------

SPECTRAL_FACTORY = '''
import torch
from torch import nn


class Spectral(nn.Module):
    """Cheap counted ops and one large op without a formula (an FFT)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x, signal):
        h = torch.relu(self.fc(x))
        return h, torch.fft.rfft(signal).abs()


def build():
    return Spectral(), (torch.randn(4, 16), torch.randn(8, 4096))
'''


@pytest.mark.slow
def test_coverage_keys_say_calls_and_flops_through_the_cli(tmp_path):
    (tmp_path / "mm_spectral_mod.py").write_text(SPECTRAL_FACTORY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "count", "mm_spectral_mod:build",
                           "--json", "-"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    totals = report["totals"]
    # Arithmetic calls: addmm, relu, _fft_r2c, abs; only the FFT has no formula.
    assert totals["call_coverage"] == totals["coverage"] == 3 / 4
    counted = 2 * 4 * 16 * 16 + 4 * 16 + 8 * 2049  # addmm + relu + abs (rfft: 4096 -> 2049)
    fft_estimate = 8 * 4096  # one FLOP per element of its largest tensor (the input)
    assert totals["total_flops"] == counted
    assert totals["uncounted_flops_estimate"] == fft_estimate
    assert totals["flop_coverage"] == pytest.approx(counted / (counted + fft_estimate))
    assert totals["flop_coverage"] < 0.4 < totals["call_coverage"]  # why both are shown
    assert report["uncounted_ops"] == [{"op": "aten._fft_r2c.default", "count": 1,
                                        "estimated_flops": fft_estimate}]


def test_full_coverage_when_every_op_has_a_formula():
    import modelmeter

    totals = modelmeter.count(nn.Sequential(nn.Linear(8, 8), nn.GELU()), (torch.randn(2, 8),)).to_dict()["totals"]
    assert totals["coverage"] == totals["call_coverage"] == totals["flop_coverage"] == 1.0
    assert totals["uncounted_flops_estimate"] == 0


# --- entries for ops that were uncounted (issue 11, section 2) --------------------------

class OddOps(nn.Module):
    def forward(self, x, idx, src):
        y = x.clone()
        y.as_strided_((4, 8), (8, 1))                    # a view: restrides in place
        y.index_add_(0, idx, src)                          # 3 x 8 adds
        z = y.index_add(0, idx, src, alpha=2.0)            # 3 x 8 (mul, add)
        low, high = torch.aminmax(z)                       # 2 compares x 32
        hist = torch.histc(z, bins=10)                     # range from the data: 8 x 32
        hist_fixed = torch.histc(z, bins=10, min=-1, max=1)  # 6 x 32
        unique = torch.unique(z)                           # 32·⌈log2 32⌉ + 32
        q = torch.floor_divide(z, z + 1)                   # add 32, (div, floor) x 32
        return low, high, hist, hist_fixed, unique, q


def test_view_and_new_op_entries_match_closed_forms():
    import modelmeter

    # A module is traced where its tensors are: here on the CPU, with real values.
    report = modelmeter.count(OddOps(), (torch.randn(4, 8), torch.tensor([0, 2, 3]), torch.randn(3, 8))
                              ).to_dict()
    expected = 24 + 48 + 64 + 256 + 192 + (32 * 5 + 32) + 32 + 64
    assert report["totals"]["other_flops"] == expected
    assert report["uncounted_ops"] == []
    counts = count_trace(trace_model(OddOps(), (torch.randn(4, 8), torch.tensor([0, 2, 3]), torch.randn(3, 8))))
    strided = next(o for o in counts.ops if o.op == "aten.as_strided_.default")
    assert (strided.category, strided.bytes_read, strided.bytes_written) == ("view", 0, 0)


def test_nms_and_roi_align_formulas_are_pure_functions_of_shapes():
    from modelmeter.count.other import nms_flops, roi_align_flops

    # nms, n boxes: 13 per pair (worst case, nothing suppressed) + 3 per box + sort n·⌈log2 n⌉.
    assert nms_flops(1) == 3
    assert nms_flops(4) == 13 * 6 + 3 * 4 + 4 * 2
    assert nms_flops(1000) == 13 * 499_500 + 3_000 + 1000 * 10
    # roi_align: per output element s² samples x 8 + 1; 5 boxes x 256 channels x 7 x 7.
    assert roi_align_flops(5 * 256 * 7 * 7, 2) == 5 * 256 * 49 * 33
    assert roi_align_flops(5 * 256 * 7 * 7, 0) == 5 * 256 * 49 * 9  # adaptive: at least 1 x 1


@pytest.fixture
def torchvision_ops():
    """torchvision's nms and roi_align ops by their real names and schemas; torchvision
    itself when installed, else stand-ins with the same schemas (the formulas read only
    shapes)."""
    try:
        import torchvision  # noqa: F401

        yield torch.ops.torchvision
        return
    except ImportError:
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
               "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor")
    lib.define("_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
               "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
               "int sampling_ratio, bool aligned) -> Tensor")
    lib.impl("_roi_align_backward", lambda grad, rois, scale, ph, pw, n, c, h, w, s, aligned:
             grad.new_zeros(n, c, h, w), "CPU")
    lib.impl("nms", lambda dets, scores, thr: torch.arange(dets.shape[0]), "CPU")
    lib.impl("roi_align", lambda x, rois, scale, ph, pw, s, aligned:
             x.new_zeros(rois.shape[0], x.shape[1], ph, pw), "CPU")
    yield torch.ops.torchvision
    lib._destroy()


def test_torchvision_ops_are_counted_by_name(torchvision_ops):
    from modelmeter.count.other import nms_flops, roi_align_flops

    class Detector(nn.Module):
        def forward(self, features, boxes, scores, rois):
            keep = torchvision_ops.nms(boxes, scores, 0.5)
            pooled = torchvision_ops.roi_align(features, rois, 0.25, 7, 7, 2, True)
            grad = torchvision_ops._roi_align_backward(pooled, rois, 0.25, 7, 7, 1, 16, 32, 32, 2, True)
            return keep, pooled, grad

    boxes = torch.rand(50, 4) * 10
    boxes[:, 2:] += boxes[:, :2]
    rois = torch.tensor([[0, 0.0, 0.0, 8.0, 8.0], [0, 2.0, 2.0, 12.0, 12.0], [0, 1.0, 3.0, 6.0, 9.0]])
    counts = count_trace(trace_model(Detector(), (torch.randn(1, 16, 32, 32), boxes, torch.rand(50), rois)))
    by_op = {o.op: o for o in counts.ops}
    assert by_op["torchvision.nms.default"].other_flops == nms_flops(50)
    assert by_op["torchvision.roi_align.default"].other_flops == roi_align_flops(3 * 16 * 7 * 7, 2)
    assert by_op["torchvision._roi_align_backward.default"].other_flops == roi_align_flops(3 * 16 * 7 * 7, 2)
    assert counts.uncounted_ops == ()



def test_backward_ops_without_a_formula_are_listed_in_the_training_report():
    # `uncounted_ops` lists the forward's; the backward of an FFT (rfft's is a c2c transform) has
    # no formula either, and backward_flops leaves it out: the report must say so, not stay silent.
    # (abs's backward on complex values, aten.sgn, is elementwise and counted.)
    import modelmeter

    class Spectrum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16, 16)

        def forward(self, x):
            return torch.fft.rfft(self.fc(x)).abs()

    report = modelmeter.memory(Spectrum(), (torch.randn(4, 16),), train=True).to_dict()
    assert [r["op"] for r in report["uncounted_ops"]] == ["aten._fft_r2c.default"]
    rows = report["totals"]["backward_uncounted_ops"]
    assert [r["op"] for r in rows] == ["aten._fft_c2c.default"] and rows[0]["count"] == 1
    assert rows[0]["estimated_flops"] > 0


def test_in_place_data_movement_is_not_uncounted():
    # A router's one-hot mask (deepseek-v3's gate): zeros, then scatter_ of a value in place.
    # The in-place twin of a data-movement op moves data as its twin does: zero FLOPs, no
    # "without a formula" (every deepseek-v3 plan carried that note for aten.scatter_.value).
    class OneHot(torch.nn.Module):
        def forward(self, scores):
            index = scores.topk(2, dim=-1).indices
            return torch.zeros_like(scores).scatter_(1, index, 1.0)

    counts = count_trace(trace_model(OneHot(), (torch.randn(8, 16),)))
    assert counts.uncounted_ops == ()
