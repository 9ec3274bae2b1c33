"""Throughput sweep (OOM, Ctrl-C in-process and by a real SIGINT), batch parsing, peak memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from modelmeter.core.errors import UserInputError
from modelmeter.measure.memory import PeakMemory
from modelmeter.measure.sweep import is_oom_error, parse_batches, throughput_sweep

FAST = dict(min_time_s=0.03, min_iters=3, warmup_s=0.0, warmup_iters=1)


def linear_call(batch: int):
    weight = torch.randn(128, 128)
    x = torch.randn(batch, 128)
    return lambda: torch.nn.functional.linear(x, weight)


def test_rows_and_throughput() -> None:
    rows_seen = []
    result = throughput_sweep(linear_call, [1, 4, 16], on_row=rows_seen.append, **FAST)
    assert [r.batch for r in result.rows] == [1, 4, 16] == [r.batch for r in rows_seen]
    assert not result.interrupted and not result.oom
    for row in result.rows:
        assert row.status == "ok" and row.latency is not None
        assert row.throughput_per_s == pytest.approx(row.batch / row.latency.p50_s, rel=1e-12)
        assert row.latency.conditions["batch"] == row.batch
    assert result.largest_batch_that_fit == 16
    best = result.best_batch
    assert best is not None
    assert best.throughput_per_s == max(r.throughput_per_s for r in result.rows)


def test_oom_stops_cleanly() -> None:
    def make_call(batch: int):
        if batch >= 16:
            def boom() -> None:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return boom
        return linear_call(batch)

    result = throughput_sweep(make_call, [1, 4, 16, 64], **FAST)
    assert [r.status for r in result.rows] == ["ok", "ok", "oom"]
    assert result.oom and result.largest_batch_that_fit == 4
    assert "out of memory" in (result.rows[-1].error or "")


def test_runtime_error_saying_out_of_memory_counts_as_oom() -> None:
    assert is_oom_error(RuntimeError("CUDA error: out of memory"))
    assert is_oom_error(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory"))
    assert not is_oom_error(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_other_errors_propagate() -> None:
    def make_call(batch: int):
        def bad() -> None:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        return bad

    with pytest.raises(RuntimeError, match="shapes"):
        throughput_sweep(make_call, [1], **FAST)


def test_keyboard_interrupt_in_process_keeps_finished_rows() -> None:
    def make_call(batch: int):
        if batch == 8:
            calls = {"n": 0}

            def interrupted() -> None:
                calls["n"] += 1
                if calls["n"] == 3:  # mid-measurement, after warm-up started
                    raise KeyboardInterrupt
            return interrupted
        return linear_call(batch)

    result = throughput_sweep(make_call, [1, 2, 8, 32], **FAST)
    assert result.interrupted
    assert [r.status for r in result.rows] == ["ok", "ok", "interrupted"]
    assert result.largest_batch_that_fit == 2
    assert result.best_batch is not None and result.best_batch.batch in (1, 2)


@pytest.mark.slow
def test_real_sigint_to_a_child_sweep(tmp_path: Path) -> None:
    child = Path(__file__).with_name("_sweep_child.py")
    proc = subprocess.Popen(
        [sys.executable, str(child), "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["status"] == "ok"
        time.sleep(0.1)  # land inside the next batch's timing loop
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    final = lines[-1]
    assert proc.returncode == 0, err
    assert final["final"] and final["interrupted"]
    rows = [first, *lines[:-1]]
    assert all(r["status"] == "ok" for r in rows[:-1])
    assert rows[-1]["status"] == "interrupted"
    assert final["rows"] == [r["status"] for r in rows]
    assert "Traceback" not in err


@pytest.mark.parametrize("text,expected", [("1,8,32", [1, 8, 32]), (" 32, 1 ,8,8", [1, 8, 32]),
                                           ("4", [4])])
def test_parse_batches(text: str, expected: list[int]) -> None:
    assert parse_batches(text) == expected


@pytest.mark.parametrize("text", ["", "1,,2", "a,b", "1.5", "0", "-4", "8,-1", "1;2"])
def test_parse_batches_rejects_junk(text: str) -> None:
    with pytest.raises(UserInputError):
        parse_batches(text)


def test_sweep_rejects_bad_batches() -> None:
    with pytest.raises(UserInputError):
        throughput_sweep(linear_call, [], **FAST)
    with pytest.raises(UserInputError):
        throughput_sweep(linear_call, [0], **FAST)


MIB = 1024 * 1024


def _peak_memory_in_fresh_process(use_clear_refs: bool, hold_s: float) -> list:
    """Measure a 64 MiB buffer's RSS growth in a new process.

    In this process earlier tests may have left freed memory resident in the C
    heap, and a new buffer placed there truly grows RSS by nothing.
    """
    code = (
        "import json, time, torch\n"
        "from modelmeter.measure.memory import PeakMemory\n"
        f"with PeakMemory('cpu', use_clear_refs={use_clear_refs}) as pm:\n"
        "    buf = torch.ones(64 * 1024 * 1024 // 4)\n"
        f"    time.sleep({hold_s})\n"
        "    del buf\n"
        "r = pm.result\n"
        "print(json.dumps([r.method, r.growth_bytes, r.peak_bytes, r.baseline_bytes]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_peak_memory_cpu_sees_a_short_lived_buffer() -> None:
    method, growth, peak, baseline = _peak_memory_in_fresh_process(True, 0)
    assert method in ("vmhwm", "rss-sampling")
    assert growth is not None and growth >= 48 * MIB
    assert peak is not None and baseline is not None


@pytest.mark.slow
def test_peak_memory_rss_sampling_fallback() -> None:
    # held long enough for the 1 ms sampler
    method, growth, _, _ = _peak_memory_in_fresh_process(False, 0.05)
    assert method == "rss-sampling"
    assert (growth or 0) >= 48 * MIB


def test_peak_memory_not_measured_is_none(tmp_path: Path) -> None:
    with PeakMemory("cpu", proc_self=tmp_path / "missing") as pm:
        pass
    assert pm.result is not None and pm.result.method == "unavailable"
    assert pm.result.peak_bytes is None and pm.result.growth_bytes is None


def test_sweep_rows_carry_memory() -> None:
    result = throughput_sweep(linear_call, [1], **FAST)
    row = result.rows[0]
    assert row.memory is not None and row.peak_memory_bytes == row.memory.growth_bytes
    assert row.peak_memory_bytes is None or row.peak_memory_bytes >= 0


@pytest.mark.parametrize("bad", [dict(min_time_s=0.0), dict(min_iters=0), dict(warmup_s=-1.0),
                                 dict(max_iters=2, min_iters=5)])
def test_bad_timing_is_refused_before_any_call_is_built(bad: dict) -> None:
    built: list[int] = []

    def make_call(batch: int):
        built.append(batch)
        return lambda: None

    with pytest.raises(UserInputError):
        throughput_sweep(make_call, [1], **bad)
    assert built == []
