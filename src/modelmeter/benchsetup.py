"""Building a model per batch size for a benchmark, and its predictions (layer 5).

Used by `api.bench` and the `bench` command: the model is built once on the
device, its inputs per batch (real rows tiled along dim 0, so token ids stay
valid), and each batch's roofline prediction comes from a meta-device trace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from .core.errors import UserInputError


def check_device(device: str) -> str:
    """'cpu' | 'cuda' | 'cuda:N', and the GPU must exist: one clear line otherwise."""
    from .measure.timer import parse_device

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


def prediction_hardware(hw_id: str | None, device: str, dtype: str | None) -> tuple[Any, str | None]:
    """The profile for the roofline, or (None, why there is no prediction)."""
    from .analysis.roofline import check_precisions
    from .hardware import get_hardware, list_hardware

    if hw_id is not None:
        hw = get_hardware(hw_id)
        check_precisions(hw, dtype)  # asked for by name: a mismatch is the user's to fix
        return hw, None
    if device == "cpu":
        hw, why = local_hardware_for_prediction()
        if hw is None:
            return None, why
    else:
        import torch

        name = torch.cuda.get_device_name(torch.device(device))
        hw = _match_gpu(name, [h for h in list_hardware() if h.kind == "gpu"])
        if hw is None:
            return None, f"no roofline prediction: no database entry matches {name!r}; pass --hardware ID"
    try:
        check_precisions(hw, dtype)
    except UserInputError as exc:
        return None, f"no roofline prediction: {exc}"
    return hw, None


def apply_threads(threads: int | None, device: str) -> int | None:
    """Set torch's intra-op threads: `threads`, else on cpu the physical cores the load leaves free.

    For the CLI, whose process ends with the command (a library call leaves its caller's
    threads alone). Returns the count set, None when left as it was.
    """
    import torch

    from .hardware.local import choose_threads

    if threads is None and device != "cpu":
        return None
    count = threads if threads is not None else choose_threads()
    torch.set_num_threads(count)
    return count


def local_hardware_for_prediction(progress: Any = None) -> tuple[Any, str | None]:
    """This machine's profile, calibrated on first use (hardware.local); (None, why) when there is none."""
    from .hardware import load_local_profile
    from .hardware.local import CalibrationRefused, local_profile, stderr_progress

    try:
        prof = local_profile(progress=progress or stderr_progress())
    except CalibrationRefused as exc:
        saved = load_local_profile()  # a profile saved earlier still gives the bound
        return (saved, None) if saved is not None else (None, f"no roofline prediction: {exc}")
    if prof is not None:
        return prof.hardware, None
    hw = load_local_profile()  # automatic calibration off: a saved profile still serves the bound
    if hw is None:
        return None, ("no roofline prediction: no calibrated 'local' profile; run "
                      "`modelmeter hardware calibrate` or pass --hardware ID")
    return hw, None


def local_perf_model(hw: Any, device: str) -> Any:
    """The calibrated prediction model when `hw` is this machine's profile (never calibrates)."""
    if hw is None or hw.id != "local" or device != "cpu":
        return None
    from .hardware.local import local_profile

    prof = local_profile(auto_calibrate=False)
    return prof.model if prof is not None else None


def calibrated_latency(counts: Any, roofline_result: Any, model: Any) -> float | None:
    """The calibrated total of `analysis.predict` (None without a model or at another precision)."""
    if model is None or roofline_result is None:
        return None
    from .analysis.predict import predict

    p = predict(counts, roofline_result, model)
    return p.predicted_latency_s if p is not None else None


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _match_gpu(device_name: str, candidates: list[Any]) -> Any:
    """The entry whose model number (H100, A100, 4090, L40S) is in the name; ties by shared words."""
    have = _tokens(device_name)
    best, best_score = None, 0
    for hw in candidates:
        words = _tokens(hw.name)
        model_words = [w for w in words if any(c.isdigit() for c in w) and any(c.isalpha() for c in w)
                       or w.isdigit() and len(w) == 4]
        if not model_words or not any(w in have for w in model_words):
            continue
        score = len(words & have)
        if score > best_score:
            best, best_score = hw, score
    return best


# ------------------------------------------------------------------ models per batch


