"""The public facade (layer 5): one call per question a user asks.

`count` answers "how big and how much arithmetic"; later sections (memory,
roofline, bench, llm, report, compare) build on the same `Analysis`: one
trace, reused by every view, never a second pass for another number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .core.errors import UserInputError
from .core.events import Trace
from .core.precision import parse_precision
from .core.report import Report, count_sections
from .core.results import Counts
from .sources.base import LoadedModel

# Weight-only quantised formats have no torch dtype to run in; their
# activations and compute are traced in fp16, as such kernels run.
_QUANTISED_TRACE_DTYPE = "fp16"


@dataclass
class Analysis:
    """A loaded model, its trace and counts: the shared input of every view."""

    loaded: LoadedModel
    precision: str | None  # the precision asked for (parameter bytes), None = as traced
    trace_dtype: str | None  # the precision the trace ran in
    group_size: int | None
    trace: Trace
    counts: Counts
    batch: int | None = None
    seq: int | None = None


def trace_dtype_for(precision: str | None) -> str | None:
    if precision is None:
        return None
    p = parse_precision(precision)
    if p.name in ("fp32", "fp64", "fp16", "bf16"):
        return p.name
    if p.name == "tf32":
        return "fp32"
    return _QUANTISED_TRACE_DTYPE


def load(
    model: Any = None,
    example_inputs: Any = None,
    *,
    inputs: list[str] | None = None,
    batch: int | None = None,
    seq: int | None = None,
    dtype: str | None = None,
    device: str = "meta",
    name: str | None = None,
) -> LoadedModel:
    """Resolve a spec string (or None: the default model) or wrap a module."""
    for label, value in (("batch", batch), ("seq", seq)):
        if value is not None and value <= 0:
            raise UserInputError(f"--{label} must be a positive integer, got {value}")
    if model is None or isinstance(model, str):
        from .sources import resolve_model

        return resolve_model(model, inputs=inputs, batch=batch, seq=seq, device=device,
                             dtype=trace_dtype_for(dtype))
    import torch

    if not isinstance(model, torch.nn.Module):
        raise UserInputError(f"expected a model spec string or a torch.nn.Module, got {type(model).__name__}")
    args, kwargs = _split_inputs(example_inputs)
    return LoadedModel(name=name or type(model).__name__, module=model, args=args, kwargs=kwargs,
                       kind="custom", source="module")


def _split_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    if example_inputs is None:
        raise UserInputError("a torch.nn.Module needs example_inputs (a tensor, a tuple, or a dict)")
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def analyse(
    model: Any = None,
    example_inputs: Any = None,
    *,
    dtype: str | None = None,
    group_size: int | None = None,
    inputs: list[str] | None = None,
    batch: int | None = None,
    seq: int | None = None,
    device: str = "meta",
    backward: bool = False,
    name: str | None = None,
) -> Analysis:
    """Load, trace once, count. `backward=True` also traces the training step."""
    from .count import count_trace
    from .trace import trace_model

    if dtype is not None:
        dtype = parse_precision(dtype).name
    if group_size is not None and group_size <= 0:
        raise UserInputError(f"--group-size must be a positive integer, got {group_size}")
    loaded = load(model, example_inputs, inputs=inputs, batch=batch, seq=seq, dtype=dtype,
                  device=device, name=name)
    trace = trace_model(loaded.module, loaded.args, loaded.kwargs, backward=backward)
    counts = count_trace(trace, precision=dtype, group_size=group_size)
    return Analysis(loaded, dtype, trace_dtype_for(dtype), group_size, trace, counts, batch, seq)


def count_report(analysis: Analysis) -> Report:
    totals, modules, uncounted = count_sections(analysis.counts)
    loaded = analysis.loaded
    settings = {
        "dtype": analysis.precision or _traced_dtype(analysis),
        "trace_dtype": analysis.trace_dtype or _traced_dtype(analysis),
        "group_size": analysis.group_size,
        "batch": analysis.batch,
        "seq": analysis.seq,
        "mode": analysis.trace.mode,
        "inputs": [{"shape": list(t.shape), "dtype": t.dtype} for t in analysis.trace.inputs],
    }
    methods = {
        "params": "counted",
        "param_bytes": "counted",
        "macs": "counted",
        "flops": "counted",
        "bytes": "counted (unfused: each op reads its inputs and writes its outputs once)",
    }
    _add_routing(settings, methods, analysis.counts)
    return Report(
        model={"name": loaded.name, "kind": loaded.kind, "source": loaded.source,
               "description": loaded.description},
        settings=settings, totals=totals, modules=modules, uncounted_ops=uncounted,
        methods=methods,
    )


def _add_routing(settings: dict[str, Any], methods: dict[str, str], counts: Counts) -> None:
    """Mixture-of-experts models: say how routed experts were costed (count/moe.py)."""
    if counts.routing is None:
        return
    settings["routing"] = counts.routing
    methods["active_params"] = ("counted: dense parts, shared experts, routers and top_k of each "
                                "routed expert group; MACs of routed experts do not depend on the "
                                "routing, the expert weights read do")


def _traced_dtype(analysis: Analysis) -> str:
    """The precision the parameters were traced in, by its short name ('fp32', 'bf16')."""
    for p in analysis.trace.parameters:
        if p.dtype.startswith(("float", "bfloat")):
            return parse_precision(p.dtype).name
    return "fp32"


def count(model: Any = None, example_inputs: Any = None, *, dtype: str | None = None,
          group_size: int | None = None, **load_options: Any) -> Report:
    """Parameters, parameter bytes at `dtype`, MACs/FLOPs and bytes, per module and in total."""
    return count_report(analyse(model, example_inputs, dtype=dtype, group_size=group_size,
                                **load_options))


def resolve_hardware(hw_id: str | None) -> Any:
    """The device for `hardware=`; without one the calibrated 'local' profile, else a clear error."""
    from .core.errors import UnknownHardwareError
    from .hardware import get_hardware, load_local_profile, local_profile_path

    if hw_id is not None:
        return get_hardware(hw_id)
    local = load_local_profile()
    if local is None:
        raise UnknownHardwareError(
            f"no --hardware given and no calibrated 'local' profile at {local_profile_path()}; "
            "pass --hardware ID (`modelmeter hardware list`) or run `modelmeter hardware calibrate`"
        )
    return local


def roofline_analysis(model: Any = None, example_inputs: Any = None, *, hardware: str | None = None,
                      dtype: str | None = None, weights: str | None = None,
                      efficiency: float | str | None = None, depth: int | None = None,
                      **load_options: Any) -> tuple[Report, Any]:
    """(Report with a `roofline` section and per-module times, the RooflineResult).

    The device and precisions are checked before the trace, so a typo fails at once.
    """
    from .analysis.roofline import check_precisions, merge_into_modules, roofline_section
    from .analysis.roofline import roofline as _roofline

    hw = resolve_hardware(hardware)
    check_precisions(hw, dtype, weights)
    analysis = analyse(model, example_inputs, dtype=dtype, **load_options)
    inputs = sum(t.storage_nbytes for t in analysis.trace.inputs)
    result = _roofline(analysis.counts, hw, dtype=dtype, weights=weights, efficiency=efficiency,
                       input_bytes=inputs)
    report = count_report(analysis)
    report.roofline = roofline_section(result, depth)
    merge_into_modules(report, report.roofline)
    report.methods["roofline"] = report.roofline["method"]
    return report, result


def roofline(model: Any = None, example_inputs: Any = None, **options: Any) -> Report:
    """Predicted latency on a device (a roofline estimate), merged into the count report."""
    return roofline_analysis(model, example_inputs, **options)[0]


def llm(model: Any, *, hardware: Any = None, prompt: int = 512, gen: int = 128,
        batches: tuple[int, ...] | list[int] = (1,), dtype: str = "fp16", weights: str | None = None,
        kv_dtype: str | None = None, max_batch: bool = False,
        trust_remote_code: bool = False) -> dict[str, Any]:
    """The LLM inference view (the report's `llm` section): prefill, decode, KV cache, fit.

    `hardware` is an id, a `Hardware`, or None for the calibrated 'local' profile.
    """
    from .analysis.llm import analyze_llm, llm_section

    hw = hardware if hardware is not None and not isinstance(hardware, str) else resolve_hardware(hardware)
    return llm_section(analyze_llm(model, hardware=hw, prompt=prompt, gen=gen, batches=tuple(batches),
                                   dtype=dtype, weights=weights, kv_dtype=kv_dtype,
                                   max_batch=max_batch, trust_remote_code=trust_remote_code))


def bench(model: Any = None, *, batches: list[int] | tuple[int, ...] | None = None,
          device: str = "cpu", dtype: str | None = None, hardware: str | None = None,
          energy: bool = False, meter: str = "auto", region: str = "world", pue: float = 1.0,
          min_time_s: float = 2.0, min_iters: int = 10, warmup_s: float = 0.5,
          inputs: list[str] | None = None, seq: int | None = None,
          malloc: str = "retain") -> Report:
    """Measured latency, throughput, memory and energy per batch, beside the roofline prediction.

    `model` is a spec (as for `count`); the report holds the count sections of
    the first batch, its `roofline` when a device profile is known, and `measured`.
    `malloc='retain'` makes glibc keep freed memory for the rest of this process
    (steadier CPU timings; `measure/allocator.py` says why); 'default' leaves it alone.
    """
    from .benchsetup import BenchBuilder, check_device, prediction_hardware
    from .measure.bench import measured_section, run_bench
    from .measure.carbon import carbon_intensity
    from .measure.energy import select_meter

    if model is not None and not isinstance(model, str):
        raise UserInputError("bench takes a model spec string (a preset, folder, pkg.module:factory…)")
    device = check_device(device)
    if dtype is not None:
        dtype = parse_precision(dtype).name
    hw, hw_note = prediction_hardware(hardware, device, dtype)
    builder = BenchBuilder(model, inputs, seq, dtype, device, hw)
    batch_list = list(batches) if batches else [builder.default_batch()]
    result = run_bench(builder.make_call, batch_list, device=device, predict=builder.predict,
                       energy=energy, meter=select_meter(meter, device) if energy else None,
                       region=carbon_intensity(region).region, pue=pue, min_time_s=min_time_s,
                       min_iters=min_iters, warmup_s=warmup_s, malloc=malloc,
                       conditions={"model": builder.name, "dtype": dtype or "fp32",
                                   "batches": batch_list})
    report = builder.report(result)
    report.measured = measured_section(result)
    report.measured["notes"] = ([hw_note] if hw_note else []) + builder.notes + report.measured["notes"]
    report.methods["measured"] = report.measured["method"]
    return report


def memory(model: Any = None, example_inputs: Any = None, *, dtype: str | None = None,
           train: bool = False, optimizer: str = "adamw", master_fp32: bool = False,
           checkpoint: bool = False, **load_options: Any) -> Report:
    """Peak activation memory (inference; with `train`, saved-for-backward, the backward
    peak, backward FLOPs and the params + grads + optimizer + activations budget)."""
    from .analysis.memory import check_optimizer

    optimizer = check_optimizer(optimizer)
    analysis = analyse(model, example_inputs, dtype=dtype, **load_options)
    report = count_report(analysis)
    add_memory_sections(report, analysis, train=train, optimizer=optimizer,
                        master_fp32=master_fp32, checkpoint=checkpoint)
    return report


def add_memory_sections(report: Report, analysis: Analysis, *, train: bool, optimizer: str,
                        master_fp32: bool = False, checkpoint: bool = False) -> None:
    """Merge activation memory (and, with `train`, the training step) into a count report."""
    from .analysis.memory import memory_sections
    from .count import count_trace
    from .trace import trace_model

    totals = analysis.counts.totals
    train_trace = backward_counts = None
    if train:
        if totals.trainable_params == 0:
            raise UserInputError("the model has no trainable parameters; --train needs some")
        loaded = analysis.loaded
        train_trace = trace_model(loaded.module, loaded.args, loaded.kwargs, backward=True)
        backward_counts = count_trace(train_trace, phase="backward")
    precision = analysis.precision or _traced_dtype(analysis)
    sections = memory_sections(
        analysis.trace, train_trace, precision=precision, optimizer=optimizer,
        master_fp32=master_fp32, params=totals.params, trainable=totals.trainable_params,
        backward_counts=backward_counts, forward_counts=analysis.counts, checkpoint=checkpoint,
    )
    report.totals["activations"] = sections["activations"]
    for module in report.modules:
        module.update(sections["modules"].get(module["path"], {}))
    if "backward_flops" in sections:
        report.totals["backward_flops"] = sections["backward_flops"]
        report.totals["backward_macs"] = sections["backward_macs"]
    if "training" in sections:
        report.training = sections["training"]
    report.methods["activations"] = ("counted: liveness of every storage in one eager trace "
                                     "(allocated when produced, freed when PyTorch released it)")

def report(model: Any = None, example_inputs: Any = None, **options: Any) -> Report:
    """Every metric in one report: counts, memory, roofline (with a device profile) and,
    for small models on CPU, a short measurement. Options as `modelmeter report`."""
    from .reportsetup import build_full_report

    return build_full_report(model, example_inputs, **options)


def compare(models: list[str], **options: Any) -> Any:
    """Several models (or settings of one) side by side, with ratios to the first."""
    from .reportsetup import build_comparison

    return build_comparison(models, **options)[1]
