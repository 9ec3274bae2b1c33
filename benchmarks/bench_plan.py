"""Benchmark: the planner against Megatron-LM's published per-GPU throughput.

Source: D. Narayanan, M. Shoeybi, J. Casper, P. LeGresley, M. Patwary, V. Korthikanti,
D. Vainbrand, P. Kashinkunti, J. Bernauer, B. Catanzaro, A. Phanishayee, M. Zaharia,
"Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM",
SC'21 (arXiv:2104.04473), Table 1: GPT models of 1.7 B to 1 T parameters, vocabulary
51,200, sequence 2,048, mixed precision, full activation recomputation, on DGX A100
80 GB nodes (8 GPUs, NVSwitch, 8 x 200 Gb/s HDR InfiniBand). Its TFLOP/s per GPU
counts F = 96 B s l h^2 (1 + s/6h + V/16lh) per iteration: the recomputed forward
included, i.e. our HFU x peak. The rows below are transcribed from that table.

What Table 1 does not print, each run's micro-batch, interleaving and data-parallel
implementation, comes from the scripts the authors published to reproduce it:
NVIDIA/Megatron-LM, examples/sc21/run_table_1.sh and CONFIG.sh (commit de7dc40f, 2021-08-10):
`--micro-batch-size`, `--num-layers-per-virtual-pipeline-stage` (the 76 B to 530 B runs use
the interleaved schedule: vp = layers per stage / that number), `--DDP-impl torch` for the
four runs without pipeline parallelism (PyTorch DDP reduces gradients during the last
micro-batch's backward; Megatron-LM's schedule disables the reduction for the others with
no_sync) and `local` for the rest (after the flush), `--fp16` (the same tensor peak as bf16
on A100), `--checkpoint-activations`.

Each row is predicted with that layout fixed (tp, pp, dp, global batch, micro-batch, vp;
recomputation on; ZeRO off, no sequence parallelism: neither existed in that release).

The model traced is the GPT of that release as it ran (`MEGATRON_GPT` below): the same
parameters and FLOPs as transformers' GPT-2 (the paper's F is matched exactly), but with
Megatron-LM 2021's kernels, one traced op each: apex's fused LayerNorm, unfused attention
(the s x s scores written, the fused scale-mask-softmax kernel, dropout on the
probabilities; flash attention came in 2022), fused bias-GeLU, CUDA's one-kernel dropout,
and the fp32 logits of its vocab-parallel cross-entropy. To keep the run short it is traced
with 2 blocks (on meta) and its second block's profile is repeated to the row's layer
count: the blocks are identical, so this is the profile a full trace gives.

What the time model then adds (no constant fitted to this table; each is printed):
matrix products at the matrix peak x MAMF (the measured max-achievable matmul fraction of
the device, the planner's default), every other op at HBM bandwidth (roofline, unfused);
tp all-reduces priced at the NVLink bandwidth NCCL's topology model assumes, none of the
communication overlapped (that release ran tp collectives synchronously and the dp
all-reduce after the pipeline flush); norms and residual adds whole on every tp rank;
bubble (p - 1) / (m vp) with m = batch / (dp x micro-batch); with PyTorch DDP the gradient
all-reduce hidden under the last backward as far as it fits there.

    python benchmarks/bench_plan.py            # matrix peak derated by MAMF (the planner's default)
    python benchmarks/bench_plan.py 0.67       # another derating
    python benchmarks/bench_plan.py --implied  # also: per row, the derating that would match it
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB, SEQ, PEAK_TFLOPS = 51200, 2048, 312.0  # A100 dense fp16/bf16 tensor peak
# (billions of parameters, heads, hidden, layers, tp, pp, GPUs, global batch, published TFLOP/s per GPU)
# from Table 1, then (micro-batch, model chunks per pipeline rank, DDP implementation) from
# run_table_1.sh.
TABLE_1 = [
    (1.7, 24, 2304, 24, 1, 1, 32, 512, 137, 16, 1, "torch"),
    (3.6, 32, 3072, 30, 2, 1, 64, 512, 138, 16, 1, "torch"),
    (7.5, 32, 4096, 36, 4, 1, 128, 512, 142, 16, 1, "torch"),
    (18.4, 48, 6144, 40, 8, 1, 256, 1024, 135, 8, 1, "torch"),
    (39.1, 64, 8192, 48, 8, 2, 512, 1536, 138, 4, 1, "local"),
    (76.1, 80, 10240, 60, 8, 4, 1024, 1792, 140, 2, 3, "local"),
    (145.6, 96, 12288, 80, 8, 8, 1536, 2304, 148, 2, 2, "local"),
    (310.1, 128, 16384, 96, 8, 16, 1920, 2160, 155, 1, 2, "local"),
    (529.6, 128, 20480, 105, 8, 35, 2520, 2520, 163, 1, 3, "local"),
    (1008.0, 160, 25600, 128, 8, 64, 3072, 3072, 163, 1, 1, "local"),
]


MEGATRON_GPT = """
import math

