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
    header = next(line for line in out.splitlines() if "┃ module" in line)
    col = [c.strip() for c in header.split("┃")[1:-1]].index("params")
    for cells in rows:
        params = cells[col]
        # BatchNorm2d(C) has weight and bias: 2·C parameters, a whole number ('64', not '64.0').
        if not params.endswith(("K", "M")):
            assert re.fullmatch(r"\d+", params), cells
            assert int(params) % 2 == 0
    # The first block's norm has 32 channels: 64 parameters, shown as such.
    assert any(cells[col] == "64" for cells in rows)


# ------------------------------------------------------------------ 2 and 4. plurals, figures


def _figures(text: str) -> int:
    """Significant figures shown in '0.935', '11.0', '12.3 K'."""
    return len(re.sub(r"\D", "", text.split()[0]).lstrip("0"))


def test_bench_says_1_thread_and_shows_throughput_with_the_tables_3_figures(run_main, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    code, out, err = run_main("bench", "mobilenet-v2", "--batch", "1", "--threads", "1", "--min-time", "0.05",
                              "--min-iters", "3", "--warmup", "0", "--hardware", "xeon-8480plus",
                              "--malloc", "default")
    assert code == 0, err
    assert "1 thread," in out and "1 threads" not in out
    line = next(x for x in out.splitlines() if x.startswith("batch 1: p50"))
    shown = re.search(r", ([\d.]+(?: [KMG])?) items/s", line)
    assert shown is not None, line
    (row,) = _rows(out, " ok ")
    # One rule, three significant figures, in the progress line and in the table alike.
    assert shown[1] == row[7] and _figures(row[7]) <= 3, (line, row)


@pytest.mark.slow  # a real (quick) calibration
def test_calibration_title_says_1_thread(run_main, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    code, out, err = run_main("hardware", "calibrate", "--quick", "--threads", "1", "--no-save", "--device", "cpu")
    assert code == 0, err
    assert "— 1 thread, torch" in out and "1 threads" not in out


@pytest.mark.parametrize("saved, used", [
    ("1 thread", True),  # as written now
    ("1 threads", True),  # as profiles saved before the plural was fixed say it
    ("11 threads", False),  # another thread count: another machine as far as timings go
])
def test_full_profile_refines_the_cached_one_under_the_same_thread_count(tmp_path, monkeypatch, saved, used):
    import torch

    from modelmeter.hardware import Hardware
    from modelmeter.hardware.detect import cpu_name
    from modelmeter.hardware.local import cache_key, local_profile, save_cached
    from modelmeter.hardware.perfmodel import Peaks, fit
    from modelmeter.hardware.profile import save_local_profile

    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))

    def hw(name: str, flops: float, calibration: str) -> Hardware:
        return Hardware(id="local", name=name, vendor="Intel", kind="cpu", memory_bytes=2**33,
                        memory_bandwidth_bytes_per_s=20e9, peak_flops={"fp32": flops},
                        vector_flops={"fp32": 10e9}, tdp_w=None, year=None, source="calibrated",
                        sources={"calibration": calibration})

    model = fit([], Peaks(100e9, 10e9, 20e9), view_s=1e-6, module_call_s=2e-6,
                conditions={"threads": 1, "torch_version": torch.__version__, "device_name": cpu_name()})
    save_cached(cache_key(cpu_name(), 1, torch.__version__), hw(cpu_name(), 100e9, "short"), model, None)
    full = hw(f"{cpu_name()} ({saved})", 150e9,
              f"modelmeter hardware calibrate on today: torch {torch.__version__}, {saved}, device cpu")
    save_local_profile(full)
    got = local_profile(auto_calibrate=False, threads=1)
    assert got is not None
    assert got.hardware.peak_flops["fp32"] == (150e9 if used else 100e9)


# ------------------------------------------------------------------ 3. a warning's figures agree with it


@pytest.mark.parametrize("iqr", [0.1001, 0.1004, 0.1049, 0.12])
def test_noise_warning_shows_a_figure_beyond_its_threshold(iqr):
    from modelmeter.measure.timer import IQR_NOISE_RATIO, LatencyStats

    a = iqr / 2  # quartiles at 1 ± a around a median of 1: IQR / median = 2a
    stats = LatencyStats.from_samples([1 - a, 1 - a, 1.0, 1 + a, 1 + a])
    assert stats.noisy and stats.iqr_s / stats.median_s == pytest.approx(iqr)
    shown, limit = re.fullmatch(r"IQR is ([\d.]+)% of the median \(> ([\d.]+)%\)", stats.noise_reason).groups()
    assert float(limit) == IQR_NOISE_RATIO * 100
    assert float(shown) > float(limit), stats.noise_reason
    assert float(shown) == pytest.approx(iqr * 100, abs=0.06)


# ------------------------------------------------------------------ 5. no work, no bound


