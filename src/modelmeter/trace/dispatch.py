"""The dispatch mode that records every aten op (layer 1).

It sits below autograd, so it sees what really executes: `nn.Module` calls,
`F.*` functions, `torch.matmul`, in-place ops and views, and whatever
`scaled_dot_product_attention` turned into on this device. The one adapter
that borrows PyTorch's own flop formulas lives here, because they take live
arguments; everything downstream works on the recorded `OpEvent`s. PyTorch's
figure is recorded, never preferred: the counter uses it only for ops it has
no formula for (a named fallback), and the tests compare it with ours.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ..core.events import ACTIVATION, GRADIENT, OpEvent
from .modules import ModuleStack
from .moe import run_op
from .storages import StorageTable

# Ops that only tell the dispatcher something; they neither compute nor allocate.
_SKIP = {"aten.detach.default", "prim.device.default", "aten._local_scalar_dense.default"}


class TraceMode(TorchDispatchMode):
    def __init__(self, storages: StorageTable, modules: ModuleStack) -> None:
        super().__init__()
        self.storages = storages
        self.modules = modules
        self.events: list[OpEvent] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        # Whatever died since the previous op died after it: close its lifetime there.
        self.record_frees()
        out = run_op(func, args, kwargs)  # func itself, but MoE's grouped matmul also on meta
        name = str(func)
        if name in _SKIP:
            return out
        backward = torch._C._current_graph_task_id() != -1
        storages = self.storages
        inputs = []

        def describe_arg(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                meta = storages.meta(x)
                inputs.append(meta)
                return meta
            if isinstance(x, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
                return str(x)
            return x

        margs = tuple(_map_arg(describe_arg, a) for a in args)
        mkwargs = {k: _map_arg(describe_arg, v) for k, v in kwargs.items()}
        new_role = GRADIENT if backward else ACTIVATION
        outputs = tuple(
            storages.meta(t, new_role) for t in _flat_tensors(out)
        )
        torch_flops = None
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            try:
                torch_flops = int(formula(*args, **kwargs, out_val=out))
            except Exception:  # noqa: BLE001 - e.g. GQA shapes its asserts reject; our registry counts those
                torch_flops = None
        self.events.append(
            OpEvent(
                index=len(self.events),
                op=name,
                module=self.modules.current(backward),
                phase="backward" if backward else "forward",
                inputs=tuple(inputs),
                outputs=outputs,
                args=tuple(margs),
                kwargs=dict(mkwargs),
                torch_flops=torch_flops,
            )
        )
        return out

    def record_frees(self) -> None:
        """Attach storages that died to the latest event."""
        if not self.events:
            return
        freed = self.storages.collect_freed()
        if freed:
            last = self.events[-1]
            self.events[-1] = _with_freed(last, last.freed + freed)


def _with_freed(event: OpEvent, freed: tuple[int, ...]) -> OpEvent:
    return OpEvent(
        index=event.index, op=event.op, module=event.module, phase=event.phase,
        inputs=event.inputs, outputs=event.outputs, args=event.args, kwargs=event.kwargs,
        torch_flops=event.torch_flops, freed=freed,
    )


def _map_arg(fn: Any, value: Any) -> Any:
    """Map tensors in an aten argument (a tensor, scalar, or a list of them); cheaper than pytree."""
    if isinstance(value, (list, tuple)):
        return type(value)(_map_arg(fn, v) for v in value)
    return fn(value)


def _flat_tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []
