"""`modelmeter sweep`: a real tiny grid through worker processes, failures, resume, Ctrl-C, bad specs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelmeter.store import RunStore

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = '''
import torch

def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)), torch.randn(1, 16)

def crash():
    raise RuntimeError("this model cannot be built")

build_again = build  # another name: another configuration


def hang():
    import time
    time.sleep(600)
'''


def _env(tmp: Path) -> dict[str, str]:
    path = os.pathsep.join([SRC, str(tmp), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "MODELMETER_HOME": str(tmp / "home")}


def _cli(tmp: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelmeter.cli.main", *args], cwd=tmp, env=_env(tmp),
                          capture_output=True, text=True, timeout=timeout)


def _spec(tmp: Path, text: str) -> Path:
    (tmp / "mm_sweep_tiny.py").write_text(TINY)
    spec = tmp / "grid.toml"
    spec.write_text(text)
    return spec


GRID = '''
command = "report"
models = ["mm_sweep_tiny:build", "mm_sweep_tiny:crash"]
exclude = [{model = "mm_sweep_tiny:crash", input = ["2x16", "3x16"]}]
[options]
measure = false
input = ["1x16", "2x16", "3x16"]
'''


def test_grid_runs_failures_recorded_rerun_skips_and_force(tmp_path: Path) -> None:
    spec = _spec(tmp_path, GRID)
    db = tmp_path / "runs.sqlite"
    proc = _cli(tmp_path, "sweep", str(spec), "--db", str(db), "--json", str(tmp_path / "s.json"))
    assert proc.returncode == 1, proc.stderr  # one configuration failed
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["done"], summary["skipped"], summary["failed"]) == (3, 0, 1)
    failed = [r for r in summary["configurations"] if r["status"] == "failed"]
    assert "this model cannot be built" in failed[0]["error"] and "\n" not in failed[0]["error"]
    with RunStore(db) as store:
        runs = store.list_runs()
        assert len(runs) == 3 and all(r.config_hash for r in runs)
        # Each stored row equals the same command run alone: its totals, and the batch it was given.
        for row in (r for r in summary["configurations"] if r["status"] == "done"):
            stored = store.find_config(row["config_hash"]).report
            alone = tmp_path / f"alone-{row['key']['input']}.json"
            direct = _cli(tmp_path, "report", *row["args"], "--json", str(alone))
            assert direct.returncode == 0, direct.stderr
            expected = json.loads(alone.read_text())
            assert stored["totals"] == expected["totals"]
            # Linear(16,32)+Linear(32,4) per sample: closed form for the MACs.
            assert stored["totals"]["macs"] == int(row["key"]["input"][0]) * (16 * 32 + 32 * 4)
    again = _cli(tmp_path, "sweep", str(spec), "--db", str(db), "--json", str(tmp_path / "s2.json"))
    second = json.loads((tmp_path / "s2.json").read_text())
    assert (second["done"], second["skipped"], second["failed"]) == (0, 3, 1), again.stderr  # failure retried
    forced = _cli(tmp_path, "sweep", str(spec), "--db", str(db), "--force", "--json", str(tmp_path / "s3.json"))
    third = json.loads((tmp_path / "s3.json").read_text())
    assert (third["done"], third["skipped"]) == (3, 0), forced.stderr
    with RunStore(db) as store:
        assert len(store.list_runs()) == 6


def test_timeout_is_a_failed_row_and_others_go_on(tmp_path: Path) -> None:
    spec = _spec(tmp_path, GRID.replace("mm_sweep_tiny:crash", "mm_sweep_tiny:hang"))
    proc = _cli(tmp_path, "sweep", str(spec), "--db", str(tmp_path / "r.sqlite"), "--timeout", "20",
                "--workers", "1", "--json", "-")
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert (summary["done"], summary["failed"]) == (3, 1), proc.stderr
    assert any("timed out after 20 s" in (r["error"] or "") for r in summary["configurations"])


def test_ctrl_c_keeps_finished_rows_and_rerun_completes_the_rest(tmp_path: Path) -> None:
    spec = _spec(tmp_path, GRID.replace('"mm_sweep_tiny:crash"', '"mm_sweep_tiny:hang"')
                 .replace('input = ["2x16", "3x16"]', 'input = ["1x16", "2x16"]'))
    db = tmp_path / "runs.sqlite"
    # One worker: the three tiny configurations finish, then the hanging one runs until SIGINT.
    child = subprocess.Popen([sys.executable, "-m", "modelmeter.cli.main", "sweep", str(spec), "--db", str(db),
                              "--workers", "1"], cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(RunStore(db).list_runs() if db.exists() else []) < 3:
        time.sleep(0.5)
    time.sleep(1.0)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "3 done" in out and "1 not run" in out, out
    with RunStore(db) as store:
        assert len(store.list_runs()) == 3
    # The interrupted configuration made fast: the rerun runs only it.
    spec.write_text(spec.read_text().replace("mm_sweep_tiny:hang", "mm_sweep_tiny:build_again"))
    rerun = _cli(tmp_path, "sweep", str(spec), "--db", str(db), "--json", "-")
    summary = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    assert (summary["done"], summary["skipped"], summary["failed"]) == (1, 3, 0), rerun.stderr
    with RunStore(db) as store:
        assert len(store.list_runs()) == 4


@pytest.mark.parametrize("text,needle", [
    ('command = "count"\nmodels = ["gpt2"]', "command must be one of"),
    ('command = "report"\nmodels = ["gpt2"]\nbatchez = [1]', "unknown key 'batchez'"),
    ('command = "report"\nmodels = ["no-such-model-xyz"]', "unknown model"),
    ('command = "report"\nmodels = ["gpt2"]\nhardware = ["no-such-chip"]', "no-such-chip"),
    ('command = "report"\nmodels = ["gpt2"]\n[options]\nwat = 1', "no option --wat"),
    ('command = "report"\nmodels = ["gpt2"]\n[options]\njson = "x"', "set by the sweep"),
    ('command = "report"\nmodels = ["gpt2"]\nexclude = [{colour = 1}]', "not an axis"),
    ('command = "llm"\nmodels = ["gpt2"]\ndevices = ["cpu"]', "no devices axis"),
    ('command = [', "not valid TOML"),
])
def test_bad_spec_is_one_line_exit_2(tmp_path: Path, run_main, text: str, needle: str) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    code, out, err = run_main("sweep", str(spec), "--db", str(tmp_path / "r.sqlite"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "r.sqlite").exists()


def test_dry_run_lists_the_product_and_hashes_are_stable(tmp_path: Path, run_main) -> None:
    from modelmeter.sweep.spec import config_hash, parse_spec

    spec = tmp_path / "g.toml"
    spec.write_text('command = "report"\nmodels = ["gpt2", "bert-base"]\nbatches = [1, 8]\n'
                    'precisions = ["fp32", "bf16"]\nexclude = [{model = "bert-base", precision = "bf16"}]\n'
                    '[options]\nmeasure = false\n')
    code, out, err = run_main("sweep", str(spec), "--dry-run")
    assert code == 0, err
    assert "6 configurations, 0 stored, 6 to run" in out
    grid = parse_spec({"command": "report", "models": ["gpt2"], "batches": [1, 8], "options": {"measure": False}})
    points = grid.points()
    assert [p.args for p in points] == [("gpt2", "--batch", "1", "--no-measure"), ("gpt2", "--batch", "8", "--no-measure")]
    assert config_hash("report", points[0].args) == config_hash("report", list(points[0].args))
    assert config_hash("report", points[0].args) != config_hash("report", points[1].args)
    assert config_hash("report", points[0].args, "9.9") != config_hash("report", points[0].args)


def test_summary_document_matches_the_shipped_schema(tmp_path: Path) -> None:
    from jsonschema import Draft202012Validator

    from modelmeter.core.schema import load_schema

    spec = _spec(tmp_path, GRID)
    proc = _cli(tmp_path, "sweep", str(spec), "--db", str(tmp_path / "r.sqlite"), "--json", str(tmp_path / "s.json"))
    assert proc.returncode == 1, proc.stderr
    document = json.loads((tmp_path / "s.json").read_text())
    Draft202012Validator(load_schema("sweep_document")).validate(document)
    with pytest.raises(Exception, match="Additional properties"):
        Draft202012Validator(load_schema("sweep_document")).validate({**document, "extra": 1})
