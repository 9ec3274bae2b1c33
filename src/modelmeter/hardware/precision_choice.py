"""The precision a device runs a model's matrix products fastest at (layer 2).

`llm` on this machine's calibrated 'local' profile defaults to it: fp16 is the
usual serving precision on GPUs, but many CPUs run fp16 matmul through a slow
path (measured 100x slower than fp32 on one), and a default that slow predicts
a machine that does not exist. The choice reads the profile's measured matmul
peaks: the fastest of fp16, bf16 and fp32, where a narrower precision within
`TIE` of the fastest wins (it moves half the bytes, and decode is memory-bound).
A profile that measured fp32 alone (the short automatic calibration) gives fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.units import format_count
from .specs import Hardware

__all__ = ["CANDIDATES", "TIE", "PrecisionChoice", "fastest_precision"]

CANDIDATES = ("fp16", "bf16", "fp32")  # narrowest first; fp16 first: the usual default on a tie
TIE = 0.9  # within 10 % of the fastest: measurement noise, and the narrower type halves the bytes


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str  # one line for people: why this precision


def fastest_precision(hw: Hardware) -> PrecisionChoice:
    """The candidate precision with the highest matmul peak on `hw` (see the module docstring)."""
    rates = {p: hw.peak_flops[p] for p in CANDIDATES if hw.peak_flops.get(p)}
    device = "this CPU" if hw.kind == "cpu" else f"this {hw.kind.upper()}"
    if set(rates) <= {"fp32"}:
        return PrecisionChoice("fp32", f"fp32: the one matmul precision {device}'s profile measured "
                                       "(`modelmeter hardware calibrate` measures fp16 and bf16 too)")
    best = max(rates.values())
    choice = next(p for p in CANDIDATES if rates.get(p, 0.0) >= TIE * best)
    measured = ", ".join(f"{p} {format_count(rates[p], 'FLOP/s')}" for p in CANDIDATES if p in rates)
    return PrecisionChoice(choice, f"{choice}: the fastest precision on {device} (matmul {measured})")
