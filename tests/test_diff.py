"""Report diffs, CI gates, and the `history` / `diff` commands."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from modelmeter.cli.main import main
from modelmeter.core.errors import UserInputError
from modelmeter.report.diff import (
    METRICS,
    diff_reports,
    evaluate_gates,
    format_change,
    metric_value,
    parse_gates,
)
from modelmeter.store import RunStore


def _report(**overrides: float) -> dict:
    report = {
        "schema": "modelmeter.report/1",
        "model": {"name": "resnet18"},
        "settings": {"dtype": "fp32", "batch": 1, "hardware": "a100-sxm4-80gb"},
        "totals": {
            "params": 11_689_512,
            "param_bytes": 46_758_048,
            "macs": 1_814_083_944,
            "flops": 3_628_167_888,
            "other_flops": 10_000_000,
            "activations": {"peak_inference_bytes": 20_000_000},
        },
        "roofline": {"latency_s": 0.0004, "bound": "memory"},
        "measured": {
            "latency_s": {"min": 0.009, "mean": 0.0105, "p50": 0.010, "p90": 0.011, "p99": 0.013},
            "throughput_per_s": 100.0,
        },
    }
    for name, value in overrides.items():
        *parents, leaf = METRICS[name].path.split(".")
        node = report
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return report


# --- diff_reports -----------------------------------------------------------


def test_equal_reports_show_no_change() -> None:
    changes = diff_reports(_report(), copy.deepcopy(_report()))
    assert changes
    for change in changes:
        assert change.delta == 0 and not change.changed and change.improved is None
        assert format_change(change) == "0%"
    # Only metrics present somewhere are listed.
    assert {c.name for c in changes} == {
        n for n in METRICS if metric_value(_report(), n) is not None
    }


def test_changes_and_directions() -> None:
    by_name = {
        c.name: c for c in diff_reports(_report(), _report(latency_p50=0.012, throughput=80.0))
    }
    p50 = by_name["latency_p50"]
    assert p50.delta == pytest.approx(0.002) and p50.relative == pytest.approx(0.2)
    assert p50.improved is False and format_change(p50) == "+20.0%"
    tput = by_name["throughput"]
    assert tput.relative == pytest.approx(-0.2) and tput.improved is False
    faster = {c.name: c for c in diff_reports(_report(), _report(latency_p50=0.008))}
    assert faster["latency_p50"].improved is True


def test_relative_is_none_when_a_is_zero_or_absent() -> None:
    a = _report(other_flops=0)
    del a["measured"]
    by_name = {c.name: c for c in diff_reports(a, _report(other_flops=5))}
    assert by_name["other_flops"].delta == 5 and by_name["other_flops"].relative is None
    assert by_name["latency_p50"].a is None and by_name["latency_p50"].delta is None
    assert format_change(by_name["latency_p50"]) == "new"


def test_non_numbers_count_as_absent() -> None:
    weird = _report()
    weird["totals"]["params"] = "lots"
    weird["totals"]["macs"] = True
    weird["totals"]["flops"] = math.nan
    for name in ("params", "macs", "flops"):
        assert metric_value(weird, name) is None


# --- gates ---------------------------------------------------------------------


def test_parse_gate_forms() -> None:
    gates = parse_gates("latency_p50>+5%, flops>0% ,params>1000,throughput<-10%,energy>=2.5e-3")
    assert [(g.metric, g.op, g.threshold, g.relative) for g in gates] == [
        ("latency_p50", ">", pytest.approx(0.05), True),
        ("flops", ">", 0.0, True),
        ("params", ">", 1000.0, False),
        ("throughput", "<", pytest.approx(-0.10), True),
        ("energy", ">=", pytest.approx(2.5e-3), False),
    ]


@pytest.mark.parametrize(
    "spec", ["", ",", "latency_p50", "latency_p50>", "latency_p50>5%%", "latency_p50=>5%", "p50>5%"]
)
def test_malformed_gates_list_valid_metrics(spec: str) -> None:
    with pytest.raises(UserInputError) as info:
        parse_gates(spec)
    if spec.strip(", "):
        assert "latency_p50" in str(info.value) and "throughput" in str(info.value)


def _evaluate(a: dict, b: dict, spec: str) -> list[str]:
    return [r.status for r in evaluate_gates(diff_reports(a, b), parse_gates(spec))]


def test_gate_outcomes() -> None:
    slower = _report(latency_p50=0.0107, flops=3_628_167_889, throughput=85.0)
    assert _evaluate(_report(), slower, "latency_p50>+5%") == ["fail"]
    assert _evaluate(_report(), _report(latency_p50=0.0104), "latency_p50>+5%") == ["pass"]
    assert _evaluate(_report(), slower, "flops>0%,flops>10,throughput<-10%,throughput<-20%") == [
        "fail",
        "pass",
        "fail",
        "pass",
    ]
    # Equal runs pass every gate, however strict.
    assert _evaluate(_report(), _report(), "flops>0%,params>0,latency_p50>0%") == ["pass"] * 3


def test_gate_from_zero_and_missing_metric() -> None:
    assert _evaluate(_report(other_flops=0), _report(other_flops=1), "other_flops>+50%") == ["fail"]
    assert _evaluate(_report(other_flops=0), _report(other_flops=0), "other_flops>0%") == ["pass"]
    results = evaluate_gates(diff_reports(_report(), _report()), parse_gates("energy>+5%"))
    assert results[0].status == "missing" and results[0].failed
    assert "missing in both reports" in results[0].reason
    no_b = _report()
    del no_b["measured"]
    results = evaluate_gates(diff_reports(_report(), no_b), parse_gates("latency_p50>+5%"))
    assert results[0].failed and "missing in report B" in results[0].reason


# --- CLI -----------------------------------------------------------------------


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path / "home"))
    return tmp_path


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _write(path: Path, report: dict) -> str:
    path.write_text(json.dumps(report))
    return str(path)


def test_history_lists_runs(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["history"], capsys)
    assert code == 0 and "no runs stored" in out
    with RunStore() as store:
        first = store.save(_report(), label="baseline")
        second = store.save(_report(latency_p50=0.02) | {"model": {"name": "vit"}})
    code, out, _ = _run(["history"], capsys)
    assert code == 0
    assert first in out and second in out and "resnet18" in out and "vit" in out
    assert out.index(second) < out.index(first)  # newest first

    code, out, _ = _run(["history", "--model", "vit", "--json"], capsys)
    runs = json.loads(out)["runs"]
    assert [r["id"] for r in runs] == [second]
    assert runs[0]["report"]["measured"]["latency_s"]["p50"] == 0.02


def test_diff_run_with_itself_shows_no_change(home: Path, capsys) -> None:
    with RunStore() as store:
        run_id = store.save(_report())
    code, out, err = _run(
        ["diff", run_id, run_id[:5], "--fail-on", "latency_p50>0%,flops>0%"], capsys
    )
    assert code == 0, err
    assert "no change" in out and "PASS" in out and "FAIL" not in out


def test_diff_json_output_and_mixed_sources(home: Path, capsys) -> None:
    with RunStore() as store:
        run_id = store.save(_report())
    b = _write(home / "b.json", _report(latency_p50=0.0125))
    code, out, _ = _run(["diff", run_id, b, "--json", "--fail-on", "latency_p50>+5%"], capsys)
    assert code == 1
    doc = json.loads(out)
    assert doc["a"]["run"] == run_id and doc["b"]["file"] == b and doc["passed"] is False
    p50 = next(c for c in doc["changes"] if c["metric"] == "latency_p50")
    assert p50["relative"] == pytest.approx(0.25)
    assert doc["gates"][0]["status"] == "fail"


@pytest.mark.parametrize(
    "args, message",
    [
        (["diff", "deadbeef", "deadbeef"], "no run 'deadbeef'"),
        (["diff", "not-a-run", "x"], "neither a report file nor a stored run id"),
        (["diff", "A", "A", "--fail-on", "latency>5%"], "unknown metric"),
        (["diff", "A", "A", "--fail-on", "flops>>5"], "cannot read gate"),
        (["diff", "BAD", "A"], "not valid JSON"),
        (["diff", "OTHER", "A"], "not a modelmeter report"),
    ],
)
def test_diff_bad_input_exits_2(home: Path, capsys, args: list[str], message: str) -> None:
    files = {
        "A": _write(home / "a.json", _report()),
        "BAD": str(home / "bad.json"),
        "OTHER": _write(home / "other.json", {"name": "package", "version": "1.0"}),
    }
    (home / "bad.json").write_text("{truncated")
    code, out, err = _run([files.get(arg, arg) for arg in args], capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_console_script_exit_codes(tmp_path: Path) -> None:
    """The real entry point: a failing gate exits 1, a passing one 0, a bad one 2."""
    a = _write(tmp_path / "a.json", _report())
    b = _write(tmp_path / "b.json", _report(latency_p50=0.011, throughput=90.0))
    env_cmd = [
        sys.executable,
        "-m",
        "modelmeter.cli.main",
        "diff",
        a,
        b,
        "--db",
        str(tmp_path / "s.sqlite"),
    ]

    def run(*gates: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*env_cmd, *gates], capture_output=True, text=True, timeout=60)

    failed = run("--fail-on", "latency_p50>+5%,flops>0%")
    assert failed.returncode == 1, failed.stderr
    assert "1 of 2 gates failed: latency_p50>+5%" in failed.stderr
    assert "FAIL" in failed.stdout and "+10.0%" in failed.stdout
    passed = run("--fail-on", "latency_p50>+20%,throughput<-20%")
    assert passed.returncode == 0, passed.stderr
    bad = run("--fail-on", "latency_p50>five")
    assert bad.returncode == 2 and bad.stderr.startswith("modelmeter: error: cannot read gate")
    assert not (tmp_path / "s.sqlite").exists()  # diffing two files never creates a store


def test_history_keeps_whole_run_ids_in_a_narrow_terminal(home: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # An id cut to "a…" cannot be passed to `diff`: ids and dates keep their width, names give way.
    monkeypatch.setenv("MODELMETER_HOME", str(home / ("deep-folder-name-" * 4)))
    with RunStore() as store:
        run = store.save(_report())
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = _run(["history"], capsys)
    assert code == 0 and run in out and "resnet18" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    # The hardware id (a100-sxm4-80gb) folds onto at most two lines: it was squeezed to three
    # characters over five lines, which read as blank rows.
    lines = out.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith(run))
    start = lines[row].index("a100")
    assert (lines[row][start:] + lines[row + 1][start:]).replace(" ", "") == "a100-sxm4-80gb", lines[row:row + 2]


# --- settings: a gate compares like with like -----------------------------------


@pytest.fixture(scope="module")
def gpt2_two_settings(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two real gpt2 reports at different batch, sequence length and precision."""
    folder = tmp_path_factory.mktemp("settings")
    a, b = str(folder / "a.json"), str(folder / "b.json")
    for args in (["--seq", "16", "--json", a], ["--seq", "32", "--batch", "2", "--dtype", "bf16", "--json", b]):
        try:
            main(["count", "gpt2", *args])
        except SystemExit as exc:
            assert not exc.code, exc
    return a, b


