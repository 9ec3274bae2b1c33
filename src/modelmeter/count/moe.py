"""Mixture-of-experts accounting from a trace: total vs active parameters, expert reads (layer 1, pure).

A routed-experts module (`ExpertGroup`, found while tracing) stacks E experts'
weights; a token is sent to `top_k` of them. So:

* total parameters count every expert (and anything shared, once);
* active parameters, what one token uses, count the dense parts, shared
  experts, routers and `top_k / E` of each routed group;
* a grouped expert kernel reads the weights of the experts that received at
  least one token, not all E: the forward ops of a group read
  `touched / E` of its weights, `touched` as recorded per call (the router's
  choice on real tensors, the balanced expectation on meta). MACs do not
  depend on the routing: every token visits exactly `top_k` experts.

Publishers round active parameters two ways: with the embedding tables
(Mixtral's 12.9 B, Qwen3-30B-A3B's 3.3 B) or without the input embedding a
token only looks up one row of (gpt-oss-120b's 5.1 B, DeepSeek-V3's 37 B), so
both are given.
"""

from __future__ import annotations

from dataclasses import replace

from ..core.events import ExpertGroup, Trace
from ..core.results import OpCount

BALANCED = "balanced (assumed on meta)"
AS_ROUTED = "as the router chose (real tensors)"


def expected_touched(experts: int, top_k: int, tokens: float) -> float:
    """Expected distinct experts receiving a token under balanced routing: E·(1 − (1 − k/E)^T).

    Balanced: each of T tokens picks top_k distinct experts uniformly and
    independently, so an expert is missed by one token with probability 1 − k/E.
    """
    if experts <= 0 or tokens <= 0:
        return 0.0
    k = min(top_k, experts)
    return experts * (1.0 - (1.0 - k / experts) ** tokens)


def _inside(module: str, path: str) -> bool:
    return module == path or module.startswith(path + ".")


def group_params(trace: Trace, group: ExpertGroup) -> int:
    """Parameters of all experts of one group."""
    return sum(p.numel for p in trace.parameters if _inside(p.module, group.module))


def active_params(trace: Trace) -> int:
    """Parameters one token uses: all, less the routed experts it is not sent to."""
    total = sum(p.numel for p in trace.parameters)
    unused = 0
    for g in trace.expert_groups:
        # Stacked experts: each group's parameters split evenly over its experts.
        unused += group_params(trace, g) * (g.experts - g.top_k) // g.experts
    return total - unused


def lookup_only_params(trace: Trace) -> int:
    """Parameters only ever gathered by `aten.embedding` (input embeddings), not multiplied.

    A table tied to the LM head feeds a matmul too and stays active.
    """
    looked_up: set[int] = set()
    multiplied: set[int] = set()
    for e in trace.events:
        if e.phase != "forward":
            continue
        if e.packet == "aten.embedding" and e.inputs:
            looked_up.add(e.inputs[0].storage)
        elif e.packet != "aten.embedding":
            multiplied.update(t.storage for t in e.inputs)
    lookup = looked_up - multiplied
    return sum(p.numel for p in trace.parameters if p.storage in lookup)


def routing_mode(trace: Trace) -> str | None:
    """How routed experts were costed, or None for a dense model."""
    if not trace.expert_groups:
        return None
    if trace.routing and not any(r.assumed for r in trace.routing):
        return AS_ROUTED
    return BALANCED


def touched_fraction(trace: Trace) -> dict[str, float]:
    """Per group: the share of its experts a call reads, averaged over its calls."""
    sums: dict[str, list[float]] = {}
    for r in trace.routing:
        acc = sums.setdefault(r.module, [0.0, 0])
        acc[0] += r.touched / r.experts
        acc[1] += 1
    return {module: s / n for module, (s, n) in sums.items()}


def scale_expert_reads(ops: tuple[OpCount, ...], trace: Trace) -> tuple[OpCount, ...]:
    """Forward ops of a routed group read only the touched experts' weights."""
    fractions = touched_fraction(trace)
    if not fractions:
        return ops
    groups = [g.module for g in trace.expert_groups if g.module in fractions]
    out = []
    for o in ops:
        group = next((g for g in groups if _inside(o.module, g)), None)
        if group is None or o.phase != "forward" or not o.param_bytes_read:
            out.append(o)
            continue
        kept = round(o.param_bytes_read * fractions[group])
        out.append(replace(o, bytes_read=o.bytes_read - o.param_bytes_read + kept, param_bytes_read=kept))
    return tuple(out)
