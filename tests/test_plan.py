"""The multi-device planner: ZeRO closed forms, collective cost models, Megatron-LM's FLOPs
formula, the inference bounds, layouts, bad input — through the CLI on real models."""

from __future__ import annotations

import contextlib
import io
import json
import os
import textwrap

import pytest
import torch

from modelmeter.analysis.comm import (
    ALL_GATHER,
    ALL_REDUCE,
    ALL_TO_ALL,
    P2P,
    REDUCE_SCATTER,
    collective_time,
    make_group,
    ring_allreduce_closed_form,
)
from modelmeter.cli.main import main
from modelmeter.core.report import Report
from modelmeter.hardware import get_hardware
from modelmeter.hardware.interconnect import get_interconnect, interconnect_ids


def _run(*args: str, cwd=None) -> tuple[int, str, str]:
    """`modelmeter plan ARGS` in this process (the console script's own entry point)."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(["plan", *args])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(previous)
    return code, out.getvalue(), err.getvalue()


def _plan(*args: str, cwd=None) -> dict:
    code, out, err = _run(*args, "--json", "-", cwd=cwd)
    assert code == 0, err
    data = json.loads(out)
    assert Report.from_dict(data).to_dict() == data  # the plan section round-trips
    return data


def _fails(*args: str) -> str:
    code, out, err = _run(*args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------ ZeRO


@pytest.fixture(scope="module")
def llama8b_zero() -> dict:
    # Every ZeRO stage of the one layout (zero searched), with and without fp32 master weights.
    common = ["llama3-8b", "--hardware", "h100-sxm", "--devices", "8", "--train", "--tp", "1", "--pp", "1",
              "--dp", "8", "--micro-batch", "1", "--seq", "128", "--no-checkpoint"]
    return {"mixed": _plan(*common, "--master-fp32")}


def test_zero_model_states_match_the_zero_paper(llama8b_zero):
    data = llama8b_zero["mixed"]
    psi, n = data["totals"]["params"], 8
    assert psi == 8_030_261_248
    closed = {  # Rajbhandari et al. 2020, section 5: 2 + 2 + 12 bytes per parameter (K = 12)
        0: 2 * psi + 2 * psi + 12 * psi,
        1: 2 * psi + 2 * psi + 12 * psi / n,
        2: 2 * psi + (2 + 12) * psi / n,
        3: (2 + 2 + 12) * psi / n,
    }
    by_stage = {c["zero"]: c for c in data["plan"]["candidates"]}
    assert set(by_stage) == {0, 1, 2, 3}
    for stage, value in closed.items():
        c = by_stage[stage]
        assert c["model_states_bytes_per_device"] == pytest.approx(value, rel=1e-12)
        assert c["model_states_bytes_per_device"] == pytest.approx(
            c["weight_bytes_per_device"] + c["grad_bytes_per_device"] + c["optimizer_bytes_per_device"])
        assert c["memory_per_device_bytes"] == pytest.approx(
            c["model_states_bytes_per_device"] + c["activation_bytes_per_device"])
    assert by_stage[3]["model_states_bytes_per_device"] / 1e9 == pytest.approx(16.06, abs=0.005)
    # 16 Psi = 128 GB does not fit an 80 GB H100 at stage 0, and the reason names the optimizer.
    assert not by_stage[0]["fits"] and "optimizer states" in by_stage[0]["why_not"]
    assert all(by_stage[s]["fits"] for s in (1, 2, 3))
    assert data["plan"]["best"]["fits"] and data["plan"]["min_devices"] <= 8


def test_plan_candidates_carry_the_contract_keys(llama8b_zero):
    plan = llama8b_zero["mixed"]["plan"]
    keys = {"tp", "pp", "dp", "ep", "zero", "micro_batch", "memory_per_device_bytes",
            "model_states_bytes_per_device", "activation_bytes_per_device", "comm_time_s", "step_time_s",
            "tokens_per_s", "mfu", "hfu", "fits"}
    for c in plan["candidates"]:
        assert keys <= set(c)
        assert c["tp"] * c["pp"] * c["dp"] * c["ep"] == 8
    best = plan["best"]
    assert best == plan["candidates"][0]
    # tokens/s is the global batch's tokens over the step; MFU below 1 and HFU = MFU without recomputation.
    assert best["tokens_per_s"] == pytest.approx(plan["settings"]["global_batch"] * 128 / best["step_time_s"])
    assert 0 < best["mfu"] == best["hfu"] < 1
    # Whether each communication term overlaps compute, said per term: none does (Megatron-LM 2021).
    for c in plan["candidates"]:
        assert c["comm_overlapped"] == dict.fromkeys(c["comm_s"], False)


# ------------------------------------------------------------------ Megatron-LM's FLOPs formula


GPT = textwrap.dedent("""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    L, H, HEADS, V, S = 4, 256, 8, 512, 128

    def build():
        conf = GPT2Config(n_embd=H, n_layer=L, n_head=HEADS, vocab_size=V, n_positions=S,
                          attn_implementation="sdpa")
        model = GPT2LMHeadModel(conf)
        return model, {"input_ids": torch.zeros(1, S, dtype=torch.long)}
