"""The public functions (layer 6): one call per question a user asks.

Each validates its arguments into the pipeline's frozen options and runs the
one path in `pipeline/run.py`: one trace, reused by every view, never a
second pass for another number. `count`, `memory`, `roofline`, `bench`, `plan`
and `report` return a `Report`; `llm` its `LLMSection`, `compare` a `Comparison`
(each with `to_dict()`). `analyse` is the lower-level entry: the loaded
model, its trace and its counts, for your own views.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .core.report import Report
from .pipeline.hygiene import keeps_rng

if TYPE_CHECKING:
    from .analysis.compare import Comparison
    from .pipeline.model import Analysis
    from .pipeline.sections import LLMSection

# `import modelmeter` stays cheap (no torch): the pipeline is imported by the first call.
# Every public function puts torch's random state back (`pipeline.hygiene`); none changes
# the C allocator unless asked (malloc='retain': glibc cannot be put back).

__all__ = ["analyse", "bench", "compare", "count", "llm", "memory", "plan", "report", "roofline"]


@keeps_rng
def analyse(model: Any = None, example_inputs: Any = None, *, dtype: str | None = None,
            group_size: int | None = None, inputs: Sequence[str] | None = None, batch: int | None = None,
            seq: int | None = None, device: str | None = None, backward: bool = False, name: str | None = None,
            trust_remote_code: bool = False, attention: str | None = None) -> Analysis:
    """Load, trace once, count: the `Analysis` every view is computed from.

    `model`: a spec string (preset, folder with config.json, `pkg.module:factory`,
    `.pt2`), a `torch.nn.Module` with `example_inputs`, or None (the default
    model). `inputs`, `batch`, `seq` and `device` ('meta', the default, or
    'cpu') build a spec; beside a module they are errors (it is traced as
    given). `backward=True` also traces the training step. `attention`: the
    kernel every scaled_dot_product_attention call is traced as, 'flash' (the
    default: fused, no L x S scores kept) or 'math' (unfused: scores kept).
    """
    from .pipeline.model import analyse as _analyse
    from .pipeline.options import ModelOptions

    return _analyse(ModelOptions(model, example_inputs=example_inputs, inputs=_tuple(inputs), batch=batch, seq=seq,
                                 dtype=dtype, device=device, group_size=group_size,
                                 trust_remote_code=trust_remote_code, name=name, attention=attention), backward=backward)


@keeps_rng
def count(model: Any = None, example_inputs: Any = None, *, dtype: str | None = None,
          group_size: int | None = None, inputs: Sequence[str] | None = None, batch: int | None = None,
          seq: int | None = None, device: str | None = None, name: str | None = None,
          trust_remote_code: bool = False, attention: str | None = None) -> Report:
    """Parameters, parameter bytes at `dtype`, MACs/FLOPs and bytes, per module and in total.

    `attention`: 'flash' (default) or 'math', the SDPA kernel assumed (as for `analyse`):
    MACs are the same, bytes moved differ.

    A path to an `.onnx` file counts that ONNX graph (shape inference, per-node formulas).
    """
    from .pipeline import run
    from .pipeline.options import ModelOptions

    return run.count(ModelOptions(model, example_inputs=example_inputs, inputs=_tuple(inputs), batch=batch, seq=seq,
                                  dtype=dtype, device=device, group_size=group_size,
                                  trust_remote_code=trust_remote_code, name=name, attention=attention)).to_report()


@keeps_rng
def memory(model: Any = None, example_inputs: Any = None, *, dtype: str | None = None,
           train: bool = False, optimizer: str | None = None, master_fp32: bool | None = None,
           checkpoint: bool = False, inputs: Sequence[str] | None = None, batch: int | None = None,
           seq: int | None = None, device: str | None = None, name: str | None = None,
           trust_remote_code: bool = False, attention: str | None = None,
           dropout: bool = True) -> Report:
    """Peak activation memory (inference; with `train`, saved-for-backward, the backward
    peak, backward FLOPs and the params + grads + optimizer + activations budget).

    The training step is traced in train mode, dropout active (its masks are saved:
    `training.dropout` says how many); `dropout=False` traces it with dropout off.

    `attention`: the SDPA kernel assumed, 'flash' (default) or 'math'; the other one is
    traced too and reported beside it (`totals.activations.activations_by_attention`).
    """
    from .pipeline import run
    from .pipeline.options import MemoryOptions, ModelOptions

    options = MemoryOptions(train, optimizer, master_fp32, checkpoint, dropout=dropout)
    model_options = ModelOptions(model, example_inputs=example_inputs, inputs=_tuple(inputs), batch=batch, seq=seq,
                                 dtype=dtype, device=device, trust_remote_code=trust_remote_code, name=name, attention=attention)
    return run.memory(model_options, options).to_report()


@keeps_rng
def roofline(model: Any = None, example_inputs: Any = None, *, hardware: Any = None,
             dtype: str | None = None, weights: str | None = None, efficiency: float | str | None = None,
             depth: int | None = None, inputs: Sequence[str] | None = None, batch: int | None = None,
             seq: int | None = None, name: str | None = None, trust_remote_code: bool = False,
             activations: str | None = None, attention: str | None = None) -> Report:
    """Predicted latency on a device (a roofline estimate), with per-module times.

    `hardware`: an id (`modelmeter hardware list`), a `Hardware`, or None for
    the calibrated 'local' profile. `depth` limits the roofline's module rows.
    `activations` ('int8' or 'fp8'): the activation-quantisation what-if (W8A8,
    W4A8 with weights='int4', fp8): matrix products at the device's int8/fp8
    peak, activation bytes at that width; `dtype` (fp16 by default) is the
    precision around them. `attention`: 'flash' (default) or 'math'.
    """
    from .pipeline import run
    from .pipeline.options import ModelOptions, RooflineOptions

    options = RooflineOptions(hardware, weights, efficiency, depth, activations)
    model_options = ModelOptions(model, example_inputs=example_inputs, inputs=_tuple(inputs), batch=batch, seq=seq,
                                 dtype=dtype, trust_remote_code=trust_remote_code, name=name, attention=attention)
    return run.roofline(model_options, options).to_report()


@keeps_rng
def bench(model: str | None = None, *, batches: Sequence[int] | None = None, device: str = "cpu",
          dtype: str | None = None, hardware: str | None = None, energy: bool = False,
          meter: str | None = None, region: str | None = None, pue: float | str | None = None,
          min_time_s: float = 2.0, min_iters: int = 10, warmup_s: float = 0.5,
          inputs: Sequence[str] | None = None, seq: int | None = None, malloc: str = "default",
          backends: Sequence[str] | None = None,
          on_progress: Callable[[int, str, int, float], None] | None = None) -> Report:
    """Measured latency, throughput, memory and energy per batch, beside the roofline prediction.

    `model` is a spec (as for `count`); the report holds the count sections of
    the first batch, its `roofline` when a device profile is known, and `measured`.
    `meter` (default 'auto'), `region` ('world') and `pue` (1.0) are energy options:
    giving one measures energy, as `energy=True` does.
    `malloc='default'` leaves the C allocator alone; 'retain' (the `bench`
    command's default) makes glibc keep freed memory for the rest of this process:
    steadier CPU timings (`measure/allocator.py` says why), but glibc cannot be
    put back afterwards, so a library call only does it when asked.
    `backends` (e.g. ['compile', 'onnxruntime']) also times the model on those
    backends beside eager: `measured.backends`, with `speedup_vs_eager` per batch.
    `on_progress(batch, phase, calls, elapsed_s)` is called while each batch is timed.
    """
    from .pipeline import run
    from .pipeline.options import BenchOptions, ModelOptions, TimingOptions

    timing = TimingOptions(min_time_s, min_iters, warmup_s, malloc)
    options = BenchOptions(tuple(batches) if batches else None, device, hardware, energy, meter, region,
                           pue, timing, tuple(backends or ()))
    model_options = ModelOptions(model, inputs=_tuple(inputs), seq=seq, dtype=dtype)
    return run.bench(model_options, options, run.Hooks(on_progress=on_progress)).to_report()


@keeps_rng
def llm(model: Any, *, hardware: Any = None, prompt: int = 512, gen: int = 128,
        batches: Sequence[int] | str = (1,), dtype: str | None = None, weights: str | None = None,
        kv_dtype: str | None = None, max_batch: bool = False, trust_remote_code: bool = False,
        activations: str | None = None, attention: str | None = None,
        measure: bool = False) -> LLMSection:
    """The LLM inference view: prefill, decode, KV cache, fit (`to_dict()` is the report's `llm`).

    `hardware` is an id, a `Hardware`, or None for the calibrated 'local' profile.
    `dtype` None: fp16, or on the 'local' profile the precision it runs matmuls fastest
    at (a CPU's fp16 can be 100x slower than its fp32); `settings.dtype_reason` says which.
    `activations` ('int8' or 'fp8'): quantised activations (W8A8, W4A8, fp8); weights
    and KV cache default to that precision. `attention`: the kernel the traces assume,
    'flash' (default) or 'math'. `measure`: also run prefill and decode here (random
    weights, first batch) beside the predictions (`llm.local`).
    """
    from .pipeline import run
    from .pipeline.options import LLMOptions

    return run.llm(model, LLMOptions(hardware=hardware, prompt=prompt, gen=gen, batches=batches, dtype=dtype,
                                     weights=weights, kv_dtype=kv_dtype, max_batch=max_batch,
                                     trust_remote_code=trust_remote_code, activations=activations,
                                     attention=attention, measure=measure))


@keeps_rng
def plan(model: Any = None, example_inputs: Any = None, *, hardware: str, devices: int = 1,
         nodes: int | None = None, train: bool = False, optimizer: str = "adamw", zero: int | None = None,
         global_batch: int | None = None, seq: int | None = None, checkpoint: bool | None = None,
         master_fp32: bool | None = None, sp: bool | None = None, vp: int | None = None,
         overlap_grad_reduce: bool = False, dtype: str | None = None, prompt: int = 512, gen: int = 128,
         batch: int = 1, weights: str | None = None, kv_dtype: str | None = None, tp: int | None = None,
         pp: int | None = None, dp: int | None = None, ep: int | None = None,
         micro_batch: int | None = None, efficiency: float | str | None = "auto", fabric: str | None = None,
         objective: str = "throughput", limit: int = 50, name: str | None = None) -> Report:
    """The multi-device planner (`modelmeter plan`, same options): layouts of `devices`
    devices over `nodes` nodes, each with its memory per device, communication and step
    time (`train`) or TTFT/TPOT (inference); the report's `plan` section holds
    `candidates`, `best` and `min_devices`. `tp`, `pp`, `dp`, `ep`, `micro_batch`, `zero`,
    `sp` and `checkpoint` are fixed when given and searched when not. A module (with
    `example_inputs`) is planned at its own precision.
    """
    from .pipeline.options import PlanOptions
    from .pipeline.plan import plan as run_plan

    options = PlanOptions(hardware=hardware, devices=devices, nodes=nodes, train=train, optimizer=optimizer,
                          zero=zero, global_batch=global_batch, seq=seq, checkpoint=checkpoint,
                          master_fp32=master_fp32, sp=sp, vp=vp, overlap_grad_reduce=overlap_grad_reduce,
                          dtype=dtype, prompt=prompt, gen=gen, batch=batch, weights=weights, kv_dtype=kv_dtype,
                          tp=tp, pp=pp, dp=dp, ep=ep, micro_batch=micro_batch, efficiency=efficiency,
                          fabric=fabric, objective=objective, limit=limit, name=name)
    return run_plan(model, example_inputs, options).to_report()


@keeps_rng
def report(model: Any = None, example_inputs: Any = None, *, hardware: str | None = None,
           dtype: str | None = None, batch: int | None = None, seq: int | None = None,
           inputs: Sequence[str] | None = None, measure: bool | None = None, device: str = "cpu",
           train: bool = False, optimizer: str = "adamw", energy: bool = True, environment: bool = True,
           timing: Mapping[str, Any] | None = None, attention: str | None = None,
           on_status: Callable[[str], None] | None = None) -> Report:
    """Every metric in one report: counts, memory, roofline (with a device profile) and,
    for small models on CPU, a short measurement. Options as `modelmeter report`.

    `measure`: True / False, or None for the automatic rule (on the CPU, under 50
    GFLOPs and 1e9 parameters). `timing` overrides the measurement's timing:
    `min_time_s` (1.0), `min_iters` (5), `warmup_s` (0.3) and `malloc` ('default'
    leaves the C allocator alone; 'retain', the `report` command's, lasts for the
    rest of the process). `attention`: the SDPA kernel assumed, 'flash' (default) or
    'math'. `on_status(text)` is called before each slow step.
    """
    from .pipeline import run
    from .pipeline.options import ModelOptions, ReportOptions, report_timing

    options = ReportOptions(hardware, measure, device, train, optimizer, energy, environment,
                            report_timing(timing))
    model_options = ModelOptions(model, example_inputs=example_inputs, inputs=_tuple(inputs), batch=batch, seq=seq,
                                 dtype=dtype, attention=attention)
    return run.report(model_options, options, run.Hooks(on_status=on_status)).to_report()


@keeps_rng
def compare(models: Sequence[str], *, hardware: str | None = None, dtypes: Sequence[str | None] = (None,),
            batches: Sequence[int | None] = (None,), seq: int | None = None,
            inputs: Sequence[str] | None = None, measure: bool = False, device: str = "cpu",
            on_status: Callable[[str], None] | None = None) -> Comparison:
    """Several models (or one at several dtypes/batches) side by side, with ratios to the first."""
    from .pipeline import run
    from .pipeline.options import ReportOptions

    options = ReportOptions(hardware, measure, device, energy=measure, environment=False)
    return run.compare(models, dtypes=dtypes, batches=batches, seq=seq, inputs=inputs, options=options,
                       hooks=run.Hooks(on_status=on_status))[1]


def _tuple(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values else None
