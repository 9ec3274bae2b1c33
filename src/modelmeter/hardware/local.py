"""This machine's profile without asking: a short calibration, cached, refused under load (layer 2).

`local_profile()` is what every command that needs this machine's figures
calls. It returns the cached profile for this CPU model, thread count and torch
version (the *key*: a different count or version is a different machine as far
as timings go), and when there is none it runs the **short calibration**
(about 15 s on 2 cores) and caches it:

1. `calibrate()` with fp32 only and small sizes: the matmul peak, the
   elementwise rate and STREAM bandwidth, i.e. the roofline's peaks;
2. `microbench.run_microbench()`: per op class, the achieved time at typical
   shapes, the dispatch overhead, the cost of a view and of a module call;
3. `perfmodel.fit()` turns (2) into the calibrated prediction model.

A calibration is **refused** (nothing saved, `CalibrationRefused` says why and
what to do) when the 1-minute load average exceeded the CPU count at its start
or end (other programs had the cores, so the rates would describe them),
when the matmul rate lands under 3 % of the ISA peak (a figure that low means
the run was starved, not that the chip is slow), or when any figure is outside
the plausible range `plausible` derives from this CPU's ISA and the matmul just
measured (an elementwise rate a thousand times under the matmul's). A cached
profile that fails those checks when read is set aside (renamed, kept) and,
with automatic calibration on, measured again; with it off the caller is told
and goes on without it.

`hardware calibrate` (the full calibration) refines both: it measures the
roofline's peaks with larger sizes and more repeats, then reruns the
microbenchmarks with a larger time budget (`refine_profile`) and replaces the
cached model for its key with one fitted against those peaks.

Threads: `default_threads()` is the physical core count, whatever the load: a
count that followed the load average gave 1 thread in one run and 2 in the next,
so the same command measured two configurations. Under load the calibration is
refused and measurements carry the load warning; `--threads N` sets another count.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from ..core.files import atomic_write
from .perfmodel import Peaks, PerfModel, fit
from .plausible import InvalidProfile, check_hardware, set_aside, warn_set_aside
from .profile import (
    check_saveable,
    data_home,
    load_local_profile,
    local_profile_path,
    read_profile,
    save_local_profile,
)
from .specs import Hardware

__all__ = [
    "CalibrationRefused", "LocalProfile", "cache_key", "default_threads", "load_warning",
    "local_profile", "profile_cache_path", "refine_profile", "refusal_reason", "short_calibration",
    "stderr_progress",
    "system_load", "implausible_reason",
    "calibration_refusal", "choose_threads",
]

CACHE_SCHEMA = "modelmeter.local-profile/1"
# MODELMETER_AUTO_CALIBRATE=0 turns the automatic calibration off (the test suite does;
# a command then runs without a prediction unless a profile is cached or named).
AUTO_ENV = "MODELMETER_AUTO_CALIBRATE"
IMPLAUSIBLE_SHARE_OF_ISA_PEAK = 0.03

# progress(description, steps_done, steps_total)
Progress = Callable[[str, int, int], None]


class CalibrationRefused(UserInputError):
    """The short calibration ran under conditions that make its figures wrong; nothing was saved."""


@dataclass(frozen=True)
class LocalProfile:
    hardware: Hardware  # the roofline's peaks ('local')
    model: PerfModel  # the calibrated prediction model
    key: str
    path: Path
    calibrated_now: bool = False  # True when this call ran the calibration


# ------------------------------------------------------------------ pure rules


def default_threads(physical_cores: int | None, logical_cpus: int) -> int:
    """The physical cores (the logical CPUs when that count is unknown), at least 1.

    Not the cores the load leaves free: that count moved with other programs (1 thread in
    one run, 2 in the next), so two runs of one command measured different things. A busy
    machine is said by the load warning instead, and `--threads` picks another count.
    """
    return max(1, physical_cores or logical_cpus)


def load_warning(load: float | None, cpus: int) -> str | None:
    """A sentence when the load average exceeded the CPU count, else None."""
    if load is None or load <= cpus:
        return None
    return (f"the 1-minute load average was {load:.2f} on {cpus} CPUs: other programs were "
            "running, so the times are slower than this machine is when quiet")


def refusal_reason(load: float | None, cpus: int, matmul_flops: float | None,
                   isa_peak_flops: float | None) -> str | None:
    """Why a calibration must not be saved, with what to do; None when it may be."""
    warn = load_warning(load, cpus)
    if warn is not None:
        return (f"calibration not saved: {warn}. Run the command again when the machine is quiet "
                "(or stop the other jobs), or pass --hardware ID to use a database entry")
    if matmul_flops is not None and isa_peak_flops:
        share = matmul_flops / isa_peak_flops
        if share < IMPLAUSIBLE_SHARE_OF_ISA_PEAK:
            return (f"calibration not saved: fp32 matmul reached {matmul_flops / 1e9:.3g} GFLOP/s, "
                    f"{share:.1%} of the ISA peak ({isa_peak_flops / 1e9:.4g} GFLOP/s); a figure that "
                    "low means the run was starved of CPU. Run the command again when the machine is quiet")
    return None


def implausible_reason(hw: Hardware, threads: int) -> str | None:
    """Why a measured profile must not be saved because a figure is implausible (`plausible`); None when fine."""
    try:
        check_hardware(hw, threads)
    except InvalidProfile as exc:
        return (f"calibration not saved: {exc}. Run the command again when the machine is quiet "
                "(or stop the other jobs)")
    return None


def choose_threads() -> int:
    """`default_threads` for this machine."""
    from .detect import read_cpu_info

    cpu = read_cpu_info()
    return default_threads(cpu.physical_cores, cpu.logical_cpus)


def calibration_refusal(result: Any) -> str | None:
    """`refusal_reason` for a full `CalibrationResult` (cpu only): load at its start and now, matmul vs ISA."""
    if not str(result.device).startswith("cpu"):
        return None
    now = system_load()
    load = max((x for x in (result.load_average, now) if x is not None), default=None)
    isa = result.isa_peak.peak_flops.get("fp32") if result.isa_peak is not None else None
    from .calibration import to_hardware

    return (refusal_reason(load, os.cpu_count() or 1, result.rate("matmul.fp32"), isa)
            or implausible_reason(to_hardware(result), int(result.threads)))


def cache_key(cpu_model: str, threads: int, torch_version: str, device: str = "cpu") -> str:
    """File-safe key: CPU (or GPU) model, thread count, torch version."""
    def slug(s: str) -> str:
        return re.sub(r"[^a-z0-9.]+", "-", s.lower()).strip("-") or "unknown"
    return f"{slug(device)}-{slug(cpu_model)}-{threads}t-torch{slug(torch_version)}"


def profile_cache_path(key: str) -> Path:
    return data_home() / "hardware" / "profiles" / f"{key}.json"


# ------------------------------------------------------------------ the cache


MEASURED_AGAIN = "it is measured again by the next automatic calibration or `modelmeter hardware calibrate`"


def save_cached(key: str, hw: Hardware, model: PerfModel, calibration: dict[str, Any] | None) -> Path:
    """Write the cached profile for `key`; InvalidProfile (nothing written) when `hw` is implausible."""
    check_saveable(hw, calibration)
    path = profile_cache_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"schema": CACHE_SCHEMA, "key": key, "hardware": hw.to_dict(),
               "model": model.to_dict(), "calibration": calibration}
    atomic_write(path, json.dumps(payload, indent=1), what="hardware profile")
    return path


def load_cached(key: str) -> tuple[Hardware, PerfModel] | None:
    """The cached (hardware, model) for `key`; None when absent.

    An unreadable or implausible file is set aside and raises InvalidProfile (it is never used).
    """
    path = profile_cache_path(key)
    found = read_profile(path, CACHE_SCHEMA, then=MEASURED_AGAIN, key=key)
    if found is None:
        return None
    try:
        return found[1], PerfModel.from_dict(found[0]["model"])
    except (ValueError, KeyError, TypeError, AttributeError, UserInputError) as exc:
        kept = set_aside(path)
        raise InvalidProfile(f"the hardware profile {path} is invalid: its prediction model is unreadable ({exc}); "
                             f"set aside as {kept}, not used; {MEASURED_AGAIN}") from exc


# ------------------------------------------------------------------ calibration


def system_load() -> float | None:
    """The 1-minute load average (None where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def short_calibration(
    device: str = "cpu",
    *,
    threads: int | None = None,
    progress: Progress | None = None,
    loadavg: Callable[[], float | None] | None = None,
    refuse: bool = True,
    settings: Any = None,
    microbench_budget_s: float = 14.0,
) -> tuple[Hardware, PerfModel, dict[str, Any]]:
    """Peaks + microbenchmarks + the fitted model; raises CalibrationRefused (see the module docstring)."""
    import torch

    from .calibration import CalibrationSettings, calibrate
    from .detect import read_cpu_info
    from .microbench import run_microbench

    loadavg = loadavg or system_load  # looked up now: tests replace it
    cpu = read_cpu_info()
    cpus = cpu.logical_cpus
    load_start = loadavg()
    if refuse and device == "cpu":
        early = refusal_reason(load_start, cpus, None, None)
        if early is not None:  # do not spend 15 s on a run that cannot be kept
            raise CalibrationRefused(early)
    nthreads = threads if threads is not None else torch.get_num_threads()

    def part(offset: int, share: int) -> Progress | None:
        if progress is None:
            return None
        return lambda desc, done, total: progress(desc, offset + share * done // max(total, 1), 100)

    settings = settings or CalibrationSettings(repeats=3, min_sample_s=0.003, matmul_sizes=(256, 512, 1024),
                                   matmul_target_s=0.01, stream_llc_multiple=1.0,
                                   stream_max_total_bytes=3 * 64 * 2**20, budget_s=8.0,
                                   precisions=("fp32",))
    hw, result = calibrate(device, threads=nthreads, settings=settings, progress=part(0, 35))
    old = torch.get_num_threads()
    torch.set_num_threads(nthreads)
    try:
        bench = run_microbench(device, budget_s=microbench_budget_s, progress=part(35, 65))
    finally:
        torch.set_num_threads(old)
    load_end = loadavg()
    load = max((x for x in (load_start, load_end) if x is not None), default=None)
    isa = result.isa_peak.peak_flops.get("fp32") if result.isa_peak is not None else None
    if refuse and device == "cpu":
        reason = refusal_reason(load, cpus, hw.peak_flops.get("fp32"), isa) or implausible_reason(hw, nthreads)
        if reason is not None:
            raise CalibrationRefused(reason)
    return hw, _fit_model(device, nthreads, hw, result, bench, load, cpus), result.to_dict()


def _fit_model(device: str, nthreads: int, hw: Hardware, result: Any, bench: Any, load: float | None,
               cpus: int) -> PerfModel:
    """The prediction model of microbenchmark points, relative to the peaks of `hw` (fp32)."""
    peaks = Peaks(hw.peak_flops["fp32"], hw.vector_flops["fp32"], hw.memory_bandwidth_bytes_per_s)
    conditions = {"device": device, "device_name": result.device_name, "threads": nthreads,
                  "torch_version": result.torch_version, "load_average": load,
                  "load_warning": load_warning(load, cpus) if device == "cpu" else None,
                  "date": result.date, "duration_s": result.duration_s + bench.duration_s,
                  "skipped": list(bench.skipped)}
    return fit(bench.points, peaks, view_s=bench.view_s, module_call_s=bench.module_call_s,
               conditions=conditions)


def refine_profile(
    hw: Hardware,
    result: Any,
    *,
    progress: Progress | None = None,
    microbench_budget_s: float = 30.0,
    save: bool = True,
    refuse: bool = True,
) -> LocalProfile:
    """`hardware calibrate`'s second half: the microbenchmarks again, fitted to the full calibration.

    `hw`, `result`: what `calibration.calibrate()` measured (its peaks become the model's
    reference). The microbenchmarks run at the calibration's thread count, with a larger time
    budget than the short calibration's (more of the op shapes are measured), and the fitted
    model replaces the cached one for this device, thread count and torch version, which every
    later prediction uses. Raises CalibrationRefused (nothing saved) when the load average
    exceeded the CPUs at the calibration's start or now, as `calibration_refusal` says.
    """
    import torch

    from .microbench import run_microbench

    device = str(result.device)
    nthreads = int(result.threads)
    old = torch.get_num_threads()
    torch.set_num_threads(nthreads)
    try:
        bench = run_microbench(device, budget_s=microbench_budget_s, progress=progress)
    finally:
        torch.set_num_threads(old)
    if refuse:
        reason = calibration_refusal(result)  # the load at its start, and now after the microbenchmarks
        if reason is not None:
            raise CalibrationRefused(reason)
    cpus = os.cpu_count() or 1
    now = system_load()
    load = max((x for x in (result.load_average, now) if x is not None), default=None)
    model = _fit_model(device, nthreads, hw, result, bench, load, cpus)
    key = cache_key(_device_name(device), nthreads, str(torch.__version__), device.split(":")[0])
    path = profile_cache_path(key)
    if save:
        path = save_cached(key, hw, model, result.to_dict())
    return LocalProfile(hw, model, key, path, calibrated_now=True)


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return str(torch.cuda.get_device_name(torch.device(device)))
    from .detect import cpu_name

    return cpu_name()


def local_profile(
    auto_calibrate: bool = True,
    progress: Progress | None = None,
    *,
    device: str = "cpu",
    threads: int | None = None,
    loadavg: Callable[[], float | None] | None = None,
    refuse: bool = True,
) -> LocalProfile | None:
    """This machine's cached profile for the current threads/torch, calibrating it on first use.

    None when there is none and `auto_calibrate` is False. Raises CalibrationRefused
    when the calibration it ran cannot be kept (see the module docstring).
    """
    import torch

    nthreads = threads if threads is not None else torch.get_num_threads()
    key = cache_key(_device_name(device), nthreads, str(torch.__version__), device.split(":")[0])
    path = profile_cache_path(key)
    auto = auto_calibrate and os.environ.get(AUTO_ENV, "1") != "0"
    try:
        cached = load_cached(key)
    except InvalidProfile as exc:
        if not auto:
            raise
        warn_set_aside(exc, "; calibrating now")
        cached = None
    if cached is not None:
        return LocalProfile(_refined(cached[0], cached[1]), cached[1], key, path)
    if not auto:
        return None
    hw, model, calibration = short_calibration(device, threads=nthreads, progress=progress,
                                               loadavg=loadavg, refuse=refuse)
    save_cached(key, hw, model, calibration)
    if device == "cpu" and not local_profile_path().exists():
        # `--hardware local` works from now on; `hardware calibrate` overwrites it with finer figures.
        save_local_profile(hw, calibration)
    return LocalProfile(_refined(hw, model), model, key, path, calibrated_now=True)


def stderr_progress(stream: Any = None) -> Progress:
    """A one-line progress display for the automatic calibration, on stderr."""
    import sys

    out = stream if stream is not None else sys.stderr
    shown = {"pct": -1}

    def show(desc: str, done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if pct != shown["pct"]:
            shown["pct"] = pct
            end = "\n" if pct >= 100 else ""
            out.write(f"\rcalibrating this machine once (cached for later runs): {pct:3d}%{end}")
            out.flush()

    return show


def _refined(hw: Hardware, model: PerfModel) -> Hardware:
    """The full `hardware calibrate` profile when it was measured under the same conditions."""
    try:
        full = load_local_profile()
    except InvalidProfile as exc:
        warn_set_aside(exc)
        return hw
    except UserInputError:
        return hw
    if full is None or full == hw:
        return hw
    cond = model.conditions
    text = full.sources.get("calibration", "")
    # '1 thread' (and the '1 threads' of profiles saved before the plural was fixed), not '11 threads'.
    threads = re.search(rf"(?<!\d){cond.get('threads')} threads?\b", text) is not None
    same = (threads and f"torch {cond.get('torch_version')}" in text
            and str(cond.get("device_name", "")) in full.name)
    return full if same else hw
