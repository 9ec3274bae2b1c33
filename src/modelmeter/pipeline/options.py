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

from dataclasses import dataclass, field
from typing import Any

from ..analysis.memory import check_optimizer
from ..core.errors import UserInputError
from ..core.precision import parse_precision
from ..measure.allocator import POLICIES
from ..measure.carbon import carbon_intensity, parse_pue
from ..measure.energy import METER_NAMES
from ..measure.timer import check_timing, parse_device
from ..sources.resolve import DEVICES as TRACE_DEVICES

__all__ = [
    "BenchOptions",
    "LLMOptions",
    "MemoryOptions",
    "ModelOptions",
    "ReportOptions",
    "RooflineOptions",
    "TimingOptions",
    "parse_efficiency",
]


def _set(obj: Any, name: str, value: Any) -> None:
    # Normalising inside a frozen dataclass's __post_init__ (the documented way).
    object.__setattr__(obj, name, value)


def _positive(label: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value <= 0):
        raise UserInputError(f"--{label} must be a positive integer, got {value}")


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
    or a dict), or None for the default model. `device` is where the trace runs:
    'meta' (no weights allocated) or 'cpu' (real tensors); a module is traced
    where it is. `dtype` is the parameter precision (any of
    `core.precision`), `group_size` the quantisation group for int4/int8 scales.
    """

    model: Any = None
    example_inputs: Any = None
    inputs: tuple[str, ...] | None = None
    batch: int | None = None
    seq: int | None = None
    dtype: str | None = None
    device: str = "meta"
    group_size: int | None = None
    trust_remote_code: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        _positive("batch", self.batch)
        _positive("seq", self.seq)
        _positive("group-size", self.group_size)
        _set(self, "dtype", _precision(self.dtype))
        _set(self, "inputs", tuple(self.inputs) if self.inputs else None)
        if self.device not in TRACE_DEVICES:
            raise UserInputError(f"unknown device {self.device!r}; choose one of {', '.join(TRACE_DEVICES)}")
        if self.model is not None and not isinstance(self.model, str):
            import torch

            if not isinstance(self.model, torch.nn.Module):
                raise UserInputError("expected a model spec string or a torch.nn.Module, "
                                     f"got {type(self.model).__name__}")
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
    optimizer: str = "adamw"
    master_fp32: bool = False
    checkpoint: bool = False

    def __post_init__(self) -> None:
        _set(self, "optimizer", check_optimizer(self.optimizer))


@dataclass(frozen=True)
class RooflineOptions:
    """The roofline: device id (None: the calibrated 'local' profile), precisions, derating.

    `depth` limits the module rows of the `roofline` section (None: all).
    """

    hardware: Any = None  # an id, a `Hardware`, or None
    weights: str | None = None
    efficiency: float | str | None = None
    depth: int | None = None

    def __post_init__(self) -> None:
        _set(self, "weights", _precision(self.weights))
        _set(self, "efficiency", parse_efficiency(self.efficiency))
        if self.depth is not None and self.depth < 0:
            raise UserInputError(f"--depth must be >= 0, got {self.depth}")


@dataclass(frozen=True)
class TimingOptions:
    """How long each batch is timed. `malloc`: 'retain' (glibc keeps freed memory, steadier
    CPU timings; `measure/allocator.py` says why) or 'default' (the allocator left alone)."""

    min_time_s: float = 2.0
    min_iters: int = 10
    warmup_s: float = 0.5
    malloc: str = "retain"

    def __post_init__(self) -> None:
        check_timing(self.min_time_s, self.min_iters, self.warmup_s, 0, None)
        if self.malloc not in POLICIES:
            raise UserInputError(f"unknown malloc policy {self.malloc!r}; use {' or '.join(POLICIES)}")


# The report's measurement is one batch and must finish fast; `bench` is for careful numbers.
REPORT_TIMING = TimingOptions(min_time_s=1.0, min_iters=5, warmup_s=0.3)


@dataclass(frozen=True)
class BenchOptions:
    """A measured sweep over batch sizes, with energy and carbon when asked.

    `batches` None: the model's own example batch. `hardware` names the
    roofline device for the per-batch prediction (None: 'local' on CPU, the
    database entry of the GPU on CUDA). `region`/`pue` imply nothing by
    themselves here; the CLI turns them into `energy=True`.
    """

    batches: tuple[int, ...] | None = None
    device: str = "cpu"
    hardware: str | None = None
    energy: bool = False
    meter: str = "auto"
    region: str = "world"
    pue: float | str = 1.0
    timing: TimingOptions = field(default_factory=TimingOptions)

    def __post_init__(self) -> None:
        if self.batches is not None:
            if not self.batches:
                raise UserInputError("the benchmark needs at least one batch size")
            for b in self.batches:
                _positive("batch", b)
            _set(self, "batches", tuple(self.batches))
        _set(self, "device", _measure_device(self.device))
        if self.meter.strip().lower() not in METER_NAMES:
            raise UserInputError(f"unknown energy meter {self.meter!r}; choose one of {', '.join(METER_NAMES)}")
        _set(self, "region", carbon_intensity(self.region).region)
        _set(self, "pue", parse_pue(self.pue))


@dataclass(frozen=True)
class LLMOptions:
    """The LLM inference view: prompt and generation lengths, batch sizes, precisions."""

    hardware: Any = None  # an id, a `Hardware`, or None for 'local'
    prompt: int = 512
    gen: int = 128
    batches: tuple[int, ...] = (1,)
    dtype: str = "fp16"
    weights: str | None = None
    kv_dtype: str | None = None
    max_batch: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        from ..analysis.llm import parse_batches  # lazy: the LLM analysis imports torch

        _set(self, "batches", parse_batches(self.batches))
        for label, value in (("prompt", self.prompt), ("gen", self.gen)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserInputError(f"--{label} must be a positive whole number of tokens, got {value!r}")
        _set(self, "dtype", parse_precision(self.dtype).name)
        _set(self, "weights", _precision(self.weights))
        _set(self, "kv_dtype", _precision(self.kv_dtype))


@dataclass(frozen=True)
class ReportOptions:
    """Every metric in one report. `measure`: True / False, or None for the automatic rule
    (`run.should_measure`); `device` is where the measurement runs."""

    hardware: str | None = None
    measure: bool | None = None
    device: str = "cpu"
    train: bool = False
    optimizer: str = "adamw"
    energy: bool = True
    environment: bool = True
    timing: TimingOptions = REPORT_TIMING

    def __post_init__(self) -> None:
        _set(self, "device", _measure_device(self.device))
        _set(self, "optimizer", check_optimizer(self.optimizer))
