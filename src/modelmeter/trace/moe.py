"""Mixture-of-experts layers while tracing (layer 1): find them, record their routing, run them on meta.

transformers 5.x stores a MoE layer's routed experts as one module whose weights
are stacked along a leading experts dimension (Mixtral's `gate_up_proj` is
E x 2I x H) and, by default (`experts_implementation="grouped_mm"`), runs them
as `torch._grouped_mm` over the token copies sorted by expert. Tracing them
needs three things:

* on meta, `_grouped_mm`'s meta kernel accepts bf16 only (torch 2.13). Its
  shape rule does not depend on the dtype, so `run_op` runs the call on bf16
  stand-ins and gives the result the caller's dtype. No value is read: the
  offsets are meta tensors, and the op's MACs (every token copy times the
  expert's in x out) do not depend on how tokens spread over experts;
* which experts a call touches is data. `RoutingRecorder` records each call:
  on real tensors the distinct expert ids the router chose; on meta, routing
  is *assumed balanced*: each token picks `top_k` distinct experts uniformly
  and independently, so every expert receives T·k/E of the T tokens on
  average and the expected number touched is E·(1 − (1 − k/E)^T);
* Llama 4's reference forward runs every expert on every token and masks the
  result by the router's scores, E/k times the arithmetic a top-k MoE does.
  `sparse_llama4` replaces that forward during the trace by the grouped top-k
  form every other transformers MoE uses (same weights, same result), then
  restores it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from ..core.events import ExpertGroup, RoutingRecord
from ..count.moe import expected_touched

_GROUPED_MM = "aten._grouped_mm.default"


def run_op(func: Any, args: tuple, kwargs: dict) -> Any:
    """Run one aten op; `_grouped_mm` on meta in any float dtype (see the module docstring)."""
    if str(func) == _GROUPED_MM:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if tensors and tensors[0].is_meta and tensors[0].dtype != torch.bfloat16:
            dtype = tensors[0].dtype

            def bf16(x: Any) -> Any:
                return x.to(torch.bfloat16) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

            out = func(*(bf16(a) for a in args), **{k: bf16(v) for k, v in kwargs.items()})
            return out.to(dtype)
    return func(*args, **kwargs)


class MetaExperts(TorchDispatchMode):
    """Run a forward outside a trace with `run_op`'s meta `_grouped_mm` (e.g. to size a cache)."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return run_op(func, args, kwargs or {})


def find_expert_groups(root: torch.nn.Module) -> list[tuple[torch.nn.Module, ExpertGroup]]:
    """Modules holding stacked routed experts, with their count and the router's top_k.

    A module qualifies when it has an integer `num_experts` and its own
    parameters all have that leading dimension, at least one being a stack of
    matrices (3-D). Routers (E x H, 2-D) and shared experts (plain MLPs) do not.
    """
    found = []
    parents: dict[int, torch.nn.Module] = {}
    for _, mod in root.named_modules():
        for child in mod.children():
            parents.setdefault(id(child), mod)
    for name, mod in root.named_modules():
        experts = getattr(mod, "num_experts", None)
        if not isinstance(experts, int) or isinstance(experts, bool) or experts < 2:
            continue
        own = list(mod.parameters(recurse=False))
        if not own or not all(p.dim() >= 2 and p.shape[0] == experts for p in own):
            continue
        if not any(p.dim() >= 3 for p in own):
            continue
        top_k = _top_k(mod, parents.get(id(mod)), root)
        if top_k is not None:
            found.append((mod, ExpertGroup(name, experts, top_k)))
    return found


def _top_k(mod: torch.nn.Module, parent: torch.nn.Module | None, root: torch.nn.Module) -> int | None:
    for owner in (mod, parent):
        value = getattr(owner, "top_k", None)
        if isinstance(value, int) and value > 0:
            return value
    for owner in (mod, root):
        config = getattr(owner, "config", None)
        if config is not None and hasattr(config, "get_text_config"):
            config = config.get_text_config()
        value = getattr(config, "num_experts_per_tok", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class RoutingRecorder:
    """Forward pre-hooks on every expert group for one traced pass; records each call."""

    def __init__(self, root: torch.nn.Module) -> None:
        self.groups = find_expert_groups(root)
        self.records: list[RoutingRecord] = []
        self._handles: list[Any] = []

    def __enter__(self) -> RoutingRecorder:
        for mod, group in self.groups:
            self._handles.append(mod.register_forward_pre_hook(self._hook(group), with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, group: ExpertGroup) -> Any:
        def record(_mod: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            # The routing indices (tokens x top_k) are the one integer tensor an experts forward takes.
            index = next((t for t in (*args, *kwargs.values())
                          if isinstance(t, torch.Tensor) and not t.is_floating_point()), None)
            if index is not None:
                self.records.append(self._record(group, index))

        return record

    @staticmethod
    def _record(group: ExpertGroup, index: torch.Tensor) -> RoutingRecord:
        tokens, top_k = index.shape[0], index.shape[-1]
        if index.is_meta:
            touched = expected_touched(group.experts, top_k, tokens)
            return RoutingRecord(group.module, tokens, top_k, group.experts, touched, assumed=True)
        with _disable_current_modes():  # reading the router's choice is not a traced op
            ids = {int(i) for i in index.flatten().tolist() if 0 <= int(i) < group.experts}
        return RoutingRecord(group.module, tokens, top_k, group.experts, float(len(ids)), assumed=False)


@contextmanager
def sparse_llama4(root: torch.nn.Module) -> Iterator[None]:
    """Run Llama 4's MoE blocks in top-k grouped form for the duration (see the module docstring)."""
    patched: list[tuple[torch.nn.Module, Any]] = []
    for m in root.modules():
        name = type(m).__name__
        if name == "Llama4TextMoe":
            patched.append((m, _llama4_moe_forward))
        elif name == "Llama4TextExperts":
            patched.append((m, _llama4_experts_forward))
    try:
        for m, fn in patched:
            m.forward = fn.__get__(m)  # an instance attribute shadows the class's forward
        yield
    finally:
        for m, _ in patched:
            m.__dict__.pop("forward", None)


def _llama4_moe_forward(self: Any, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama4TextMoe.forward with the routed experts run on their top-k tokens only."""
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    router_logits = torch.nn.functional.linear(hidden_states, self.router.weight)
    top_value, top_index = torch.topk(router_logits, self.top_k, dim=1)
    scores = torch.sigmoid(top_value.float()).to(hidden_states.dtype)
    out = self.shared_expert(hidden_states)
    out.add_(self.experts(hidden_states, top_index, scores))
    return out, router_logits


def _llama4_experts_forward(self: Any, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                            top_k_weights: torch.Tensor) -> torch.Tensor:
    """Llama4TextExperts as a grouped top-k MoE, same weights (E x H x 2I, E x I x H) and result.

    Llama 4 scales each token's input by its router score (not the expert's
    output, as the other MoEs do); so does this.
    """
    top_k = top_k_index.shape[-1]
    ids, order = torch.sort(top_k_index.reshape(-1))
    routed = hidden_states[order // top_k] * top_k_weights.reshape(-1)[order].unsqueeze(-1)
    counts = torch.histc(ids.float(), bins=self.num_experts, min=0, max=self.num_experts - 1)
    offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
    gate, up = torch._grouped_mm(routed, self.gate_up_proj, offs=offsets).chunk(2, dim=-1)
    down = torch._grouped_mm(up * self.act_fn(gate), self.down_proj, offs=offsets)
    restored = torch.empty_like(down)
    restored[order] = down
    return restored.view(-1, top_k, down.shape[-1]).sum(dim=1)