def test_flatten_with_no_work_is_not_called_compute_bound(run_main):
    code, out, err = run_main("roofline", "resnet50", "--hardware", "h100-sxm", "--depth", "3", "--json", "-")
    assert code == 0, err
    data = json.loads(out)
    modules = {m["path"]: m for m in data["roofline"]["modules"]}
    flatten = modules["classifier.0"]  # ResNet's head: Flatten, then Linear
    assert flatten["flops"] == 0 and flatten["bytes"] == 0 and flatten["latency_s"] == 0
    assert flatten["bound"] == "none"
    # Every module that does work still has a bound, and the schema knows each value.
    assert {m["bound"] for m in modules.values() if m["latency_s"] > 0} <= {"compute", "memory"}
    jsonschema = pytest.importorskip("jsonschema")
    from modelmeter.core.schema import load_schema

    jsonschema.Draft202012Validator(load_schema("report")).validate(data)

    code, out, err = run_main("roofline", "resnet50", "--hardware", "h100-sxm", "--depth", "3")
    assert code == 0, err
    (row,) = [cells for cells in _rows(out, "│     0 ") if cells[1] == "0"]
    # The bound column (then the bound's time and the GPU model's, both 0 s for no work).
    assert row[6] == "no work" and row[-2:] == ["0 s", "0 s"], row


# ------------------------------------------------------------------ 6. diff of two different models


