"""Microbenchmarks per op class: the points the performance model is fitted to (layer 2).

Each case runs one real PyTorch op at a shape typical of the vision and
language models people measure (the linear layers of BERT/GPT-2/LLaMA at
batch 1 and 128 tokens, ResNet's dense convolutions, MobileNet's depthwise
ones, SDPA at prefill and decode, elementwise/normalisation/reduction/data ops
from a few thousand to a few million elements), under ``torch.inference_mode``,
through the package's timing engine. Work is counted by the closed forms the
counters use (2 FLOPs per MAC; bytes = inputs read + outputs written once).

Weights are **cold**, as in a model's forward pass, where a layer's weights were
last touched a whole pass ago: each linear/convolution case cycles through
copies of its weight laid out across a shared pool of ``WEIGHT_POOL_BYTES``,
so consecutive calls never find their weight in the core's caches (one weight
timed in a tight loop ran small-batch GEMMs 1.1-1.7x faster than rotated copies
on a 2-core Xeon, and predictions from it were 10-30 % optimistic on BERT and
GPT-2). Activations stay hot: the op before just wrote them.

Every class also has a *tiny* case (a handful of elements) whose time is the
class's dispatch overhead, and two fixed costs are measured: a view
(``x.view(-1)``) and the extra cost of calling an op through an
``nn.Module`` rather than directly (``nn.ReLU()(x)`` against ``torch.relu(x)``).

A sample lasts at least ``sample_s`` (short ops are repeated inside it) and
the median of ``repeats`` samples is the figure: medians shrug off the odd
descheduled sample, which matters on a shared machine.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .perfmodel import TINY, Point
from .timing import time_calls

__all__ = ["MicrobenchResult", "run_microbench"]

F32 = 4  # bytes per fp32 element
# Room for the rotating weight copies: larger than a server core's L2 by far, and than most
# of a desktop L3; allocated once per run (filling it costs well under a second).
WEIGHT_POOL_BYTES = 192 * 2**20

# progress(description, steps_done, steps_total)
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class MicrobenchResult:
    points: tuple[Point, ...]
    view_s: float
    module_call_s: float
    duration_s: float
    skipped: tuple[str, ...] = ()


def _median_time(fn: Callable[[], Any], sample_s: float, repeats: int, cuda: Any) -> float:
    one = time_calls(fn, cuda=cuda, warmup_iters=2, max_iters=1)[0]
    inner = max(1, int(sample_s / max(one, 1e-7)))
    samples = time_calls(fn, cuda=cuda, inner=inner, min_iters=repeats, max_iters=repeats)
    return statistics.median(samples)


Builder = Callable[[], tuple[float, float, float, Callable[[], Any]]]  # -> (matrix FLOPs, vector FLOPs, bytes, call)
Case = tuple[str, str, Builder]  # (class, label, builder)


class _Tensors:
    """Random tensors on the device, and the weight pool a cold weight cycles through (made on first use)."""

    def __init__(self, torch: Any, dev: Any) -> None:
        self.torch, self.dev, self.F = torch, dev, torch.nn.functional
        self.pool: list[Any] = []

    def t(self, *shape: int) -> Any:
        return self.torch.randn(*shape, device=self.dev)

    def cold(self, *shape: int) -> Callable[[], Any]:
        """A weight of `shape` whose every call returns the next copy across the pool."""
        if not self.pool:
            self.pool.append(self.torch.empty(WEIGHT_POOL_BYTES // F32, device=self.dev).uniform_(-1, 1))
        size = math.prod(shape)
        copies = [self.pool[0][i * size:(i + 1) * size].view(*shape)
                  for i in range(max(1, min(64, self.pool[0].numel() // size)))]
        return itertools.cycle(copies).__next__


def _cases(torch: Any, dev: Any) -> list[Case]:
    """Every case, family by family (one function each), in the order they are timed."""
    mk = _Tensors(torch, dev)
    return [case for family in (_gemm_cases, _conv_cases, _attention_cases, _elementwise_cases, _norm_cases,
                                _reduction_cases, _data_cases) for case in family(mk)]


def _gemm_cases(mk: _Tensors) -> list[Case]:
    """Matrix products (linear layers), decode-like to large."""
    F = mk.F

    def linear(m: int, k: int, n: int) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            x, w, b = mk.t(m, k), mk.cold(n, k), mk.t(n)
            return 2.0 * m * k * n, 0.0, F32 * (m * k + n * k + n + m * n), lambda: F.linear(x, w(), b)
        return build

    return [
        # GEMM: decode-like (matrix-vector), batch-1 and 8 rows, 32- and 128-token prefill, larger.
        ("gemm", TINY, linear(1, 8, 8)),
        ("gemm", "linear 1x768x768", linear(1, 768, 768)),
        ("gemm", "linear 1x2048x5632", linear(1, 2048, 5632)),
        ("gemm", "linear 8x768x3072", linear(8, 768, 3072)),
        # Short prompts: 32 tokens through BERT- and LLaMA-wide layers (small-m GEMMs run far
        # below the large-GEMM rate on CPUs, and neither neighbour predicts them).
        ("gemm", "linear 32x768x3072", linear(32, 768, 3072)),
        ("gemm", "linear 32x2048x5632", linear(32, 2048, 5632)),
        ("gemm", "linear 128x768x768", linear(128, 768, 768)),
        ("gemm", "linear 128x768x3072", linear(128, 768, 3072)),
        ("gemm", "linear 512x1024x1024", linear(512, 1024, 1024)),
        ("gemm", "linear 1576x768x3072", linear(1576, 768, 3072)),
    ]


def _conv_cases(mk: _Tensors) -> list[Case]:
    """Convolutions: dense, depthwise and grouped."""
    F = mk.F

    def conv(b: int, cin: int, cout: int, hw: int, k: int, stride: int = 1, groups: int = 1) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            x, w = mk.t(b, cin, hw, hw), mk.cold(cout, cin // groups, k, k)
            ho = (hw + 2 * (k // 2) - k) // stride + 1
            macs = b * cout * ho * ho * (cin // groups) * k * k
            moved = F32 * (x.numel() + cout * (cin // groups) * k * k + b * cout * ho * ho)
            return 2.0 * macs, 0.0, moved, lambda: F.conv2d(x, w(), None, stride, k // 2, 1, groups)
        return build

    return [
        # Convolution: dense 3x3/1x1/7x7 stem, depthwise and grouped.
        ("conv", TINY, conv(1, 2, 2, 4, 1)),
        ("conv", "conv3x3 64ch 56px", conv(1, 64, 64, 56, 3)),
        ("conv", "conv1x1 256->64 56px", conv(1, 256, 64, 56, 1)),
        ("conv", "conv3x3 512ch 7px", conv(1, 512, 512, 7, 3)),
        ("conv", "conv7x7/2 3->64 224px", conv(1, 3, 64, 224, 7, 2)),
        ("conv", "conv3x3 64ch 56px b8", conv(8, 64, 64, 56, 3)),
        ("conv", "conv1x1 32->16 112px", conv(1, 32, 16, 112, 1)),
        ("conv", "dwconv3x3 32ch 112px", conv(1, 32, 32, 112, 3, 1, 32)),
        ("conv", "dwconv3x3 144ch 56px/2", conv(1, 144, 144, 56, 3, 2, 144)),
        ("conv", "dwconv3x3 960ch 7px", conv(1, 960, 960, 7, 3, 1, 960)),
        ("conv", "dwconv3x3 96ch 112px b8", conv(8, 96, 96, 112, 3, 2, 96)),
        ("conv", "grouped3x3 128ch g32 28px", conv(1, 128, 128, 28, 3, 1, 32)),
        ("conv", "conv1x1 16->96 112px b8", conv(8, 16, 96, 112, 1)),
    ]


def _attention_cases(mk: _Tensors) -> list[Case]:
    """Scaled dot-product attention: prefill and decode."""
    F = mk.F

    def sdpa(b: int, h: int, sq: int, skv: int, d: int) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            q, k, v = mk.t(b, h, sq, d), mk.t(b, h, skv, d), mk.t(b, h, skv, d)
            macs = 2 * b * h * sq * skv * d  # scores and the weighted sum of values
            softmax = 5.0 * b * h * sq * skv  # scale, max, exp, sum, divide per score
            moved = F32 * (q.numel() + k.numel() + v.numel() + q.numel())
            return 2.0 * macs, softmax, moved, lambda: F.scaled_dot_product_attention(q, k, v)
        return build

    return [
        # Attention (SDPA): prefill at 128 and 197 tokens, batch 8, decode against a 128-token cache.
        ("attention", TINY, sdpa(1, 1, 2, 2, 8)),
        ("attention", "sdpa 1x12x128x64", sdpa(1, 12, 128, 128, 64)),
        ("attention", "sdpa 1x12x197x64", sdpa(1, 12, 197, 197, 64)),
        ("attention", "sdpa 8x12x128x64", sdpa(8, 12, 128, 128, 64)),
        ("attention", "sdpa decode 1x32x1x128x64", sdpa(1, 32, 1, 128, 64)),
    ]


def _elementwise_cases(mk: _Tensors) -> list[Case]:
    """Elementwise ops, from in-cache to memory-bound sizes."""
    F = mk.F
    gelu, relu = F.gelu, mk.torch.relu
    def unary(n: int, fn: Callable[[Any], Any], flops_per: float) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            x = mk.t(n)
            return 0.0, flops_per * n, F32 * 2 * n, lambda: fn(x)
        return build

    def add(n: int) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            x, y = mk.t(n), mk.t(n)
            return 0.0, float(n), F32 * 3 * n, lambda: x + y
        return build

    return [
        # Elementwise.
        ("elementwise", TINY, add(8)),
        ("elementwise", "add 4k", add(4096)),
        ("elementwise", "add 100k", add(100_352)),
        ("elementwise", "add 1.6M", add(1_605_632)),
        ("elementwise", "relu 800k", unary(802_816, relu, 1.0)),
        ("elementwise", "gelu 400k", unary(393_216, gelu, 8.0)),
        ("elementwise", "gelu 3M", unary(3_145_728, gelu, 8.0)),
        # Batch-8 feature maps (MobileNet's 96 channels at 112 px: 38 MB) are past any L2 and
        # most L3s: they run at memory speed, which no smaller case shows.
        ("elementwise", "add 9.6M", add(9_633_792)),
        ("elementwise", "relu 9.6M", unary(9_633_792, relu, 1.0)),
    ]


def _norm_cases(mk: _Tensors) -> list[Case]:
    """Normalisation (softmax included)."""
    F = mk.F

    def layer_norm(rows: int, width: int) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            x, w, b = mk.t(rows, width), mk.t(width), mk.t(width)
            n = rows * width
            return 0.0, 8.0 * n, F32 * (2 * n + 2 * width), lambda: F.layer_norm(x, (width,), w, b)
        return build

    def batch_norm(b: int, c: int, hw: int) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            x = mk.t(b, c, hw, hw)
            mean, var, w, bias = mk.t(c), mk.t(c).abs() + 1, mk.t(c), mk.t(c)
            n = x.numel()
            return 0.0, 4.0 * n, F32 * (2 * n + 4 * c), lambda: F.batch_norm(x, mean, var, w, bias, False)
        return build

    def softmax(rows: int, width: int) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            x = mk.t(rows, width)
            n = x.numel()
            return 0.0, 5.0 * n, F32 * 2 * n, lambda: mk.torch.softmax(x, -1)
        return build

    return [
        # Normalisation (incl. softmax).
        ("norm", TINY, layer_norm(1, 8)),
        ("norm", "layer_norm 1x768", layer_norm(1, 768)),
        ("norm", "layer_norm 128x768", layer_norm(128, 768)),
        ("norm", "layer_norm 1024x768", layer_norm(1024, 768)),
        ("norm", "batch_norm 64ch 56px", batch_norm(1, 64, 56)),
        ("norm", "batch_norm 32ch 112px b8", batch_norm(8, 32, 112)),
        ("norm", "softmax 1536x128", softmax(1536, 128)),
        ("norm", "batch_norm 96ch 112px b8", batch_norm(8, 96, 112)),
    ]


def _reduction_cases(mk: _Tensors) -> list[Case]:
    """Reductions and pooling."""
    F = mk.F

    def mean(b: int, c: int, hw: int) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            x = mk.t(b, c, hw, hw)
            n = x.numel()
            return 0.0, float(n), F32 * (n + b * c), lambda: x.mean((2, 3))
        return build

    def maxpool(b: int, c: int, hw: int) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            x = mk.t(b, c, hw, hw)
            out = b * c * ((hw - 1) // 2 + 1) ** 2
            return 0.0, 9.0 * out, F32 * (x.numel() + out), lambda: F.max_pool2d(x, 3, 2, 1)
        return build

    return [
        # Reductions and pooling.
        ("reduction", TINY, mean(1, 2, 2)),
        ("reduction", "mean 2048ch 7px", mean(1, 2048, 7)),
        ("reduction", "mean 1280ch 7px b8", mean(8, 1280, 7)),
        ("reduction", "maxpool 64ch 112px", maxpool(1, 64, 112)),
    ]


def _data_cases(mk: _Tensors) -> list[Case]:
    """Data movement: concatenation, copies, padding, gathers."""
    F = mk.F

    def cat(n: int) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            x, y = mk.t(n // 2), mk.t(n // 2)
            return 0.0, 0.0, F32 * 2 * n, lambda: mk.torch.cat((x, y))
        return build

    def transpose_copy(rows: int, width: int) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            x = mk.t(rows, width)
            return 0.0, 0.0, F32 * 2 * x.numel(), lambda: x.t().contiguous()
        return build

    def pad(b: int, c: int, hw: int) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            x = mk.t(b, c, hw, hw)
            out = b * c * (hw + 1) ** 2
            return 0.0, 0.0, F32 * (x.numel() + out), lambda: F.pad(x, (0, 1, 0, 1))
        return build

    def embedding(tokens: int, vocab: int, width: int) -> Any:
        def build() -> tuple[float, float, float, Callable[[], Any]]:
            table = mk.t(vocab, width)
            idx = mk.torch.randint(0, vocab, (tokens,), device=mk.dev)
            return 0.0, 0.0, 8.0 * tokens + F32 * 2 * tokens * width, lambda: F.embedding(idx, table)
        return build

    return [
        # Data movement.
        ("data", TINY, cat(16)),
        ("data", "cat 100k", cat(100_352)),
        ("data", "cat 1.6M", cat(1_605_632)),
        ("data", "transpose copy 128x768", transpose_copy(128, 768)),
        ("data", "transpose copy 1024x3072", transpose_copy(1024, 3072)),
        ("data", "cat 9.6M", cat(9_633_792)),
        ("data", "pad 96ch 112px b8", pad(8, 96, 112)),
        ("data", "embedding 128 of 32000x768", embedding(128, 32000, 768)),
    ]


def run_microbench(
    device: str = "cpu",
    *,
    sample_s: float = 0.004,
    repeats: int = 5,
    budget_s: float = 14.0,
    progress: Progress | None = None,
) -> MicrobenchResult:
    """Time every case on `device` (threads as currently set) and return the points."""
    import torch

    dev = torch.device(device)
    cuda = dev if dev.type == "cuda" else None
    start = time.perf_counter()
    cases = _cases(torch, dev)
    total = len(cases) + 2
    points: list[Point] = []
    skipped: list[str] = []
    with torch.inference_mode():
        x = torch.randn(8, device=dev)
        relu = torch.nn.ReLU()
        view_s = _median_time(lambda: x.view(-1), sample_s, repeats, cuda)
        direct = _median_time(lambda: torch.relu(x), sample_s, repeats, cuda)
        wrapped = _median_time(lambda: relu(x), sample_s, repeats, cuda)
        module_call_s = max(0.0, wrapped - direct)
        if progress is not None:
            progress("dispatch overhead", 2, total)
        for i, (cls, label, build) in enumerate(cases):
            if progress is not None:
                progress(f"{cls}: {label}", i + 2, total)
            # Tiny cases always run: without them a class has no overhead figure.
            if label != TINY and time.perf_counter() - start > budget_s:
                skipped.append(f"{cls}: {label} (time budget of {budget_s:g} s spent)")
                continue
            matrix, vector, moved, call = build()
            seconds = _median_time(call, sample_s, repeats, cuda)
            points.append(Point(cls, label, matrix, vector, moved, seconds))
            del call
    if progress is not None:
        progress("done", total, total)
    return MicrobenchResult(tuple(points), view_s, module_call_s, time.perf_counter() - start,
                            tuple(skipped))
