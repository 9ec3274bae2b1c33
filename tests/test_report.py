"""The efficiency report: one full report of a small model, its exports, comparisons and the CLI."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import modelmeter
from modelmeter.analysis.compare import compare_reports, comparison_labels
from modelmeter.cli.main import cli
from modelmeter.core.errors import UserInputError
from modelmeter.core.report import Report
from modelmeter.pipeline import run
from modelmeter.pipeline.options import ReportOptions
from modelmeter.report.csv_export import render_csv
from modelmeter.report.html import render_html, render_html_fragment
from modelmeter.report.json_export import export_json
from modelmeter.report.markdown import comparison_markdown, render_markdown
from modelmeter.report.summary import build_summary, report_to_pandas, strip_paths, summary_notes

FAST = {"min_time_s": 0.05, "min_iters": 3, "warmup_s": 0.01}


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))))


@pytest.fixture(autouse=True)
def no_user_profile(tmp_path_factory, monkeypatch):
    # No 'local' profile and no writes to the user's real data dir.
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def full() -> Report:
    """Every section: counts, activations + training, roofline, measurement, environment."""
    torch.manual_seed(0)
    return modelmeter.report(Tiny(), torch.randn(2, 3, 8, 8), hardware="h100-sxm", train=True,
                             measure=True, timing=FAST)


def test_full_report_round_trips_through_json(full):
    for section in ("training", "roofline", "measured", "environment"):
        assert getattr(full, section) is not None, section
    assert "activations" in full.totals and "backward_flops" in full.totals
    assert Report.from_dict(full.to_dict()) == full
    text = json.dumps(export_json(full))
    assert Report.from_dict(json.loads(text)) == full
    assert json.loads(text)["schema"] == "modelmeter.report/1"


def test_summary_says_how_each_figure_was_obtained(full):
    rows = {r.key: r for r in build_summary(full)}
    assert rows["macs"].raw == full.totals["macs"] and rows["macs"].how == "counted"
    assert rows["flops"].raw == 2 * rows["macs"].raw
    assert rows["latency_predicted"].how.startswith("estimated (roofline, h100-sxm")
    assert rows["latency_measured_p50"].how.startswith("measured")
    assert rows["energy"].how.startswith(("measured", "estimated"))
    # The seed's 'hardware independent' column.
    assert not rows["params"].hardware_dependent and not rows["peak_activations"].hardware_dependent
    assert rows["latency_predicted"].hardware_dependent and rows["throughput"].hardware_dependent
    assert rows["params"].affects == "latency, storage"
    # A GPU roofline is not compared with a CPU measurement.
    assert full.measured["sweep"][0]["roofline_efficiency"] is None


def test_csv_has_one_row_per_module(full):
    rows = list(csv.DictReader(io.StringIO(render_csv(full))))
    assert [r["path"] for r in rows] == [m["path"] or "(model)" for m in full.modules]
    assert int(rows[0]["macs"]) == full.totals["macs"]
    assert {"t_compute_s", "t_memory_s", "latency_s", "bound", "peak_share_bytes"} <= set(rows[0])


def test_html_is_self_contained_and_escapes_names(full):
    data = full.to_dict()
    data["model"]["name"] = "<script>alert(1)</script>"
    data["modules"][1]["type"] = '"><img src=x onerror=alert(2)>'
    slowest = max(data["roofline"]["modules"], key=lambda m: m.get("latency_s") or 0)
    slowest["path"] = "<script>alert(3)</script>"  # drawn into the inline SVG charts
    page = render_html(data)
    assert "<script>alert(1)</script>" not in page and "onerror=alert(2)>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page and "alert(3)</script>" not in page
    assert "<link" not in page and "@import" not in page
    assert not re.search(r"url\(\s*['\"]?(?!#)", page)  # only in-page references (SVG clip paths)
    assert page.count("<svg ") == 2 and "<figure><svg" in page  # roofline + slowest layers, inline
    assert page.count("<script>") == 1  # only our inline sorter


def test_repr_html_is_the_fragment(full):
    frag = full._repr_html_()
    assert frag.startswith('<div class="mm-report"') and "<html" not in frag
    assert "Summary" in frag and "data-metric=\"macs\"" in frag
    assert render_html_fragment(full, plots=False).count("<svg") == 0


def test_markdown_hides_absolute_paths_unless_asked(full):
    data = full.to_dict()
    data["model"]["name"] = "/home/alice/models/secret-net"
    data["model"]["description"] = "BertModel from /home/alice/models/secret-net, random init"
    md = render_markdown(data)
    assert "/home/alice" not in md and "secret-net" in md
    assert "| MACs |" in md
    assert "/home/alice/models/secret-net" in render_markdown(data, absolute_paths=True)
    assert "/home/alice" not in render_html(data, plots=False)


def test_strip_paths_keeps_units_and_urls():
    assert strip_paths("from /a/b/model, random") == "from model, random"
    assert strip_paths(r"C:\Users\me\m.pt2") == "m.pt2"
    assert strip_paths("~/models/x") == "x"
    for keep in ("17.1 items/s", "FLOP/s", "bytes / bandwidth", "https://example.org/a/b"):
        assert strip_paths(keep) == keep


def _report(name, macs, latency=None, **settings):
    r = {"schema": "modelmeter.report/1", "model": {"name": name}, "settings": settings,
         "totals": {"params": 10, "param_bytes": 40, "macs": macs, "flops": 2 * macs},
         "modules": [], "uncounted_ops": []}
    if latency is not None:
        r["roofline"] = {"hardware": "h100-sxm", "latency_s": latency}
    return r


def test_compare_ratios_to_the_first():
    comp = compare_reports([_report("a", 100, 2e-3), _report("b", 250), _report("c", 50, 1e-3)])
    assert comp.labels == ("a", "b", "c")
    assert comp.row("macs").ratios == (1.0, 2.5, 0.5)
    assert comp.row("latency_predicted").ratios == (1.0, None, 0.5)
    assert comp.row("params").ratios == (1.0, 1.0, 1.0)
    with pytest.raises(KeyError):
        comp.row("latency_measured")  # nobody measured: the row is left out
    zero = compare_reports([_report("a", 0), _report("b", 5)])
    assert zero.row("macs").ratios == (None, None)
    labels = comparison_labels([_report("m", 1, dtype="fp32", batch=1), _report("m", 1, dtype="bf16", batch=1)])
    assert labels == ["m fp32", "m bf16"]
    md = comparison_markdown(comp)
    assert "| MACs | counted | 100 | 250 (×2.5) | 50 (×0.5) |" in md  # whole counts print whole, not "50.0"


FACTORY = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(x)

def tiny():
    return Net(), torch.randn(1, 16)

def plain():
    return Net()
"""


