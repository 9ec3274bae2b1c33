"""Every device of `hardware list` against every command that takes --hardware.

A device entry that cannot serve a command (no matmul peak at the precision the
command would run in, no interconnect for several devices) is refused before
any work: exit 2, one line saying why, and no trace started. Seconds of tracing
(or a whole measurement) before "apple-m2-max-gpu has no matmul peak" was the
defect. A spy on the trace mode (the real one, still run) counts traces; for the
commands whose accepted runs take seconds (llm, plan), the spy stops the
run at its first trace, which is enough to show the check came first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelmeter.hardware import list_hardware
from modelmeter.trace.dispatch import TraceMode

TINY = """
import torch

def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8)), (torch.randn(2, 32),)
"""
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 256, "torch_dtype": "float32",
}
FAST = ("--min-time", "0.01", "--min-iters", "1", "--warmup", "0")
COMMANDS = {
    # run to the end: a tiny model makes each a fraction of a second
    "roofline": (("roofline", "mm_hw_tiny:build"), False),
    "report": (("report", "mm_hw_tiny:build", "--no-measure"), False),
    "compare": (("compare", "mm_hw_tiny:build", "--dtype", "fp32,bf16"), False),
    "bench": (("bench", "mm_hw_tiny:build", *FAST), False),
    # stopped at the first trace
    "llm": (("llm", "LLAMA", "--prompt", "16", "--gen", "4"), True),
    "plan": (("plan", "LLAMA", "--devices", "2", "--prompt", "16", "--gen", "4", "--limit", "2"), True),
}
DEVICES = [hw.id for hw in list_hardware()]


class _Traced(BaseException):
    """Raised by the spy to end a run at its first trace (not an Exception: no handler eats it)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hwcmd")
    (folder / "mm_hw_tiny.py").write_text(TINY)
    (folder / "llama").mkdir()
    (folder / "llama" / "config.json").write_text(json.dumps(TINY_LLAMA))
    return folder


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_device_is_served_or_refused_before_any_trace(run_main, models: Path, command: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(models))
    monkeypatch.setenv("MODELMETER_HOME", str(models / "home"))
    args, stop_at_trace = COMMANDS[command]
    args = tuple(str(models / "llama") if a == "LLAMA" else a for a in args)
    traces = []
    real_init = TraceMode.__init__

    def spy(self, *a, **k):
        traces.append(1)
        if stop_at_trace:
            raise _Traced
        real_init(self, *a, **k)

    monkeypatch.setattr(TraceMode, "__init__", spy)
    refused, late = {}, {}
    for device in DEVICES:
        traces.clear()
        try:
            code, out, err = run_main(*args, "--hardware", device)
        except _Traced:
            continue  # the checks passed: the run got as far as its first trace
        if code == 0:
            # Served: no part of the run fell over the device afterwards (bench's rows did).
            assert "no matmul peak" not in out + err, (device, out)
            continue
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (device, code, err)
        assert device in err, err
        (late if traces else refused)[device] = err.strip()
    assert late == {}, f"refused only after tracing: {late}"
    if command in ("roofline", "report", "llm"):
        # Apple's GPUs have no sourced matmul peak at all: nothing a roofline can use.
        assert "apple-m2-max-gpu" in refused and "no matmul peak" in refused["apple-m2-max-gpu"]


def test_the_reason_names_the_precision_and_what_the_device_has(run_main, models: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(models))
    code, _, err = run_main("roofline", "mm_hw_tiny:build", "--hardware", "tpu-v4")
    assert code == 2
    # The model's own precision (no --dtype): fp32, which the TPU lacks; bf16 it has.
    assert "tpu-v4 has no matmul peak for fp32" in err and "bf16" in err and "--dtype" in err
    code, _, err = run_main("roofline", "mm_hw_tiny:build", "--hardware", "apple-m2-max-gpu")
    assert code == 2 and "it has: none" in err and "hardware list" in err
    code, out, err = run_main("roofline", "mm_hw_tiny:build", "--hardware", "tpu-v4", "--dtype", "bf16")
    assert code == 0, err