def test_diff_names_the_settings_that_differ(run_main, gpt2_two_settings, home: Path) -> None:
    a, b = gpt2_two_settings
    code, out, err = run_main("diff", a, b)
    assert code == 0, err
    # The 4x MACs are 2x batch times 2x tokens (the attention core grows 8x), not a
    # regression: the terminal says so before the table.
    assert "settings differ" in out
    for words in ("seq 16 vs 32", "dtype fp32 vs bf16", "inputs input_ids[1, 16] int64 vs input_ids[2, 32] int64"):
        assert words in out, (words, out)
    code, out, err = run_main("diff", a, b, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "modelmeter.diff/1"
    assert doc["same_settings"] is False
    changed = {row["setting"]: (row["a"], row["b"]) for row in doc["settings_changed"]}
    assert set(changed) == {"inputs", "seq", "dtype"}  # batch is unset (preset default) in A
    assert changed["seq"] == (16, 32) and changed["dtype"] == ("fp32", "bf16")
    assert any("settings differ" in note for note in doc["notes"])
    # A run against itself: same settings, no note.
    code, out, err = run_main("diff", a, a, "--json")
    doc = json.loads(out)
    assert doc["same_settings"] is True and doc["settings_changed"] == [] and doc["notes"] == []


def test_a_gate_refuses_runs_with_different_settings(run_main, gpt2_two_settings, home: Path) -> None:
    a, b = gpt2_two_settings
    for extra in ([], ["--json"]):
        code, out, err = run_main("diff", a, b, "--fail-on", "macs>+5%", *extra)
        assert code == 2, (out, err)
        assert err.count("\n") == 1 and "Traceback" not in err and out == ""
        assert "different settings" in err and "seq 16 vs 32" in err and "--allow-settings-change" in err
    # Asked for: the gate runs and fails on the 4x MACs, the note stays.
    code, out, err = run_main("diff", a, b, "--fail-on", "macs>+5%", "--allow-settings-change")
    assert code == 1, err
    assert "settings differ" in out and "FAIL" in out and "+301.0%" in out
    code, out, err = run_main("diff", a, b, "--fail-on", "params>0%", "--allow-settings-change", "--json")
    assert code == 0, err
    assert json.loads(out)["passed"] is True


@pytest.mark.parametrize(
    "where, value, setting",
    [
        (("measured", "device"), "cuda", "device"),
        (("roofline", "hardware"), "h100-sxm", "hardware"),
        (("measured", "conditions", "threads"), 8, "threads"),
        (("environment", "torch"), "2.14.1", "torch"),
    ],
)
def test_every_setting_of_the_issue_is_compared(run_main, home: Path, where, value, setting) -> None:
    base = _report()
    base["measured"]["device"] = "cpu"
    base["roofline"]["hardware"] = "local"
    base["measured"]["conditions"] = {"threads": 2}
    base["environment"] = {"torch": "2.13.0+cpu"}
    other = copy.deepcopy(base)
    node = other
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    a, b = _write(home / "a.json", base), _write(home / "b.json", other)
    code, out, err = run_main("diff", a, b, "--json")
    assert code == 0, err
    assert [row["setting"] for row in json.loads(out)["settings_changed"]] == [setting]
    code, _, err = run_main("diff", a, b, "--fail-on", "flops>0%")
    assert code == 2 and setting in err
    # Present on one side only (B not measured, say): unknown, not a change.
    del other[where[0]]
    b = _write(home / "b.json", other)
    code, out, err = run_main("diff", a, b, "--json")
    assert setting not in [row["setting"] for row in json.loads(out)["settings_changed"]]
