"""Benchmark: the planner against Megatron-LM's published per-GPU throughput.

Source: D. Narayanan, M. Shoeybi, J. Casper, P. LeGresley, M. Patwary, V. Korthikanti,
D. Vainbrand, P. Kashinkunti, J. Bernauer, B. Catanzaro, A. Phanishayee, M. Zaharia,
"Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM",
SC'21 (arXiv:2104.04473), Table 1: GPT models of 1.7 B to 1 T parameters, vocabulary
51,200, sequence 2,048, mixed precision, full activation recomputation, on DGX A100
80 GB nodes (8 GPUs, NVSwitch, 8 x 200 Gb/s HDR InfiniBand). Its TFLOP/s per GPU
counts F = 96 B s l h^2 (1 + s/6h + V/16lh) per iteration: the recomputed forward
included, i.e. our HFU x peak. The rows below are transcribed from that table.

Each row is predicted with its layout fixed (tp, pp, dp and the global batch from the
table; recomputation on; ZeRO off, no sequence parallelism: neither existed in that
release); the micro-batch, which Table 1 does not list, is searched (the paper tuned it).

To keep the run short the GPT model is traced with 2 blocks (on meta, through
transformers' GPT2LMHeadModel with the row's dimensions) and its second block's
profile is repeated to the row's layer count: GPT blocks are identical, so this is
the same profile a full trace gives (the embeddings and head are traced as they are).

    python benchmarks/bench_plan.py            # matrix peak derated by MAMF (the planner's default)
    python benchmarks/bench_plan.py 0.67       # another derating
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB, SEQ, PEAK_TFLOPS = 51200, 2048, 312.0  # A100 dense fp16/bf16 tensor peak
# (billions of parameters, heads, hidden, layers, tp, pp, GPUs, global batch, published TFLOP/s per GPU)
TABLE_1 = [
    (1.7, 24, 2304, 24, 1, 1, 32, 512, 137),
    (3.6, 32, 3072, 30, 2, 1, 64, 512, 138),
    (7.5, 32, 4096, 36, 4, 1, 128, 512, 142),
    (18.4, 48, 6144, 40, 8, 1, 256, 1024, 135),
    (39.1, 64, 8192, 48, 8, 2, 512, 1536, 138),
    (76.1, 80, 10240, 60, 8, 4, 1024, 1792, 140),
    (145.6, 96, 12288, 80, 8, 8, 1536, 2304, 148),
    (310.1, 128, 16384, 96, 8, 16, 1920, 2160, 155),
    (529.6, 128, 20480, 105, 8, 35, 2520, 2520, 163),
    (1008.0, 160, 25600, 128, 8, 64, 3072, 3072, 163),
]


def profile_for(hidden: int, heads: int, layers: int, hw: object, eff: float) -> object:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from modelmeter.analysis.plan_profile import build_profile
    from modelmeter.count import count_trace
    from modelmeter.trace import trace_model

    conf = GPT2Config(n_embd=hidden, n_layer=2, n_head=heads, vocab_size=VOCAB, n_positions=SEQ,
                      attn_implementation="sdpa")
    with torch.device("meta"):
        model = GPT2LMHeadModel(conf).to(torch.bfloat16)
    ids = torch.zeros((1, SEQ), dtype=torch.long, device="meta")
    # Fused attention, as training kernels run it (flash): no L x L scores saved for backward.
    trace = trace_model(model, (), {"input_ids": ids}, backward=True, attention="flash")
    fwd, bwd = count_trace(trace), count_trace(trace, phase="backward")
    profile = build_profile(trace, fwd, bwd, hw, model=f"gpt-{layers}x{hidden}", seq=SEQ, efficiency=eff,
                            config=conf.to_dict())
    block = profile.blocks[-1]
    params = profile.first.params + profile.last.params + layers * block.params
    return dataclasses.replace(profile, blocks=(block,) * layers, params=params)


def main() -> None:
    from modelmeter.analysis.plan import Fixed, TrainSettings, plan_training
    from modelmeter.hardware import get_hardware, mamf_efficiency
    from modelmeter.hardware.interconnect import get_interconnect

    # The planner's default: the matrix peak derated by the measured max-achievable matmul
    # fraction (MAMF, 0.869 on A100); a number on the command line replaces it.
    mamf = mamf_efficiency()["by_precision"]["bf16"]["a100-sxm-80gb"]["fraction_of_peak"]
    eff = float(sys.argv[1]) if len(sys.argv) > 1 else mamf
    hw = get_hardware("a100-sxm-80gb")
    net = get_interconnect("a100-sxm-80gb")
    print("Megatron-LM (Narayanan et al. 2021) Table 1 vs modelmeter plan, a100-sxm-80gb, bf16, recomputation, "
          f"matrix peak x {eff:.3f}")
    print(f"{'params':>8} {'layers':>6} {'hidden':>6} {'tp':>3} {'pp':>3} {'dp':>3} {'batch':>5} {'mb':>3} "
          f"{'published':>9} {'predicted':>9} {'error':>7} {'MFU':>6} {'bubble':>7} {'comm':>6} {'memory':>8}")
    errors = []
    start = time.perf_counter()
    for billions, heads, hidden, layers, tp, pp, gpus, batch, published in TABLE_1:
        dp = gpus // (tp * pp)
        profile = profile_for(hidden, heads, layers, hw, eff)
        settings = TrainSettings(global_batch=batch, optimizer="adamw", master_fp32=True, param_bytes=2)
        fixed = Fixed(tp=tp, pp=pp, dp=dp, ep=1, zero=0, sp=False, checkpoint=True)
        plan = plan_training(profile, settings, devices=gpus, nodes=gpus // 8, net=net, fixed=fixed)
        best = plan.best or plan.candidates[0]
        predicted = best.hfu * PEAK_TFLOPS
        error = (predicted - published) / published
        errors.append(abs(error))
        print(f"{billions:7.1f}B {layers:>6} {hidden:>6} {tp:>3} {pp:>3} {dp:>3} {batch:>5} "
              f"{best.layout.micro_batch:>3} {published:>9.0f} {predicted:>9.1f} {error:>+7.1%} {best.mfu:>6.1%} "
              f"{best.bubble_fraction:>7.1%} {best.comm_time_s / best.step_time_s:>6.1%} "
              f"{best.memory_per_device_bytes / 1e9:>6.1f}GB{'' if best.fits else ' (does not fit)'}")
    print(f"median |error| {statistics.median(errors):.1%}, max {max(errors):.1%} "
          f"(goal: median within 15%); {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
