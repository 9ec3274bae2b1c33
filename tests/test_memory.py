"""Activation memory and the training budget against closed forms, real tensors and the profiler."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from modelmeter import api
from modelmeter.analysis.memory import training_budget
from modelmeter.core.errors import UserInputError
from modelmeter.count.liveness import live_peak, saved_for_backward
from modelmeter.sources import resolve_model
from modelmeter.trace import trace_model

F32 = 4


def chain(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])  # ends with a Linear


WIDTHS = [64, 256, 32, 512, 16]
BATCH = 8


def test_linear_relu_chain_closed_form():
    net = chain(WIDTHS)
    x = torch.randn(BATCH, WIDTHS[0], device="meta")
    net = net.to_empty(device="meta")
    # Eager order of live activations: h1, r1 (h1 dies), h2, r2 (h2 dies), … each pair overlaps.
    outputs = []
    for w in WIDTHS[1:-1]:
        outputs += [w, w]
    outputs.append(WIDTHS[-1])
    expected_peak = max(a + b for a, b in zip(outputs, outputs[1:], strict=False)) * BATCH * F32
    assert live_peak(trace_model(net, (x,))).peak_bytes == expected_peak
    # Training: every Linear saves its input (the model input, then each ReLU output,
    # one storage each) and each ReLU saves its output: the same storages.
    saved = saved_for_backward(trace_model(net, (x,), backward=True)).total_bytes
    assert saved == (WIDTHS[0] + sum(WIDTHS[1:-1])) * BATCH * F32


class ScaledAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q * self.w, k, v)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_single_sdpa_saved_tensors_closed_form(device):
    b, h, length, s, e = 2, 4, 16, 24, 8
    q = torch.randn(b, h, length, e, device=device)
    k = torch.randn(b, h, s, e, device=device)
    v = torch.randn(b, h, s, e, device=device)
    module = ScaledAttention().to_empty(device=device)
    saved = saved_for_backward(trace_model(module, (q, k, v), backward=True)).total_bytes
    q_bytes, kv_bytes = b * h * length * e * F32, b * h * s * e * F32
    if device == "meta":
        # Math path, grad flowing to q only: mul saves q; Q·Kᵀ saves the scaled K;
        # softmax saves its L x S output; A·V saves V.
        expected = q_bytes + kv_bytes + b * h * length * s * F32 + kv_bytes
    else:
        # Fused CPU kernel: mul saves q; the kernel keeps q·w, K, V, its output and logsumexp.
        expected = q_bytes + q_bytes + 2 * kv_bytes + q_bytes + b * h * length * F32
    assert saved == expected


def test_conv_batchnorm_train_mode_saves_input_conv_output_and_statistics():
    c_in, c_out, size = 3, 16, 12
    block = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
    x = torch.randn(4, c_in, size, size)
    trace = trace_model(block, (x,), backward=True)
    saved = saved_for_backward(trace).total_bytes
    conv_out = 4 * c_out * size * size * F32
    # conv saves its input (weight excluded); batch norm saves its input and the
    # per-channel mean and inverse std it computed in train mode.
    assert saved == x.numel() * F32 + conv_out + 2 * c_out * F32


def _profiler_peak(step) -> int:
    """Allocator-level peak from the profiler's [memory] events while `step()` runs.

    The running sum of the allocator's signed [memory] records is read at the end
    of each top-level aten op (not nested in another aten op; the autograd engine's
    own spans are not ops): a kernel's scratch buffer (im2col, oneDNN workspace)
    allocated and freed inside one op is not a tensor any eager code can hold,
    and is not part of the activation figure.
    """
    step()  # warm-up: lazy initialisation allocates once
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = list(prof.profiler.kineto_results.events())
    memory = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    spans = sorted((e.start_ns(), e.end_ns()) for e in events if e.name().startswith("aten::"))
    ends, current_end = [], -1
    for start, end in spans:  # top-level ops: those not nested inside an earlier one
        if start >= current_end:
            ends.append(end)
            current_end = end
    peak = live = i = 0
    for end in ends:
        while i < len(memory) and memory[i][0] <= end:
            live += memory[i][1]
            i += 1
        peak = max(peak, live)
    return peak


def _inference_step(module: nn.Module, args: tuple, kwargs: dict):
    def step() -> None:
        with torch.no_grad():
            module.eval()(*args, **kwargs)
    return step


def _training_step(module: nn.Module, args: tuple, kwargs: dict):
    """What `trace_model(backward=True)` runs: train-mode forward, backward of the
    first float output's sum, gradients dropped (as zero_grad(set_to_none=True))."""
    def step() -> None:
        out = module.train()(*args, **kwargs)
        first = out if isinstance(out, torch.Tensor) else out.logits
        first.sum().backward()
        for p in module.parameters():
            p.grad = None
    return step


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


def tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    # Eager attention: with SDPA, real CPU tensors take the fused kernel (saves
    # O(L) logsumexp) while meta takes the math path (saves the L x S
    # probabilities); test_single_sdpa_saved_tensors_closed_form covers both.
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation="eager")
    return LlamaForCausalLM(config)


def _models():
    yield "linear-chain", chain(WIDTHS), (torch.randn(BATCH, WIDTHS[0]),), {}
    yield "small-cnn", SmallCNN(), (torch.randn(2, 3, 32, 32),), {}
    yield "tiny-llama", tiny_llama(), (), {"input_ids": torch.randint(0, 256, (2, 24))}
    loaded = resolve_model("mobilenet-v2", device="cpu")
    yield "mobilenet-v2", loaded.module, tuple(loaded.kwargs.values()), {}


def _on_meta(model: nn.Module, args: tuple, kwargs: dict) -> tuple[nn.Module, tuple, dict]:
    # to_empty gives every parameter a fresh storage: fine here, none of these models ties weights.
    return (copy.deepcopy(model).to_empty(device="meta"), tuple(a.to("meta") for a in args),
            {k: v.to("meta") for k, v in kwargs.items()})


@pytest.mark.parametrize("name", ["linear-chain", "small-cnn", pytest.param("tiny-llama", marks=pytest.mark.slow),
                                  pytest.param("mobilenet-v2", marks=pytest.mark.slow)])
def test_meta_equals_real_and_agrees_with_the_profiler(name):
    torch.manual_seed(0)
    model, args, kwargs = next((m, a, k) for n, m, a, k in _models() if n == name)
    model = model.eval()
    real = live_peak(trace_model(model, args, kwargs)).peak_bytes
    meta = live_peak(trace_model(*_on_meta(model, args, kwargs))).peak_bytes
    assert meta == real
    measured = _profiler_peak(_inference_step(model, args, kwargs))
    assert abs(real / measured - 1) < 0.05, (real, measured)
    if name == "mobilenet-v2":
        return  # inference only: its training step is the slowest part of this file
    # Training: saved tensors and the whole step's peak (forward + backward, gradients included).
    real_train = trace_model(model, args, kwargs, backward=True)
    meta_train = trace_model(*_on_meta(model, args, kwargs), backward=True)
    both = ("forward", "backward")
    assert saved_for_backward(meta_train) == saved_for_backward(real_train)
    step_peak = live_peak(real_train, both).peak_bytes
    assert live_peak(meta_train, both).peak_bytes == step_peak
    measured = _profiler_peak(_training_step(model, args, kwargs))
    assert abs(step_peak / measured - 1) < 0.05, (step_peak, measured)


def test_final_output_is_live_at_the_end():
    # The output is the only activation and outlives the trace: the peak is exactly its bytes.
    net = nn.Linear(4, 1000).to_empty(device="meta")
    peak = live_peak(trace_model(net, (torch.empty(3, 4, device="meta"),)))
    assert peak.peak_bytes == 3 * 1000 * F32
    assert peak.module == "" and peak.op == "aten.addmm.default"


