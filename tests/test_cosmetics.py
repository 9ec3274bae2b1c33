"""What an outside tour of the CLI found wrong in the output's form, each on a real preset.

Every test runs the command as a user does (`run_main`: the console entry point in
this process) and reads what it printed or wrote.
"""

from __future__ import annotations

import json
import re

import pytest


def _rows(text: str, needle: str) -> list[list[str]]:
    """The cells of each table row of `text` that contains `needle`."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines()
            if needle in line and "│" in line]


# ------------------------------------------------------------------ 1. whole numbers print whole


def test_batchnorm_parameter_counts_print_as_integers(run_main):
    code, out, err = run_main("count", "mobilenet-v2", "--depth", "5")
    assert code == 0, err
    rows = _rows(out, "BatchNorm2d")
    assert rows, out
    for cells in rows:
        params = cells[2]
        # BatchNorm2d(C) has weight and bias: 2·C parameters, a whole number ('64', not '64.0').
        if not params.endswith(("K", "M")):
            assert re.fullmatch(r"\d+", params), cells
            assert int(params) % 2 == 0
    # The first block's norm has 32 channels: 64 parameters, shown as such.
    assert any(cells[2] == "64" for cells in rows)
