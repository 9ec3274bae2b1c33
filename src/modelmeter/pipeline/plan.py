"""`plan`: model -> trace -> per-block profile -> the multi-device plan, as sections (layer 5).

One function, `plan`, validates the options (before any trace, so a typo
fails at once), traces what the plan needs and hands it to the pure planners:
`analysis.plan` for training (one traced training step at micro-batch 1)
and `analysis.plan_infer` for inference (the LLM view's prefill/decode traces).
It returns `Sections` (counts + `PlanSection`); `to_report()` is the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..core.errors import UserInputError
from ..core.precision import parse_precision
from ..hardware.gpumodel import gpu_model, has_gpu_model
from .model import Analysis, load
from .options import ModelOptions, PlanOptions
from .sections import CountSection, PlanSection, Sections

TRAIN_DTYPES = ("fp32", "fp16", "bf16")


def plan(model: Any, example_inputs: Any, options: PlanOptions,
         on_status: Callable[[str], None] | None = None) -> Sections:
    """Plan `model` with `options` (`PlanOptions`, checked when built; see `analysis/plan.py`);
    `on_status(text)` hears each step as it starts (the library never prints).

    A module (with `example_inputs`) is planned at its own precision.
    """
    from ..analysis.plan import Fixed, TrainSettings, check_fixed, plan_section
    from ..hardware import get_hardware
    from ..hardware.interconnect import get_interconnect

    o = options
    hw = get_hardware(o.hardware)
    nodes = o.nodes or 1
    if o.devices % nodes:
        raise UserInputError(f"--devices {o.devices} does not split evenly over --nodes {nodes}")
    if nodes > 1 or o.devices > 1:
        # --nodes given: that many devices per node; else the device's usual node size.
        per_node = o.devices // nodes if o.nodes is not None else None
        net = get_interconnect(hw.id, fabric=o.fabric, devices_per_node=per_node)
        if o.nodes is None and o.devices > net.devices_per_node:
            nodes = math.ceil(o.devices / net.devices_per_node)
    else:
        net = get_interconnect(hw.id, fabric=o.fabric) if o.fabric else None
    fixed = Fixed(tp=o.tp, pp=o.pp, dp=o.dp, ep=o.ep, zero=o.zero, micro_batch=o.micro_batch, sp=o.sp,
                  checkpoint=o.checkpoint, vp=o.vp if o.train else None)
    check_fixed(fixed, o.devices, net.devices_per_node if net else 1)
    if o.train:
        dtype = _training_dtype(model, o.dtype)
        if dtype not in TRAIN_DTYPES:
            raise UserInputError(f"--dtype {dtype}: training runs in {', '.join(TRAIN_DTYPES)}")
        # The GPU performance model prices GPU layouts unless a derating is asked for.
        gpu = gpu_model(hw) if o.efficiency == "auto" and has_gpu_model(hw) else None
        eff = None if gpu is not None else _efficiency(hw, dtype, o.efficiency)
        settings = TrainSettings(global_batch=o.global_batch or 8 * o.devices, optimizer=o.optimizer,
                                 master_fp32=o.master_fp32 is not False, param_bytes=parse_precision(dtype).bits / 8,
                                 overlap_grad_reduce=o.overlap_grad_reduce)
        return _plan_training(model, example_inputs, hw, net, settings, fixed, devices=o.devices, nodes=nodes,
                              seq=o.seq, dtype=dtype, efficiency=eff, limit=o.limit, name=o.name,
                              section=plan_section, gpu=gpu, status=on_status or _silent)
    if example_inputs is not None:
        raise UserInputError("inference planning traces its own prefill and decode inputs: drop example_inputs")
    return _plan_inference(model, hw, net, fixed, devices=o.devices, nodes=nodes, dtype=o.dtype or "fp16",
                           prompt=o.prompt, gen=o.gen, batch=o.batch, weights=o.weights, kv_dtype=o.kv_dtype,
                           objective=o.objective, limit=o.limit, status=on_status or _silent)


def _silent(_text: str) -> None:
    """No progress wanted (the library never prints; `on_status` is the caller's)."""


def _training_dtype(model: Any, dtype: str | None) -> str:
    """bf16 unless given; a module is traced as it is, so its own precision, and another
    `dtype` beside it is an error (converting it would change the caller's module)."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return parse_precision(dtype or "bf16").name
    from ..core.precision import precision_of_torch_dtype

    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    own = precision_of_torch_dtype(str(floats[0])).name if floats else None
    if dtype is None:
        return own or "bf16"
    wanted = parse_precision(dtype).name
    if own is not None and wanted != own:
        raise UserInputError(f"the module's parameters are {own} and a module is planned as it is traced: "
                             f"convert it to {wanted} first, or drop dtype={dtype!r}")
    return wanted


def _efficiency(hw: Any, dtype: str, efficiency: float | str | None) -> float | None:
    from ..hardware import mamf_efficiency

    if efficiency == "auto":
        row = mamf_efficiency()["by_precision"].get(dtype, {}).get(hw.id)
        return float(row["fraction_of_peak"]) if row else None
    if efficiency is None or efficiency == "none":
        return None
    if efficiency == "mamf":
        row = mamf_efficiency()["by_precision"].get(dtype, {}).get(hw.id)
        if not row:
            raise UserInputError(f"no measured MAMF efficiency for {hw.id} at {dtype}; pass a number in (0, 1]")
        return float(row["fraction_of_peak"])
    try:
        value = float(efficiency)
    except (TypeError, ValueError):
        value = -1.0
    if not 0 < value <= 1:
        raise UserInputError(f"--efficiency must be 'auto', 'mamf', 'none' or a number in (0, 1], got {efficiency!r}")
    return value


def _plan_training(model: Any, example_inputs: Any, hw: Any, net: Any, settings: Any, fixed: Any, *,
                   devices: int, nodes: int, seq: int | None, dtype: str, efficiency: float | None,
                   limit: int, name: str | None, section: Any, status: Callable[[str], None],
                   gpu: Any = None) -> Sections:
    from ..analysis.plan import plan_training
    from ..analysis.plan_profile import build_profile
    from ..count import count_trace
    from ..trace import trace_model

    status("building the model")
    if example_inputs is not None:
        loaded = load(ModelOptions(model, example_inputs=example_inputs, dtype=dtype, name=name))
    else:
        try:
            loaded = load(ModelOptions(model, batch=1, seq=seq or 2048, dtype=dtype, name=name))
        except UserInputError as exc:
            if seq is not None or "cannot apply" not in str(exc):
                raise
            loaded = load(ModelOptions(model, batch=1, dtype=dtype, name=name))  # not a text preset
    seq_used = _tokens_per_sample(loaded)
    status("tracing forward and backward")
    # Fused attention, as training kernels run it (flash): no L x L scores saved for backward.
    trace = trace_model(loaded.module, loaded.args, loaded.kwargs, backward=True, attention="flash")
    forward = count_trace(trace)
    if forward.totals.trainable_params == 0:
        raise UserInputError("the model has no trainable parameters; --train needs some")
    backward = count_trace(trace, phase="backward")
    status("profiling the blocks")
    profile = build_profile(trace, forward, backward, hw, model=loaded.name, seq=seq_used,
                            efficiency=efficiency, config=loaded.config, gpu=gpu)
    status(f"planning the layouts of {devices} devices")
    result = plan_training(profile, settings, devices=devices, nodes=nodes, net=net, fixed=fixed, limit=limit)
    analysis = Analysis(loaded, dtype, dtype, None, trace, forward, 1, seq_used)
    return Sections(CountSection.from_analysis(analysis), plan=PlanSection(_with_budget(section(result), hw)))


def _tokens_per_sample(loaded: Any) -> int:
    """Tokens per sample: the length of the first integer (token id) input of shape (1, S), else 1."""
    import torch

    for value in (*loaded.args, *loaded.kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() == 2 and not value.is_floating_point():
            if value.shape[0] != 1:
                raise UserInputError(f"plan traces one sample per step; {loaded.name}'s inputs have batch "
                                     f"{value.shape[0]}: give inputs of batch 1")
            return int(value.shape[1])
    return 1


def _plan_inference(model: Any, hw: Any, net: Any, fixed: Any, *, devices: int, nodes: int, dtype: str,
                    prompt: int, gen: int, batch: int, weights: str | None, kv_dtype: str | None,
                    objective: str, limit: int, status: Callable[[str], None]) -> Sections:
    from ..analysis.plan import plan_section
    from ..analysis.plan_infer import infer_candidate_dict, plan_inference
    from .llm_trace import measure_llm_costs

    if not isinstance(model, str):
        raise UserInputError("inference planning takes a decoder spec (a preset or a local folder)")
    for precision in (weights, kv_dtype):
        if precision:
            parse_precision(precision)
    hw.peak_flops_for(parse_precision(dtype).name, "matmul")
    status("tracing prefill and decode")
    costs = measure_llm_costs(model, prompt=prompt, gen=gen, dtype=dtype)
    status(f"planning the layouts of {devices} devices")
    result = plan_inference(costs, hw, devices=devices, nodes=nodes, net=net, batch=batch, weights=weights,
                            kv_dtype=kv_dtype, fixed=fixed, objective=objective, limit=limit,
                            gpu=gpu_model(hw) if has_gpu_model(hw) else None)
    # No module breakdown: the LLM view's traces are costed per step, not per module.
    counts = CountSection(
        model={"name": costs.model, "kind": "decoder", "source": "", "description": ""},
        settings={"dtype": costs.dtype, "prompt": prompt, "gen": gen, "batch": batch, "notes": []},
        totals={"params": costs.params}, modules=(), uncounted_ops=(), methods={})
    return Sections(counts, plan=PlanSection(_with_budget(plan_section(result, infer_candidate_dict), hw)))


def _with_budget(section: dict[str, Any], hw: Any) -> dict[str, Any]:
    """The plan section with `memory_budget`: the device memory, headroom and usable figure fits used."""
    from ..hardware.headroom import memory_budget

    budget = memory_budget(hw)
    return {**section, "memory_budget": budget.to_dict()} if budget is not None else section
