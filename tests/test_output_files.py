"""Output paths that are not plain files: a symlink is written through, a FIFO or device is
written to, never replaced by a regular file (`core/files.py`), through the CLI."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

MODEL = """
import torch


def build():
    return torch.nn.Linear(8, 4), (torch.zeros(2, 8),)
"""


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    (tmp_path / "tiny_out_model.py").write_text(MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return "tiny_out_model:build"


def test_a_symlinked_output_writes_its_target_and_stays_a_link(run_main, tmp_path, tiny):
    real = tmp_path / "real"
    real.mkdir()
    (real / "target.json").write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real / "target.json")
    code, _, err = run_main("count", tiny, "--json", str(link))
    assert code == 0, err
    assert link.is_symlink()  # the link survives
    assert json.loads((real / "target.json").read_text())["totals"]["macs"] == 2 * 8 * 4


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_fifo_output_is_written_to_not_replaced(run_main, tmp_path, tiny):
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    got: list[str] = []

    def read() -> None:
        with open(fifo, encoding="utf-8") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    code, _, err = run_main("count", tiny, "--json", str(fifo))
    if code != 0 or not stat.S_ISFIFO(os.stat(fifo).st_mode):
        with open(fifo, "w"):  # release the reader if the pipe was not written
            pass
    reader.join(timeout=10)
    assert code == 0, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a pipe, not a regular file
    assert got and json.loads(got[0])["totals"]["macs"] == 2 * 8 * 4


def test_one_output_at_most_on_stdout(run_main, tiny):
    # Two outputs on '-' gave JSON followed by Markdown: neither parses.
    code, out, err = run_main("report", tiny, "--no-measure", "--json", "-", "--md", "-")
    assert code == 2 and err.count("\n") == 1 and "standard output" in err, err
    code, out, err = run_main("compare", tiny, tiny, "--json", "-", "--md", "-")
    assert code == 2 and "standard output" in err, err


def test_markdown_on_stdout_is_markdown_alone(run_main, tiny):
    # `--md -` printed the terminal tables first, on the same stdout, and then "wrote -".
    code, out, err = run_main("report", tiny, "--no-measure", "--md", "-")
    assert code == 0, err
    assert out.lstrip().startswith("#") and "┃" not in out and "wrote -" not in out + err


def test_compare_needs_two_columns(run_main, tiny):
    # One model and no variants compared nothing: a one-column table of ratios to itself, exit 0.
    code, out, err = run_main("compare", tiny)
    assert code == 2 and err.count("\n") == 1 and "two or more" in err, err
    code, out, err = run_main("compare", tiny, "--dtype", "fp32,bf16")
    assert code == 0, err


def test_db_without_save_is_an_error(run_main, tiny, tmp_path):
    # --db alone was accepted and nothing was saved.
    code, _, err = run_main("report", tiny, "--no-measure", "--db", str(tmp_path / "runs.sqlite"))
    assert code == 2 and "--save" in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs.sqlite").exists()
