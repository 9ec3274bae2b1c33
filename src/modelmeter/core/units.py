"""Formatting of base-unit numbers for people (layer 0). Data stays in base units.

One rule for every figure a person reads, in every table and line: three
significant figures (`_sig`), with a decimal or binary prefix above 1000, and a
whole number below 1000 printed whole ('64', never '64.0': a norm layer's
parameters are counted, not rounded).
"""

from __future__ import annotations

import math

_DECIMAL = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))
_BINARY = ((2**50, "PiB"), (2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"))


def format_count(value: float | None, unit: str = "", digits: int = 3) -> str:
    """1.234e9 -> '1.23 G' (decimal prefixes, as for parameters and FLOPs)."""
    if value is None:
        return "—"
    for scale, prefix in _DECIMAL:
        if abs(value) >= scale:
            return f"{_sig(value / scale, digits)} {prefix}{unit}".rstrip()
    if float(value).is_integer():  # a count of 64 is exact: '64', not '64.0'
        return f"{int(value)} {unit}".rstrip()
    return f"{_sig(value, digits)} {unit}".rstrip()


def format_bytes(value: float | None, binary: bool = False, digits: int = 3) -> str:
    """Bytes with decimal (GB, as the seed uses) or binary (GiB) prefixes."""
    if value is None:
        return "—"
    if binary:
        for scale, suffix in _BINARY:
            if abs(value) >= scale:
                return f"{_sig(value / scale, digits)} {suffix}"
        return f"{int(value)} B"
    for scale, prefix in _DECIMAL:
        if abs(value) >= scale:
            return f"{_sig(value / scale, digits)} {prefix}B"
    return f"{int(value)} B"


def format_seconds(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0 s"
    for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if abs(value) >= scale:
            return f"{_sig(value / scale, digits)} {suffix}"
    return f"{_sig(value / 1e-9, digits)} ns"


def format_percent(fraction: float | None, digits: int = 1) -> str:
    if fraction is None:
        return "—"
    return f"{fraction * 100:.{digits}f}%"


def _sig(x: float, digits: int) -> str:
    """Round to `digits` significant figures without scientific notation."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{decimals}f}"


def plural(n: float | None, word: str, many: str | None = None) -> str:
    """'1 thread', '4 threads', '? threads' (n unknown); `many` for irregular plurals."""
    if n is None:
        return f"? {many or word + 's'}"
    shown = str(int(n)) if float(n).is_integer() else f"{n:g}"
    return f"{shown} {word}" if n == 1 else f"{shown} {many or word + 's'}"


def format_rate(value: float | None, unit: str) -> str:
    """'0.708 items/s', '12.3 K tokens/s': the 3-figure rule of `format_count`, unit after a space."""
    return "—" if value is None else f"{format_count(value)} {unit}"


def percent_beyond(value: float, limit: float, decimals: int = 0) -> tuple[str, str]:
    """('10.04%', '10%'): a ratio that crossed a limit and the limit, as percentages.

    The value gets `decimals` decimals, more when it takes more to differ from the limit
    as shown: a warning that reads 'IQR is 10% of the median (> 10%)' contradicts itself.
    """
    shown_limit = f"{limit * 100:g}%"
    for places in range(decimals, 16):
        shown = f"{value * 100:.{places}f}%"
        if float(shown[:-1]) != float(shown_limit[:-1]):
            return shown, shown_limit
    return f"{value * 100!r}%", shown_limit


def format_value(value: float | None, unit: str) -> str:
    """A base-unit number for people, by its unit ('', 'B', 's', 'J', '1/s', or any other unit
    with a decimal prefix: 'FLOP' -> '3.4 GFLOP'). The one formatter every view uses."""
    if value is None:
        return "—"
    if unit == "B":
        return format_bytes(value)
    if unit == "s":
        return format_seconds(value)
    if unit == "J":
        return f"{value:.3g} J"
    if unit == "1/s":
        return f"{format_count(value)}/s"
    return format_count(value, unit)  # '' (a count) or a unit of its own: 'FLOP', 'FLOP/s'...