def test_budget_arithmetic():
    b = training_budget(1000, 1000, "bf16", "adamw", activation_bytes=500, master_fp32=True)
    assert (b.param_bytes, b.grad_bytes, b.optimizer_bytes, b.master_weight_bytes) == (2000, 2000, 8000, 4000)
    assert b.total_bytes == 16_000 + 500  # ZeRO's 16 bytes per parameter + activations
    assert training_budget(10, 10, "fp32", "sgd", 0).optimizer_bytes == 0
    assert training_budget(10, 10, "fp32", "sgd-momentum", 0).optimizer_bytes == 40
    with pytest.raises(UserInputError):
        training_budget(10, 0, "fp32", "adam", 0)
    with pytest.raises(UserInputError):
        training_budget(10, 10, "fp32", "lion", 0)


@pytest.mark.slow
def test_llama3_8b_training_budget_on_meta():
    report = api.memory("llama3-8b", seq=4096, dtype="bf16", train=True, optimizer="adamw",
                        attention="math").to_dict()
    t = report["training"]
    params = 8_030_261_248
    assert t["param_bytes"] == 2 * params and t["grad_bytes"] == 2 * params
    assert t["optimizer_bytes"] == 8 * params
    # Korthikanti et al. 2022 (no recomputation, unfused attention): s·b·h·(34 + 5·a·s/h) bytes per
    # layer = 4096·4096·194 = 3.25 GB, x 32 layers = 104 GB of activations.
    assert 80e9 < t["activation_bytes"] < 120e9
    assert report["totals"]["backward_flops"] == pytest.approx(2 * report["totals"]["total_flops"], rel=0.1)
    for key in ("peak_inference_bytes", "peak_inference_total_bytes", "saved_for_backward_bytes",
                "peak_backward_bytes"):
        assert report["totals"]["activations"][key] > 0
    assert all("saved_bytes" in m for m in report["modules"])


def test_checkpointing_trades_saved_bytes_for_flops():
    report = api.memory("gpt2", seq=64, train=True, checkpoint=True, attention="math").to_dict()
    ck = report["training"]["checkpoint"]
    assert ck["blocks"] == 12
    assert ck["saved_bytes_with"] < ck["saved_bytes_without"]
    assert ck["extra_forward_flops"] > 0
    t = report["training"]
    assert ck["total_bytes_with"] == t["total_bytes"] + ck["saved_bytes_with"] - ck["saved_bytes_without"]
    assert "math form" in report["totals"]["activations"]["attention_path"]  # --attention math on meta


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelmeter.cli.main", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.slow
def test_cli_json_keys():
    proc = run("memory", "resnet50", "--batch", "2", "--train", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for key in ("param_bytes", "grad_bytes", "optimizer_bytes", "total_bytes"):
        assert report["training"][key] > 0


@pytest.mark.parametrize("args", [
    ("memory", "gpt2", "--seq", "0"),
    ("memory", "gpt2", "--batch", "-2"),
    ("memory", "gpt2", "--train", "--optimizer", "lion"),
    # Quantised weights are not trained directly: the budget counted int4 gradients (62 MB for gpt2).
    ("memory", "gpt2", "--seq", "16", "--train", "--dtype", "int4"),
    ("memory", "gpt2", "--seq", "16", "--train", "--dtype", "fp8"),
    # Options that cannot apply are errors, never ignored (--master-fp32 already was).
    ("memory", "gpt2", "--seq", "16", "--optimizer", "adamw"),
])
def test_cli_bad_input(run_main, args):
    code, _, err = run_main(*args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_cli_train_without_trainable_parameters(tmp_path):
    (tmp_path / "frozen.py").write_text(
        "import torch\n"
        "def build():\n"
        "    net = torch.nn.Linear(4, 4)\n"
        "    net.requires_grad_(False)\n"
        "    return net, torch.randn(2, 4)\n"
    )
    proc = run("memory", "frozen:build", "--train", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no trainable parameters" in proc.stderr
