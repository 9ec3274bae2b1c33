"""The shape-aware GPU performance model: what one kernel takes on a GPU (layer 2, stdlib + core).

The roofline bound prices every op at the datasheet peaks. Real GPU kernels
fall short of them in ways that depend on the op's shape, and this module
prices those ways, each from a sourced constant (`gpu_perf.json`):

* **GEMMs** run at the device's maximum achievable matmul rate (MAMF: the best
  shape's measured FLOP/s over the dense peak) times
  - *tile and wave quantisation*: cuBLAS cuts C = m x n into tiles of one of
    its common shapes; ``blocks = batch ceil(m/Tm) ceil(n/Tn)`` (x split-K)
    run in ``waves = ceil(blocks / SMs)``, and the share of the last wave left
    idle is lost (NVIDIA's matrix multiplication guide, 3.1/3.2); smaller
    tiles reuse operands less and run their loop slower (assumed in proportion
    to ``Tm Tn / (Tm + Tn)``); with fewer blocks than SMs, K may be split to
    fill them; the model takes the fastest of those choices, as cuBLAS's
    heuristics aim to;
    A GEMM with m or n under the smallest tile side is not tiled that way
    (GEMV / split-K kernels): it keeps the best-shape rate and is priced by
    its bytes, which then dominate;
  - a *K ramp* ``K / (K + k_half)``: each tile pays a fixed prologue and
    epilogue beside its main loop over K (fitted to a published K sweep),
    taken relative to the K of the MAMF shape, whose rate already contains it.
  A GEMM also streams its operands: its time is the larger of that compute
  time and its bytes at the achievable bandwidth, so a small-M GEMM (a decode
  step, an expert with a few tokens) is priced by bandwidth.
* **Fused attention** (flash / memory-efficient) runs at the published
  fraction of peak of FlashAttention-2 (A100) / -3 (H100), with the same tile
  and K ramps over the query and key lengths; the math backend is traced as
  its own GEMMs and softmax and needs nothing here.
* **Memory-bound ops** move their bytes at the achievable (measured, not
  datasheet) bandwidth, derated for small transfers by a published size ramp.
* **Every kernel** costs at least its launch: the host submits kernels one by
  one (eager) or replays a CUDA graph; a kernel shorter than that leaves the
  GPU waiting, so an op takes ``max(kernel time, launch)``.

Collectives are priced in `analysis/comm.py` at NCCL's achievable bus
bandwidth. Everything here is an *estimate*, and `describe()` says which
constants produced it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from ..core.errors import UserInputError

__all__ = [
    "EAGER",
    "GRAPHS",
    "RUNTIMES",
    "GpuModel",
    "fit_k_half",
    "gpu_model",
    "has_gpu_model",
    "wave_utilisation",
]

EAGER, GRAPHS = "eager", "graphs"
RUNTIMES = (EAGER, GRAPHS)
PREDICTION = "gpu-shape-model/1"  # settings.prediction names the model that produced a figure


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    return json.loads(resources.files("modelmeter.hardware").joinpath("gpu_perf.json").read_text())


def wave_utilisation(batch: int, m: int, n: int, sms: int, tile: tuple[int, int]) -> float:
    """Useful share of the tile slots a GEMM's waves occupy (NVIDIA's tile + wave quantisation)."""
    tm, tn = tile
    blocks = batch * math.ceil(m / tm) * math.ceil(n / tn)
    waves = math.ceil(blocks / sms)
    return (batch * m * n) / (waves * sms * tm * tn)


def fit_k_half(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(k_half, E) minimising the relative squared error of rate = E K / (K + k_half).

    A one-dimensional search over k_half (E has a closed form for each): how the
    shipped k_half was obtained from the published K sweep, reproducible here.
    """
    best: tuple[float, float, float] | None = None
    for k0 in range(10, 4000, 5):
        f = [k / (k + k0) for k, _ in points]
        # E minimising sum((E f / t - 1)^2): E = sum(f/t) / sum((f/t)^2)
        u = [x / t for x, (_, t) in zip(f, points, strict=True)]
        e = sum(u) / sum(x * x for x in u)
        err = sum((e * x - 1) ** 2 for x in u)
        if best is None or err < best[0]:
            best = (err, float(k0), e)
    assert best is not None
    return best[1], best[2]


def has_gpu_model(hw: Any) -> bool:
    """True for a GPU entry with the peaks the model prices from (matrix peak and bandwidth)."""
    return getattr(hw, "kind", None) == "gpu" and bool(hw.peak_flops) and hw.memory_bandwidth_bytes_per_s > 0