@dataclass
class BenchBuilder:
    """Builds the model once and its inputs per batch; predicts per batch on meta."""

    spec: str | None
    inputs: list[str] | None
    seq: int | None
    dtype: str | None
    device: str
    hw: Any
    notes: list[str] = field(default_factory=list)
    name: str = ""
    _module: Any = None
    _base: tuple[tuple, dict] | None = None
    _meta: dict[int, Any] = field(default_factory=dict)
    _primary: tuple[Any, Any] | None = None  # (Analysis, RooflineResult | None) of the first batch

    def __post_init__(self) -> None:
        from .sources.resolve import DEFAULT_MODEL

        self.name = self.spec or DEFAULT_MODEL

    def _resolve(self, batch: int | None, device: str) -> Any:
        from .api import check_build_options
        from .sources import resolve_model

        loaded = resolve_model(self.spec, inputs=self.inputs, batch=batch, seq=self.seq, device=device,
                               dtype=self.dtype)
        # --seq must shape the inputs; --batch always applies (fixed inputs are tiled, below).
        check_build_options(loaded, seq=self.seq)
        return loaded

    def default_batch(self) -> int:
        """The model's own example batch (leading dim of its first tensor input), else 1."""
        loaded = self._resolve(None, "meta")
        lead = leading_dim(loaded.args, loaded.kwargs)
        return lead or 1

    def make_call(self, batch: int) -> Any:
        import torch

        meta = self._resolve(batch, "meta")
        args, kwargs = meta.args, meta.kwargs
        lead = leading_dim(args, kwargs)
        if lead is not None and lead != batch:
            # Fixed example inputs (a factory's own, no --input): set dim 0 ourselves.
            args, kwargs = map_tensors(lambda t: t.new_empty((batch, *t.shape[1:])) if _is_batched(t, lead)
                                else t, (args, kwargs))
            note = f"the model's example inputs have batch {lead}; dim 0 was tiled to each --batch"
            if note not in self.notes:
                self.notes.append(note)
        self._meta[batch] = replace(meta, args=args, kwargs=kwargs)
        if self._module is None:
            loaded = self._resolve(batch, "cpu")
            self._module = loaded.module.eval().to(self.device)
            self._base = (loaded.args, loaded.kwargs)
        assert self._base is not None
        real = _tile_like((args, kwargs), self._base)
        if real is None:  # shapes differ beyond dim 0 (rare): build the inputs for this batch
            loaded = self._resolve(batch, "cpu")
            real = (loaded.args, loaded.kwargs)
        run_args, run_kwargs = map_tensors(lambda t: t.to(self.device), real)
        module = self._module

        def call() -> Any:
            with torch.inference_mode():
                return module(*run_args, **run_kwargs)

        return call

    def predict(self, batch: int) -> Any:
        from . import api
        from .analysis.roofline import roofline
        from .measure.bench import Prediction

        # The meta model and the very inputs of this batch (tiled when the spec fixes them).
        analysis = api.analyse_loaded(self._meta[batch], dtype=self.dtype, batch=batch, seq=self.seq)
        t = analysis.counts.totals
        result = None
        if self.hw is not None:
            input_bytes = sum(x.storage_nbytes for x in analysis.trace.inputs)
            result = roofline(analysis.counts, self.hw, dtype=self.dtype, input_bytes=input_bytes)
        if self._primary is None:
            self._primary = (analysis, result)
        return Prediction(
            flops=float(t.flops + t.other_flops),
            dram_bytes=float(t.bytes_read + t.bytes_written),
            precision=self.dtype or "fp32",
            latency_s=result.latency_s if result is not None else None,
            hardware=self.hw.id if self.hw is not None else None,
            tdp_w=self.hw.tdp_w if self.hw is not None else None,
            peak_activation_bytes=_counted_peak_activations(analysis),
            calibrated_latency_s=calibrated_latency(analysis.counts, result,
                                                    local_perf_model(self.hw, self.device)),
        )

    def report(self, result: Any) -> Any:
        """The count report of the first batch (+ its roofline), or a bare one without a trace."""
        from . import api
        from .core.report import Report

        if self._primary is None:
            return Report(model={"name": self.name}, settings={"dtype": self.dtype}, totals={},
                          modules=[], uncounted_ops=[])
        analysis, rl = self._primary
        report = api.count_report(analysis)
        if rl is not None:
            from .analysis.roofline import roofline_section

            report.roofline = roofline_section(rl, 2)
            report.methods["roofline"] = report.roofline["method"]
        return report


def _counted_peak_activations(analysis: Any) -> int:
    """The counted inference peak (`totals.activations.peak_inference_bytes`) of this trace."""
    from .count.liveness import live_peak

    return live_peak(analysis.trace).peak_bytes


def map_tensors(fn: Any, value: Any) -> Any:
    """Apply ``fn`` to every tensor in nested tuples, lists and dicts."""
    import torch

    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(fn, v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(fn, v) for v in value)
    return value


def tensors_in(value: Any) -> list[Any]:
    """Every tensor in nested tuples, lists and dicts, in order."""
    found: list[Any] = []
    map_tensors(lambda t: found.append(t) or t, value)
    return found


def leading_dim(args: Any, kwargs: Any) -> int | None:
    """The batch size of the inputs: dim 0 of the first tensor that has one."""
    ts = [t for t in tensors_in((args, kwargs)) if t.dim() > 0]
    return int(ts[0].shape[0]) if ts else None


def _is_batched(t: Any, lead: int) -> bool:
    return t.dim() > 0 and t.shape[0] == lead


def _tile_like(target: Any, base: Any) -> Any:
    """Real inputs shaped like the meta ``target``, by repeating ``base`` rows along dim 0.

    Repeating real rows keeps token ids inside the vocabulary and masks valid.
    None when a shape differs beyond dim 0.
    """
    import torch

    want, have = tensors_in(target), tensors_in(base)
    if len(want) != len(have):
        return None
    out = []
    for w, h in zip(want, have, strict=True):
        if tuple(w.shape) == tuple(h.shape):
            out.append(h)
        elif w.dim() > 0 and w.dim() == h.dim() and w.shape[1:] == h.shape[1:] and h.shape[0] > 0:
            out.append(h.index_select(0, torch.arange(w.shape[0]) % h.shape[0]))
        else:
            return None
    it = iter(out)
    return map_tensors(lambda _t: next(it), base)


# ------------------------------------------------------------------ progress and output
