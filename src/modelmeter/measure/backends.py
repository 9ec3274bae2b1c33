"""Backends a benchmark can run a model through: eager, torch.compile, ONNX Runtime (layer 3).

Each backend turns (module, example inputs, device) into a zero-argument call
that the benchmark times with the same timer as eager, plus the one-off time it
took to get there, reported apart from the steady state:

* ``eager`` — the module under ``torch.inference_mode``; no setup.
* ``compile`` — ``torch.compile(module)`` (inductor). Compilation happens on the
  first call, so that call is timed on its own as ``compile_time_s`` (it includes
  one forward pass); the timer's warm-up then absorbs any further recompiles.
  On CPU inductor generates C++: without a C++ compiler the backend is refused in
  one line before any model runs.
* ``onnxruntime`` — ``torch.onnx.export`` (the torch.export-based exporter, the
  default of torch >= 2.9, which needs onnxscript) to an in-memory model, then
  an ``onnxruntime.InferenceSession`` on ``CPUExecutionProvider``; the call feeds
  the same input values as numpy arrays. ``setup_s`` = export + session creation.
  Shapes are static: each batch size is exported on its own.

A backend whose packages are missing is refused in one line naming the extra
that installs them (``pip install "modelmeter[onnx]"``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import UserInputError

BACKENDS = ("eager", "compile", "onnxruntime")
# The packages each backend imports, and the extra of modelmeter that installs them.
_REQUIRES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "eager": ((), None),
    "compile": ((), None),
    "onnxruntime": (("onnx", "onnxruntime", "onnxscript"), "onnx"),
}


@dataclass(frozen=True)
class PreparedCall:
    """A backend's zero-argument call and what it cost to build it."""

    backend: str
    call: Callable[[], Any]
    setup_s: float  # one-off: export + session (onnxruntime), first call (compile), 0 (eager)
    setup_what: str  # what setup_s timed, in words
    detail: Mapping[str, Any]  # backend facts worth keeping (exporter, provider, ...)


def parse_backends(text: Sequence[str] | str | None, compile_flag: bool = False) -> list[str]:
    """`--backend` values (repeatable, comma lists) + `--compile` -> backends in order, eager first.

    Eager is always measured: it is the baseline every speed-up is relative to.
    """
    names: list[str] = ["eager"]
    items = [text] if isinstance(text, str) else list(text or ())
    for item in items:
        for raw in item.split(","):
            name = raw.strip().lower()
            if not name:
                continue
            if name not in BACKENDS:
                raise UserInputError(f"unknown backend {raw.strip()!r}; use {', '.join(BACKENDS)}")
            if name not in names:
                names.append(name)
    if compile_flag and "compile" not in names:
        names.append("compile")
    return names


def check_backend(name: str, device: str) -> None:
    """Refuse, in one line, a backend that cannot run here (before any model is built)."""
    if name not in BACKENDS:
        raise UserInputError(f"unknown backend {name!r}; use {', '.join(BACKENDS)}")
    modules, extra = _REQUIRES[name]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserInputError(f"backend {name} needs {', '.join(missing)}: "
                             f"pip install \"modelmeter[{extra}]\"")
    if name == "onnxruntime" and device != "cpu":
        raise UserInputError("backend onnxruntime runs on CPU here (CPUExecutionProvider); "
                             "use --device cpu")
    if name == "compile" and device == "cpu" and cxx_compiler() is None:
        raise UserInputError("backend compile on CPU needs a C++ compiler for inductor "
                             "(none of $CXX, g++, c++, clang++ found); install one or drop --compile")


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use on CPU, or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and (path := shutil.which(name)):
            return path
    return None


def prepare_call(backend: str, module: Any, args: tuple, kwargs: Mapping[str, Any],
                 device: str) -> PreparedCall:
    """The zero-argument call of one forward pass of ``module(*args, **kwargs)`` on ``backend``."""
    check_backend(backend, device)
    if backend == "eager":
        return _eager(module, args, kwargs)
    if backend == "compile":
        return _compiled(module, args, kwargs)
    return _onnxruntime(module, args, kwargs)