@dataclass(frozen=True)
class GpuModel:
    """The constants of one device, with a method per kind of kernel (seconds)."""

    device: str
    peak_flops: dict[str, float]  # dense matrix peaks by precision (the datasheet's)
    vector_flops: dict[str, float]
    bandwidth_bytes_per_s: float  # datasheet
    mamf: dict[str, float]  # by precision; `mamf_default` for the others
    mamf_default: float
    mamf_k: int | None  # K of the MAMF shape; None: no K ramp correction
    sms: int | None  # None: no wave quantisation (unknown SM count)
    tiles: tuple[tuple[int, int], ...]
    splits: tuple[int, ...]  # split-K factors cuBLAS may use to fill the SMs
    full_reuse: float  # tm tn / (tm + tn) from which a tile runs at the full rate
    k_half_16bit: float
    k_half_fp8: float
    bandwidth_fraction: float
    size_ramp: tuple[tuple[float, float], ...]  # (bytes at least, factor), descending
    attention_fraction: float
    launch_s: dict[str, float]  # runtime -> seconds
    runtime: str = EAGER
    # Fitted once on the public validation rows (gpu_perf.json 'fitted'): the share of the short
    # benchmarks' rates (MAMF, FlashAttention, the bandwidth measurements) a long run sustains.
    sustained_compute: float = 1.0
    sustained_bandwidth: float = 1.0

    # -------------------------------------------------------------- parts

    def matmul_rate(self, precision: str) -> float:
        """Achievable matmul FLOP/s at the best shape (MAMF x dense peak)."""
        peak = self.peak_flops.get(precision) or self.peak_flops.get("fp32", 0.0)
        return peak * self.mamf.get(precision, self.mamf_default) * self.sustained_compute

    def k_half(self, precision: str) -> float:
        return self.k_half_fp8 if precision in ("fp8", "int8") else self.k_half_16bit

    def k_ramp(self, k: float, precision: str) -> float:
        """K / (K + k_half), relative to the MAMF shape's own ramp (never above 1)."""
        k0 = self.k_half(precision)
        ramp = k / (k + k0) if k > 0 else 1.0
        if self.mamf_k:
            ramp /= self.mamf_k / (self.mamf_k + k0)
        return min(ramp, 1.0)

    def tile_efficiency(self, tile: tuple[int, int]) -> float:
        """A tile's main-loop rate relative to the large tiles': proportional to its operand reuse
        tm tn / (tm + tn), full from 128 x 128 up (assumed; NVIDIA's guide gives the order)."""
        tm, tn = tile
        return min(1.0, (tm * tn / (tm + tn)) / self.full_reuse)

    def efficiency(self, batch: int, m: int, n: int, k: int, precision: str) -> tuple[float, tuple[int, int, int] | None]:
        """(share of the MAMF rate, (tile m, tile n, split-K)) at the kernel choice that runs
        fastest: tile and wave quantisation x tile efficiency x K ramp (per split of K),
        relative to the MAMF shape's K ramp. (1.0, None) without an SM count, and for a skinny
        GEMM (m or n under the smallest tile side: cuBLAS runs GEMV kernels there, whose time
        the bandwidth term prices)."""
        smallest = min(min(t) for t in self.tiles) if self.tiles else 0
        if not self.sms or m <= 0 or n <= 0 or k <= 0 or min(m, n) < smallest:
            return 1.0, None
        k0 = self.k_half(precision)
        ref = self.mamf_k / (self.mamf_k + k0) if self.mamf_k else 1.0
        best = (0.0, None)
        for tile in self.tiles:
            tm, tn = tile
            blocks = batch * math.ceil(m / tm) * math.ceil(n / tn)
            for split in self.splits:
                if split > 1 and (k / split < 2 * k0 or blocks >= self.sms):
                    continue  # split-K only to fill the SMs, and never into slivers of K
                waves = math.ceil(blocks * split / self.sms)
                # time ∝ waves x tile area x (K per split + fixed per-tile cost) / tile efficiency
                cost = waves * tm * tn * (k / split + k0) / self.tile_efficiency(tile)
                ideal = batch * m * n * k / self.sms
                eff = min(1.0, ideal / cost / ref)
                if eff > best[0]:
                    best = (eff, (tm, tn, split))
        return best

    def bandwidth(self, nbytes: float) -> float:
        """Achievable bytes/s for one kernel moving `nbytes` (size ramp applied)."""
        factor = self.size_ramp[-1][1] if self.size_ramp else 1.0
        for at_least, f in self.size_ramp:
            if nbytes >= at_least:
                factor = f
                break
        return self.bandwidth_bytes_per_s * self.bandwidth_fraction * self.sustained_bandwidth * factor

    def launch(self) -> float:
        return self.launch_s[self.runtime]

    # -------------------------------------------------------------- kernels

    def gemm_s(self, batch: int, m: int, n: int, k: int, precision: str, nbytes: float) -> float:
        """One GEMM (batch x m x n x k MACs) moving `nbytes`; the launch floor included."""
        flops = 2.0 * batch * m * n * k
        eff, _ = self.efficiency(batch, m, n, k, precision)
        rate = self.matmul_rate(precision) * eff
        compute = flops / rate if rate > 0 else 0.0
        return max(compute, self.memory_s(nbytes, launch=False), self.launch())

    def attention_s(self, batch_heads: int, q_len: int, kv_len: int, flops: float, precision: str,
                    nbytes: float) -> float:
        """A fused attention kernel: its FLOPs at the published fraction, tile/K ramps on lengths."""
        peak = self.peak_flops.get(precision) or self.peak_flops.get("fp32", 0.0)
        # A block of 128 queries x the head dim, its loop over the keys (FlashAttention's tiling).
        eff, _ = self.efficiency(batch_heads, max(q_len, 128), 128, kv_len, precision)
        rate = peak * self.attention_fraction * self.sustained_compute * eff
        compute = flops / rate if rate > 0 else 0.0
        return max(compute, self.memory_s(nbytes, launch=False), self.launch())

    def vector_s(self, vector_flops: float, nbytes: float, precision: str) -> float:
        """An elementwise / normalisation / reduction kernel: bandwidth- or vector-bound."""
        rate = self.vector_flops.get(precision) or self.peak_flops.get("fp32", 0.0)
        compute = vector_flops / rate if rate > 0 else 0.0
        return max(compute, self.memory_s(nbytes, launch=False), self.launch())

    def memory_s(self, nbytes: float, *, launch: bool = True) -> float:
        t = nbytes / self.bandwidth(nbytes) if nbytes > 0 else 0.0
        return max(t, self.launch()) if launch else t

    def describe(self) -> dict[str, Any]:
        """What produced the figures: the constants in force, for the report's settings."""
        return {
            "model": PREDICTION,
            "device": self.device,
            "runtime": self.runtime,
            "mamf": dict(self.mamf),
            "sms": self.sms,
            "tiles": [list(t) for t in self.tiles],
            "k_half_16bit": self.k_half_16bit,
            "k_half_fp8": self.k_half_fp8,
            "bandwidth_fraction": self.bandwidth_fraction,
            "attention_fraction": self.attention_fraction,
            "launch_s": self.launch_s[self.runtime],
            "sustained_compute (fitted)": self.sustained_compute,
            "sustained_bandwidth (fitted)": self.sustained_bandwidth,
            "sources": "modelmeter/hardware/gpu_perf.json",
        }