""")


@pytest.mark.slow
def test_hfu_is_megatron_lm_model_flops_with_recomputation(tmp_path):
    (tmp_path / "tinygpt.py").write_text(GPT)
    batch = 8
    data = _plan("tinygpt:build", "--hardware", "a100-sxm-80gb", "--devices", "4", "--train", "--tp", "2",
                 "--pp", "2", "--dp", "1", "--micro-batch", "2", "--global-batch", str(batch), "--checkpoint",
                 "--zero", "1", "--no-sp", cwd=tmp_path)
    c = data["plan"]["best"]
    L, h, V, s = 4, 256, 512, 128
    # Narayanan et al. 2021, eq. (3): F = 96 B s l h^2 (1 + s / 6h + V / 16 l h) per iteration
    # with full recomputation; the head is not recomputed (3 x 2 B s h V).
    megatron = 96 * batch * s * L * h**2 * (1 + s / (6 * h) + V / (16 * L * h))
    peak = get_hardware("a100-sxm-80gb").peak_flops_for("bf16")
    achieved = c["hfu"] * c["tp"] * c["pp"] * c["dp"] * peak * c["step_time_s"]
    assert achieved == pytest.approx(megatron, rel=1e-9)
    # MFU leaves the recomputed forward out: 3 x forward everywhere.
    assert c["mfu"] / c["hfu"] == pytest.approx(
        72 * (1 + s / (6 * h) + V / (12 * L * h)) / (96 * (1 + s / (6 * h) + V / (16 * L * h))), rel=1e-9)
    assert c["micro_batches"] == 4 and c["bubble_fraction"] == pytest.approx(1 / 4)  # (p - 1) / m
    # The bubble: p - 1 idle slots of the m + p - 1 the pipeline runs (everything but the
    # data-parallel reduction and the optimizer step, which follow the flush).
    slots = c["step_time_s"] - c["comm_s"]["data_parallel"] - c["optimizer_time_s"]
    assert c["bubble_time_s"] == pytest.approx(slots * 1 / (4 + 1), rel=1e-9)
    assert c["comm_s"]["tensor_parallel"] > 0 and c["comm_s"]["pipeline"] > 0



def test_interleaved_schedule_divides_the_bubble_and_multiplies_the_sends(tmp_path):
    # Megatron-LM's interleaved 1F1B (Narayanan et al. 2021, section 2.2.2): each pipeline rank
    # runs v model chunks, so the bubble is (p - 1) / (m v) and every micro-batch crosses v times
    # as many stage boundaries.
    (tmp_path / "tinygpt.py").write_text(GPT)
    common = ["tinygpt:build", "--hardware", "a100-sxm-80gb", "--devices", "4", "--train", "--tp", "2",
              "--pp", "2", "--dp", "1", "--micro-batch", "1", "--global-batch", "8", "--no-checkpoint",
              "--zero", "1", "--no-sp"]
    one_plan, two_plan = _plan(*common, cwd=tmp_path)["plan"], _plan(*common, "--vp", "2", cwd=tmp_path)["plan"]
    one, two = one_plan["best"], two_plan["best"]
    # The fewest devices that fit do not depend on the schedule (interleaving needs pp > 1).
    assert two_plan["min_devices"] == one_plan["min_devices"] == 1
    m, p, v = 8, 2, 2
    assert (one["virtual_stages"], two["virtual_stages"]) == (1, 2)
    assert one["bubble_fraction"] == pytest.approx((p - 1) / m)
    assert two["bubble_fraction"] == pytest.approx((p - 1) / (m * v))
    send = one["comm_s"]["pipeline"] / (m + p - 1)  # both sends of one slot
    slot_one = (one["step_time_s"] - one["comm_s"]["data_parallel"] - one["optimizer_time_s"]) / (m + p - 1)
    slot_two = (two["step_time_s"] - two["comm_s"]["data_parallel"] - two["optimizer_time_s"]) / (m + (p - 1) / v)
    assert slot_two == pytest.approx(slot_one + (v - 1) * send, rel=1e-9)
    assert two["comm_s"]["pipeline"] == pytest.approx((m + (p - 1) / v) * v * send, rel=1e-9)
    assert two["bubble_time_s"] == pytest.approx((p - 1) / v * slot_two, rel=1e-9)
    # Memory: the same weights; on the first rank 5 chunk-micro-batches in flight (half a stage
    # each, see the schedule test below) instead of 2 whole stages, the embeddings' chunk holding
    # up to 4: between 5/4 and 2 times the 1F1B activations.
    assert two["weight_bytes_per_device"] == one["weight_bytes_per_device"]
    assert one["worst_stage"] == two["worst_stage"] == 0
    assert 1.25 < two["activation_bytes_per_device"] / one["activation_bytes_per_device"] < 2


def test_interleaved_schedule_in_megatron_lm_order():
    # Hand-run Megatron-LM's order for p = 2 ranks, v = 2 chunks, m = 8 micro-batches. Forward k
    # runs chunk (k mod 4) // 2: micro-batches 0,1 on chunk 0, 0,1 on chunk 1, 2,3 on chunk 0...;
    # backward k the mirror chunk. Rank 0 warms up 2 (p - 1) + (v - 1) p = 4 forwards
    # (chunk 0, 0, 1, 1), then forward 4 (chunk 0) -> (3, 2), backward 0 (chunk 1) -> (3, 1),
    # forward 5 (chunk 0) -> (4, 1): the embeddings' chunk holds 4 micro-batches, not p = 2.
    from modelmeter.analysis.plan import interleaved_held

    first = interleaved_held(2, 0, 8, 2)
    assert first[:6] == ((1, 0), (2, 0), (2, 1), (2, 2), (3, 2), (4, 1))
    assert max(sum(h) for h in first) == 5 and max(h[0] for h in first) == 4
    # The last rank warms up (v - 1) p = 2 forwards on chunk 0; its last chunk, the head's,
    # never holds more than one micro-batch.
    last = interleaved_held(2, 1, 8, 2)
    assert max(sum(h) for h in last) == 3 and max(h[1] for h in last) == 1
    # m = p: every forward first.
    assert interleaved_held(2, 0, 2, 2)[-1] == (2, 2)


def test_overlapped_gradient_reduction_hides_under_the_last_backward(tmp_path):
    # PyTorch DDP (and Megatron-LM's --overlap-grad-reduce) reduce gradients bucket by bucket
    # while the last micro-batch's backward runs; what is longer than that backward stays exposed.
    (tmp_path / "tinygpt.py").write_text(GPT)
    common = ["tinygpt:build", "--hardware", "a100-sxm-80gb", "--devices", "16", "--nodes", "2",
              "--train", "--tp", "1", "--pp", "1", "--dp", "16", "--micro-batch", "1", "--global-batch",
              "32", "--no-checkpoint", "--zero", "0"]
    plain = _plan(*common, cwd=tmp_path)["plan"]["best"]
    hidden = _plan(*common, "--overlap-grad-reduce", cwd=tmp_path)["plan"]["best"]
    assert plain["comm_overlapped"]["data_parallel"] is False
    assert hidden["comm_overlapped"]["data_parallel"] is True
    assert plain["comm_hidden_s"]["data_parallel"] == 0
    total = plain["comm_s"]["data_parallel"]
    assert total > 0
    assert hidden["comm_s"]["data_parallel"] + hidden["comm_hidden_s"]["data_parallel"] == pytest.approx(total)
    assert hidden["comm_hidden_s"]["data_parallel"] > 0
    assert hidden["step_time_s"] == pytest.approx(plain["step_time_s"] - hidden["comm_hidden_s"]["data_parallel"])
    # The hidden part is at most one micro-batch's backward: m = 2 micro-batches of compute per step,
    # forward + backward each, the backward longer than the forward.
    per_microbatch = (plain["step_time_s"] - total - plain["optimizer_time_s"]) / 2
    assert hidden["comm_hidden_s"]["data_parallel"] < per_microbatch
    # With nothing to reduce (dp 1) the option is said to do nothing, not silently accepted.
    alone = _plan("tinygpt:build", "--hardware", "a100-sxm-80gb", "--devices", "1", "--train", "--global-batch",
                  "2", "--overlap-grad-reduce", cwd=tmp_path)["plan"]
    assert any("nothing" in n or "no gradient reduction" in n for n in alone["notes"]), alone["notes"]


@pytest.mark.slow
def test_recomputation_and_sequence_parallelism_lower_activations(tmp_path):
    (tmp_path / "tinygpt.py").write_text(GPT)
    page = tmp_path / "plan.html"
    data = _plan("tinygpt:build", "--hardware", "h100-sxm", "--devices", "2", "--train", "--tp", "2",
                 "--micro-batch", "1", "--global-batch", "4", "--zero", "0", "--limit", "100",
                 "--html", str(page), cwd=tmp_path)
    act = {(c["sequence_parallel"], c["checkpoint"]): c["activation_bytes_per_device"]
           for c in data["plan"]["candidates"]}
    assert set(act) == {(False, False), (True, False), (False, True), (True, True)}
    assert act[(False, True)] < act[(False, False)]
    assert act[(True, False)] < act[(False, False)]
    assert act[(True, True)] < act[(False, True)]
    # The HTML view: two inline charts (memory per device, step time per layout) and the table.
    text = page.read_text()
    assert text.count("<svg") == 2 and "Memory per device" in text and "Step time per layout" in text
    assert "http" not in text  # nothing fetched
    for c in data["plan"]["candidates"]:
        label = f"tp{c['tp']} pp{c['pp']} dp{c['dp']} zero{c['zero']} mb{c['micro_batch']}"
        assert label in text


def test_plan_from_python_is_the_cli_plan(tmp_path):
    import modelmeter

    (tmp_path / "tinygpt.py").write_text(GPT)
    layout = ["--tp", "2", "--pp", "2", "--dp", "1", "--micro-batch", "1", "--global-batch", "8", "--vp", "2",
              "--zero", "1", "--no-checkpoint", "--no-sp"]
    cli = _plan("tinygpt:build", "--hardware", "a100-sxm-80gb", "--devices", "4", "--train", *layout,
                cwd=tmp_path)["plan"]["best"]
    namespace: dict = {}
    exec(GPT, namespace)
    with torch.device("meta"):  # as the CLI builds a spec (CPU kernels keep some statistics in bf16)
        model, inputs = namespace["build"]()
    # A module is planned as it is traced: at its own precision (the CLI builds the spec at bf16).
    with pytest.raises(modelmeter.UserInputError, match="module's parameters are fp32"):
        modelmeter.plan(model, inputs, hardware="a100-sxm-80gb", train=True, dtype="bf16")
    model = model.to(torch.bfloat16)
    report = modelmeter.plan(model, inputs, hardware="a100-sxm-80gb", devices=4, train=True, tp=2, pp=2, dp=1,
                             micro_batch=1, global_batch=8, vp=2, zero=1, checkpoint=False, sp=False)
    best = report.to_dict()["plan"]["best"]
    assert best["virtual_stages"] == 2
    assert best["step_time_s"] == pytest.approx(cli["step_time_s"], rel=1e-12)
    assert best["memory_per_device_bytes"] == cli["memory_per_device_bytes"]


NORMS = textwrap.dedent("""
    import torch
    from torch import nn

    H, S = 256, 128


    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(H, elementwise_affine=False)

        def forward(self, x):
            return self.norm(x)


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))
            self.layers = nn.ModuleList(Block() for _ in range(4))

        def forward(self, x):
            x = x * self.scale
            for layer in self.layers:
                x = layer(x)
            return x


    def build():
        return Net(), (torch.zeros(1, S, H),)
