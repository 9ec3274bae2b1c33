"""The latency timer: iteration rules, statistics, the quality flag, bad arguments."""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modelmeter.core.errors import UserInputError
from modelmeter.measure.timer import LatencyStats, measure_latency, parse_device

FAST = dict(min_time_s=0.05, warmup_s=0.0, warmup_iters=0)


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def test_percentiles_are_ordered_on_a_real_matmul() -> None:
    a = torch.randn(32, 32)
    stats = measure_latency(lambda: a @ a, min_time_s=0.05, warmup_s=0.01)
    assert stats.min_s <= stats.p50_s <= stats.p90_s <= stats.p99_s <= max(stats.samples_s)
    assert stats.iterations == len(stats.samples_s) >= 10
    assert stats.conditions["device"] == "cpu"
    assert stats.conditions["threads"] == torch.get_num_threads()


def test_min_iters_honoured_when_time_runs_out_first() -> None:
    fn = Counter()
    stats = measure_latency(fn, min_time_s=1e-6, min_iters=57, warmup_s=0.0, warmup_iters=0)
    assert stats.iterations == fn.calls == 57


def test_min_time_honoured_when_count_runs_out_first() -> None:
    start = time.perf_counter()
    stats = measure_latency(lambda: time.sleep(0.002), min_time_s=0.1, min_iters=1,
                            warmup_s=0.0, warmup_iters=0)
    assert time.perf_counter() - start >= 0.1
    assert sum(stats.samples_s) >= 0.09  # nearly all the wall time is inside the calls
    assert stats.min_s >= 0.002


def test_max_iters_caps_and_warmup_count_is_honoured() -> None:
    fn = Counter()
    stats = measure_latency(fn, min_time_s=10.0, min_iters=7, max_iters=7,
                            warmup_s=0.0, warmup_iters=4)
    assert stats.iterations == 7
    assert fn.calls == 4 + 7


def test_warmup_runs_for_its_minimum_time() -> None:
    fn = Counter()
    start = time.perf_counter()
    measure_latency(fn, min_time_s=1e-6, min_iters=1, max_iters=1, warmup_s=0.05, warmup_iters=1)
    assert time.perf_counter() - start >= 0.05
    assert fn.calls > 2


def test_progress_is_reported() -> None:
    seen: list[tuple[str, int]] = []
    measure_latency(lambda: None, progress=lambda phase, n, s: seen.append((phase, n)), **FAST)
    assert seen[-1][0] == "timed" and seen[-1][1] >= 10


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(min_time_s=0), dict(min_time_s=-1), dict(min_time_s=float("nan")),
        dict(min_iters=0), dict(warmup_s=-0.1), dict(warmup_iters=-1),
        dict(min_iters=10, max_iters=5), dict(device="tpu"),
    ],
)
def test_bad_arguments_are_user_errors(kwargs: dict) -> None:
    with pytest.raises(UserInputError):
        measure_latency(lambda: None, **kwargs)


def test_parse_device() -> None:
    assert parse_device("cpu") == ("cpu", None)
    assert parse_device("CUDA:1") == ("cuda", 1)
    with pytest.raises(UserInputError):
        parse_device("cuda:x")


def test_statistics_from_known_samples() -> None:
    stats = LatencyStats.from_samples([float(i) for i in range(1, 101)])
    assert stats.min_s == 1 and stats.mean_s == 50.5
    assert stats.p50_s == pytest.approx(50.5)
    assert stats.p90_s == pytest.approx(90.1)
    assert stats.p99_s == pytest.approx(99.01)
    assert stats.iqr_s == pytest.approx(49.5)


def test_quality_flag() -> None:
    steady = LatencyStats.from_samples([1.0] * 20 + [1.01] * 20)
    assert not steady.noisy and steady.noise_reason is None
    wide = LatencyStats.from_samples([1.0, 1.5] * 20)
    assert wide.noisy and "IQR" in (wide.noise_reason or "")
    tail = LatencyStats.from_samples([1.0] * 97 + [3.0] * 3)
    assert tail.noisy and "p99" in (tail.noise_reason or "")
    few = LatencyStats.from_samples([1.0, 1.0])
    assert few.noisy


def test_drift_between_the_halves_of_a_run_is_flagged() -> None:
    # Each half is tight (IQR 0 within it), but the machine slowed down by 8 % half-way.
    drifting = LatencyStats.from_samples([1.00] * 20 + [1.08] * 20)
    assert drifting.noisy and "moved 8.0%" in (drifting.noise_reason or "")
    # The same samples in an order with no trend: no drift, and the IQR (8 %) is under 10 %.
    mixed = LatencyStats.from_samples([1.00, 1.08] * 20)
    assert not mixed.noisy, mixed.noise_reason
    # Under the threshold, and too few samples to judge a trend: not flagged for drift.
    assert not LatencyStats.from_samples([1.00] * 20 + [1.04] * 20).noisy
    assert "moved" not in (LatencyStats.from_samples([1.0] * 4 + [2.0] * 4).noise_reason or "")


def test_to_dict_keys() -> None:
    d = LatencyStats.from_samples([1e-3, 2e-3, 3e-3]).to_dict()
    assert {"min", "mean", "std", "p50", "p90", "p99", "iterations", "noisy"} <= d.keys()
    assert d["iterations"] == 3 and d["p50"] == pytest.approx(2e-3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=1e-9, max_value=10.0), min_size=1, max_size=300))
def test_percentiles_ordered_for_any_samples(samples: list[float]) -> None:
    s = LatencyStats.from_samples(samples)
    assert s.min_s <= s.p50_s <= s.p90_s <= s.p99_s <= max(samples)
    assert s.min_s <= s.mean_s * (1 + 1e-12) and s.std_s >= 0


def test_empty_samples_rejected() -> None:
    with pytest.raises(UserInputError):
        LatencyStats.from_samples([])
