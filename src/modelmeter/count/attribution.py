"""Which module an op's work belongs to (layer 1, pure).

An op runs under the innermost module being called, but a parent can use a
child's weights without calling the child: `nn.MultiheadAttention` hands
`out_proj.weight` and `out_proj.bias` to `F.multi_head_attention_forward`, so
the output projection's product runs under the attention module and `out_proj`
(never called) showed zero work. The product is the work of the module whose
weight it multiplies, so an op that reads a parameter of a module nested inside
the one it ran under is counted there, when that module is never called itself
(its weights are only ever used by its parent). A module that is called keeps
only its own calls' ops (a root reusing a tied embedding table as its LM head
leaves that product at the root, where pipeline planning expects the head), and
a weight owned elsewhere (a tied `lm_head` reading the embedding's table) keeps
the op where it ran.
"""

from __future__ import annotations

from ..core.events import PARAMETER, OpEvent, Trace

__all__ = ["parameter_owners", "work_module"]


def parameter_owners(trace: Trace) -> dict[int, str]:
    """Storage id of each parameter -> the module that owns it, for modules never called."""
    uncalled = {m.path for m in trace.modules if m.calls == 0}
    return {p.storage: p.module for p in trace.parameters if p.module in uncalled}


def work_module(event: OpEvent, owners: dict[int, str]) -> str:
    """The event's module, or the nested module whose parameter it reads (the first such input)."""
    here = event.module
    for t in event.inputs:
        if t.role != PARAMETER:
            continue
        owner = owners.get(t.storage)
        if owner and owner != here and (not here or owner.startswith(here + ".")):
            return owner
    return here
