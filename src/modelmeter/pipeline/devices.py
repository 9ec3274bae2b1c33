"""Which device a run predicts for and where it measures (layer 5).

Policy, not lookup: `hardware.lookup` turns an id into a `Hardware`; here is
what each command does when no id is given (the calibrated 'local' profile,
the database entry of the GPU being timed, or no roofline and a note saying
how to get one), and whether the CUDA device asked for exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..analysis.roofline import check_precisions
from ..core.errors import UnknownHardwareError, UserInputError
from ..hardware import Hardware, get_hardware, load_local_profile, local_profile_path
from ..hardware.lookup import match_gpu_name
from ..measure.timer import parse_device
from .calibrated import NO_LOCAL_PROFILE, Progress, local_hardware

NO_HARDWARE_NOTE = ("no roofline: no --hardware and no calibrated 'local' profile; run "
                    "`modelmeter hardware calibrate` or pass --hardware ID (e.g. --hardware h100-sxm)")


def check_device(device: str) -> str:
    """'cpu' | 'cuda' | 'cuda:N', and the GPU must exist: one clear line otherwise."""
    kind, index = parse_device(device)  # 'xpu', junk -> UserInputError naming the valid forms
    if kind == "cpu":
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise UserInputError(
            f"--device {device}: torch {torch.__version__} sees no CUDA device "
            f"(built with CUDA {torch.version.cuda or 'none'}); use --device cpu"
        )
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise UserInputError(f"--device {device}: only {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return f"cuda:{index}" if index is not None else "cuda"


def precision_check(hw: Hardware, dtype: str | None, weights: str | None = None, *,
                    weights_option: bool = True) -> Callable[[str], None]:
    """The check `analyse(check=...)` runs between building the model and tracing it: `hw`
    must have a matrix peak at the precision the trace will count. Without a `dtype` that is
    the model's own precision, known only once it is built; the message says so."""
    def check(precision: str) -> None:
        try:
            check_precisions(hw, precision, weights, weights_option=weights_option)
        except UserInputError as exc:
            if dtype is not None or not hw.peak_flops:  # asked for, or no precision would do
                raise
            raise UserInputError(f"{exc} ({precision} is the model's own precision: pass --dtype "
                                 f"with one {hw.id} has)") from exc
    return check


def resolve_hardware(hardware: Any) -> Hardware:
    """A `Hardware` as given, an id looked up, or (None) the calibrated 'local' profile, else a clear error."""
    if isinstance(hardware, Hardware):
        return hardware
    if hardware is not None:
        return get_hardware(hardware)
    local = load_local_profile()
    if local is None:
        raise UnknownHardwareError(
            f"no --hardware given and no calibrated 'local' profile at {local_profile_path()}; "
            "pass --hardware ID (`modelmeter hardware list`) or run `modelmeter hardware calibrate`"
        )
    return local


def prediction_hardware(hw_id: str | None, device: str, dtype: str | None,
                        progress: Progress | None = None) -> tuple[Hardware | None, str | None]:
    """The bench's roofline profile, or (None, why there is no prediction).

    On cpu with no id: this machine's profile, calibrated on first use (`progress` shows it).
    """
    if hw_id is not None:
        hw = get_hardware(hw_id)
        check_precisions(hw, dtype, weights_option=False)  # asked for by name: a mismatch is the user's to fix
        return hw, None
    if device == "cpu":
        hw, why = local_hardware(progress)
        if hw is None:
            return None, why
    else:
        import torch

        name = torch.cuda.get_device_name(torch.device(device))
        hw = match_gpu_name(name)
        if hw is None:
            return None, f"no roofline prediction: no database entry matches {name!r}; pass --hardware ID"
    try:
        check_precisions(hw, dtype, weights_option=False)
    except UserInputError as exc:
        return None, f"no roofline prediction: {exc}"
    return hw, None


def report_hardware(hw_id: str | None, dtype: str | None,
                    progress: Progress | None = None) -> tuple[Hardware | None, str | None]:
    """The report's roofline device: the named one (errors are the user's), else 'local'
    (calibrated on first use), else a note."""
    if hw_id is not None:
        hw = get_hardware(hw_id)
        check_precisions(hw, dtype, weights_option=False)
        return hw, None
    hw, why = local_hardware(progress)
    if hw is None:
        return None, NO_HARDWARE_NOTE if why == NO_LOCAL_PROFILE else why
    try:
        check_precisions(hw, dtype, weights_option=False)
    except UserInputError as exc:
        return None, f"no roofline on the 'local' profile: {exc}"
    return hw, None


def same_kind(hw: Hardware | None, device: str) -> bool:
    """A roofline prediction only compares with a measurement made on that kind of chip."""
    return hw is not None and (hw.kind == "cpu") == (device == "cpu")
