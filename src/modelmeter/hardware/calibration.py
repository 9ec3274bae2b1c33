"""Measure this machine: matmul and elementwise FLOP/s, STREAM bandwidth (layer 2).

Method (one code path for CPU and CUDA; only the clock differs):

* Every measurement runs its op once to warm up (allocations, oneDNN/cuBLAS
  kernel choice, page faults), times one call to pick an inner loop count so a
  sample lasts at least `min_sample_s`, then takes `repeats` samples. The rate
  is work / median sample; raw samples are kept. Timing goes through
  `hardware.timing`, the engine `modelmeter bench` uses too: on CUDA, samples
  are timed with CUDA events on the calibrated device, synchronised at both edges.
* The thread count is fixed for the whole run (`torch.get_num_threads()`
  unless given) and recorded; a different count is a different machine.
* Matmul: `torch.mm(a, b, out=c)` on square n x n operands, 2 n^3 FLOPs per
  call (one multiply and one add per MAC). n grows until one call takes
  `matmul_target_s`; the best size's median is the figure. A dtype whose first
  size runs under a tenth of fp32's rate stops there (recorded as skipped).
* Vector: `torch.addcmul(c, a, b, out=d)`, i.e. d = c + a*b, counted as 2
  FLOPs per element (the op's scale factor of 1 is not useful work), on
  buffers sized to stay in L2. This is what an unfused eager elementwise kernel
  reaches when DRAM is not the limit, not the SIMD peak.
* Bandwidth, as STREAM counts it: copy `b[:] = a` moves 2 x N x itemsize
  bytes, triad `a = b + 3 c` moves 3 x N x itemsize, float64 arrays of N
  elements, each `stream_llc_multiple` x the last-level cache (STREAM asks for
  4x), capped by free memory. Triad is the profile's bandwidth.
* The CPU peak by the ISA (cores x clock x FLOPs/cycle) is reported beside
  the measured figures, never instead of them.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import MissingDependencyError, UserInputError
from ..core.units import percent_beyond, plural
from .detect import CpuInfo, IsaPeak, isa_peak, read_cpu_info
from .specs import Hardware
from .timing import NOISY_IQR_RATIO, iqr_ratio, time_calls

# progress(description, steps_done, steps_total)
Progress = Callable[[str, int, int], None]

NOISY_IQR = NOISY_IQR_RATIO  # IQR / median above which a measurement is flagged noisy
_MiB = 2**20
_GiB = 2**30


@dataclass(frozen=True)
class CalibrationSettings:
    repeats: int = 7  # samples per measurement; the median is used
    min_sample_s: float = 0.01  # a sample repeats the op until it lasts this long
    matmul_sizes: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    matmul_target_s: float = 0.02  # stop growing n once one call takes this long
    stream_llc_multiple: float = 4.0  # STREAM's rule: each array >= 4x the last-level cache
    stream_max_total_bytes: int = 6 * _GiB  # cap on the three arrays together
    stream_bytes_per_array: int | None = None  # explicit override (tests)
    budget_s: float = 50.0  # later sizes are skipped, with a note, past this
    # Only these precisions (None: all the device has); the short automatic calibration asks for fp32.
    precisions: tuple[str, ...] | None = None

    @classmethod
    def quick(cls) -> CalibrationSettings:
        return cls(
            repeats=3,
            min_sample_s=0.002,
            matmul_sizes=(128, 256, 512),
            matmul_target_s=0.004,
            stream_llc_multiple=1.0,
            stream_max_total_bytes=3 * 128 * _MiB,
            budget_s=15.0,
        )


@dataclass(frozen=True)
class MeasureSpec:
    """What one measurement timed: op kind, precision, size, and the work per call."""

    kind: str  # 'matmul' | 'vector' | 'copy' | 'triad'
    precision: str
    size: int  # n for matmul, elements per array otherwise
    work_per_call: float  # FLOPs (matmul, vector) or bytes (copy, triad)
    unit: str  # 'FLOP' | 'byte'


@dataclass(frozen=True)
class Measurement:
    spec: MeasureSpec
    samples_s: tuple[float, ...]  # seconds per call, one per sample
    inner_calls: int  # calls averaged inside each sample

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def rate(self) -> float:
        """FLOP/s or bytes/s at the median sample."""
        return self.spec.work_per_call / self.median_s

    @property
    def best_rate(self) -> float:
        """Rate at the fastest sample: what the device does when nothing interferes."""
        return self.spec.work_per_call / min(self.samples_s)

    @property
    def spread(self) -> float:
        """Interquartile range / median of the samples."""
        return iqr_ratio(self.samples_s)

    @property
    def noisy(self) -> bool:
        # Same threshold torch.utils.benchmark warns at; contention is the usual cause.
        return self.spread > NOISY_IQR

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": asdict(self.spec),
            "samples_s": list(self.samples_s),
            "inner_calls": self.inner_calls,
            "median_s": self.median_s,
            "rate": self.rate,
            "best_rate": self.best_rate,
            "spread": self.spread,
            "noisy": self.noisy,
        }


@dataclass(frozen=True)
class CalibrationResult:
    device: str  # 'cpu' or 'cuda:N'
    device_name: str
    vendor: str
    torch_version: str
    threads: int
    date: str  # ISO 8601, UTC
    duration_s: float
    quick: bool
    memory_bytes: int | None
    measurements: tuple[Measurement, ...]
    best: dict[str, Measurement]  # 'matmul.fp32', 'vector.fp32', 'copy', 'triad' -> chosen
    isa_peak: IsaPeak | None
    skipped: tuple[tuple[str, str], ...]  # (what, why)
    cache_bytes: dict[str, int | None] = field(default_factory=dict)
    load_average: float | None = None  # 1-minute load average when the run started
    notes: tuple[str, ...] = ()

    def rate(self, key: str) -> float | None:
        m = self.best.get(key)
        return None if m is None else m.rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "device_name": self.device_name,
            "vendor": self.vendor,
            "torch_version": self.torch_version,
            "threads": self.threads,
            "date": self.date,
            "duration_s": self.duration_s,
            "quick": self.quick,
            "memory_bytes": self.memory_bytes,
            "best": {k: m.to_dict() for k, m in self.best.items()},
            "measurements": [m.to_dict() for m in self.measurements],
            "isa_peak": None if self.isa_peak is None else self.isa_peak.to_dict(),
            "skipped": [list(s) for s in self.skipped],
            "cache_bytes": dict(self.cache_bytes),
            "load_average": self.load_average,
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------ timing


def _measure(dev: Any, spec: MeasureSpec, fn: Callable[[], object], s: CalibrationSettings) -> Measurement:
    """Time `fn` through the package's timing engine (CUDA events on a GPU, perf_counter on a CPU)."""
    cuda = dev if dev.type == "cuda" else None
    # One warm-up call (allocation, kernel selection, first-touch page faults), then one timed
    # call to pick how many calls a sample holds, so that it lasts `min_sample_s`.
    one = time_calls(fn, cuda=cuda, warmup_iters=1, max_iters=1)[0]
    inner = max(1, math.ceil(s.min_sample_s / max(one, 1e-9)))
    samples = time_calls(fn, cuda=cuda, inner=inner, min_iters=s.repeats, max_iters=s.repeats)
    # Adaptive stopping (as torch.utils.benchmark does): while the samples
    # disagree, take more, up to 3x, so one descheduled sample cannot move
    # the median. The spread stays on record either way.
    t0 = time.perf_counter()
    while (
        len(samples) < 3 * s.repeats
        and iqr_ratio(samples) > NOISY_IQR
        and time.perf_counter() - t0 < 10 * s.min_sample_s * s.repeats + 2 * one * inner
    ):
        samples += time_calls(fn, cuda=cuda, inner=inner, max_iters=1)
    return Measurement(spec, tuple(samples), inner)


