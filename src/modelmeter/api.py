"""The public facade (layer 5): one call per question a user asks.

`count` answers "how big and how much arithmetic"; later sections (memory,
roofline, bench, llm, report, compare) build on the same `Analysis`: one
trace, reused by every view, never a second pass for another number.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .core.attention import FLASH, attention_setting, check_attention
from .core.errors import UserInputError
from .core.events import Trace
from .core.precision import parse_precision
from .core.report import Report, count_sections, fallback_section
from .core.results import Counts
from .sources.base import LoadedModel

# Weight-only quantised formats have no torch dtype to run in; their
# activations and compute are traced in fp16, as such kernels run.
_QUANTISED_TRACE_DTYPE = "fp16"
# Formats that store one scale per group of weights, where a group size means something.
_GROUPED = ("int8", "int4", "nf4", "fp8")

F = TypeVar("F", bound=Callable[..., Any])


def _keeps_rng(fn: F) -> F:
    """Put torch's random state back after the call.

    Building a model on a real device (random init, random inputs) and a
    user's factory (which may seed) draw from the global generators: a caller
    who seeded before calling us must get the same numbers after. CPU always;
    CUDA devices when CUDA is already initialised (never initialised for this).
    """

    @functools.wraps(fn)
    def kept(*args: Any, **kwargs: Any) -> Any:
        import torch

        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda):
            return fn(*args, **kwargs)

    return kept  # type: ignore[return-value]


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
    notes: list[str] = field(default_factory=list)  # how an option applied, when not plainly
    attention: str | None = None  # the SDPA implementation asked for (None: the default, flash)


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
    device: str | None = None,
    name: str | None = None,
) -> LoadedModel:
    """Resolve a spec string (or None: the default model) or wrap a module.

    An option that cannot apply is an error, never ignored: `inputs`, `batch`,
    `seq` and `device` build a spec's model and inputs (device default: meta); a
    module is traced as given, on its example inputs.
    """
    for label, value in (("batch", batch), ("seq", seq)):
        if value is not None and value <= 0:
            raise UserInputError(f"--{label} must be a positive integer, got {value}")
    if model is None or isinstance(model, str):
        from .sources import resolve_model

        if example_inputs is not None:
            raise UserInputError("example_inputs go with a torch.nn.Module; a model spec builds its "
                                 "own inputs (give their shapes with inputs=[...] / --input)")
        loaded = resolve_model(model, inputs=inputs, batch=batch, seq=seq, device=device or "meta",
                               dtype=trace_dtype_for(dtype))
        check_build_options(loaded, batch=batch, seq=seq)
        if name is not None:
            loaded.name = name
        return loaded
    import torch

    if not isinstance(model, torch.nn.Module):
        raise UserInputError(f"expected a model spec string or a torch.nn.Module, got {type(model).__name__}")
    for label, value in (("inputs", inputs), ("batch", batch), ("seq", seq)):
        if value is not None:
            raise UserInputError(
                f"{label}={value!r} cannot apply to a torch.nn.Module: inputs, batch and seq build "
                "the inputs of a model spec; pass example_inputs of the shape you want")
    if device is not None:
        raise UserInputError(f"device={device!r} cannot apply to a torch.nn.Module: it is traced where "
                             "its parameters are; move it and its inputs with .to(...)")
    args, kwargs = _split_inputs(example_inputs)
    return LoadedModel(name=name or type(model).__name__, module=model, args=args, kwargs=kwargs,
                       kind="custom", source="module")


def check_build_options(loaded: LoadedModel, *, batch: int | None = None,
                        seq: int | None = None) -> None:
    """Raise when `batch` or `seq` did not shape the inputs a spec was built with."""
    from .benchsetup import leading_dim

    lead = leading_dim(loaded.args, loaded.kwargs)
    if batch is not None and lead is not None and lead != batch:
        raise UserInputError(
            f"--batch {batch} cannot apply to {loaded.name}: its example inputs fix batch {lead}; "
            "give the input shapes instead (--input / inputs=[...])")
    # Only modelmeter's own text inputs have a sequence dimension it knows (make_hf_inputs).
    if seq is not None and (loaded.source not in ("preset", "hf-folder") or loaded.kind == "vision"):
        raise UserInputError(
            f"--seq {seq} cannot apply to {loaded.name}: it sets the sequence length of text "
            "presets and transformers folders; give the input shapes instead (--input / inputs=[...])")


def _split_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    if example_inputs is None:
        raise UserInputError("a torch.nn.Module needs example_inputs (a tensor, a tuple, or a dict)")
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


@_keeps_rng
def analyse(
    model: Any = None,
    example_inputs: Any = None,
    *,
    dtype: str | None = None,
    group_size: int | None = None,
    inputs: list[str] | None = None,
    batch: int | None = None,
    seq: int | None = None,
    device: str | None = None,
    backward: bool = False,
    name: str | None = None,
    attention: str | None = None,
) -> Analysis:
    """Load, trace once, count. `backward=True` also traces the training step.
    `attention`: 'flash' (default) or 'math', the SDPA kernel assumed (trace/attention.py)."""
    attention = check_attention(attention)
    if dtype is not None:
        dtype = parse_precision(dtype).name
    if group_size is not None:
        if group_size <= 0:
            raise UserInputError(f"--group-size must be a positive integer, got {group_size}")
        if dtype not in _GROUPED:
            raise UserInputError(
                f"--group-size applies to block-quantised weights ({', '.join(_GROUPED)}), "
                f"which store one scale per group; {dtype or 'the traced precision'} stores none")
    loaded = load(model, example_inputs, inputs=inputs, batch=batch, seq=seq, dtype=dtype,
                  device=device, name=name)
    return analyse_loaded(loaded, dtype=dtype, group_size=group_size, backward=backward,
                          batch=batch, seq=seq, attention=attention)


def analyse_loaded(loaded: LoadedModel, *, dtype: str | None = None, group_size: int | None = None,
                   backward: bool = False, batch: int | None = None,
                   seq: int | None = None, attention: str | None = None) -> Analysis:
    """Trace and count a loaded model. `dtype` is a precision name (parsed)."""
    from .count import count_trace
    from .trace import trace_model

    trace = trace_model(loaded.module, loaded.args, loaded.kwargs, backward=backward,
                        attention=attention or FLASH)
    counts = count_trace(trace, precision=dtype, group_size=group_size)
    # A spec was built in the trace dtype of `dtype`; a module is traced as given.
    built = loaded.source != "module"
    analysis = Analysis(loaded, dtype, trace_dtype_for(dtype) if built else None, group_size, trace,
                        counts, batch, seq, attention=attention)
    traced = _traced_dtype(analysis)
    if dtype is not None and not built and trace_dtype_for(dtype) != traced:
        analysis.notes.append(
            f"dtype {dtype} applies to the parameter bytes only: the module was traced as given, in "
            f"{traced} (activation bytes, bytes moved); convert the module and its inputs "
            "(.to(dtype)) to trace it in that precision")
    return analysis


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
        "notes": list(analysis.notes),
        "attention": attention_setting(analysis.attention, analysis.trace.attention),
    }
    methods = {
        "params": "counted",
        "param_bytes": "counted",
        "macs": "counted",
        "flops": "counted",
        "bytes": "counted (unfused: each op reads its inputs and writes its outputs once)",
        "formulas": ("modelmeter's own formulas; PyTorch's flop_registry only as a fallback "
                     "for ops without one (listed in totals.fallback_ops)"),
    }
    _add_routing(settings, methods, analysis.counts)
    return Report(
        model={"name": loaded.name, "kind": loaded.kind, "source": loaded.source,
               "description": loaded.description, "build": loaded.build},
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
    """The precision the trace ran in, by its short name ('fp32', 'bf16'): that of the
    floating-point parameters, else of the floating-point inputs, else fp32."""
    for t in (*analysis.trace.parameters, *analysis.trace.inputs):
        dtype = t.dtype.replace("torch.", "")
        if dtype.startswith(("float", "bfloat")):
            return parse_precision(dtype).name
    return "fp32"


@_keeps_rng
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


@_keeps_rng
def roofline_analysis(model: Any = None, example_inputs: Any = None, *, hardware: str | None = None,
                      dtype: str | None = None, weights: str | None = None,
                      efficiency: float | str | None = None, depth: int | None = None,
                      activations: str | None = None,
                      **load_options: Any) -> tuple[Report, Any]:
    """(Report with a `roofline` section and per-module times, the RooflineResult).

    The device and precisions are checked before the trace, so a typo fails at once.
    `activations` ('int8'/'fp8'): the activation-quantisation what-if
    (analysis/quant_activations.py); the 16-bit precision around it is `dtype`, fp16 by default.
    """
    from .analysis.quant_activations import check_activations, default_weights
    from .analysis.roofline import check_precisions, merge_into_modules, roofline_section
    from .analysis.roofline import roofline as _roofline

    hw = resolve_hardware(hardware)
    act = check_activations(hw, activations)
    if act is not None:
        dtype = dtype or "fp16"
        weights = default_weights(act, weights)
    check_precisions(hw, dtype, weights)
    analysis = analyse(model, example_inputs, dtype=dtype, **load_options)
    inputs = sum(t.storage_nbytes for t in analysis.trace.inputs)
    result = _roofline(analysis.counts, hw, dtype=dtype, weights=weights, efficiency=efficiency,
                       input_bytes=inputs, activations=activations)
    report = count_report(analysis)
    report.roofline = roofline_section(result, depth)
    merge_into_modules(report, report.roofline)
    report.methods["roofline"] = report.roofline["method"]
    return report, result


def roofline(model: Any = None, example_inputs: Any = None, **options: Any) -> Report:
    """Predicted latency on a device (a roofline estimate), merged into the count report."""
    return roofline_analysis(model, example_inputs, **options)[0]


@_keeps_rng
def llm(model: Any, *, hardware: Any = None, prompt: int = 512, gen: int = 128,
        batches: tuple[int, ...] | list[int] = (1,), dtype: str = "fp16", weights: str | None = None,
        kv_dtype: str | None = None, max_batch: bool = False,
        trust_remote_code: bool = False, activations: str | None = None,
        attention: str | None = None) -> dict[str, Any]:
    """The LLM inference view (the report's `llm` section): prefill, decode, KV cache, fit.

    `hardware` is an id, a `Hardware`, or None for the calibrated 'local' profile.
    """
    from .analysis.llm import analyze_llm, llm_section

    hw = hardware if hardware is not None and not isinstance(hardware, str) else resolve_hardware(hardware)
    return llm_section(analyze_llm(model, hardware=hw, prompt=prompt, gen=gen, batches=tuple(batches),
                                   dtype=dtype, weights=weights, kv_dtype=kv_dtype,
                                   max_batch=max_batch, trust_remote_code=trust_remote_code,
                                   activations=activations,
                                   attention=check_attention(attention) or FLASH))


@_keeps_rng
def bench(model: Any = None, *, batches: list[int] | tuple[int, ...] | None = None,
          device: str = "cpu", dtype: str | None = None, hardware: str | None = None,
          energy: bool = False, meter: str | None = None, region: str | None = None,
          pue: float | None = None,
          min_time_s: float = 2.0, min_iters: int = 10, warmup_s: float = 0.5,
          inputs: list[str] | None = None, seq: int | None = None,
          malloc: str = "default") -> Report:
    """Measured latency, throughput, memory and energy per batch, beside the roofline prediction.

    `model` is a spec (as for `count`); the report holds the count sections of
    the first batch, its `roofline` when a device profile is known, and `measured`.
    `meter` (default 'auto'), `region` ('world') and `pue` (1.0) are energy options:
    giving one measures energy, as `energy=True` does.
    `malloc='default'` leaves the C allocator alone; 'retain' (the `bench`
    command's default) makes glibc keep freed memory for the rest of this process:
    steadier CPU timings (`measure/allocator.py` says why), but glibc cannot be
    put back afterwards, so a library call only does it when asked.
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
    energy = energy or meter is not None or region is not None or pue is not None
    meter, region, pue = meter or "auto", region or "world", 1.0 if pue is None else pue
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


@_keeps_rng
def memory(model: Any = None, example_inputs: Any = None, *, dtype: str | None = None,
           train: bool = False, optimizer: str = "adamw", master_fp32: bool = False,
           checkpoint: bool = False, **load_options: Any) -> Report:
    """Peak activation memory (inference; with `train`, saved-for-backward, the backward
    peak, backward FLOPs and the params + grads + optimizer + activations budget)."""
    from .analysis.memory import check_optimizer

    optimizer = check_optimizer(optimizer)
    for label, value in (("--checkpoint", checkpoint), ("--master-fp32", master_fp32)):
        if value and not train:
            raise UserInputError(f"{label} applies to the training step; add --train (train=True)")
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
        train_trace = trace_model(loaded.module, loaded.args, loaded.kwargs, backward=True,
                                  attention=analysis.attention or FLASH)
        backward_counts = count_trace(train_trace, phase="backward")
    precision = analysis.precision or _traced_dtype(analysis)
    sections = memory_sections(
        analysis.trace, train_trace, precision=precision, optimizer=optimizer,
        master_fp32=master_fp32, params=totals.params, trainable=totals.trainable_params,
        backward_counts=backward_counts, forward_counts=analysis.counts, checkpoint=checkpoint,
        # A quantised precision stores the weights in the weight-only layout the count used.
        param_bytes=totals.param_bytes if analysis.counts.quantization is not None else None,
    )
    report.totals["activations"] = sections["activations"]
    if analysis.trace.attention is not None:
        sections["activations"]["activations_by_attention"] = _by_attention(analysis, train_trace)
    for module in report.modules:
        module.update(sections["modules"].get(module["path"], {}))
    if "backward_flops" in sections:
        report.totals["backward_flops"] = sections["backward_flops"]
        report.totals["backward_macs"] = sections["backward_macs"]
        report.totals["backward_fallback_ops"] = fallback_section(backward_counts)
    if "training" in sections:
        report.training = sections["training"]
    report.methods["activations"] = ("counted: liveness of every storage in one eager trace "
                                     "(allocated when produced, freed when PyTorch released it)")

def _by_attention(analysis: Analysis, train_trace: Trace | None) -> dict[str, Any]:
    """Both attention kernels' activation figures: the traced one and the other, traced too."""
    from .analysis.memory import attention_figures
    from .core.attention import IMPLEMENTATIONS
    from .trace import trace_model

    loaded, traced = analysis.loaded, analysis.trace.attention
    out = {traced: {**attention_figures(analysis.trace, train_trace), "assumed": True}}
    for other in IMPLEMENTATIONS:
        if other != traced:
            inference = trace_model(loaded.module, loaded.args, loaded.kwargs, attention=other)
            train = (trace_model(loaded.module, loaded.args, loaded.kwargs, backward=True, attention=other)
                     if train_trace is not None else None)
            out[other] = {**attention_figures(inference, train), "assumed": False}
    return out


@_keeps_rng
def report(model: Any = None, example_inputs: Any = None, **options: Any) -> Report:
    """Every metric in one report: counts, memory, roofline (with a device profile) and,
    for small models on CPU, a short measurement. Options as `modelmeter report`."""
    from .reportsetup import build_full_report

    return build_full_report(model, example_inputs, **options)


@_keeps_rng
def compare(models: list[str], **options: Any) -> Any:
    """Several models (or settings of one) side by side, with ratios to the first."""
    from .reportsetup import build_comparison

    return build_comparison(models, **options)[1]
