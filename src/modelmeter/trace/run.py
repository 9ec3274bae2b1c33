"""Run one traced pass of a model (layer 1).

Modes:
- ``meta`` (default): parameters and inputs live on the meta device; nothing
  is allocated, so a 70 B model traces on a laptop. `scaled_dot_product_attention`
  has no meta kernel for its fused backends and decomposes into its math form
  (bmm, softmax, masking), which is counted op by op.
- ``real``: real tensors on the module's device (CPU here). SDPA then runs
  the fused kernel (`_scaled_dot_product_flash_attention_for_cpu` on CPU),
  which the formula registry counts directly.

With ``backward=True`` the forward runs in train mode with autograd on; the
tensors autograd saves are captured with `saved_tensors_hooks`, then the
backward of a scalar loss (the sum of the first floating output) is traced too.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch

from ..core.errors import ShapeError, UserInputError
from ..core.events import (
    BUFFER,
    INPUT,
    ModuleRecord,
    ParamRecord,
    Trace,
)
from ..core.failures import failing_op, first_line, is_out_of_memory, meta_limit
from .attention import AttentionMode
from .dispatch import TraceMode
from .dropout import NoDropoutMode
from .fastpath import FastPaths
from .modules import ModuleStack, iter_tensors
from .moe import RoutingRecorder, sparse_llama4
from .storages import StorageTable


def trace_model(
    module: torch.nn.Module,
    args: tuple = (),
    kwargs: dict[str, Any] | None = None,
    *,
    backward: bool = False,
    attention: str | None = None,
    dropout: bool = True,
) -> Trace:
    """`attention`: 'flash' or 'math' routes every SDPA call to that kernel
    (`trace/attention.py`); None leaves SDPA to pick its kernel for the device.
    `dropout=False` traces every dropout as the identity (`trace/dropout.py`): a
    training step run with dropout off."""
    kwargs = kwargs or {}
    storages = StorageTable()
    params = _param_records(module, storages)
    buffers = _buffer_records(module, storages)
    input_metas = tuple(storages.meta(t, INPUT) for t in iter_tensors((args, kwargs)))
    counter_box: list[TraceMode] = []
    stack = ModuleStack(module, lambda: len(counter_box[0].events) if counter_box else 0)
    mode = TraceMode(storages, stack)
    routing = RoutingRecorder(module)
    attn = AttentionMode(attention) if attention is not None else None
    fast = FastPaths(module)
    counter_box.append(mode)
    saved: dict[int, tuple[int, str]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        sid = storages.meta(t).storage
        if sid not in saved:
            saved[sid] = (storages.nbytes[sid], stack.current(backward=False))
        return t

    device = _mode_name(module, args, kwargs)  # before the run: errors name where it ran
    # Put back what the caller had: each submodule's own mode (a model may hold a frozen
    # submodule in eval mode) and the gradients they had accumulated.
    modes = [(m, m.training) for m in module.modules()]
    grads = [(p, p.grad) for p in module.parameters()] if backward else []
    for p, _ in grads:
        p.grad = None  # autograd would accumulate into the caller's tensors in place
    _set_training(module, backward)
    try:
        with ExitStack() as ctx:
            ctx.enter_context(torch.enable_grad() if backward else torch.no_grad())
            ctx.enter_context(stack)
            ctx.enter_context(sparse_llama4(module))
            ctx.enter_context(routing)
            ctx.enter_context(fast)  # the fused inference kernels torch would run (trace/fastpath.py)
            if backward:
                ctx.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
            if attn is not None:
                ctx.enter_context(attn)
            if not dropout:  # entered last: it sees SDPA before the attention mode does
                ctx.enter_context(NoDropoutMode())
            ctx.enter_context(mode)
            try:
                out = module(*args, **kwargs)
            except _FAILURES as exc:
                raise _trace_error(exc, stack, device) or _shape_error(exc, stack) from exc
            output_metas = tuple(storages.meta(t) for t in iter_tensors(out))
            if backward:
                loss = _scalar_loss(out)
                try:
                    loss.backward()
                except _FAILURES as exc:
                    error = _trace_error(exc, stack, device)
                    if error is None:
                        raise
                    raise error from exc
                del loss
            del out
            mode.record_frees()
    finally:
        for m, was_training in modes:
            m.training = was_training
        for p, grad in grads:
            p.grad = grad
    mode.record_frees()
    return Trace(
        events=tuple(mode.events),
        modules=_module_records(stack, sum(t.nbytes for t in input_metas)),
        parameters=params,
        buffers=buffers,
        inputs=input_metas,
        outputs=output_metas,
        mode=_mode_name(module, args, kwargs),
        grad_enabled=backward,
        saved_tensors=tuple((sid, nbytes, path) for sid, (nbytes, path) in saved.items()),
        expert_groups=tuple(group for _, group in routing.groups),
        routing=tuple(routing.records),
        attention=attn.implementation if attn is not None and attn.calls else None,
        attention_kernels=tuple(sorted({**(attn.kernels if attn is not None else {}),
                                        **fast.calls}.items())),
    )


def _set_training(module: torch.nn.Module, mode: bool) -> None:
    try:
        module.train(mode)
    except NotImplementedError:
        # A torch.export program's module refuses train()/eval(): its graph runs
        # as it was exported (dropout, batch norm included) whatever we ask.
        pass


def _mode_name(module: torch.nn.Module, args: tuple, kwargs: dict) -> str:
    for t in iter_tensors((args, kwargs)):
        return "meta" if t.device.type == "meta" else "real"
    for p in module.parameters():
        return "meta" if p.device.type == "meta" else "real"
    return "real"


def _param_records(module: torch.nn.Module, storages: StorageTable) -> tuple[ParamRecord, ...]:
    records = []
    # named_parameters() removes duplicates: tied weights are counted once.
    for name, p in module.named_parameters():
        sid = storages.register(p, "parameter")
        owner = name.rpartition(".")[0]
        records.append(
            ParamRecord(name, owner, p.numel(), str(p.dtype).removeprefix("torch."),
                        p.element_size(), p.requires_grad, sid, tuple(p.shape))
        )
    return tuple(records)


def _buffer_records(module: torch.nn.Module, storages: StorageTable) -> tuple[ParamRecord, ...]:
    records = []
    for name, b in module.named_buffers():
        sid = storages.register(b, BUFFER)
        records.append(
            ParamRecord(name, name.rpartition(".")[0], b.numel(),
                        str(b.dtype).removeprefix("torch."), b.element_size(), False, sid)
        )
    return tuple(records)


def _module_records(stack: ModuleStack, root_input_bytes: int) -> tuple[ModuleRecord, ...]:
    # Global pre-hooks see positional arguments only; the root's keyword inputs
    # (input_ids=…, pixel_values=…) are the traced inputs themselves.
    return tuple(
        ModuleRecord(path, stack.types[path], s.calls,
                     root_input_bytes if path == "" else s.input_bytes, s.output_bytes,
                     s.first_event, s.last_event,
                     input_shapes=tuple(shape for shape, _ in s.inputs or ()),
                     input_dtypes=tuple(dtype for _, dtype in s.inputs or ()),
                     output_shapes=tuple(shape for shape, _ in s.outputs),
                     output_dtypes=tuple(dtype for _, dtype in s.outputs))
        for path, s in stack.stats.items()
    )


def _scalar_loss(out: Any) -> torch.Tensor:
    for t in iter_tensors(out):
        if t.is_floating_point() and t.requires_grad:
            return t.float().sum() if t.dtype != torch.float32 else t.sum()
    raise ShapeError("the model's output has no floating tensor that requires grad; cannot run backward")


# What a model's own code raises when the inputs do not fit (torch._assert raises
# AssertionError), plus out-of-memory; anything else is a bug worth a traceback.
_FAILURES = (RuntimeError, ValueError, TypeError, IndexError, AssertionError, MemoryError)


def _trace_error(exc: BaseException, stack: ModuleStack, device: str) -> UserInputError | None:
    """A message for what really failed: a meta-device limit or memory; None for anything else.

    Neither is the inputs' fault, so neither may read "the inputs do not fit".
    """
    where = _location(stack)
    if is_out_of_memory(exc):
        on = "real tensors" if device == "real" else "the meta device"
        return UserInputError(
            f"ran out of memory tracing on {on} {where}: {first_line(exc)}; count on the meta "
            "device instead (--device meta, the default: nothing is allocated), or lower "
            "--batch/--seq, or trace in --dtype bf16/fp16"
        )
    if device == "meta":
        limit = meta_limit(exc, failing_op(exc))
        if limit is not None:
            return UserInputError(
                f"cannot trace on the meta device {where}: {limit.what}; use {limit.advice}"
            )
    return None


def _location(stack: ModuleStack) -> str:
    where = stack.current(backward=False)
    kind = stack.types.get(where, "?")
    return f"in module '{where}' ({kind})" if where else "in the model's top-level forward"


def _shape_error(exc: Exception, stack: ModuleStack) -> ShapeError:
    return ShapeError(f"the inputs do not fit the model {_location(stack)}: {first_line(exc)}")