def _value(entry: Any) -> Any:
    return entry["value"] if isinstance(entry, dict) and "value" in entry else entry


def gpu_model(hw: Any, runtime: str = EAGER) -> GpuModel:
    """The model of a `Hardware` GPU entry; a device the data lacks gets the stated defaults."""
    if runtime not in RUNTIMES:
        raise UserInputError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    d = _data()
    dev = hw.id
    mamf = d["mamf"]["by_device"].get(dev, {})
    bw = d["bandwidth"]["by_device"].get(dev, d["bandwidth"]["default"])
    attn = d["attention"]["flash"]["by_device"].get(dev, _value(d["attention"]["default"]))
    return GpuModel(
        device=dev,
        peak_flops={k: float(v) for k, v in hw.peak_flops.items() if v},
        vector_flops={k: float(v) for k, v in (hw.vector_flops or {}).items() if v},
        bandwidth_bytes_per_s=float(hw.memory_bandwidth_bytes_per_s),
        mamf={k: float(v) for k, v in mamf.items()},
        mamf_default=float(_value(d["mamf"]["default"])),
        mamf_k=_value(d["gemm"]["mamf_shape_k"]).get(dev),
        sms=d["sm_count"]["by_device"].get(dev),
        tiles=tuple(tuple(t) for t in _value(d["gemm"]["tiles"])),  # type: ignore[misc]
        splits=tuple(int(x) for x in _value(d["gemm"]["split_k"])),
        full_reuse=float(_value(d["gemm"]["full_reuse"])),
        k_half_16bit=float(_value(d["gemm"]["k_half_16bit"])),
        k_half_fp8=float(_value(d["gemm"]["k_half_fp8"])),
        bandwidth_fraction=float(_value(bw)),
        size_ramp=tuple((float(a), float(f)) for a, f in _value(d["bandwidth"]["size_ramp"])),
        attention_fraction=float(attn),
        launch_s={EAGER: float(_value(d["launch"]["eager_s"])), GRAPHS: float(_value(d["launch"]["graphs_s"]))},
        runtime=runtime,
        sustained_compute=float(_value(d["fitted"]["sustained_compute"])),
        sustained_bandwidth=float(_value(d["fitted"]["sustained_bandwidth"])),
    )


def sources() -> dict[str, Any]:
    """Every source the constants cite (id -> title, url, commit)."""
    return dict(_data()["sources"])
