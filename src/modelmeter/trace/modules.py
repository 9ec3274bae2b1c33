"""Which module is running right now (layer 1).

Forward: global pre/post hooks keep an exact stack of module paths, so every
op is attributed to the innermost module that ran it (functional calls inside
a module's forward included). Backward: when a module's forward returns, the
autograd nodes it created (reachable from its outputs, not beyond its inputs)
are tagged with its path by sequence number; innermost modules return first,
so they win. During backward, the node autograd is executing names the module.
This is exact where `torch.utils.module_tracker`'s set of active modules is not
(sibling projections sharing one input all look active there).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.modules import module as _torch_module
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)


def iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested tuples, lists, dicts and HF ModelOutputs."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from iter_tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from iter_tensors(value)


def input_names(args: tuple, kwargs: Mapping[str, Any]) -> list[str | None]:
    """The forward argument each tensor of `iter_tensors((args, kwargs))` feeds: a keyword's
    name ('input_ids'; 'name[i]' inside a container), None for a positional argument."""
    names: list[str | None] = [None for _ in iter_tensors(args)]
    for key, value in kwargs.items():
        inner = list(iter_tensors(value))
        names += [key] if len(inner) == 1 and inner[0] is value else [f"{key}[{i}]" for i in range(len(inner))]
    return names


@dataclass
class _ModuleStats:
    calls: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    first_event: int | None = None
    last_event: int | None = None
    # Shapes and dtypes of the tensors of its first call (None until it returns once).
    inputs: tuple[tuple[tuple[int, ...], str], ...] | None = None
    outputs: tuple[tuple[tuple[int, ...], str], ...] = ()


def _tensor_bytes(obj: Any) -> int:
    return sum(t.numel() * t.element_size() for t in iter_tensors(obj))


def _shapes(obj: Any) -> tuple[tuple[tuple[int, ...], str], ...]:
    """(shape, dtype) of every tensor in `obj`, in the order `iter_tensors` walks it."""
    return tuple((tuple(t.shape), str(t.dtype).removeprefix("torch.")) for t in iter_tensors(obj))


class ModuleStack:
    """Tracks module paths for the ops of one traced pass of `root`."""

    def __init__(self, root: torch.nn.Module, event_counter: Any) -> None:
        # First name wins for a module reachable under several names (shared modules).
        self.paths: dict[int, str] = {}
        self.types: dict[str, str] = {}
        for name, mod in root.named_modules(remove_duplicate=False):
            if id(mod) not in self.paths:
                self.paths[id(mod)] = name
                self.types[name] = type(mod).__name__
        self.stats: dict[str, _ModuleStats] = {p: _ModuleStats() for p in self.types}
        self._stack: list[str] = []
        self._node_module: dict[int, str] = {}  # autograd sequence number -> module path
        self._boundaries: list[set[int]] = []
        self._event_counter = event_counter  # callable returning the next event index
        self._handles: list[Any] = []

    # ---- the current module -------------------------------------------------
    def current(self, backward: bool) -> str:
        if backward:
            node = torch._C._current_autograd_node()
            return self._node_module.get(node._sequence_nr(), "") if node is not None else ""
        return self._stack[-1] if self._stack else ""

    # ---- hooks ---------------------------------------------------------------
    def __enter__(self) -> ModuleStack:
        self._handles.append(register_module_forward_pre_hook(self._pre))
        # with_kwargs: the shapes recorded include keyword tensors (HF layers take most inputs so).
        self._handles.append(register_module_forward_hook(self._post, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
            # Removing a global hook leaves its with_kwargs flag behind (torch 2.13): drop it
            # too, so a trace leaves torch's global hook tables as it found them.
            getattr(_torch_module, "_global_forward_hooks_with_kwargs", {}).pop(handle.id, None)
        self._handles.clear()

    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        path = self.paths.get(id(module))
        if path is None:  # a module built during forward, outside the model tree
            return
        self._stack.append(path)
        stats = self.stats[path]
        stats.calls += 1
        stats.input_bytes += _tensor_bytes(args)
        index = self._event_counter()
        if stats.first_event is None:
            stats.first_event = index
        if torch.is_grad_enabled():
            self._boundaries.append(
                {t.grad_fn._sequence_nr() for t in iter_tensors(args) if t.grad_fn is not None}
            )

    def _post(self, module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        path = self.paths.get(id(module))
        if path is None:
            return
        if self._stack and self._stack[-1] == path:
            self._stack.pop()
        stats = self.stats[path]
        stats.output_bytes += _tensor_bytes(output)
        if stats.inputs is None:  # the first call's shapes, as torchinfo shows them
            stats.inputs, stats.outputs = _shapes((args, kwargs)), _shapes(output)
        stats.last_event = self._event_counter() - 1
        if torch.is_grad_enabled() and self._boundaries:
            self._tag_nodes(path, output, self._boundaries.pop())

    def _tag_nodes(self, path: str, output: Any, boundary: set[int]) -> None:
        """Tag the autograd nodes this module call created (see module docstring)."""
        todo = [t.grad_fn for t in iter_tensors(output) if t.grad_fn is not None]
        seen: set[int] = set()
        while todo:
            node = todo.pop()
            seq = node._sequence_nr()
            if seq in seen or seq in boundary:
                continue
            seen.add(seq)
            # Nodes already tagged belong to a submodule; walk through them to reach
            # this module's own nodes behind them.
            self._node_module.setdefault(seq, path)
            todo.extend(nxt for nxt, _ in node.next_functions if nxt is not None)