import torch
from torch import nn
from torch.nn import functional as F


def dropout(x, p=0.1):
    # torch's CUDA dropout is one kernel (aten.native_dropout: x in, output and a byte mask
    # out); on meta/CPU F.dropout decomposes into four ops, so call the kernel CUDA runs.
    return torch.ops.aten.native_dropout(x, p, True)[0]


class Layer(nn.Module):
    \"\"\"One GPT layer as Megatron-LM 2021 ran it: apex fused LayerNorm, QKV and output GEMMs,
    unfused attention (scores materialised: baddbmm, the fused scale-mask-softmax kernel,
    dropout, bmm; no flash attention in 2021), the fused bias-GeLU kernel, and
    bias-dropout-add (fused there; here the bias rides in the GEMM, then dropout + add).\"\"\"

    def __init__(self, h, heads):
        super().__init__()
        self.heads, self.hd = heads, h // heads
        self.input_layernorm = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.dense = nn.Linear(h, h)
        self.post_attention_layernorm = nn.LayerNorm(h)
        self.fc1 = nn.Linear(h, 4 * h)
        self.fc2 = nn.Linear(4 * h, h)

    def forward(self, x):
        b, s, h = x.shape
        q, k, v = self.qkv(self.input_layernorm(x)).view(b, s, self.heads, 3 * self.hd).split(self.hd, dim=-1)
        q, k, v = (t.permute(0, 2, 1, 3).reshape(b * self.heads, s, self.hd) for t in (q, k, v))
        scores = torch.bmm(q, k.transpose(1, 2))  # the 1/sqrt(d) scale is applied inside the softmax kernel
        probs = dropout(torch.softmax(scores, dim=-1))  # fused scale + causal mask + softmax: one kernel
        ctx = torch.bmm(probs, v).view(b, self.heads, s, self.hd).permute(0, 2, 1, 3).reshape(b, s, h)
        x = x + dropout(self.dense(ctx))
        y = self.fc2(F.gelu(self.fc1(self.post_attention_layernorm(x)), approximate="tanh"))
        return x + dropout(y)