def test_diff_of_two_different_models_says_so_and_still_diffs(run_main, tmp_path):
    a, b, a2 = (str(tmp_path / name) for name in ("a.json", "b.json", "a2.json"))
    for model, path in (("mobilenet-v2", a), ("resnet50", b), ("mobilenet-v2", a2)):
        code, _, err = run_main("count", model, "--json", path)
        assert code == 0, err
    code, out, err = run_main("diff", a, b)
    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "different models (mobilenet-v2 vs resnet50)" in notes[0], out
    assert re.search(r"params .* 3\.51 M .* 25\.6 M", out)  # the diff itself is still there

    code, out, err = run_main("diff", a, b, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["models"] == {"a": "mobilenet-v2", "b": "resnet50"} and data["same_model"] is False
    assert len(data["notes"]) == 1 and "different models" in data["notes"][0]
    assert {c["metric"] for c in data["changes"]} >= {"params", "flops"}

    code, out, err = run_main("diff", a, a2, "--json")  # two runs of one model: nothing to say
    assert code == 0, err
    data = json.loads(out)
    assert data["same_model"] is True and data["notes"] == []


def test_diff_of_a_file_that_is_no_report_names_an_option_report_has(run_main, tmp_path):
    other = tmp_path / "other.json"
    other.write_text('{"name": "package"}')
    code, _, err = run_main("diff", str(other), str(other))
    assert code == 2
    assert "modelmeter report MODEL --json FILE" in err and "--format" not in err


# ------------------------------------------------------------------ 8. hints name the command's own options


def _options(command: str) -> set[str]:
    import click

    from modelmeter.cli.main import cli

    cmd = cli.get_command(click.Context(cli), command)
    return {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("args", [
    ("compare", "resnet50", "--dtype", "fp32,int4", "--hardware", "h100-sxm"),
    ("report", "resnet50", "--dtype", "int4", "--hardware", "h100-sxm", "--no-measure"),
    ("roofline", "resnet50", "--dtype", "int4", "--hardware", "h100-sxm"),
])
def test_precision_hint_names_only_options_the_command_takes(run_main, args):
    code, _, err = run_main(*args)
    assert code == 2 and "no matmul peak for int4" in err, err
    outside_quotes = re.sub(r"`[^`]*`", "", err)  # `modelmeter roofline ...` may name roofline's options
    named = set(re.findall(r"--[a-z][a-z-]*", outside_quotes))
    assert named <= _options(args[0]), (named - _options(args[0]), err)
    # Each still says where weight-only int4 is to be had.
    assert "--weights int4" in err


# ------------------------------------------------------------------ 9. hardware list fits the terminal


@pytest.mark.parametrize("columns", [80, 100, 120])
def test_hardware_list_fits_the_terminal_and_never_splits_an_id_or_a_number(run_main, monkeypatch, tmp_path,
                                                                          columns):
    from rich.cells import cell_len

    from modelmeter.hardware import list_hardware

    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))  # no 'local' profile
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, err = run_main("hardware", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert all(cell_len(line.rstrip()) <= columns for line in lines), out
    ids = [hw.id for hw in list_hardware()]
    starts = [line.split()[0] for line in lines if line.strip()]
    assert all(starts.count(i) == 1 for i in ids), out  # each id whole, once, at a line start
    header = next(line for line in lines if line.startswith("id "))
    numbers_from = header.index(" GiB")
    body = lines[lines.index(header) + 2:]
    # A line that is no device's own is the name wrapping: nothing in the number columns.
    for line in body:
        if line.strip() and line.split()[0] not in ids and not line.strip().startswith(("GiB:", "`")):
            assert line[numbers_from:].strip() == "", line
    assert "fp16" in header and "int8" in header  # the precisions people look for stay
    if columns >= 100:
        assert "name" in header


# ------------------------------------------------------------------ 7. llm on this CPU: its fastest precision


def _save_local_cpu_profile(peaks: dict[str, float]) -> None:
    """A calibrated 'local' profile as `hardware calibrate` saves it, with these matmul peaks."""
    from modelmeter.hardware import Hardware
    from modelmeter.hardware.profile import save_local_profile

    save_local_profile(Hardware(
        id="local", name="Test CPU (1 thread)", vendor="Intel", kind="cpu", memory_bytes=2**34,
        memory_bandwidth_bytes_per_s=20e9, peak_flops=peaks, vector_flops={p: 10e9 for p in peaks},
        tdp_w=None, year=None, source="calibrated", sources={"calibration": "test profile"}))


@pytest.mark.parametrize("peaks, want, why", [
    # fp16 matmul 100x slower than fp32, as measured on a CPU without fp16 units.
    ({"fp32": 150e9, "fp16": 1.5e9, "fp64": 75e9}, "fp32", "fastest precision on this CPU"),
    pytest.param({"fp32": 150e9}, "fp32", "one matmul precision",  # the short calibration: fp32 alone
                 marks=pytest.mark.slow),
    ({"fp32": 150e9, "fp16": 150e9, "bf16": 900e9}, "bf16", "fastest precision on this CPU"),
])
def test_llm_on_the_local_cpu_profile_defaults_to_its_fastest_precision(run_main, monkeypatch, tmp_path,
                                                                        peaks, want, why):
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    _save_local_cpu_profile(peaks)
    path = tmp_path / "llm.json"
    code, out, err = run_main("llm", "gpt2", "--hardware", "local", "--prompt", "16", "--gen", "4",
                              "--json", str(path))
    assert code == 0, err
    assert f"precision {want}: " in out and why in out  # said in the terminal
    document = json.loads(path.read_text())
    jsonschema = pytest.importorskip("jsonschema")
    from modelmeter.core.schema import load_schema

    jsonschema.Draft202012Validator(load_schema("llm_document")).validate(document)
    s = document["llm"]
    assert s["settings"]["dtype"] == want and s["settings"]["weights"] == want
    assert why in s["settings"]["dtype_reason"]
    bytes_per_param = {"fp32": 4, "bf16": 2}[want]
    assert s["weight_bytes"] == bytes_per_param * s["params"]  # every weight stored at that precision


@pytest.mark.slow
def test_llm_keeps_an_asked_dtype_and_fp16_on_a_database_gpu(run_main, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    _save_local_cpu_profile({"fp32": 150e9, "fp16": 1.5e9})
    code, out, err = run_main("llm", "gpt2", "--hardware", "local", "--dtype", "fp16", "--prompt", "16",
                              "--gen", "4", "--json", "-")
    assert code == 0, err
    s = json.loads(out)["llm"]["settings"]
    assert s["dtype"] == "fp16" and "dtype_reason" not in s
    code, out, err = run_main("llm", "gpt2", "--hardware", "h100-sxm", "--prompt", "16", "--gen", "4",
                              "--json", "-")
    assert code == 0, err
    s = json.loads(out)["llm"]["settings"]
    assert s["dtype"] == "fp16" and "dtype_reason" not in s


@pytest.mark.parametrize("by", ["module", "op"])
def test_count_tables_fit_80_columns_by_leaving_columns_out(run_main, monkeypatch, by):
    # At 80 columns every number of `count resnet50` read "…" and the shape columns had no
    # width at all: the least-needed columns now give way (said in the caption), and what is
    # shown is whole.
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_main("count", *(["gpt2", "--by", "op"] if by == "op" else ["resnet50"]))
    assert code == 0, err
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    table = [line for line in lines if line.startswith(("│", "┃"))]
    assert table and not any("…" in line for line in table), [line for line in table if "…" in line][:3]
    flat = " ".join(out.split())  # the caption wraps
    assert "left out at this width" in flat and "(all in --json)" in flat
    assert ("4.09 G" if by == "module" else "10.9 G") in out  # resnet50's MACs; gpt2's addmm MACs


def test_models_at_80_columns_keeps_every_preset_name_whole(run_main, monkeypatch):
    # A name cut to 'qwen3-30b-a…' cannot be copied into the next command.
    from modelmeter.sources.resolve import preset_names

    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_main("models")
    assert code == 0, err
    names = {line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")}
    assert set(preset_names()) <= names, set(preset_names()) - names
    assert "…" not in out
