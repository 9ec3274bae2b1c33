"""The one timing engine (hardware.timing) that calibration and `bench` both time through."""

from __future__ import annotations

import statistics
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modelmeter.core.errors import UserInputError
from modelmeter.hardware import calibration
from modelmeter.hardware.timing import iqr_ratio, percentile, time_calls
from modelmeter.measure import timer


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def test_calibration_and_benchmark_share_the_engine() -> None:
    assert calibration.time_calls is time_calls and timer.time_calls is time_calls
    assert calibration.iqr_ratio is iqr_ratio
    # The benchmark's public names stay where callers import them from.
    from modelmeter.measure.timer import LatencyStats, ProgressFn, measure_latency  # noqa: F401


def test_inner_calls_make_one_sample_reported_per_call() -> None:
    fn = Counter()
    samples = time_calls(fn, inner=5, min_iters=3, max_iters=3, warmup_iters=2)
    assert len(samples) == 3 and fn.calls == 2 + 3 * 5
    slept = time_calls(lambda: time.sleep(0.002), inner=3, min_iters=2, max_iters=2)
    assert all(0.002 <= s < 0.05 for s in slept)  # per call, not per sample of 3


def test_samples_until_both_time_and_count_are_met() -> None:
    fn = Counter()
    start = time.perf_counter()
    samples = time_calls(fn, min_time_s=0.05, min_iters=4)
    assert time.perf_counter() - start >= 0.05 and len(samples) == fn.calls >= 4
    assert len(time_calls(Counter(), min_time_s=0.0, min_iters=7)) == 7


def test_progress_phases() -> None:
    seen: list[tuple[str, int]] = []
    time_calls(lambda: None, min_iters=5, warmup_iters=2, progress=lambda p, n, s: seen.append((p, n)))
    assert seen[0] == ("warmup", 2) and seen[-1] == ("timed", 5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="no CUDA device"):
        time_calls(lambda: None, cuda=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=1e-9, max_value=10.0), min_size=2, max_size=200))
def test_spread_matches_the_standard_library(samples: list[float]) -> None:
    # statistics.quantiles 'inclusive' is numpy's linear method: the oracle for both figures.
    q1, q2, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    ordered = sorted(samples)
    assert percentile(ordered, 0.25) == pytest.approx(q1, rel=1e-12, abs=1e-15)
    assert percentile(ordered, 0.75) == pytest.approx(q3, rel=1e-12, abs=1e-15)
    assert iqr_ratio(samples) == pytest.approx((q3 - q1) / statistics.median(samples), rel=1e-9, abs=1e-12)
