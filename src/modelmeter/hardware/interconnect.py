"""Links between devices: intra-node (NVLink, Infinity Fabric, PCIe) and inter-node fabrics (layer 2).

`interconnect.json` beside this module holds, per device id of `specs.json`,
the bandwidth one device has to its peers in a node and the node's network,
with a source per figure. Every bandwidth here is per device and per
direction; the file's `conventions` say how vendor quotes (NVLink's "900 GB/s"
is both directions together) were converted. Latencies come from NCCL's own
cost model, not from a datasheet, and say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from ..core.errors import UserInputError


@dataclass(frozen=True)
class Link:
    """One class of link: its per-device, per-direction bandwidth and NCCL-model latencies."""

    name: str
    quoted: str  # the vendor's own words, with their bandwidth convention
    bandwidth_bytes_per_s: float
    latency_class: str  # 'nvlink' | 'pcie' | 'net': which NCCL step latencies apply
    source: str
    # What NCCL's own topology model assumes the link delivers (links x its per-link figure),
    # below the signalling rate; None where NCCL's model has no figure for the part.
    nccl_bandwidth_bytes_per_s: float | None = None

    @property
    def collective_bandwidth_bytes_per_s(self) -> float:
        """The rate collectives are priced at: NCCL's modelled bandwidth where known, else the datasheet's."""
        return self.nccl_bandwidth_bytes_per_s or self.bandwidth_bytes_per_s


@dataclass(frozen=True)
class Interconnect:
    """How `devices_per_node` devices talk inside a node and how nodes talk to each other."""

    device_id: str
    devices_per_node: int
    intra: Link
    inter: Link  # per device: the node's NIC bandwidth over its devices
    fabric_id: str
    nics_per_node: int
    sources: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        def link(x: Link) -> dict[str, Any]:
            return {"name": x.name, "quoted": x.quoted, "bandwidth_bytes_per_s": x.bandwidth_bytes_per_s,
                    "nccl_bandwidth_bytes_per_s": x.nccl_bandwidth_bytes_per_s,
                    "collective_bandwidth_bytes_per_s": x.collective_bandwidth_bytes_per_s,
                    "latency_class": x.latency_class, "source": x.source}

        return {"device_id": self.device_id, "devices_per_node": self.devices_per_node,
                "intra_node": link(self.intra), "inter_node": link(self.inter),
                "fabric": self.fabric_id, "nics_per_node": self.nics_per_node,
                "sources": dict(self.sources),
                "convention": "bandwidths per device, per direction (unidirectional)"}


@dataclass(frozen=True)
class LatencyModel:
    """NCCL's latency terms: base latency per call and per ring step, per protocol."""

    base_s: dict[str, float]  # protocol -> seconds per collective call
    bandwidth_fraction: dict[str, float]  # protocol -> share of the link bandwidth it reaches
    step_s: dict[str, dict[str, float]]  # latency class -> protocol -> seconds per step
    source: str


@lru_cache(maxsize=1)
def _raw() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("interconnect.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _cite(key: str) -> str:
    src = _raw()["sources"].get(key)
    return key if src is None else f"[{key}] {src['title']} <{src['url']}>"


def fabric_ids() -> list[str]:
    return list(_raw()["fabrics"])


def interconnect_ids() -> list[str]:
    """Device ids with interconnect figures."""
    return list(_raw()["devices"])


@lru_cache(maxsize=1)  # priced once per collective: a plan's search calls it ~10^5 times
def latency_model() -> LatencyModel:
    raw = _raw()["latency_model"]
    return LatencyModel(
        base_s={p: v["base_latency_s"] for p, v in raw["protocols"].items()},
        bandwidth_fraction={p: v["bandwidth_fraction"] for p, v in raw["protocols"].items()},
        step_s={c: dict(v) for c, v in raw["step_latency_s"].items()},
        source=_cite(raw["source"]),
    )


def get_interconnect(device_id: str, *, fabric: str | None = None,
                     devices_per_node: int | None = None) -> Interconnect:
    """The links of `device_id`; `fabric` picks another inter-node fabric, `devices_per_node`
    another node size (the per-device share of the fabric follows it)."""
    raw = _raw()
    entry = raw["devices"].get(device_id)
    if entry is None:
        raise UserInputError(
            f"no interconnect figures for {device_id!r} (devices with them: "
            f"{', '.join(raw['devices'])}); plan it on one device (--devices 1)")
    fabric_id = fabric or entry["fabric"]
    if fabric_id not in raw["fabrics"]:
        raise UserInputError(f"unknown fabric {fabric_id!r}; choose one of {', '.join(raw['fabrics'])}")
    f = raw["fabrics"][fabric_id]
    per_node = devices_per_node or int(entry["devices_per_node"])
    if per_node < 1:
        raise UserInputError(f"devices per node must be a positive integer, got {per_node}")
    sources = {f"intra_node.{k}": _cite(v) for k, v in entry["field_sources"].items()}
    sources["inter_node"] = _cite(f["source"])
    sources["latency"] = latency_model().source
    nccl = entry.get("nccl_bandwidth_bytes_per_s")
    intra = Link(entry["link"], entry["quoted"], float(entry["bandwidth_bytes_per_s"]),
                 entry["latency_class"], _cite(entry["field_sources"]["bandwidth_bytes_per_s"]),
                 float(nccl) if nccl is not None else None)
    share = f["nics_per_node"] * float(f["nic_bandwidth_bytes_per_s"]) / per_node
    inter = Link(f["name"], f["quoted"], share, f["latency_class"], _cite(f["source"]))
    return Interconnect(device_id, per_node, intra, inter, fabric_id, int(f["nics_per_node"]), sources)
