"""This machine's calibrated prediction in a run (layer 5).

Policy around `hardware.local` (the cached per-op-class profile) and
`analysis.predict` (the prediction it gives): the CPU thread default a command
runs with, the 'local' profile calibrated on first use (progress through the
caller's callback; a refused calibration keeps a saved profile as the bound),
and the calibrated figure beside each roofline bound.
"""

from __future__ import annotations

from collections.abc import Callable

from ..analysis.predict import PredictionResult, predict
from ..analysis.roofline import RooflineResult
from ..core.results import Counts
from ..hardware import Hardware, load_local_profile
from ..hardware.local import CalibrationRefused, LocalProfile, choose_threads, local_profile
from ..hardware.perfmodel import PerfModel
from ..hardware.plausible import InvalidProfile, warn_set_aside
from ..hardware.specs import LOCAL_ID

# progress(description, steps_done, steps_total), as `hardware.local` reports it
Progress = Callable[[str, int, int], None]

NO_LOCAL_PROFILE = ("no roofline prediction: no calibrated 'local' profile; run "
                    "`modelmeter hardware calibrate` or pass --hardware ID")


def apply_threads(threads: int | None, device: str) -> int | None:
    """Set torch's intra-op threads: `threads`, else on cpu the physical cores (`choose_threads`).

    For the CLI, whose process ends with the command (a library call leaves its caller's
    threads alone). Returns the count set, None when left as it was. Called before the
    profile is looked up: the calibrated profile is keyed by the thread count.
    """
    import torch

    if threads is None and device != "cpu":
        return None
    count = threads if threads is not None else choose_threads()
    torch.set_num_threads(count)
    return count


def local_hardware(progress: Progress | None = None) -> tuple[Hardware | None, str | None]:
    """This machine's profile, calibrated on first use; (None, why) when there is none.

    An invalid profile is set aside by the reader; here the run goes on as if there were none,
    with a `ProfileSetAside` warning that says so.
    """
    try:
        prof = local_profile(progress=progress)
    except CalibrationRefused as exc:
        saved = _saved_local()  # a profile saved earlier still gives the bound
        return (saved, None) if saved is not None else (None, f"no roofline prediction: {exc}")
    except InvalidProfile as exc:  # automatic calibration off
        warn_set_aside(exc)
        prof = None
    if prof is not None:
        return prof.hardware, None
    hw = _saved_local()  # automatic calibration off: a saved profile still serves the bound
    return (hw, None) if hw is not None else (None, NO_LOCAL_PROFILE)


def _saved_local() -> Hardware | None:
    try:
        return load_local_profile()
    except InvalidProfile as exc:
        warn_set_aside(exc)
        return None


def _cached_only() -> LocalProfile | None:
    """The cached profile for these threads, never calibrating; None (said) when it was invalid."""
    try:
        return local_profile(auto_calibrate=False)
    except InvalidProfile as exc:
        warn_set_aside(exc)
        return None


def local_perf_model(hw: Hardware | None, device: str) -> PerfModel | None:
    """The calibrated prediction model when `hw` is this machine's profile (never calibrates)."""
    if hw is None or hw.id != LOCAL_ID or device != "cpu":
        return None
    prof = _cached_only()
    return prof.model if prof is not None else None


def local_for_these_threads(hw: Hardware) -> Hardware:
    """On 'local', the cached profile of the thread count this process runs with.

    The saved 'local' file is whichever profile was calibrated first or by `hardware
    calibrate`, perhaps at another thread count: its peaks would put the bound of a
    2-thread measurement at 1-thread speed (above the measurement). The bound, the
    calibrated prediction and `--measure` then describe one configuration.
    """
    if hw.id != LOCAL_ID:
        return hw
    prof = _cached_only()
    return prof.hardware if prof is not None else hw


def calibrated_prediction(counts: Counts, result: RooflineResult | None,
                          model: PerfModel | None) -> PredictionResult | None:
    """`analysis.predict` (None without a model, a roofline, or at another precision)."""
    if model is None or result is None:
        return None
    return predict(counts, result, model)


def status_progress(say: Callable[[str], None]) -> Progress:
    """The calibration's progress as status lines (for a caller that shows only a spinner)."""
    return lambda _desc, done, total: say(
        f"calibrating this machine once (cached for later runs): {100 * done // max(total, 1)}%")


def any_progress(on_calibration: Progress | None, on_status: Callable[[str], None] | None) -> Progress | None:
    """The caller's calibration callback, else its status callback, else nothing (the library never prints)."""
    if on_calibration is not None:
        return on_calibration
    return status_progress(on_status) if on_status is not None else None


__all__ = ["any_progress", "apply_threads", "calibrated_prediction", "local_for_these_threads", "local_hardware",
           "local_perf_model", "status_progress"]