# ------------------------------------------------------------- calibration


_TORCH_DTYPES = {"fp64": "float64", "fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@contextmanager
def _tf32(torch: Any, enabled: bool) -> Iterator[None]:
    """Set cuBLAS TF32 for fp32 matmul for the block, restoring the user's setting."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def calibration_device(device: str | None) -> Any:
    """The torch device `calibrate` measures ('cpu', 'cuda', 'cuda:N'; None: CUDA when
    available, else the CPU); a device it cannot measure is one UserInputError line."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UserInputError(f"unknown device {device!r}; use 'cpu' or 'cuda[:N]'") from exc
    if dev.type not in ("cpu", "cuda"):
        raise UserInputError(f"calibration supports 'cpu' and 'cuda', not {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError("no CUDA device is visible to PyTorch; calibrate with --device cpu")
        dev = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
    return dev


def calibrate(
    device: str | None = None,
    *,
    quick: bool = False,
    threads: int | None = None,
    settings: CalibrationSettings | None = None,
    progress: Progress | None = None,
) -> tuple[Hardware, CalibrationResult]:
    """Measure this machine; returns the 'local' Hardware and the detailed result.

    `device`: 'cpu', 'cuda' or 'cuda:N'; None picks CUDA when available, else CPU.
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a core dependency
        raise MissingDependencyError("calibration needs PyTorch: pip install torch") from exc

    dev = calibration_device(device)
    s = settings or (CalibrationSettings.quick() if quick else CalibrationSettings())
    if s.repeats < 1 or s.min_sample_s <= 0:
        raise UserInputError("calibration needs repeats >= 1 and min_sample_s > 0")

    old_threads = torch.get_num_threads()
    nthreads = threads if threads is not None else old_threads
    if nthreads < 1:
        raise UserInputError(f"threads must be >= 1, got {nthreads}")
    torch.set_num_threads(nthreads)
    try:
        return _run(torch, dev, nthreads, s, quick, progress)
    finally:
        torch.set_num_threads(old_threads)


@dataclass(frozen=True)
class _Machine:
    """What the calibration needs to know of the device before it measures."""

    name: str
    vendor: str
    memory_bytes: int | None
    llc: int  # last-level cache bytes (sizes STREAM past it)
    vector_cache: int  # the cache the elementwise working set stays in
    free_bytes: int
    precisions: list[str]  # matmul precisions to measure
    sizes: tuple[int, ...]  # matmul size ladder
    isa: IsaPeak | None


def _cuda_machine(torch: Any, dev: Any, s: CalibrationSettings, skipped: list[tuple[str, str]]) -> _Machine:
    props = torch.cuda.get_device_properties(dev)
    llc = int(getattr(props, "L2_cache_size", 0)) or 40 * _MiB
    precisions = ["fp32", "tf32", "fp16", "bf16", "fp64"]
    if props.major < 8:
        precisions.remove("tf32")
        skipped.append(("matmul.tf32", f"compute capability {props.major}.{props.minor} has no TF32 tensor cores"))
    if not torch.cuda.is_bf16_supported():
        precisions.remove("bf16")
        skipped.append(("matmul.bf16", "torch.cuda.is_bf16_supported() is False on this GPU"))
    sizes = s.matmul_sizes + ((8192, 16384) if s.matmul_sizes[-1] >= 4096 else ())
    return _Machine(str(props.name), "NVIDIA" if torch.version.hip is None else "AMD", int(props.total_memory),
                    llc, llc, int(torch.cuda.mem_get_info(dev)[0]), precisions, sizes, None)


def _cpu_machine(cpu: CpuInfo, nthreads: int, s: CalibrationSettings,
                 skipped: list[tuple[str, str]]) -> _Machine:
    # Elementwise buffers stay in the L2 the worker threads have between them.
    vector_cache = (cpu.cache_bytes(2) or 1 * _MiB) * max(1, min(nthreads, cpu.physical_cores))
    skipped.append(("matmul.tf32", "CPUs have no TF32 units; tf32 lookups on this profile use fp32 (documented)"))
    isa = isa_peak(cpu, nthreads)
    if isa is None:
        skipped.append(("isa_peak", "no FLOPs/cycle table entry or clock for this CPU"))
    return _Machine(cpu.model_name, {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(cpu.vendor, cpu.vendor),
                    cpu.memory_bytes, cpu.llc_bytes or 32 * _MiB, vector_cache,
                    cpu.memory_available_bytes or 4 * _GiB, ["fp32", "fp64", "bf16", "fp16"], s.matmul_sizes, isa)


class _Session:
    """One calibration's record as it runs: measurements, best figures, what was skipped,
    the time budget and the progress ticks."""

    def __init__(self, s: CalibrationSettings, progress: Progress | None, total: int, t_start: float,
                 skipped: list[tuple[str, str]]) -> None:
        self.s, self.progress, self.total, self.t_start = s, progress, total, t_start
        self.skipped = skipped
        self.measurements: list[Measurement] = []
        self.best: dict[str, Measurement] = {}
        self.step = 0

    def tick(self, desc: str) -> None:
        if self.progress is not None:
            self.progress(desc, self.step, self.total)
        self.step += 1

    def over_budget(self, what: str) -> bool:
        """True (and `what` recorded as skipped) once the time budget is spent."""
        if time.perf_counter() - self.t_start > self.s.budget_s:
            self.skipped.append((what, f"time budget of {self.s.budget_s:g} s spent"))
            return True
        return False


def _run(
    torch: Any, dev: Any, nthreads: int, s: CalibrationSettings, quick: bool, progress: Progress | None
) -> tuple[Hardware, CalibrationResult]:
    t_start = time.perf_counter()
    load = _loadavg()
    cpu = read_cpu_info()
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    cuda = dev.type == "cuda"
    machine = _cuda_machine(torch, dev, s, skipped) if cuda else _cpu_machine(cpu, nthreads, s, skipped)
    skipped.append(("matmul.fp8", "PyTorch eager has no plain fp8 matmul (torch._scaled_mm needs scales); not measured"))
    skipped.append(("matmul.int8", "PyTorch eager has no public int8 matmul; not measured"))
    precisions = machine.precisions
    if s.precisions is not None:
        skipped.extend((f"matmul.{p}", "not asked for (short calibration)") for p in precisions
                       if p not in s.precisions)
        precisions = [p for p in precisions if p in s.precisions]
    # TF32 is a matmul mode: elementwise fp32 already covers it.
    vector_precisions = [p for p in precisions if p != "tf32"]
    stream_n = _stream_elements(s, machine.llc, machine.free_bytes, notes)
    run = _Session(s, progress, 2 * (len(precisions) + len(vector_precisions) + 2), t_start, skipped)

    # ---- pass 1: matmul size ladders, vector, STREAM
    fp32_by_n: dict[int, float] = {}
    for prec in precisions:
        _matmul_ladder(torch, dev, prec, machine, run, fp32_by_n)
    for prec in vector_precisions:
        _vector_figure(torch, dev, prec, machine, run)
    run.tick("stream copy")
    run.best["copy"], run.best["triad"] = _stream(torch, dev, stream_n, s, lambda: run.tick("stream triad"))
    run.measurements.extend((run.best["copy"], run.best["triad"]))
    _second_pass(torch, dev, stream_n, run)
    if progress is not None:
        progress("done", run.total, run.total)
    notes += _load_notes(load, cuda, cpu, run.best)

    result = CalibrationResult(
        device=str(dev),
        device_name=machine.name,
        vendor=machine.vendor,
        torch_version=str(torch.__version__),
        threads=nthreads,
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        duration_s=time.perf_counter() - t_start,
        quick=quick,
        memory_bytes=machine.memory_bytes,
        measurements=tuple(run.measurements),
        best=run.best,
        isa_peak=machine.isa,
        skipped=tuple(skipped),
        cache_bytes={"llc": machine.llc, "vector_working_set_cache": machine.vector_cache,
                     "stream_array": stream_n * 8},
        load_average=load,
        notes=tuple(notes),
    )
    return to_hardware(result, cpu), result


def _matmul_ladder(torch: Any, dev: Any, prec: str, machine: _Machine, run: _Session,
                   fp32_by_n: dict[int, float]) -> None:
    """One precision's matmul up the size ladder until a call takes the target time; its best rate."""
    s = run.s
    run.tick(f"matmul {prec}")
    itemsize = getattr(torch, _TORCH_DTYPES[prec]).itemsize
    runs: list[Measurement] = []
    for n in machine.sizes:
        if run.over_budget(f"matmul.{prec} n>={n}"):
            break
        if 3 * n * n * itemsize > machine.free_bytes // 4:
            run.skipped.append((f"matmul.{prec} n>={n}", "operands would not fit in a quarter of free memory"))
            break
        m = _matmul(torch, dev, prec, n, s)
        runs.append(m)
        if prec == "fp32":
            fp32_by_n[n] = m.rate
        elif n in fp32_by_n and m.rate < 0.1 * fp32_by_n[n]:
            run.skipped.append((
                f"matmul.{prec} n>{n}",
                f"{m.rate / 1e9:.3g} GFLOP/s at n={n} is under 10% of fp32 "
                f"({fp32_by_n[n] / 1e9:.3g}): no fast {prec} path here; larger sizes not run",
            ))
            break
        if m.median_s >= s.matmul_target_s:
            break
    run.measurements.extend(runs)
    if runs:
        run.best[f"matmul.{prec}"] = max(runs, key=lambda m: m.rate)


def _vector_figure(torch: Any, dev: Any, prec: str, machine: _Machine, run: _Session) -> None:
    """The elementwise rate at one precision, its arrays in the cache."""
    run.tick(f"vector {prec}")
    if run.over_budget(f"vector.{prec}"):
        return
    itemsize = getattr(torch, _TORCH_DTYPES[prec]).itemsize
    n = max(4096, machine.vector_cache // (8 * itemsize))  # 4 arrays in half the cache
    run.best[f"vector.{prec}"] = _vector(torch, dev, prec, n, run.s)
    run.measurements.append(run.best[f"vector.{prec}"])


def _second_pass(torch: Any, dev: Any, stream_n: int, run: _Session) -> None:
    """Every chosen figure again, later in time. Each figure is the better of the two pass
    medians, so a burst of load from another process during one pass does not set it (both
    passes' samples stay on record)."""
    again: dict[str, Measurement] = {}
    for key in [k for k in run.best if k not in ("copy", "triad")]:
        run.tick(f"again {key}")
        if run.over_budget(f"second pass {key}"):
            continue
        spec = run.best[key].spec
        measure = _matmul if spec.kind == "matmul" else _vector
        again[key] = measure(torch, dev, spec.precision, spec.size, run.s)
    run.tick("again stream")
    if not run.over_budget("second pass stream"):
        again["copy"], again["triad"] = _stream(torch, dev, stream_n, run.s, lambda: None)
    for key, m in again.items():
        run.measurements.append(m)
        if m.rate > run.best[key].rate:
            run.best[key] = m


def _load_notes(load: float | None, cuda: bool, cpu: CpuInfo, best: dict[str, Measurement]) -> list[str]:
    """Why the rates may read low: a loaded machine at the start, noisy figures."""
    notes = []
    if load is not None and not cuda and load > 0.5 * cpu.logical_cpus:
        notes.append(
            f"1-minute load average was {load:.2f} on {cpu.logical_cpus} CPUs at the start: "
            "other work competed for the cores, so rates may read low"
        )
    for key, m in best.items():
        if m.noisy:
            shown, limit = percent_beyond(m.spread, NOISY_IQR)
            notes.append(
                f"{key}: noisy (IQR {shown} of the median, > {limit}, over {plural(len(m.samples_s), 'sample')}); "
                "other processes were probably using the cores"
            )
    return notes


def _matmul(torch: Any, dev: Any, prec: str, n: int, s: CalibrationSettings) -> Measurement:
    """torch.mm on n x n operands: 2 n^3 FLOPs per call."""
    dtype = getattr(torch, _TORCH_DTYPES[prec])
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    c = torch.empty(n, n, device=dev, dtype=dtype)
    spec = MeasureSpec("matmul", prec, n, 2.0 * n**3, "FLOP")
    ctx = _tf32(torch, prec == "tf32") if dev.type == "cuda" else _null()
    with ctx:
        return _measure(dev, spec, lambda: torch.mm(a, b, out=c), s)


def _vector(torch: Any, dev: Any, prec: str, n: int, s: CalibrationSettings) -> Measurement:
    """d = c + a*b over n elements: 2 FLOPs per element."""
    dtype = getattr(torch, _TORCH_DTYPES[prec])
    a, b, c, d = (torch.full((n,), 0.5, device=dev, dtype=dtype) for _ in range(4))
    spec = MeasureSpec("vector", prec, n, 2.0 * n, "FLOP")
    return _measure(dev, spec, lambda: torch.addcmul(c, a, b, out=d), s)


def _stream_elements(s: CalibrationSettings, llc: int, free_bytes: int, notes: list[str]) -> int:
    """float64 elements per STREAM array: a multiple of the last-level cache, capped by memory."""
    if s.stream_bytes_per_array is not None:
        return max(1024, s.stream_bytes_per_array // 8)
    per_array = int(llc * s.stream_llc_multiple)
    cap = min(s.stream_max_total_bytes, free_bytes // 4) // 3
    if per_array > cap:
        notes.append(
            f"STREAM arrays capped at {cap / _MiB:.0f} MiB each by free memory / settings "
            f"({cap / llc:.2g}x the {llc / _MiB:.0f} MiB last-level cache; STREAM asks for 4x)"
        )
        per_array = cap
    elif per_array < 4 * llc:
        notes.append(
            f"STREAM arrays are {per_array / _MiB:.0f} MiB, {per_array / llc:.2g}x the last-level cache: "
            "part of the traffic may hit cache, so bandwidth may read high"
        )
    return max(1024, per_array // 8)


def _stream(
    torch: Any, dev: Any, n: int, s: CalibrationSettings, between: Callable[[], None]
) -> tuple[Measurement, Measurement]:
    """STREAM copy and triad on float64 arrays of n elements (freed on return)."""
    x = torch.full((n,), 1.0, device=dev, dtype=torch.float64)
    y = torch.full((n,), 2.0, device=dev, dtype=torch.float64)
    z = torch.full((n,), 0.5, device=dev, dtype=torch.float64)
    copy = _measure(dev, MeasureSpec("copy", "fp64", n, 2.0 * n * 8, "byte"), lambda: y.copy_(x), s)
    between()
    triad = _measure(
        dev, MeasureSpec("triad", "fp64", n, 3.0 * n * 8, "byte"), lambda: torch.add(y, z, alpha=3.0, out=x), s
    )
    return copy, triad


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return None


@contextmanager
def _null() -> Iterator[None]:
    yield


def _describe(m: Measurement) -> str:
    what = {
        "matmul": f"torch.mm n={m.spec.size}",
        "vector": f"torch.addcmul (2 FLOP/element) on {m.spec.size} elements",
        "copy": f"STREAM copy, 2 x {m.spec.size} x 8 bytes per pass",
        "triad": f"STREAM triad a = b + 3c, 3 x {m.spec.size} x 8 bytes per pass",
    }[m.spec.kind]
    return (f"measured: {what}, median of {plural(len(m.samples_s), 'sample')} x {plural(m.inner_calls, 'call')}, "
            f"spread {m.spread:.0%}")


def to_hardware(result: CalibrationResult, cpu: CpuInfo | None = None) -> Hardware:
    """The 'local' Hardware record built from a calibration: measured figures only."""
    peak = {k.split(".", 1)[1]: m.rate for k, m in result.best.items() if k.startswith("matmul.")}
    vector = {k.split(".", 1)[1]: m.rate for k, m in result.best.items() if k.startswith("vector.")}
    sources = {f"peak_flops.{k.split('.', 1)[1]}": _describe(m) for k, m in result.best.items() if k.startswith("matmul.")}
    sources.update(
        {f"vector_flops.{k.split('.', 1)[1]}": _describe(m) for k, m in result.best.items() if k.startswith("vector.")}
    )
    if "tf32" in peak and "tf32" not in vector and "fp32" in vector:
        vector["tf32"] = vector["fp32"]
        sources["vector_flops.tf32"] = "= vector_flops.fp32: TF32 is a matmul mode, elementwise work runs in fp32"
    triad = result.best["triad"]
    sources["memory_bandwidth_bytes_per_s"] = (
        _describe(triad) + f"; copy {result.best['copy'].rate / 1e9:.3g} GB/s"
    )
    sources["memory_bytes"] = "torch.cuda device properties" if result.device.startswith("cuda") else "/proc/meminfo MemTotal"
    conditions = (
        f"modelmeter hardware calibrate{' --quick' if result.quick else ''} on {result.date}: "
        f"torch {result.torch_version}, {plural(result.threads, 'thread')}, device {result.device} ({result.device_name})"
    )
    sources["calibration"] = conditions
    notes = [conditions]
    isa = result.isa_peak
    if isa is not None:
        sources["isa_peak"] = (
            f"{plural(isa.cores, 'core')} x {isa.clock_hz / 1e9:.3g} GHz ({isa.clock_source}) x FLOPs/cycle "
            f"{isa.flops_per_cycle} [{isa.isa_class}: {isa.reason}]; sources {', '.join(isa.sources)}"
        )
        for prec, p in isa.peak_flops.items():
            got = peak.get(prec)
            frac = f", measured matmul {got / p:.0%} of it" if got else ""
            notes.append(f"ISA peak {prec}: {p / 1e9:.4g} GFLOP/s{frac}")
            if got and got > p:
                notes.append(
                    f"measured {prec} matmul beats the ISA peak at {isa.clock_hz / 1e9:.3g} GHz: "
                    "the cores run above that clock (turbo)"
                )
    notes.extend(f"not measured: {what} — {why}" for what, why in result.skipped)
    notes.extend(result.notes)
    threads = plural(result.threads, "thread")
    return Hardware(
        id="local",
        name=f"{result.device_name} ({threads})" if not result.device.startswith("cuda") else result.device_name,
        vendor=result.vendor,
        kind="gpu" if result.device.startswith("cuda") else "cpu",
        memory_bytes=result.memory_bytes,
        memory_bandwidth_bytes_per_s=triad.rate,
        peak_flops=peak,
        vector_flops=vector,
        tdp_w=None,
        year=None,
        source="calibrated",
        sources=dict(sorted(sources.items())),
        notes=tuple(notes),
    )

