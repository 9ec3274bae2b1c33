"""`modelmeter count` as a user runs it: a real process, JSON out, one-line errors.

Message-only checks run `main()` in this process (the `run_main` fixture).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelmeter.cli.main", *args],
                          capture_output=True, text=True, timeout=300)


def count_json(*args: str) -> dict:
    proc = run("count", *args, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_llama3_8b_on_meta_exact_params_and_sizes_in_small_memory():
    code = (
        "import json, resource, sys\n"
        "from modelmeter.cli.main import main\n"
        "try:\n    main(['count', 'llama3-8b', '--dtype', 'fp16', '--json', '-'])\n"
        "finally:\n"
        "    sys.stderr.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["schema"] == "modelmeter.report/1"
    assert report["model"]["name"] == "llama3-8b"
    assert report["totals"]["params"] == 8_030_261_248
    assert report["totals"]["param_bytes"] == 16_060_522_496
    assert report["settings"]["dtype"] == "fp16"
    peak_rss_kib = int(proc.stderr.strip().splitlines()[-1])
    assert peak_rss_kib * 1024 < 2e9


@pytest.mark.slow
def test_int4_naive_figure_is_half_a_byte_per_parameter_and_scales_are_separate():
    # The seed's figure, every parameter at 4 bits, stays beside the weight-only layout
    # (tests/test_quant_layout.py checks param_bytes itself).
    plain = count_json("llama3-8b", "--dtype", "int4", "--seq", "8")
    assert plain["totals"]["param_bytes_naive"] == 8_030_261_248 / 2
    grouped = count_json("llama3-8b", "--dtype", "int4", "--group-size", "128", "--seq", "8")
    q = grouped["totals"]["quantization"]
    scales = q["param_scale_bytes_naive"]
    assert scales == -(-8_030_261_248 // 128) * 2
    assert grouped["totals"]["param_bytes_naive"] == 8_030_261_248 / 2 + scales
    assert grouped["totals"]["param_scale_bytes"] == q["scale_bytes"] < scales


@pytest.mark.slow
def test_json_contract_keys_and_module_order():
    report = count_json("gpt2", "--batch", "2", "--seq", "16", "--dtype", "bf16")
    totals = report["totals"]
    for key in ("params", "trainable_params", "buffers", "param_bytes", "macs", "flops",
                "other_flops", "bytes_read", "bytes_written"):
        assert isinstance(totals[key], (int, float)), key
    assert totals["flops"] == 2 * totals["macs"]
    assert totals["params"] == 124_439_808  # tied embeddings counted once
    modules = report["modules"]
    assert modules[0]["path"] == ""
    for m in modules:
        assert {"path", "type", "params", "macs", "flops", "other_flops", "bytes_read",
                "bytes_written"} <= set(m)
    assert isinstance(report["uncounted_ops"], list)
    # bf16 activations: 2 bytes per element
    assert report["settings"]["trace_dtype"] == "bf16"


@pytest.mark.slow
def test_json_to_file_and_table(tmp_path):
    target = tmp_path / "out.json"
    proc = run("count", "resnet50", "--input", "1x3x224x224", "--depth", "2", "--json", str(target))
    assert proc.returncode == 0, proc.stderr
    assert "encoder" in proc.stdout and "MACs" in proc.stdout
    assert json.loads(target.read_text())["totals"]["params"] == 25_557_032


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("count", "resnet5"), "resnet50"),
        (("count", "gpt2", "--dtype", "fp7"), "unknown precision"),
        # The model is built before the shape is found wrong: seconds, not milliseconds.
        pytest.param(("count", "resnet50", "--input", "1x4x224x224"), "channel", marks=pytest.mark.slow),
        (("count", "gpt2", "--batch", "0"), "batch"),
        (("count", "torchvision:resnet18"), "torchvision"),
        (("count", "nosuchpkg.models:build"), "nosuchpkg"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_main, args, needle):
    code, out, err = run_main(*args)  # in-process; the script itself: the test below
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert needle in lines[0].lower()


@pytest.mark.slow
def test_shape_that_does_not_fit_names_the_layer(tmp_path):
    # A real process: the console entry point's exit code and stderr, not just main()'s.
    (tmp_path / "badnet.py").write_text(
        "import torch\n"
        "def build():\n"
        "    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(5, 2))\n"
        "    return net, torch.randn(1, 8)\n"
    )
    proc = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "count", "badnet:build"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert "'2'" in proc.stderr and "Linear" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


MHA = """
import torch

def build():
    torch.manual_seed(0)
    x = torch.randn(10, 2, 64)  # (L, N, E): batch_first=False, PyTorch's default
    return torch.nn.MultiheadAttention(64, 4), (x, x, x)
"""


def test_multihead_attention_out_proj_gets_the_work_on_its_weight(run_main, tmp_path, monkeypatch):
    """nn.MultiheadAttention never calls out_proj: it hands out_proj.weight to F.linear. The
    product is out_proj's work all the same (closed forms, L=10, N=2, E=64, 4 heads)."""
    (tmp_path / "mm_mha.py").write_text(MHA)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run_main("count", "mm_mha:build", "--json", "-")
    assert code == 0, err
    data = json.loads(out)
    modules = {m["path"]: m for m in data["modules"]}
    L, N, E = 10, 2, 64
    in_proj, scores, values, out_proj = 3 * L * N * E * E, N * L * L * E, N * L * L * E, L * N * E * E
    assert modules["out_proj"]["macs"] == out_proj
    assert modules[""]["macs"] == data["totals"]["macs"] == in_proj + scores + values + out_proj
    # Its bias add is in the same addmm; the weight's bytes are read there too.
    assert modules["out_proj"]["bytes_read"] >= (E * E + E) * 4
