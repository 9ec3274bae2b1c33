"""What a new user sees on a first run: units, defaults, assumptions said in words (CLI tests)."""

from __future__ import annotations

import json
import re

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


# ------------------------------------------------------------------ torchvision segmentation defaults

# torchvision's segmentation builders and what their DEFAULT weights publish: images resized to 520
# (SemanticSegmentation(resize_size=520)), the aux head on for FCN and DeepLabV3 (aux_loss=True).
_SEGMENTATION = [
    ("fcn_resnet50", True), ("fcn_resnet101", True), ("deeplabv3_resnet50", True),
    ("deeplabv3_resnet101", True), ("deeplabv3_mobilenet_v3_large", True),
    ("lraspp_mobilenet_v3_large", False),
]


@pytest.mark.parametrize(("name", "aux"), _SEGMENTATION)
def test_segmentation_defaults_table_is_torchvisions_published_520_with_aux(name: str, aux: bool) -> None:
    from modelmeter.sources.vision_defaults import torchvision_defaults

    d = torchvision_defaults(name)
    assert d is not None and d.image_size == 520
    assert d.build_kwargs.get("aux_loss", False) is aux
    assert "520" in d.source


@pytest.mark.parametrize("name", ["resnet50", "vit_b_16", "fasterrcnn_resnet50_fpn", "mobilenet_v3_large"])
def test_classification_models_are_not_in_the_segmentation_table(name: str) -> None:
    from modelmeter.sources.vision_defaults import torchvision_defaults

    assert torchvision_defaults(name) is None  # their weights publish a crop size themselves


def test_fcn_resnet50_is_traced_at_520_with_its_aux_head(run_main) -> None:
    pytest.importorskip("torchvision", reason="torchvision is optional and not installed here")
    code, out, err = run_main("count", "torchvision:fcn_resnet50", "--json", "-")
    assert code == 0, err
    data = json.loads(out)
    assert data["totals"]["params"] == 35_322_218  # torchvision's published num_params (aux head included)
    assert "520" in json.dumps(data["model"])


# ------------------------------------------------------------------ jargon said in words


def test_llm_footer_says_the_fit_in_words(run_main) -> None:
    code, out, err = run_main("llm", "gpt2", "--hardware", "h100-sxm", "--prompt", "16", "--gen", "4")
    assert code == 0, err
    assert "fit error" not in out and "e+00" not in out
    assert "traced steps" in out and "misses by at most" in out


def test_roofline_says_the_per_module_figure_in_words(run_main) -> None:
    code, out, err = run_main("roofline", "gpt2", "--hardware", "h100-sxm", "--seq", "8", "--depth", "0")
    assert code == 0, err
    assert "(seed)" not in out
    assert "each reads its weights and input, writes its output once" in out


def test_memory_train_shows_saved_for_backward_as_part_of_the_forward_peak(run_main) -> None:
    code, out, err = run_main("memory", "gpt2", "--train", "--seq", "16", "--depth", "0", "--json", "-")
    assert code == 0, err
    act = json.loads(out)["totals"]["activations"]
    assert act["saved_for_backward_bytes"] <= act["peak_train_forward_bytes"]  # what "of which" claims
    code, out, err = run_main("memory", "gpt2", "--train", "--seq", "16", "--depth", "0")
    assert code == 0, err
    peak, saved = out.index("peak activations, training forward"), out.index("of which kept for the backward pass")
    assert peak < saved


# ------------------------------------------------------------------ one thread default, said in the header


@pytest.fixture()
def torch_threads():
    """The CLI sets torch's threads for its process; put them back for the next test."""
    import torch

    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)


def test_thread_default_does_not_follow_the_load_and_is_in_the_header(run_main, monkeypatch,
                                                                      torch_threads) -> None:
    from modelmeter.hardware import local
    from modelmeter.hardware.detect import read_cpu_info

    cpu = read_cpu_info()
    physical = cpu.physical_cores or cpu.logical_cpus
    for load in (0.0, 50.0):  # a quiet machine, then every core busy: the same default
        monkeypatch.setattr(local, "system_load", lambda load=load: load)
        code, out, err = run_main("report", "mobilenet-v2", "--no-measure", "--depth", "0")
        assert code == 0, err
        assert torch_threads.get_num_threads() == physical
        assert re.search(rf"threads +{physical} \(default: this CPU's physical cores", out)


