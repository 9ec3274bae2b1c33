"""The options of a run, validated once, where they enter (layer 5).

Each question a user asks has one frozen options object: which model and
inputs (`ModelOptions`), the training-memory what-ifs (`MemoryOptions`), the
roofline device and precisions (`RooflineOptions`), the measurement
(`BenchOptions`, `TimingOptions`), the LLM view (`LLMOptions`) and the full
report (`ReportOptions`). Construction validates and normalises every field
(precision names, optimizer, device strings, meter, region, PUE, timing) and
raises `UserInputError` naming the valid values, so nothing downstream checks
again and a typo fails before a model is built.

What needs the chosen device (does it have a peak for this precision?) or
the model (does the shape fit?) is checked by the pipeline before the trace.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..analysis.memory import check_optimizer
from ..analysis.quant_activations import parse_activations
from ..core.attention import check_attention
from ..core.errors import UserInputError
from ..core.precision import parse_precision
from ..measure.allocator import POLICIES
from ..measure.backends import check_backend, parse_backends
from ..measure.carbon import carbon_intensity, parse_pue
from ..measure.energy import METER_NAMES
from ..measure.timer import check_timing, parse_device
from ..sources.resolve import DEVICES as TRACE_DEVICES

__all__ = [
    "PlanOptions",
    "BenchOptions",
    "LLMOptions",
    "MemoryOptions",
    "ModelOptions",
    "ReportOptions",
    "RooflineOptions",
    "TimingOptions",
    "parse_efficiency",
    "report_timing",
]


def _set(obj: Any, name: str, value: Any) -> None:
    # Normalising inside a frozen dataclass's __post_init__ (the documented way).
    object.__setattr__(obj, name, value)


# Formats that store one scale per group of weights, where a group size means something.
GROUPED = ("int8", "int4", "nf4", "fp8")


def _positive(label: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise UserInputError(f"--{label} must be a positive integer, got {value!r}")


def _precision(value: str | None) -> str | None:
    return None if value is None else parse_precision(value).name


def _measure_device(device: str) -> str:
    """'cpu' | 'cuda' | 'cuda:N' in canonical spelling (junk -> UserInputError naming the forms)."""
    kind, index = parse_device(device)
    return kind if index is None else f"{kind}:{index}"


def parse_efficiency(value: float | str | None) -> float | str | None:
    """A derating of the matrix peak: a number in (0, 1], or 'mamf' (the measured fraction)."""
    if value is None or value == "mamf":
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"--efficiency takes a number in (0, 1] or 'mamf', got {value!r}") from None
    if not 0 < number <= 1:
        raise UserInputError(f"efficiency must be in (0, 1], got {value}")
    return number


@dataclass(frozen=True)
class ModelOptions:
    """Which model, on which inputs, at which precision: the input of every trace.

    `model` is a spec string (preset, folder, `pkg.module:factory`, `.pt2`…),
    a `torch.nn.Module` (then `example_inputs` is its call: a tensor, a tuple
    or a dict), or None for the default model. `inputs`, `batch`, `seq` and
    `device` build a spec's model and inputs (`device`: 'meta', the default, no
    weights allocated; or 'cpu', real tensors); a module is traced as given, so
    they are errors beside one. `dtype` is the parameter precision (any of
    `core.precision`; on a module a parameter-bytes what-if), `group_size` the
    quantisation group of block-quantised weights (int8, int4, nf4, fp8).
    `attention` is the kernel every `scaled_dot_product_attention` call is
    traced as: 'flash' (fused, the default: what devices run, no L x S scores
    kept) or 'math' (unfused: scores kept); None means the default.
    An option that cannot apply is an error, never ignored.
    """

    model: Any = None
    # Everything after the model by keyword: ten optional fields in a row are too easy to shift.
    _: dataclasses.KW_ONLY
    example_inputs: Any = None
    inputs: tuple[str, ...] | None = None
    batch: int | None = None
    seq: int | None = None
    dtype: str | None = None
    device: str | None = None
    group_size: int | None = None
    trust_remote_code: bool = False
    name: str | None = None
    attention: str | None = None

    def __post_init__(self) -> None:
        _positive("batch", self.batch)
        _positive("seq", self.seq)
        _set(self, "dtype", _precision(self.dtype))
        _set(self, "attention", check_attention(self.attention))
        if self.group_size is not None:
            _positive("group-size", self.group_size)
            if self.dtype not in GROUPED:
                raise UserInputError(
                    f"--group-size applies to block-quantised weights ({', '.join(GROUPED)}), "
                    f"which store one scale per group; {self.dtype or 'the traced precision'} stores none")
        _set(self, "inputs", tuple(self.inputs) if self.inputs else None)
        if self.device is not None and self.device not in TRACE_DEVICES:
            raise UserInputError(f"unknown device {self.device!r}; choose one of {', '.join(TRACE_DEVICES)}")
        if self.is_spec:
            if self.example_inputs is not None:
                raise UserInputError("example_inputs go with a torch.nn.Module; a model spec builds its "
                                     "own inputs (give their shapes with inputs=[...] / --input)")
            return
        import torch

        if not isinstance(self.model, torch.nn.Module):
            raise UserInputError(f"expected a model spec string or a torch.nn.Module, got {type(self.model).__name__}")
        for label, value in (("inputs", self.inputs), ("batch", self.batch), ("seq", self.seq)):
            if value is not None:
                raise UserInputError(
                    f"{label}={value!r} cannot apply to a torch.nn.Module: inputs, batch and seq build "
                    "the inputs of a model spec; pass example_inputs of the shape you want")
        if self.device is not None:
            raise UserInputError(f"device={self.device!r} cannot apply to a torch.nn.Module: it is traced "
                                 "where its parameters are; move it and its inputs with .to(...)")
        if self.example_inputs is None:
            raise UserInputError("a torch.nn.Module needs example_inputs (a tensor, a tuple, or a dict)")

    @property
    def is_spec(self) -> bool:
        """True for a spec string or the default model (the pipeline may rebuild it per batch)."""
        return self.model is None or isinstance(self.model, str)


@dataclass(frozen=True)
class MemoryOptions:
    """Activation memory, and with `train` the training step and its budget."""

    train: bool = False
    optimizer: str | None = None  # None: adamw
    # None: fp32 master weights with a 16-bit training precision (what Megatron-LM, DeepSpeed
    # and FSDP mixed precision keep: 16 B/param with Adam); False: pure 16-bit training.
    master_fp32: bool | None = None
    checkpoint: bool = False
    dropout: bool = True  # False: trace the training step with every dropout off

    def __post_init__(self) -> None:
        if not self.dropout and not self.train:
            raise UserInputError("dropout off applies to the training step (inference traces none); "
                                 "add --train (train=True)")
        if self.optimizer is not None:
            _set(self, "optimizer", check_optimizer(self.optimizer))  # an unknown name first
            if not self.train:
                raise UserInputError("--optimizer applies to the training step; add --train (train=True)")
        _set(self, "optimizer", self.optimizer or "adamw")
        for label, value in (("--checkpoint", self.checkpoint or None), ("--master-fp32", self.master_fp32)):
            if value is not None and not self.train:
                raise UserInputError(f"{label} applies to the training step; add --train (train=True)")


@dataclass(frozen=True)
class RooflineOptions:
    """The roofline: device id (None: the calibrated 'local' profile), precisions, derating.

    `depth` limits the module rows of the `roofline` section (None: all).
    `activations` ('int8' or 'fp8', None: not quantised) is the activation
    quantisation what-if (`analysis/quant_activations.py`); whether the device
    has that matrix peak is checked by the pipeline, before the trace.
    """

    hardware: Any = None  # an id, a `Hardware`, or None
    weights: str | None = None
    efficiency: float | str | None = None
    depth: int | None = None
    activations: str | None = None
    # How the GPU performance model launches kernels: 'eager' (one host launch per traced op)
    # or 'graphs' (a CUDA graph replay); used on GPU devices only.
    runtime: str = "eager"

    def __post_init__(self) -> None:
        _set(self, "weights", _precision(self.weights))
        _set(self, "activations", parse_activations(self.activations))
        _set(self, "efficiency", parse_efficiency(self.efficiency))
        if self.depth is not None and (isinstance(self.depth, bool) or not isinstance(self.depth, int)
                                       or self.depth < 0):
            raise UserInputError(f"--depth must be >= 0, got {self.depth}")
        check_runtime(self.runtime, ("eager", "graphs"))


def check_runtime(runtime: Any, allowed: tuple[str, ...]) -> None:
    """A GPU runtime name (`hardware.gpumodel`): one of `allowed`, else one line."""
    if runtime not in allowed:
        raise UserInputError(f"`runtime` {runtime!r}: expected one of {', '.join(allowed)}", field="runtime")


@dataclass(frozen=True)
class TimingOptions:
    """How long each batch is timed. `malloc`: 'default' leaves the C allocator alone;
    'retain' makes glibc keep freed memory for the rest of the process (steadier CPU
    timings; `measure/allocator.py` says why). glibc cannot be put back, so only the
    commands, whose process ends with them, choose 'retain' by default."""

    min_time_s: float = 2.0
    min_iters: int = 10
    warmup_s: float = 0.5
    malloc: str = "default"

    def __post_init__(self) -> None:
        check_timing(self.min_time_s, self.min_iters, self.warmup_s, 0, None)
        if self.malloc not in POLICIES:
            raise UserInputError(f"unknown malloc policy {self.malloc!r}; use {' or '.join(POLICIES)}")


# The report's measurement is one batch and must finish fast; `bench` is for careful numbers.
REPORT_TIMING = TimingOptions(min_time_s=1.0, min_iters=5, warmup_s=0.3)


def report_timing(overrides: Mapping[str, Any] | None = None) -> TimingOptions:
    """`REPORT_TIMING` with some fields replaced: min_time_s, min_iters, warmup_s, malloc."""
    fields = {f.name for f in dataclasses.fields(TimingOptions)}
    unknown = sorted(set(overrides or {}) - fields)
    if unknown:
        raise UserInputError(f"unknown timing option {unknown[0]!r}; choose from {', '.join(sorted(fields))}")
    return dataclasses.replace(REPORT_TIMING, **(overrides or {}))


@dataclass(frozen=True)
class BenchOptions:
    """A measured sweep over batch sizes, with energy and carbon when asked.

    `batches` None: the model's own example batch. `hardware` names the
    roofline device for the per-batch prediction (None: 'local' on CPU, the
    database entry of the GPU on CUDA). `meter` (default 'auto'), `region`
    ('world') and `pue` (1.0) are energy options: giving one measures energy,
    as `energy=True` does. `backends`: what to time beside eager ('compile',
    'onnxruntime'); eager is always first, the baseline of each speed-up. Each is
    refused in one line here (unknown name, missing extra, no C++ compiler).
    """

    batches: tuple[int, ...] | None = None
    device: str = "cpu"
    hardware: str | None = None
    energy: bool = False
    meter: str | None = None
    region: str | None = None
    pue: float | str | None = None
    timing: TimingOptions = field(default_factory=TimingOptions)
    backends: tuple[str, ...] = ("eager",)

    def __post_init__(self) -> None:
        if self.batches is not None:
            if not self.batches:
                raise UserInputError("the benchmark needs at least one batch size")
            for b in self.batches:
                _positive("batch", b)
            _set(self, "batches", tuple(self.batches))
        _set(self, "device", _measure_device(self.device))
        given = (self.meter, self.region, self.pue)
        _set(self, "energy", self.energy or any(v is not None for v in given))
        meter = self.meter or "auto"
        if meter.strip().lower() not in METER_NAMES:
            raise UserInputError(f"unknown energy meter {meter!r}; choose one of {', '.join(METER_NAMES)}")
        _set(self, "meter", meter)
        _set(self, "region", carbon_intensity(self.region or "world").region)
        _set(self, "pue", parse_pue(1.0 if self.pue is None else self.pue))
        backends = tuple(parse_backends(self.backends))
        for name in backends:
            check_backend(name, self.device)
        _set(self, "backends", backends)


@dataclass(frozen=True)
class LLMOptions:
    """The LLM inference view: prompt and generation lengths, batch sizes, precisions.

    `activations` ('int8' / 'fp8', None: `dtype`): quantised activations, as for
    `RooflineOptions`; `attention` ('flash', the default, or 'math'): the kernel
    the traces assume, as for `ModelOptions`.
    """

    hardware: Any = None  # an id, a `Hardware`, or None for 'local'
    prompt: int = 512
    gen: int = 128
    batches: tuple[int, ...] = (1,)
    dtype: str | None = None  # None: fp16, or on the 'local' profile the fastest it measured
    weights: str | None = None
    kv_dtype: str | None = None
    max_batch: bool = False
    trust_remote_code: bool = False
    activations: str | None = None
    attention: str | None = None
    # Also run prefill and decode here (random weights, first batch) beside the predictions.
    measure: bool = False
    # GPU devices (the GPU performance model): how kernels launch ('eager', 'graphs', or
    # 'fused': graphs with elementwise runs fused, as serving engines run), a request rate to
    # serve (requests/s, None: not served), and TTFT / TPOT targets in seconds for a max batch.
    runtime: str = "eager"
    rate: float | None = None
    ttft_target_s: float | None = None
    tpot_target_s: float | None = None

    def __post_init__(self) -> None:
        # The one check of the llm options (the CLI, `api.llm` and `measure_llm_costs` all
        # build this): each refusal names its field, which the CLI writes as its flag.
        from ..analysis.llm import parse_batches  # lazy: the LLM analysis imports the GPU model

        check_runtime(self.runtime, ("eager", "graphs", "fused"))
        for name, value in (("rate", self.rate), ("ttft_target_s", self.ttft_target_s),
                            ("tpot_target_s", self.tpot_target_s)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value <= 0):
                raise UserInputError(f"`{name}` must be a positive number, got {value!r}", field=name)
        _set(self, "batches", parse_batches(self.batches))
        for name, value in (("prompt", self.prompt), ("gen", self.gen), *(("batches", b) for b in self.batches)):
            _tokens(name, value)
        _set(self, "dtype", _trace_dtype(self.dtype))
        _set(self, "weights", _precision(self.weights))
        _set(self, "kv_dtype", _precision(self.kv_dtype))
        _set(self, "activations", parse_activations(self.activations))
        _set(self, "attention", check_attention(self.attention))
        for name in ("max_batch", "trust_remote_code", "measure"):
            check_flag(getattr(self, name), name)


# Precisions a model runs its activations in (the traces' dtype); weights and the KV cache
# take any precision of `core.precision`.
TRACE_DTYPES = ("fp32", "fp16", "bf16")


def _trace_dtype(dtype: str | None) -> str | None:
    name = _precision(dtype)
    if name is not None and name not in TRACE_DTYPES:
        raise UserInputError(
            f"`dtype` {name} is not a precision a model runs activations in; choose one of "
            f"{', '.join(TRACE_DTYPES)} (quantise weights with `weights`, the cache with `kv_dtype`)",
            field=("dtype", "weights", "kv_dtype"))
    return name


def _tokens(name: str, value: Any) -> None:
    """A token count or batch size: a whole number in 1..2**31 - 1 (what a tensor dimension holds)."""
    from ..sources.inputs import MAX_DIM

    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"`{name}` must be a positive whole number, got {value!r}", field=name)
    if value > MAX_DIM:
        raise UserInputError(f"`{name}` {value} is too large: at most {MAX_DIM} (2**31 - 1)", field=name)


@dataclass(frozen=True)
class ReportOptions:
    """Every metric in one report. `measure`: True / False, or None for the automatic rule
    (`run.should_measure`); `device` is where the measurement runs. `module_depth`: with a
    measurement, the modules to that depth are also timed one by one (hooks; None: not)."""

    hardware: str | None = None
    measure: bool | None = None
    device: str = "cpu"
    train: bool = False
    optimizer: str = "adamw"
    energy: bool = True
    environment: bool = True
    timing: TimingOptions = REPORT_TIMING
    module_depth: int | None = 2

    def __post_init__(self) -> None:
        _set(self, "device", _measure_device(self.device))
        _set(self, "optimizer", check_optimizer(self.optimizer))
        if self.module_depth is not None and (isinstance(self.module_depth, bool)
                                              or not isinstance(self.module_depth, int) or self.module_depth < 0):
            raise UserInputError(f"module depth must be >= 0, got {self.module_depth}")


# ------------------------------------------------------------------ plan


def check_positive(value: Any, name: str) -> None:
    """A count given from Python or the CLI: a positive whole number, or None (not given)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserInputError(f"`{name}` must be a positive whole number, got {value!r}", field=name)