def _eager(module: Any, args: tuple, kwargs: Mapping[str, Any]) -> PreparedCall:
    import torch

    def call() -> Any:
        with torch.inference_mode():
            return module(*args, **kwargs)

    return PreparedCall("eager", call, 0.0, "nothing (eager)", {})


def _compiled(module: Any, args: tuple, kwargs: Mapping[str, Any]) -> PreparedCall:
    import torch

    compiled = torch.compile(module)

    def call() -> Any:
        with torch.inference_mode():
            return compiled(*args, **kwargs)

    start = time.perf_counter()
    call()  # compiles: inductor traces, lowers and builds its kernels here
    first = time.perf_counter() - start
    return PreparedCall("compile", call, first, "torch.compile: the first call (compilation + one "
                        "forward)", {"compiler": "inductor", "mode": "default"})


def _onnxruntime(module: Any, args: tuple, kwargs: Mapping[str, Any]) -> PreparedCall:
    import onnxruntime as ort
    import torch

    start = time.perf_counter()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), _quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's
        # verbose=False: the exporter otherwise prints its steps to stdout, into the report.
        torch.onnx.export(module, tuple(args), buffer, kwargs=dict(kwargs) or None, dynamo=True,
                          verbose=False)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings would land in the user's terminal
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    setup = time.perf_counter() - start

    feeds = _feeds([i.name for i in session.get_inputs()], module, args, kwargs)

    def call() -> Any:
        return session.run(None, feeds)

    return PreparedCall("onnxruntime", call, setup, "torch.onnx.export + InferenceSession",
                        {"exporter": "torch.onnx.export (dynamo)", "provider": "CPUExecutionProvider",
                         "onnxruntime_version": ort.__version__})


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Errors only from `name` (the exporter logs a warning per torchvision op it skips)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _feeds(names: list[str], module: Any, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The session's inputs by name: the exporter names them after the forward's arguments."""
    import inspect

    try:
        bound = inspect.signature(module.forward).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        bound = {}
    by_name = {k: v for k, v in bound.items() if _is_tensor(v)}
    by_name.update({k: v for k, v in kwargs.items() if _is_tensor(v)})
    if not all(n in by_name for n in names):
        # Names the exporter made up (nested inputs): the tensors in call order.
        values = _flat_tensors((args, kwargs))
        if len(values) < len(names):
            raise UserInputError(f"the exported ONNX graph takes {len(names)} inputs but the "
                                 f"model was given {len(values)} tensors")
        by_name = dict(zip(names, values, strict=False))
    return {n: by_name[n].detach().cpu().numpy() for n in names}


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _flat_tensors(value: Any) -> list[Any]:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flat_tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat_tensors(v)]
    return []


# ---------------------------------------------------------------- one benchmark per backend


@dataclass(frozen=True)
class Setup:
    """What building one batch's call cost on a backend (the call itself is not kept)."""

    setup_s: float
    setup_what: str
    detail: Mapping[str, Any]


@dataclass(frozen=True)
class BackendRun:
    """One backend's benchmark: the finished rows, and why a batch could not run."""

    backend: str
    rows: tuple[Any, ...]  # measure.bench.BenchRow, in batch order
    setups: Mapping[int, Setup]
    errors: Mapping[int, str]  # batch -> first line of the failure (export, compile)
    interrupted: bool = False

    @property
    def error(self) -> str | None:
        """The failure when no batch ran at all (the usual case: an export that cannot work)."""
        return next(iter(self.errors.values())) if self.errors and not self.rows else None


InputsFn = Callable[[int], tuple[Any, tuple, Mapping[str, Any]]]
"""inputs(batch) -> (module, args, kwargs) on the benchmark's device."""


def run_backends(backends: Sequence[str], inputs: InputsFn, batches: Sequence[int], *,
                 device: str = "cpu", **bench_options: Any) -> list[BackendRun]:
    """Benchmark each non-eager backend with `run_bench`'s timer and options, one after another.

    Eager is the caller's own run (with its prediction and energy); these runs
    time the steady state only. Each batch runs on its own, so a failure (an
    export the exporter cannot do, a compile error) costs that batch only and is
    kept as its error, never a lost report.
    """
    from .bench import run_bench

    runs: list[BackendRun] = []
    for name in backends:
        if name == "eager":
            continue
        setups: dict[int, Setup] = {}
        errors: dict[int, str] = {}
        rows: list[Any] = []
        stop = False

        def make_call(batch: int, name: str = name, setups: dict[int, Setup] = setups) -> Any:
            module, args, kwargs = inputs(batch)
            prepared = prepare_call(name, module, args, kwargs, device)
            setups[batch] = Setup(prepared.setup_s, prepared.setup_what, prepared.detail)
            return prepared.call

        for batch in batches:
            try:
                result = run_bench(make_call, [batch], device=device, **bench_options)
            except UserInputError:
                raise
            except Exception as exc:  # noqa: BLE001 - a backend's failure must not cost the rest
                errors[batch] = _first_line(exc)
                continue
            rows.extend(result.rows)
            if result.interrupted or result.oom:
                stop = result.interrupted
                break
        runs.append(BackendRun(name, tuple(rows), setups, errors, interrupted=stop))
        if stop:
            break
    return runs


def _first_line(exc: BaseException) -> str:
    """The failure in one line, without the exporter's terminal colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(exc).__name__}: {exc}").strip()
    return text.splitlines()[0][:300]


def backends_section(eager: Any, runs: Sequence[BackendRun]) -> list[dict[str, Any]]:
    """`measured.backends`: eager first, then each backend, per batch with the speed-up.

    `speedup_vs_eager` = eager p50 / backend p50 at the same batch (2.0: twice as fast).
    """
    eager_p50 = {r.batch: r.sweep.latency.p50_s for r in eager.rows
                 if r.status == "ok" and r.sweep.latency is not None}
    out = [_backend_entry("eager", eager.rows, {}, {}, eager_p50)]
    out += [_backend_entry(r.backend, r.rows, r.setups, r.errors, eager_p50) for r in runs]
    return out


_LATENCY_KEYS = ("min", "mean", "std", "p50", "p90", "p99", "iterations")


def _backend_entry(name: str, bench_rows: Sequence[Any], setups: Mapping[int, Setup],
                   errors: Mapping[int, str], eager_p50: Mapping[int, float]) -> dict[str, Any]:
    rows = []
    for row in bench_rows:
        lat = row.sweep.latency
        p50 = lat.p50_s if lat is not None and row.status == "ok" else None
        base = eager_p50.get(row.batch)
        setup = setups.get(row.batch)
        full = lat.to_dict() if lat is not None else None
        rows.append({
            "batch": row.batch,
            "status": row.status,
            "latency_s": {k: full[k] for k in _LATENCY_KEYS} if full is not None else None,
            "noisy": lat.noisy if lat is not None else None,
            "throughput_per_s": row.throughput_per_s,
            "speedup_vs_eager": base / p50 if base is not None and p50 else None,
            "setup_s": setup.setup_s if setup is not None else (0.0 if name == "eager" else None),
            "compile_time_s": setup.setup_s if setup is not None and name == "compile" else None,
            "error": row.sweep.error,
        })
    detail = next((s.detail for s in setups.values()), {})
    what = next((s.setup_what for s in setups.values()), "nothing (eager)" if name == "eager" else None)
    for batch, message in errors.items():  # a batch the backend could not run, in its place
        rows.append({"batch": batch, "status": "error", "latency_s": None, "noisy": None,
                     "throughput_per_s": None, "speedup_vs_eager": None,
                     "setup_s": None, "compile_time_s": None, "error": message})
    rows.sort(key=lambda r: r["batch"])
    error = next(iter(errors.values())) if errors and len(errors) == len(rows) else None
    return {"backend": name, "setup": what, "detail": dict(detail), "error": error, "rows": rows}