@pytest.fixture
def factory(tmp_path, monkeypatch):
    (tmp_path / "mm_report_mod.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    yield "mm_report_mod:tiny"
    sys.modules.pop("mm_report_mod", None)


def test_compare_batches_of_one_model(factory):
    spec = "mm_report_mod:plain"
    reports, comp = run.compare([spec], batches=[1, 4], inputs=["1x16"],
                                options=ReportOptions(hardware="a100-sxm-80gb", measure=False))
    assert len(reports) == 2 and comp.labels == (f"{spec} batch=1", f"{spec} batch=4")
    assert comp.row("macs").ratios == (1.0, 4.0)
    assert comp.row("params").ratios == (1.0, 1.0)
    assert comp.row("latency_predicted").values[1] > comp.row("latency_predicted").values[0]


def test_no_hardware_means_no_roofline_and_says_how(factory):
    report = modelmeter.report(factory, measure=False)
    assert report.roofline is None and report.measured is None
    assert any("modelmeter hardware calibrate" in n for n in summary_notes(report))


def test_a_batch_the_inputs_ignore_is_refused(factory):
    with pytest.raises(UserInputError, match="--batch 4"):  # the factory fixes batch 1
        modelmeter.report(factory, batch=4, measure=False)


def test_automatic_measurement_rule(factory, monkeypatch):
    small = modelmeter.report(factory, timing=FAST)
    assert small.measured is not None and small.settings["measure"]["ran"]
    monkeypatch.setattr(run, "AUTO_MEASURE_MAX_FLOPS", 0)
    big = modelmeter.report(factory)
    assert big.measured is None
    assert any("pass --measure" in n for n in big.settings["notes"])
    monkeypatch.setattr(run, "AUTO_MEASURE_MAX_FLOPS", 50e9)
    elsewhere = modelmeter.report(factory, device="cuda")  # automatic timing is for the CPU only
    assert elsewhere.measured is None and not elsewhere.settings["measure"]["ran"]


def test_report_to_pandas(full):
    pd = pytest.importorskip("pandas")
    frame = report_to_pandas(full)
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(full.modules)


def test_cli_report_folder_model_writes_exports_without_paths(tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "private" / "tiny-bert"
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, vocab_size=100).save_pretrained(folder)
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(cli, [
        "report", str(folder), "--seq", "8", "--no-measure", "--hardware", "a100-sxm-80gb",
        "--md", str(out / "r.md"), "--html", str(out / "r.html"), "--csv", str(out / "r.csv"),
        "--json", str(out / "r.json")])
    assert result.exit_code == 0, result.output
    assert "efficiency summary" in result.output and "top memory-bound" in result.output
    for name in ("r.md", "r.html"):
        text = (out / name).read_text()
        assert str(tmp_path) not in text and "tiny-bert" in text
    data = json.loads((out / "r.json").read_text())
    assert data["roofline"]["hardware"] == "a100-sxm-80gb" and data["summary"][0]["key"] == "params"


@pytest.mark.slow
def test_cli_report_small_preset_as_a_user_runs_it(tmp_path, run_main):
    """mobilenet-v2 is small: measured by default; exports written; a bad id is one line, exit 2."""
    env_home = tmp_path / "home"
    proc = subprocess.run(
        [sys.executable, "-m", "modelmeter.cli.main", "report", "mobilenet-v2", "--hardware", "h100-sxm",
         "--depth", "1", "--json", str(tmp_path / "r.json"), "--save", "--db", str(tmp_path / "runs.sqlite")],
        capture_output=True, text=True, timeout=240, env={**_env(), "MODELMETER_HOME": str(env_home)})
    assert proc.returncode == 0, proc.stderr
    assert "measured latency (p50)" in proc.stdout and "predicted latency" in proc.stdout
    assert "saved run" in proc.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["measured"]["latency_s"]["p50"] > 0
    code, _, err = run_main("report", "mobilenet-v2", "--hardware", "no-such-chip")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_default_hardware_is_the_local_profile(factory):
    import dataclasses

    from modelmeter.hardware import get_hardware, save_local_profile

    cpu = dataclasses.replace(get_hardware("h100-sxm"), id="local", name="this CPU", kind="cpu",
                              source="calibrated")
    save_local_profile(cpu)
    report = modelmeter.report(factory, timing=FAST)
    assert report.roofline["hardware"] == "local"
    # A CPU profile and a CPU measurement: the roofline efficiency is reported.
    assert report.measured["sweep"][0]["roofline_efficiency"] is not None


CSV_TINY = """
import torch

def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8)), (torch.randn(2, 32),)
"""


def test_report_csv_names_the_root_and_writes_plain_cells(run_main, tmp_path, monkeypatch):
    """A spreadsheet reads every cell: the root row is named, shapes and dtypes are plain text."""
    (tmp_path / "mm_csv_tiny.py").write_text(CSV_TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run_main("report", "mm_csv_tiny:build", "--no-measure", "--hardware", "h100-sxm",
                            "--csv", str(tmp_path / "r.csv"))
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    root = rows[0]
    assert root["path"] == "(model)" and root["type"] == "Sequential" and root["depth"] == "0"
    assert [r["path"] for r in rows[1:]] == ["0", "1", "2"]
    assert int(root["macs"]) == 2 * 32 * 64 + 2 * 64 * 8  # batch 2 through both Linear layers
    assert root["input_shapes"] == "2x32" and root["input_dtypes"] == "float32"
    assert rows[3]["output_shapes"] == "2x8"
    for row in rows:
        for column, value in row.items():
            assert not value.startswith(("[", "(")) or column == "path", (column, value)