def check_flag(value: Any, name: str, optional: bool = False) -> None:
    """A switch given from Python: True or False (or None where None means 'search' / 'default')."""
    if not (isinstance(value, bool) or (optional and value is None)):
        raise UserInputError(f"`{name}` is a switch: True or False{' or None' if optional else ''}, "
                             f"got {value!r}", field=name)


PLAN_OBJECTIVES = ("throughput", "latency")
_TRAIN_ONLY = ("zero", "global_batch", "seq", "micro_batch", "checkpoint", "vp")
_INFER_ONLY = ("weights", "kv_dtype")


@dataclass(frozen=True)
class PlanOptions:
    """The multi-device planner (`modelmeter plan`), every option checked when built.

    Training (`train=True`) searches tp, pp, dp, ep, ZeRO stage, micro-batch, sequence
    parallelism and recomputation; inference tp, pp and dp. Any of them given is fixed.
    `vp` (training, with a fixed pp): model chunks per pipeline rank (Megatron-LM's
    interleaved schedule), never searched; `overlap_grad_reduce`: the data-parallel gradient
    reduction runs under the last micro-batch's backward. `master_fp32`: None keeps fp32
    master weights with a 16-bit training precision (16 B/param with Adam), False is pure
    16-bit training. `efficiency`: 'auto' prices a GPU with the shape-aware GPU model (other
    devices: the roofline at the measured MAMF fraction where known); 'mamf', 'none' or a
    number in (0, 1] prices with the roofline at that derated peak. Checks that need the
    device or the model (the layout against its node size, its heads) are the pipeline's.
    """

    hardware: str
    devices: int = 1
    nodes: int | None = None
    train: bool = False
    optimizer: str = "adamw"
    zero: int | None = None
    global_batch: int | None = None
    seq: int | None = None
    checkpoint: bool | None = None
    master_fp32: bool | None = None
    sp: bool | None = None
    dtype: str | None = None
    prompt: int = 512
    gen: int = 128
    batch: int = 1
    weights: str | None = None
    kv_dtype: str | None = None
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    ep: int | None = None
    micro_batch: int | None = None
    efficiency: float | str | None = "auto"
    fabric: str | None = None
    objective: str = "throughput"
    limit: int = 50
    name: str | None = None
    vp: int | None = None
    overlap_grad_reduce: bool = False

    def __post_init__(self) -> None:
        for label, value in (("devices", self.devices), ("nodes", self.nodes), ("global_batch", self.global_batch),
                             ("seq", self.seq), ("prompt", self.prompt), ("gen", self.gen), ("batch", self.batch),
                             ("limit", self.limit), ("tp", self.tp), ("pp", self.pp), ("dp", self.dp),
                             ("ep", self.ep), ("micro_batch", self.micro_batch), ("vp", self.vp)):
            check_positive(value, label)
        for label, value, optional in (("train", self.train, False), ("master_fp32", self.master_fp32, True),
                                       ("overlap_grad_reduce", self.overlap_grad_reduce, False),
                                       ("checkpoint", self.checkpoint, True), ("sp", self.sp, True)):
            check_flag(value, label, optional)
        if self.objective not in PLAN_OBJECTIVES:
            raise UserInputError(f"--objective {self.objective!r}: expected one of {', '.join(PLAN_OBJECTIVES)}")
        for precision in (self.dtype, self.weights, self.kv_dtype):
            if precision is not None:
                parse_precision(precision)  # a typo fails before the trace
        if self.train:
            for key in _INFER_ONLY:
                if getattr(self, key) is not None:
                    raise UserInputError(f"--{key.replace('_', '-')} applies to inference; drop --train")
            _set(self, "optimizer", check_optimizer(self.optimizer))
            return
        for key in (*_TRAIN_ONLY, "overlap_grad_reduce"):
            value = getattr(self, key)
            if value is not None and value is not False:
                raise UserInputError(f"--{key.replace('_', '-')} applies to training; add --train")
        if self.master_fp32 is not None or self.optimizer != "adamw":
            raise UserInputError("--optimizer and --master-fp32 apply to training; add --train")