class GPT(nn.Module):
    def __init__(self, vocab, seq, h, heads, layers):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, h)
        self.position_embeddings = nn.Embedding(seq, h)
        self.layers = nn.ModuleList(Layer(h, heads) for _ in range(layers))
        self.final_layernorm = nn.LayerNorm(h)

    def forward(self, input_ids, labels):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = dropout(self.word_embeddings(input_ids) + self.position_embeddings(pos))
        for layer in self.layers:
            x = layer(x)
        logits = F.linear(self.final_layernorm(x), self.word_embeddings.weight)  # tied output head
        # Megatron-LM's vocab-parallel cross-entropy takes the logits in fp32.
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
"""


def _megatron_gpt():
    """The module above, loaded once (the benchmark stays one file)."""
    import types

    mod = types.ModuleType("megatron_gpt_2021")
    exec(compile(MEGATRON_GPT, "megatron_gpt_2021", "exec"), mod.__dict__)
    return mod


@functools.cache
def _counted(hidden: int, heads: int) -> tuple:
    """The two-block GPT traced once (forward and backward) and counted: (trace, forward, backward)."""
    import torch

    from modelmeter.count import count_trace
    from modelmeter.trace import trace_model

    with torch.device("meta"):
        model = _megatron_gpt().GPT(VOCAB, SEQ, hidden, heads, 2).to(torch.bfloat16)
    ids = torch.zeros((1, SEQ), dtype=torch.long, device="meta")
    trace = trace_model(model, (), {"input_ids": ids, "labels": ids}, backward=True)
    return trace, count_trace(trace), count_trace(trace, phase="backward")


def profile_for(hidden: int, heads: int, layers: int, hw: object, eff: float) -> object:
    from modelmeter.analysis.plan_profile import build_profile

    trace, fwd, bwd = _counted(hidden, heads)
    profile = build_profile(trace, fwd, bwd, hw, model=f"gpt-{layers}x{hidden}", seq=SEQ, efficiency=eff,
                            config={"hidden_size": hidden, "num_attention_heads": heads})
    block = profile.blocks[-1]
    params = profile.first.params + profile.last.params + layers * block.params
    return dataclasses.replace(profile, blocks=(block,) * layers, params=params)


def predict(row: tuple, hw: object, net: object, eff: float) -> object:
    """The planner's best candidate for one Table 1 row with its layout fixed as it ran."""
    from modelmeter.analysis.plan import Fixed, TrainSettings, plan_training

    billions, heads, hidden, layers, tp, pp, gpus, batch, published, mb, vp, ddp = row
    profile = profile_for(hidden, heads, layers, hw, eff)
    settings = TrainSettings(global_batch=batch, optimizer="adamw", master_fp32=True, param_bytes=2,
                             overlap_grad_reduce=ddp == "torch")
    fixed = Fixed(tp=tp, pp=pp, dp=gpus // (tp * pp), ep=1, zero=0, sp=False, checkpoint=True,
                  micro_batch=mb, vp=vp)
    plan = plan_training(profile, settings, devices=gpus, nodes=gpus // 8, net=net, fixed=fixed)
    return plan.best or plan.candidates[0]


def implied_fraction(row: tuple, hw: object, net: object) -> float:
    """The matrix-peak derating at which the prediction equals the published figure (bisection:
    the predicted throughput grows with it); a diagnostic, never the planner's default."""
    low, high = 0.05, 1.0
    for _ in range(30):
        mid = (low + high) / 2
        if predict(row, hw, net, mid).hfu * PEAK_TFLOPS > row[8]:
            high = mid
        else:
            low = mid
    return (low + high) / 2


def main() -> None:
    from modelmeter.hardware import get_hardware, mamf_efficiency
    from modelmeter.hardware.interconnect import get_interconnect

    # The planner's default: the matrix peak derated by the measured max-achievable matmul
    # fraction (MAMF, 0.869 on A100); a number on the command line replaces it.
    args = [a for a in sys.argv[1:] if a != "--implied"]
    implied = "--implied" in sys.argv[1:]
    mamf = mamf_efficiency()["by_precision"]["bf16"]["a100-sxm-80gb"]["fraction_of_peak"]
    eff = float(args[0]) if args else mamf
    hw = get_hardware("a100-sxm-80gb")
    net = get_interconnect("a100-sxm-80gb")
    print("Megatron-LM (Narayanan et al. 2021) Table 1 vs modelmeter plan, a100-sxm-80gb, bf16, recomputation, "
          f"matrix peak x {eff:.3f}, NVLink at {net.intra.collective_bandwidth_bytes_per_s / 1e9:.0f} GB/s "
          f"(NCCL's model), {net.inter.bandwidth_bytes_per_s / 1e9:.0f} GB/s per GPU across nodes")
    print("step time shares: compute (without bubble), tp / pp / dp communication (dp: what is not hidden "
          "under the last backward), bubble, optimizer")
    print(f"{'params':>8} {'tp':>3} {'pp':>3} {'dp':>3} {'batch':>5} {'mb':>3} {'vp':>2} {'DDP':>5} "
          f"{'published':>9} {'predicted':>9} {'error':>7} {'MFU':>6} | {'compute':>7} {'tp':>6} {'pp':>6} "
          f"{'dp':>6} {'bubble':>6} {'optim':>6} {'memory':>8}" + (f" {'implied':>7}" if implied else ""))
    errors, fractions = [], []
    start = time.perf_counter()
    for row in TABLE_1:
        billions, heads, hidden, layers, tp, pp, gpus, batch, published, mb, vp, ddp = row
        dp = gpus // (tp * pp)
        best = predict(row, hw, net, eff)
        if implied:
            fractions.append(implied_fraction(row, hw, net))
        predicted = best.hfu * PEAK_TFLOPS
        error = (predicted - published) / published
        errors.append(abs(error))
        step = best.step_time_s
        comm = best.comm
        # What is left once communication, bubble and optimizer are taken out: the stages' compute.
        compute = step - sum(comm.values()) - best.bubble_time_s - best.optimizer_time_s
        # The bubble slots hold idle compute and idle communication alike; shares add to 100 %.
        shares = [compute, comm["tensor_parallel"], comm["pipeline"], comm["data_parallel"],
                  best.bubble_time_s, best.optimizer_time_s]
        print(f"{billions:7.1f}B {tp:>3} {pp:>3} {dp:>3} {batch:>5} {mb:>3} {vp:>2} {ddp:>5} "
              f"{published:>9.0f} {predicted:>9.1f} {error:>+7.1%} {best.mfu:>6.1%} | "
              + " ".join(f"{x / step:>{7 if i == 0 else 6}.1%}" for i, x in enumerate(shares))
              + f" {best.memory_per_device_bytes / 1e9:>6.1f}GB{'' if best.fits else ' (does not fit)'}"
              + (f" {fractions[-1]:>7.3f}" if implied else ""))
    print(f"median |error| {statistics.median(errors):.1%}, max {max(errors):.1%} "
          f"(goal: median within 15%); {time.perf_counter() - start:.0f} s")
    if implied:
        print(f"implied matrix-peak fraction per row (prediction = published): {min(fractions):.3f} to "
              f"{max(fractions):.3f}, median {statistics.median(fractions):.3f} (the MAMF default is {mamf:.3f})")


if __name__ == "__main__":
    main()