""")


def test_tensor_parallelism_does_not_split_norms(tmp_path):
    # Blocks of LayerNorms alone: Megatron-LM's tensor parallelism splits matrix products and
    # attention heads, not the norms on the residual stream (every tp rank runs them whole);
    # sequence parallelism splits them along the sequence (Korthikanti et al. 2022, 4.2.2).
    (tmp_path / "norms.py").write_text(NORMS)
    # The roofline's linear scaling (--efficiency none): the GPU model's launch floor would
    # hide the split of these tiny kernels (tested on its own in test_gpu_model.py).
    common = ["norms:build", "--hardware", "a100-sxm-80gb", "--train", "--pp", "1", "--dp", "1",
              "--micro-batch", "1", "--global-batch", "2", "--zero", "0", "--no-checkpoint",
              "--efficiency", "none"]
    one = _plan(*common, "--devices", "1", "--tp", "1", cwd=tmp_path)["plan"]["best"]
    two = {sp: _plan(*common, "--devices", "2", "--tp", "2", f"--{'' if sp else 'no-'}sp",
                     cwd=tmp_path)["plan"]["best"] for sp in (False, True)}
    # (The optimizer step of the one scalar weight, a few picoseconds, is the only other term.)
    assert two[False]["compute_time_s"] == pytest.approx(one["compute_time_s"], rel=1e-4)
    assert two[True]["compute_time_s"] == pytest.approx(one["compute_time_s"] / 2, rel=1e-4)


LLAMA = textwrap.dedent("""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM


    def build():
        conf = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=128, max_position_embeddings=64)
        return LlamaForCausalLM(conf), {"input_ids": torch.zeros(1, 64, dtype=torch.long)}
