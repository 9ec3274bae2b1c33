"""From validated options to a traced, counted model; models per batch for timing (layer 5).

`analyse` is the one pass every view shares: resolve the model, trace it
once, count the events. `BatchModels` serves the measurement: the model is
built once on the device, its inputs per batch (real rows tiled along dim 0,
so token ids stay valid), and each batch's prediction comes from a
meta-device trace. Nested inputs are walked with `torch.utils._pytree`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..core.attention import FLASH, IMPLEMENTATIONS
from ..core.errors import UserInputError
from ..core.events import Trace
from ..core.precision import parse_precision
from ..core.results import Counts
from ..count import count_trace
from ..count.liveness import live_peak
from ..sources import DEFAULT_MODEL, LoadedModel, resolve_model
from ..trace import trace_model
from .options import ModelOptions

# Weight-only quantised formats have no torch dtype to run in; their
# activations and compute are traced in fp16, as such kernels run.
_QUANTISED_TRACE_DTYPE = "fp16"


@dataclass(frozen=True, repr=False)
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
    notes: tuple[str, ...] = ()  # how an option applied, when not plainly
    attention: str | None = None  # the SDPA kernel asked for (None: the default, flash)

    def __repr__(self) -> str:
        """A few lines; the trace and counts themselves are `.trace` and `.counts`."""
        t = self.counts.totals
        return (f"modelmeter Analysis: {self.loaded.name} ({self.trace.mode} trace, "
                f"{len(self.trace.events)} op events, {len(self.trace.modules)} modules)\n"
                f"  {t.params:,} parameters, {t.macs:,} MACs, {t.other_flops:,} other FLOPs\n"
                "  (the full data: .loaded, .trace, .counts)")

    __str__ = __repr__

    @property
    def input_bytes(self) -> int:
        """Bytes of the model's inputs (the roofline's unavoidable reads)."""
        return sum(t.storage_nbytes for t in self.trace.inputs)

    @property
    def traced_dtype(self) -> str:
        """The precision the trace ran in, by its short name ('fp32', 'bf16'): that of the
        floating-point parameters, else of the floating-point inputs, else fp32."""
        return _traced_dtype(self.trace)


def _traced_dtype(trace: Trace) -> str:
    for t in (*trace.parameters, *trace.inputs):
        dtype = t.dtype.replace("torch.", "")
        if dtype.startswith(("float", "bfloat")):
            return parse_precision(dtype).name
    return "fp32"


def trace_dtype_for(precision: str | None) -> str | None:
    if precision is None:
        return None
    p = parse_precision(precision)
    if p.name in ("fp32", "fp64", "fp16", "bf16"):
        return p.name
    if p.name == "tf32":
        return "fp32"
    return _QUANTISED_TRACE_DTYPE


def load(options: ModelOptions) -> LoadedModel:
    """Resolve a spec string (or None: the default model), or wrap a module and its inputs.

    A spec is built on `options.device` (default meta) in the trace dtype of
    `options.dtype`; `batch` and `seq` must shape its inputs (else an error).
    """
    if options.is_spec:
        loaded = resolve_model(options.model, inputs=list(options.inputs) if options.inputs else None,
                               batch=options.batch, seq=options.seq, device=options.device or "meta",
                               dtype=trace_dtype_for(options.dtype),
                               trust_remote_code=options.trust_remote_code)
        check_build_options(loaded, batch=options.batch, seq=options.seq)
        if options.name is not None:
            loaded.name = options.name
        return loaded
    args, kwargs = _split_inputs(options.example_inputs)
    return LoadedModel(name=options.name or type(options.model).__name__, module=options.model,
                       args=args, kwargs=kwargs, kind="custom", source="module",
                       inputs_from="the example inputs given")


def _split_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def check_build_options(loaded: LoadedModel, *, batch: int | None = None, seq: int | None = None) -> None:
    """Raise when `batch` or `seq` did not shape the inputs a spec was built with."""
    lead = leading_dim(loaded.args, loaded.kwargs)
    if batch is not None and lead is not None and lead != batch:
        raise UserInputError(
            f"--batch {batch} cannot apply to {loaded.name}: its example inputs fix batch {lead}; "
            "give the input shapes instead (--input / inputs=[...])")
    # Only modelmeter's own text inputs have a sequence dimension it knows (make_hf_inputs).
    if seq is not None and (loaded.source not in ("preset", "hf-folder", "hub") or loaded.kind == "vision"):
        raise UserInputError(
            f"--seq {seq} cannot apply to {loaded.name}: it sets the sequence length of text "
            "presets and transformers folders; give the input shapes instead (--input / inputs=[...])")


def analyse_loaded(loaded: LoadedModel, options: ModelOptions, *, backward: bool = False) -> Analysis:
    """Trace a loaded model once and count it, at `options.dtype` / `options.group_size`."""
    # SDPA is traced as the kernel asked for (flash by default: what devices run), never as
    # whatever the trace device happens to pick (meta would decompose it into its math form).
    trace = trace_model(loaded.module, loaded.args, loaded.kwargs, backward=backward,
                        attention=options.attention or FLASH)
    counts = count_trace(trace, precision=options.dtype, group_size=options.group_size)
    # A spec was built in the trace dtype of `dtype`; a module is traced as given.
    built = loaded.source != "module"
    notes = []
    traced = _traced_dtype(trace)
    if options.dtype is not None and not built and trace_dtype_for(options.dtype) != traced:
        notes.append(
            f"dtype {options.dtype} applies to the parameter bytes only: the module was traced as given, "
            f"in {traced} (activation bytes, bytes moved); convert the module and its inputs "
            "(.to(dtype)) to trace it in that precision")
    return Analysis(loaded, options.dtype, trace_dtype_for(options.dtype) if built else None,
                    options.group_size, trace, counts, options.batch, options.seq, tuple(notes),
                    options.attention)


def loaded_precision(loaded: LoadedModel, dtype: str | None) -> str:
    """The compute precision a trace of `loaded` will count: `dtype` when given, else the
    one `traced_dtype` will find (floating parameters, else floating inputs, else fp32)."""
    if dtype is not None:
        return dtype
    tensors = [*loaded.module.parameters(), *_tensors((loaded.args, loaded.kwargs))]
    for t in tensors:
        if t.is_floating_point():
            return parse_precision(str(t.dtype).replace("torch.", "")).name
    return "fp32"


def _tensors(value: Any) -> list[Any]:
    """Every tensor in a nested structure, in order."""
    import torch
    from torch.utils._pytree import tree_leaves

    return [leaf for leaf in tree_leaves(value) if isinstance(leaf, torch.Tensor)]


def analyse(options: ModelOptions, *, backward: bool = False,
            check: Callable[[str], None] | None = None) -> Analysis:
    """Load, trace once, count. `backward=True` also traces the training step.

    `check`, when given, sees the precision the trace will count (`loaded_precision`)
    after the model is built and before it is traced: a device that cannot serve it
    is refused before any tracing.
    """
    loaded = load(options)
    if check is not None:
        check(loaded_precision(loaded, options.dtype))
    return analyse_loaded(loaded, options, backward=backward)


def trace_training(analysis: Analysis, *, dropout: bool = True) -> tuple[Trace, Counts]:
    """The training step (forward with autograd + backward of a scalar loss) and its backward
    counts; `dropout=False` traces it with dropout off."""
    loaded = analysis.loaded
    trace = trace_model(loaded.module, loaded.args, loaded.kwargs, backward=True,
                        attention=analysis.attention or FLASH, dropout=dropout)
    return trace, count_trace(trace, phase="backward")


def other_attention_traces(analysis: Analysis, train: bool, *, dropout: bool = True
                           ) -> dict[str, tuple[Trace, Trace | None]]:
    """The model traced with each attention kernel it was not: {kernel: (inference, training)}.

    Empty when the model makes no scaled_dot_product_attention call (the kernel
    changes nothing). The training trace is None unless `train`.
    """
    traced = analysis.trace.attention
    if traced is None:
        return {}
    loaded = analysis.loaded
    out = {}
    for other in IMPLEMENTATIONS:
        if other != traced:
            inference = trace_model(loaded.module, loaded.args, loaded.kwargs, attention=other)
            training = (trace_model(loaded.module, loaded.args, loaded.kwargs, backward=True,
                                    attention=other, dropout=dropout) if train else None)
            out[other] = (inference, training)
    return out


def counted_peak_activations(analysis: Analysis) -> int:
    """The counted inference peak (`totals.activations.peak_inference_bytes`) of this trace."""
    return live_peak(analysis.trace).peak_bytes


# ------------------------------------------------------------------ nested tensors


def map_tensors(fn: Callable[[Any], Any], value: Any) -> Any:
    """Apply ``fn`` to every tensor in a nested structure (tuples, lists, dicts, pytree nodes)."""
    import torch
    from torch.utils._pytree import tree_map_only

    return tree_map_only(torch.Tensor, fn, value)


def tensors_in(value: Any) -> list[Any]:
    """Every tensor in a nested structure, in flattening order."""
    import torch
    from torch.utils._pytree import tree_leaves

    return [leaf for leaf in tree_leaves(value) if isinstance(leaf, torch.Tensor)]


def leading_dim(args: Any, kwargs: Any) -> int | None:
    """The batch size of the inputs: dim 0 of the first tensor that has one."""
    ts = [t for t in tensors_in((args, kwargs)) if t.dim() > 0]
    return int(ts[0].shape[0]) if ts else None


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


def _inference_call(module: Any, args: tuple, kwargs: dict) -> Callable[[], Any]:
    import torch

    def call() -> Any:
        with torch.inference_mode():
            return module(*args, **kwargs)

    return call


def module_state(module: Any) -> Callable[[], None]:
    """A function that puts the user's module back in the mode (per submodule) and on the
    device it had: measuring needs it in eval mode on the measured device, not for good."""
    import itertools

    modes = [(m, m.training) for m in module.modules()]
    devices = {t.device for t in itertools.chain(module.parameters(), module.buffers())}

    def restore() -> None:
        for m, training in modes:
            m.training = training
        if len(devices) == 1:
            module.to(next(iter(devices)))

    return restore


def module_calls(options: ModelOptions, analysis: Analysis, device: str) -> Callable[[int], Callable[[], Any]]:
    """Zero-argument calls of a user's module on its real example inputs (one batch: theirs).

    The module is moved to `device` and put in eval mode: `module_state` first, to restore it."""
    module = options.model
    loaded = analysis.loaded
    tensors = [p for p in module.parameters()] + tensors_in((loaded.args, loaded.kwargs))
    if any(x.is_meta for x in tensors):
        raise UserInputError("the module or its inputs are on the meta device: nothing to measure")
    run = module.eval().to(device)
    args, kwargs = map_tensors(lambda x: x.to(device), (loaded.args, loaded.kwargs))
    return lambda _batch: _inference_call(run, args, kwargs)


# ------------------------------------------------------------------ models per batch


@dataclass
class BatchModels:
    """A spec's model built once on `device`, its inputs per batch; its meta trace per batch.

    `make_call(batch)` is what `measure.bench.run_bench` times; `analyse(batch)`
    traces and counts that batch on the meta device (the prediction's input).
    Stateful on purpose: the real model is built at the first batch and reused.
    """

    options: ModelOptions  # a spec (is_spec); dtype, inputs, seq apply to every batch
    device: str
    notes: list[str] = field(default_factory=list)
    _module: Any = None
    _base: tuple[tuple, dict] | None = None
    _meta: dict[int, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.options.model or DEFAULT_MODEL

    def _resolve(self, batch: int | None, device: str) -> LoadedModel:
        # Built in the precision asked for itself (a timed model runs in it): a quantised
        # format has no dtype to run in, and resolve_model says so.
        o = self.options
        loaded = resolve_model(o.model, inputs=list(o.inputs) if o.inputs else None, batch=batch,
                               seq=o.seq, device=device, dtype=o.dtype, trust_remote_code=o.trust_remote_code)
        # --seq must shape the inputs; --batch always applies (fixed inputs are tiled, below).
        check_build_options(loaded, seq=o.seq)
        return loaded

    @property
    def module(self) -> Any:
        """The real model on the device (None until the first `make_call`)."""
        return self._module

    def precision(self) -> str:
        """The precision the prediction will count (`loaded_precision` of the meta model)."""
        return loaded_precision(self._resolve(None, "meta"), self.options.dtype)

    def default_batch(self) -> int:
        """The model's own example batch (leading dim of its first tensor input), else 1."""
        loaded = self._resolve(None, "meta")
        return leading_dim(loaded.args, loaded.kwargs) or 1

    def make_call(self, batch: int) -> Callable[[], Any]:
        return _inference_call(*self.bench_inputs(batch))

    def bench_inputs(self, batch: int) -> tuple[Any, tuple, dict]:
        """(module, args, kwargs) of one forward at `batch` on the device: what a backend runs."""
        meta = self._resolve(batch, "meta")
        args, kwargs = meta.args, meta.kwargs
        lead = leading_dim(args, kwargs)
        if lead is not None and lead != batch:
            # Fixed example inputs (a factory's own, no --input): set dim 0 ourselves.
            args, kwargs = map_tensors(
                lambda t: t.new_empty((batch, *t.shape[1:])) if t.dim() > 0 and t.shape[0] == lead else t,
                (args, kwargs))
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
        return self._module, run_args, run_kwargs

    def analyse(self, batch: int) -> Analysis:
        """Trace and count the meta model at `batch`: the very inputs `make_call(batch)` built
        (tiled when the spec fixes them)."""
        return analyse_loaded(self._meta[batch], replace(self.options, batch=batch))
