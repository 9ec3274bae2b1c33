"""Collective communication cost models: ring and tree, NCCL-style (layer 3, pure).

Every time is an *estimate* from link figures (`hardware/interconnect.py`):

    t = base latency + steps x step latency + bus bytes / (bandwidth x protocol share)

as NCCL's own tuning model (src/graph/tuning.cc) prices a collective, taking
the faster of its two protocols (LL: low latency, a quarter of the bandwidth;
Simple: full bandwidth, more latency). Bus bytes per device of an n-device
ring (Patarasuk & Yuan 2009, "Bandwidth optimal all-reduce algorithms for
clusters of workstations"; NCCL's "busbw" convention):

* all-reduce of S bytes: 2 (n-1)/n x S, in 2 (n-1) steps;
* reduce-scatter / all-gather (S = the full, gathered size): (n-1)/n x S, n-1 steps;
* all-to-all (S = what one device holds before the exchange): (n-1)/n x S, n-1 steps;
* point-to-point: S, one step.

The tree all-reduce (NCCL's double binary tree) costs 2 S / bandwidth in
NCCL's model (its algorithm bandwidth is half the bus bandwidth) but needs only
2 log2(nodes) network steps; the all-reduce takes the faster of ring and tree, as NCCL does.

A group that spans nodes runs at the inter-node share of each device (the
node's NIC bandwidth over its devices), its network steps at network latency.
Within a node the bandwidth is the one NCCL's own topology model assumes for
the link where the data file has it (NVLink: links x NCCL's per-link figure,
e.g. A100 12 x 20 GB/s = 240 GB/s against 300 GB/s signalled), else the datasheet's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..hardware.interconnect import Interconnect, LatencyModel, latency_model

ALL_REDUCE, ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL, P2P = (
    "all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p")
COLLECTIVES = (ALL_REDUCE, ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL, P2P)


@dataclass(frozen=True)
class Group:
    """A communication group: `size` devices, `nodes` nodes, the links they use."""

    size: int
    nodes: int
    bandwidth_bytes_per_s: float  # per device, per direction, of the slowest link used
    intra_class: str  # latency class of intra-node steps ('nvlink', 'pcie', 'net')
    inter_class: str = "net"

    @property
    def crosses_nodes(self) -> bool:
        return self.nodes > 1


def make_group(size: int, stride: int, net: Interconnect) -> Group:
    """The group of `size` ranks `stride` apart (ranks numbered node by node).

    Megatron-LM's rank order: tensor-parallel ranks adjacent (stride 1), then data,
    then pipeline; a group spans as many nodes as its rank range covers.
    """
    per_node = net.devices_per_node
    span = (size - 1) * stride + 1
    if size <= 1:
        nodes = 1
    elif stride >= per_node:
        nodes = size  # each member on its own node
    else:
        nodes = max(1, math.ceil(span / per_node))
    link = net.inter if nodes > 1 else net.intra
    bw = link.collective_bandwidth_bytes_per_s
    return Group(size, nodes, bw, net.intra.latency_class, net.inter.latency_class)


def _bus(collective: str, n: int) -> tuple[float, int]:
    """(bus-bytes factor, ring steps) of a collective over n devices."""
    if collective == ALL_REDUCE:
        return 2 * (n - 1) / n, 2 * (n - 1)
    if collective in (ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL):
        return (n - 1) / n, n - 1
    if collective == P2P:
        return 1.0, 1
    raise ValueError(f"unknown collective {collective!r}")


def collective_time(collective: str, nbytes: float, group: Group,
                    model: LatencyModel | None = None) -> float:
    """Seconds for one collective of `nbytes` over `group` (0 for a group of one)."""
    if nbytes <= 0 or (group.size <= 1 and collective != P2P):
        return 0.0
    model = model or latency_model()
    n = max(group.size, 2) if collective == P2P else group.size
    factor, steps = _bus(collective, n)
    inter_steps = 0
    if group.crosses_nodes:
        inter_steps = 1 if collective == P2P else (
            2 * (group.nodes - 1) if collective == ALL_REDUCE else group.nodes - 1)
    best = math.inf
    for proto, base in model.base_s.items():
        lat = (base + (steps - inter_steps) * model.step_s[group.intra_class][proto]
               + inter_steps * model.step_s[group.inter_class][proto])
        if collective == P2P:
            lat = model.step_s[group.inter_class if group.crosses_nodes else group.intra_class][proto]
        bw = group.bandwidth_bytes_per_s * model.bandwidth_fraction[proto]
        best = min(best, lat + factor * nbytes / bw)
        if collective == ALL_REDUCE and group.size > 2:
            # Double binary tree: 2 S / bandwidth, log-depth network steps.
            per_node = max(1, group.size // group.nodes)
            tree_lat = base + 2 * ((per_node - 1) * model.step_s[group.intra_class][proto]
                                   + math.log2(group.nodes) * model.step_s[group.inter_class][proto])
            best = min(best, tree_lat + 2 * nbytes / bw)
    return best


def ring_allreduce_closed_form(nbytes: float, n: int, bandwidth: float) -> float:
    """The bandwidth term alone, 2 (n-1)/n x S / B: a lower bound of `collective_time`."""
    return 0.0 if n <= 1 else 2 * (n - 1) / n * nbytes / bandwidth