""")


def test_a_llama_training_step_has_every_op_costed(tmp_path):
    # The rotary embedding slices q and k; autograd answers with aten.slice_backward (zeros,
    # then the gradient copied into the slice): data movement with zero FLOPs, not an op
    # "without a formula" (the note every llama plan used to carry).
    (tmp_path / "tinyllama_cfg.py").write_text(LLAMA)
    data = _plan("tinyllama_cfg:build", "--hardware", "h100-sxm", "--devices", "2", "--train", "--tp", "2",
                 "--micro-batch", "1", "--global-batch", "2", "--zero", "0", "--no-checkpoint", "--no-sp",
                 cwd=tmp_path)
    assert not [n for n in data["plan"]["notes"] if "without a formula" in n], data["plan"]["notes"]


# ------------------------------------------------------------------ inference


@pytest.mark.slow
def test_llama3_70b_inference_needs_two_h100s_and_tpot_bounds():
    data = _plan("llama3-70b", "--hardware", "h100-sxm", "--devices", "8", "--prompt", "128", "--gen", "16")
    plan = data["plan"]
    assert plan["min_devices"] >= 2  # 141 GB of fp16 weights on 80 GB devices
    by_layout = {(c["tp"], c["pp"], c["dp"]): c for c in plan["candidates"]}
    alone = by_layout[(1, 1, 8)]  # one device per replica: the weights alone overflow
    assert not alone["fits"] and "largest term: weights" in alone["why_not"]
    c = by_layout[(8, 1, 1)]
    assert c["fits"]
    hw = get_hardware("h100-sxm")
    weights = 2 * data["totals"]["params"]
    assert c["weight_bytes_per_device"] == pytest.approx(weights / 8, rel=1e-6)
    # The all-reduces: at least 2 per layer of 2 (n - 1)/n x hidden bytes over NVLink's 450 GB/s.
    net = get_interconnect("h100-sxm")
    all_reduces = 2 * 80 * ring_allreduce_closed_form(8192 * 2, 8, net.intra.bandwidth_bytes_per_s)
    assert c["comm_s"]["decode_step"] >= all_reduces > 0
    # TPOT >= weights / (8 x bandwidth) + the all-reduces; a decode step gathers one row of
    # the (untied) embedding table and reads every other weight.
    read = weights - 2 * 128256 * 8192
    assert c["tpot_s"] >= read / (8 * hw.memory_bandwidth_bytes_per_s) + c["comm_s"]["decode_step"]


def test_inference_sharding_keeps_norms_whole():
    # The LLM view's per-op costs of llama3-8b, sharded over tp = 4: every op of the RMSNorm
    # modules keeps its cost (each rank normalises the whole hidden state), the attention and
    # MLP projections (matrix products) cost a quarter.
    from modelmeter.analysis.plan_infer import shard_costs
    from modelmeter.pipeline.llm_trace import measure_llm_costs

    costs = measure_llm_costs("llama3-8b", prompt=16, gen=2, dtype="fp16")
    tp = shard_costs(costs, 4, 1, kv_heads=8)
    norms = [k for k in costs.prefill if k[0].endswith(("input_layernorm", "post_attention_layernorm"))]
    projections = [k for k in costs.prefill if k[0].endswith(("q_proj", "o_proj", "gate_proj", "down_proj"))]
    assert len(norms) >= 2 * 32 and len(projections) >= 4 * 32
    for k in norms:
        assert tp.prefill[k] == costs.prefill[k]
        assert tp.decode[k] == costs.decode[k]
    for k in projections:
        for a, b in zip(tp.prefill[k], costs.prefill[k], strict=True):
            assert a == pytest.approx(tuple(x / 4 for x in b))


@pytest.mark.slow
def test_deepseek_v3_training_plan_completes_with_expert_parallel_layouts():
    # 671 B parameters, 256 routed experts, 64 H200s on 8 nodes: the trace (on meta) and the
    # search of every layout finish (about 40 s on a shared 2-core machine), and layouts with
    # ep > 1 appear, paying the expert all-to-alls that ep = 1 layouts do not. Pure bf16 states
    # (--no-master-fp32, 12 B/param): with fp32 master weights (16 B/param, 10.7 TB for 671 B
    # parameters) no layout of 64 x 141 GB holds it, and the test is about the search.
    data = _plan("deepseek-v3", "--hardware", "h200-sxm", "--devices", "64", "--nodes", "8", "--train",
                 "--no-master-fp32", "--limit", "200")
    plan = data["plan"]
    assert plan["searched"] > 1000 and plan["best"] is not None
    with_ep = [c for c in plan["candidates"] if c["ep"] > 1]
    assert with_ep and any(c["fits"] for c in with_ep)
    assert all(c["comm_s"]["expert_parallel"] > 0 for c in with_ep)
    assert all(c["comm_s"]["expert_parallel"] == 0 for c in plan["candidates"] if c["ep"] == 1)
    for c in plan["candidates"]:
        assert c["tp"] * c["pp"] * c["dp"] * c["ep"] == 64 and c["tp"] <= 8


# ------------------------------------------------------------------ collectives


@pytest.mark.parametrize("device", interconnect_ids())
def test_collectives_approach_the_bandwidth_closed_forms(device):
    net = get_interconnect(device)
    big = 1e11  # bandwidth-bound: latency terms vanish
    for n in (2, 4, 8):
        if n > net.devices_per_node:
            continue
        g = make_group(n, 1, net)
        bw = net.intra.collective_bandwidth_bytes_per_s  # NCCL's modelled NVLink rate where known
        ring = ring_allreduce_closed_form(big, n, bw)
        assert collective_time(ALL_REDUCE, big, g) >= min(ring, 2 * big / bw) * (1 - 1e-12)
        assert collective_time(ALL_REDUCE, big, g) == pytest.approx(min(ring, 2 * big / bw), rel=1e-3)
        for coll in (ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL):
            assert collective_time(coll, big, g) == pytest.approx((n - 1) / n * big / bw, rel=1e-3)
        assert collective_time(P2P, big, g) == pytest.approx(big / bw, rel=1e-3)
    # One device: nothing to communicate; across nodes: the NIC share per device is the bottleneck.
    assert collective_time(ALL_REDUCE, big, make_group(1, 1, net)) == 0
    cross = make_group(2, net.devices_per_node, net)
    assert cross.nodes == 2
    assert collective_time(P2P, big, cross) == pytest.approx(big / net.inter.bandwidth_bytes_per_s, rel=1e-3)


def test_interconnect_conventions_are_per_direction():
    h100 = get_interconnect("h100-sxm")
    assert h100.intra.bandwidth_bytes_per_s == 450e9 and "900 GB/s" in h100.intra.quoted  # bidirectional
    assert get_interconnect("a100-sxm-80gb").intra.bandwidth_bytes_per_s == 300e9
    assert h100.inter.bandwidth_bytes_per_s == 50e9  # 8 x 400 Gb/s per 8 GPUs
    # Collectives run at what NCCL's topology model assumes: links x its per-link figure
    # (src/graph/topo.h: SM80_NVLINK_BW 20, SM90_NVLINK_BW 20.6 GB/s; A100 12 links, H100 18).
    assert get_interconnect("a100-sxm-80gb").intra.collective_bandwidth_bytes_per_s == pytest.approx(12 * 20e9)
    assert h100.intra.collective_bandwidth_bytes_per_s == pytest.approx(18 * 20.6e9)
    assert get_interconnect("mi300x").intra.collective_bandwidth_bytes_per_s == 448e9  # no NCCL figure
    assert all(v.startswith("[") for v in h100.sources.values())  # every figure cites a source


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("args, words", [
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "8", "--tp", "3"], "multiple of 3"),
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "8", "--train", "--zero", "5"], "--zero"),
    (["llama3-8b", "--hardware", "h100-sxm", "--zero", "1"], "add --train"),
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "16", "--tp", "16"], "node"),
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "3", "--nodes", "2"], "evenly"),
    (["llama3-8b", "--hardware", "nope-9000"], "unknown hardware"),
    (["llama3-8b", "--hardware", "tpu-v4", "--devices", "4"], "no interconnect"),
    (["llama3-8b", "--hardware", "h100-sxm", "--train", "--devices", "0"], "--devices"),
    (["llama3-8b", "--hardware", "h100-sxm", "--train", "--efficiency", "2"], "--efficiency"),
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "4", "--train", "--pp", "2", "--zero", "3"],
     "pipeline"),
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "4", "--train", "--vp", "2"], "--pp"),
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "4", "--train", "--pp", "1", "--vp", "2"], "--pp"),
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "4", "--train", "--pp", "4", "--vp", "3"],
     "32 blocks"),
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "4", "--train", "--pp", "2", "--vp", "0"], "--vp"),
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "4", "--pp", "2", "--vp", "2"], "add --train"),
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "4", "--overlap-grad-reduce"], "add --train"),
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "8", "--train", "--tp", "2", "--pp", "2", "--dp", "2",
      "--vp", "2", "--micro-batch", "1", "--global-batch", "6"], "divisible"),
    (["llama3-8b", "--hardware", "h100-sxm", "--devices", "8", "--train", "--ep", "2"], "no experts"),
])
def test_bad_input_is_one_line_exit_2(args, words):
    assert words in _fails(*args)




@pytest.mark.slow
def test_a_partly_hidden_reduction_says_what_still_adds_to_the_step():
    # ZeRO-3 on one node: the gradients' reduce-scatter outlasts the backward it runs under
    # and the weight all-gathers never overlap; "overlapped" alone read as "free".
    args = ["llama3-8b", "--hardware", "h100-sxm", "--devices", "8", "--train", "--dp", "8", "--zero", "3",
            "--micro-batch", "1", "--no-checkpoint", "--global-batch", "64", "--overlap-grad-reduce"]
    code, out, err = _run(*args)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("communication:"))
    best = _plan(*args)["plan"]["best"]
    exposed, hidden = best["comm_s"]["data_parallel"], best["comm_hidden_s"]["data_parallel"]
    assert exposed > 0 and hidden > 0 and best["comm_overlapped"]["data_parallel"] is True
    from modelmeter.core.units import format_seconds

    assert (f"data-parallel: {format_seconds(hidden)} of {format_seconds(hidden + exposed)} hidden, "
            f"{format_seconds(exposed)} adds to the step") in line, line



def test_a_model_without_a_sequence_plans_in_samples(tmp_path):
    # An image model's "sequence" is one sample: the header said "global batch 4 x seq 1" and the
    # throughput column "tokens/s" for what are images per second.
    page = tmp_path / "vit.html"
    code, out, err = _run("vit-base", "--hardware", "h100-sxm", "--devices", "2", "--train", "--global-batch", "4",
                          "--limit", "2", "--html", str(page))
    assert code == 0, err
    assert "x seq 1" not in out and "global batch 4 samples" in out
    assert "samples/s" in out and "tokens/s" not in out
    assert "samples/s" in page.read_text() and "tokens/s" not in page.read_text()


@pytest.mark.parametrize("option, value", [
    ("pp", "4"), ("vp", True), ("micro_batch", 1.0), ("tp", 2.0), ("overlap_grad_reduce", "no"),
    ("overlap_grad_reduce", 1), ("master_fp32", "yes"), ("checkpoint", 0), ("zero", True), ("zero", "1"),
])
def test_python_plan_options_are_type_checked(option, value):
    # The CLI's click types did this; from Python a string, float or truthy stand-in used to
    # reach the planner (a TypeError, or "virtual_stages": true in the JSON).
    import modelmeter

    extra = {"pp": 4} if option == "vp" else {}
    with pytest.raises(modelmeter.UserInputError, match=option):  # the field, as Python spells it
        modelmeter.plan("llama3-8b", hardware="h100-sxm", devices=8, train=True, **extra, **{option: value})


def test_divisors_scale_with_the_square_root():
    # --devices 10000000000 used to loop ten billion times before printing anything.
    from modelmeter.analysis.plan import _divisors

    for n in range(1, 400):
        assert _divisors(n) == [d for d in range(1, n + 1) if n % d == 0]
    assert len(_divisors(10**12)) == 13 * 13 and _divisors(10**12)[-1] == 10**12


def test_an_explicit_nodes_1_is_one_node():
    # --nodes 1 with more devices than the usual node: one node of that many, as asked
    # (it was silently replaced by 2 nodes of 8).
    data = _plan("tinyllama", "--hardware", "h100-sxm", "--devices", "16", "--nodes", "1", "--train",
                 "--tp", "16", "--global-batch", "16", "--limit", "1")["plan"]
    assert data["nodes"] == 1 and data["interconnect"]["devices_per_node"] == 16
    assert data["best"]["tp"] == 16


@pytest.mark.slow
def test_output_paths_are_checked_before_the_plan(tmp_path):
    # A bad --json folder is refused before the trace (as every other command does), and
    # --json and --html naming one file would have the JSON overwrite the page.
    page = tmp_path / "plan.html"
    err = _fails("llama3-8b", "--hardware", "h100-sxm", "--devices", "8", "--train",
                 "--json", str(tmp_path / "missing" / "x.json"), "--html", str(page))
    assert "does not exist" in err and not page.exists()
    err = _fails("llama3-8b", "--hardware", "h100-sxm", "--devices", "8", "--train",
                 "--json", str(page), "--html", str(page))
    assert "same file" in err and not page.exists()