def test_threads_option_sets_the_count_and_says_so(run_main, torch_threads) -> None:
    code, out, err = run_main("report", "mobilenet-v2", "--no-measure", "--depth", "0", "--threads", "1")
    assert code == 0, err
    assert torch_threads.get_num_threads() == 1
    assert "1 (--threads)" in out


# ------------------------------------------------------------------ one unit of memory, and the runtime's headroom

# The headroom rule, from its sources: vLLM's default --gpu-memory-utilization 0.9 (10% left to the
# runtime), and a CUDA context of up to ~800 MB measured by PyTorch users (800 MiB floor).
_RESERVE, _CONTEXT = 0.10, 800 * 2**20


def _usable(device_bytes: float) -> float:
    return device_bytes - max(_RESERVE * device_bytes, _CONTEXT)


def test_llm_max_batch_fits_the_usable_memory_and_prints_one_unit(run_main) -> None:
    args = ("llm", "mistral-7b", "--hardware", "rtx-4090", "--max-batch", "--prompt", "128", "--gen", "16")
    code, out, err = run_main(*args, "--json", "-")
    assert code == 0, err
    s = json.loads(out)["llm"]
    device = s["hardware_detail"]["memory_bytes"]
    budget = s["memory_budget"]
    assert budget["device_bytes"] == device
    assert budget["usable_bytes"] == pytest.approx(_usable(device))
    assert budget["headroom_bytes"] == pytest.approx(device - _usable(device))
    assert all(b["memory_bytes"] <= budget["usable_bytes"] for b in s["batches"] if b["fits"])
    top = next(b for b in s["batches"] if b["batch"] == s["max_batch"])
    assert top["memory_bytes"] <= _usable(device)
    code, out, err = run_main(*args)
    assert code == 0, err
    footer = out[out.index("weights "):]
    assert "GiB" not in footer  # capacity and use in one unit
    assert f"{device / 1e9:.1f} GB" in footer and "usable" in footer and "CUDA context" in footer


def test_plan_train_fits_only_what_the_usable_memory_holds(run_main) -> None:
    code, out, err = run_main("plan", "llama3-8b", "--hardware", "h100-sxm", "--devices", "8", "--train",
                              "--json", "-")
    assert code == 0, err
    plan = json.loads(out)["plan"]
    budget = plan["memory_budget"]
    usable = _usable(budget["device_bytes"])
    assert budget["usable_bytes"] == pytest.approx(usable)
    fitting = [c for c in plan["candidates"] if c["fits"]]
    assert fitting and all(c["memory_per_device_bytes"] <= usable for c in fitting)
    assert all(c["memory_per_device_bytes"] > usable for c in plan["candidates"] if not c["fits"])
    code, out, err = run_main("plan", "llama3-8b", "--hardware", "h100-sxm", "--devices", "8", "--train")
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("memory per device"))
    assert f"{usable / 1e9:.1f} GB usable" in line and "GiB" not in line


# ------------------------------------------------------------------ progress on stderr for long work


def _stderr_is_a_terminal(monkeypatch) -> None:
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)


def test_plan_shows_its_steps_on_a_terminal_stderr_and_not_with_quiet(run_main, monkeypatch) -> None:
    args = ("plan", "llama3-8b", "--hardware", "h100-sxm", "--devices", "8", "--train")
    _stderr_is_a_terminal(monkeypatch)
    code, out, err = run_main(*args)
    assert code == 0, err
    assert "tracing forward and backward" in err or "planning the layouts of 8 devices" in err
    assert "planning" not in out and "tracing" not in out  # stdout keeps the plan alone
    code, out, err = run_main(*args, "--quiet")
    assert code == 0, err
    assert "tracing" not in err and "planning" not in err


def test_no_progress_when_stderr_is_not_a_terminal(run_main) -> None:
    code, out, err = run_main("llm", "gpt2", "--hardware", "h100-sxm", "--prompt", "16", "--gen", "4")
    assert code == 0, err
    assert "tracing" not in err  # a log or a pipe gets the figures, no spinner frames
