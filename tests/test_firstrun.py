"""What a new user sees on a first run: units, defaults, assumptions said in words (CLI tests)."""

from __future__ import annotations

import json

import pytest


def test_count_int4_without_group_size_says_no_scales_and_the_layout(run_main) -> None:
    code, out, err = run_main("count", "gpt2", "--dtype", "int4", "--seq", "8", "--depth", "0")
    assert code == 0, err
    assert "quantisation scales" in out and "none counted" in out
    assert "--group-size" in out
    assert "weight-only" in out  # the layout assumed
    code, out, err = run_main("count", "gpt2", "--dtype", "int4", "--seq", "8", "--depth", "0",
                              "--group-size", "128")
    assert code == 0, err
    assert "none counted" not in out
    assert "of which quantisation scales" in out
