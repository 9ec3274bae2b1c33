"""`modelmeter hardware` in the terminal (layer 4): the database, one device, a calibration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from ..core.units import format_bytes, format_count, format_percent, plural
from ..hardware import Hardware
from ..hardware.specs import PRECISION_KEYS
from .terminal import needed_width

LIST_PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8")


def _flops(value: float | None) -> str:
    return format_count(value, "FLOP/s")


def _bandwidth(value: float | None) -> str:
    return "—" if value is None else f"{format_bytes(value)}/s"


# Columns `hardware list` gives up, in this order, when the terminal is too narrow for all.
DROPPABLE = ("year", "tf32", "W")
NAME_MIN_WIDTH = 24  # the name column is shown when it gets at least this much room


def hardware_table(devices: Sequence[Hardware], width: int | None = None) -> Table:
    """`hardware list`: a row per device, dense matrix peaks at the usual precisions.

    Units sit in the headers so every cell is a short number that never wraps; the id
    never wraps either (an id split over two lines cannot be copied). Sized to `width`
    (the terminal's columns; None: everything): the year, tf32 and TDP columns give way,
    in that order, to keep the name (which wraps) in view; when even that is too wide,
    the name goes and as few of them as fit 80 columns.
    """
    full = ["id", "GiB", "GB/s", *LIST_PRECISIONS, "W", "year"]
    if width is None:
        return _table(devices, full, name=True)
    choices = [[c for c in full if c not in DROPPABLE[:k]] for k in range(len(DROPPABLE) + 1)]
    needed = [needed_width(_table(devices, cols, name=False)) for cols in choices]
    for cols, need in zip(choices, needed, strict=True):
        if need + NAME_MIN_WIDTH <= width:
            return _table(devices, cols, name=True)
    for cols, need in zip(choices, needed, strict=True):
        if need <= width:
            return _table(devices, cols, name=False)
    return _table(devices, choices[-1], name=False)


def _table(devices: Sequence[Hardware], columns: Sequence[str], name: bool) -> Table:
    units = "GiB: memory · GB/s: bandwidth" + (" · W: TDP" if "W" in columns else "")
    table = Table(title="hardware database — dense matrix peaks in TFLOP/s (int8: TOPS)", caption=units,
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("id", style="bold", no_wrap=True)
    if name:
        table.add_column("name")
    for col in columns[1:]:
        table.add_column(col, justify="right", no_wrap=True)
    for hw in devices:
        cells = {
            "GiB": _number(None if hw.memory_bytes is None else hw.memory_bytes / 2**30),
            "GB/s": _number(hw.memory_bandwidth_bytes_per_s / 1e9),
            **{p: _number(None if p not in hw.peak_flops else hw.peak_flops[p] / 1e12) for p in LIST_PRECISIONS},
            "W": _number(hw.tdp_w),
            "year": "—" if hw.year is None else str(hw.year),
        }
        table.add_row(Text(hw.id), *([Text(hw.name)] if name else []), *(cells[c] for c in columns[1:]))
    return table


def _number(value: float | None) -> str:
    """3 significant figures, whole from 100 up ('1979', '67.0', '0.159'): no prefix, the header has the unit."""
    if value is None:
        return "—"
    return f"{value:.0f}" if abs(value) >= 100 else format_count(value)


def hardware_view(hw: Hardware) -> list[RenderableType]:
    """`hardware show`: the record, its peak rates per precision, its sources and notes."""
    # Data strings go in as Text: source keys like "[nv_h100_ds]" are not rich markup.
    head = Table(title=Text(f"{hw.id} — {hw.name}"), show_header=False)
    head.add_column("field", style="bold")
    head.add_column("value")
    head.add_row("vendor / kind", f"{hw.vendor} / {hw.kind}")
    head.add_row("memory", format_bytes(hw.memory_bytes, binary=True))
    head.add_row("bandwidth", _bandwidth(hw.memory_bandwidth_bytes_per_s))
    head.add_row("TDP", "—" if hw.tdp_w is None else f"{hw.tdp_w:g} W")
    head.add_row("year", "—" if hw.year is None else str(hw.year))
    head.add_row("figures", hw.source)
    if hw.aliases:
        head.add_row("aliases", ", ".join(hw.aliases))

    rates = Table(title="peak rates (dense)")
    rates.add_column("precision", style="bold")
    rates.add_column("matmul (matrix units)", justify="right")
    rates.add_column("vector (elementwise)", justify="right")
    rates.add_column("ridge point", justify="right")
    for p in PRECISION_KEYS:
        if p in hw.peak_flops or p in hw.vector_flops:
            ridge = hw.ridge_point(p) if p in hw.peak_flops else None
            rates.add_row(
                p,
                _flops(hw.peak_flops.get(p)),
                _flops(hw.vector_flops.get(p)),
                "—" if ridge is None else f"{ridge:.3g} FLOP/B",
            )

    srcs = Table(title="sources")
    srcs.add_column("field", style="bold", no_wrap=True)
    srcs.add_column("source")
    for field, text in hw.sources.items():
        srcs.add_row(Text(field), Text(text))
    out: list[RenderableType] = [head, rates, srcs]
    if hw.notes:
        out.append(Text("notes", style="bold"))
        out += [Text(f"  • {note}") for note in hw.notes]
    return out


def calibration_view(result: Any) -> list[RenderableType]:
    """`hardware calibrate`: each measurement beside the ISA peak, then what was skipped and why."""
    isa = result.isa_peak
    table = Table(
        title=Text(f"{result.device_name} — {plural(result.threads, 'thread')}, torch {result.torch_version}"
                   f"{' (quick)' if result.quick else ''}, {result.duration_s:.1f} s")
    )
    table.add_column("measurement", style="bold")
    table.add_column("measured", justify="right")
    table.add_column("size", justify="right")
    table.add_column("spread", justify="right")
    table.add_column("ISA peak", justify="right")
    table.add_column("measured / ISA", justify="right")
    for key, m in result.best.items():
        prec = key.split(".", 1)[1] if "." in key else None
        is_bw = m.spec.unit == "byte"
        peak = isa.peak_flops.get(prec) if (isa is not None and prec and key.startswith("matmul.")) else None
        table.add_row(
            key,
            _bandwidth(m.rate) if is_bw else _flops(m.rate),
            f"{m.spec.size}" + (" (n)" if m.spec.kind == "matmul" else " elem"),
            format_percent(m.spread, 0),
            _flops(peak) if peak else "",
            format_percent(m.rate / peak, 0) if peak else "",
        )
    out: list[RenderableType] = [table]
    if isa is not None:
        out.append(Text(
            f"ISA peak: {plural(isa.cores, 'core')} × {isa.clock_hz / 1e9:.3g} GHz × FLOPs/cycle {isa.flops_per_cycle} "
            f"({isa.isa_class}; clock from {isa.clock_source})"
        ))
    out += [Text(f"not measured: {what} — {why}") for what, why in result.skipped]
    out += [Text(f"note: {note}") for note in result.notes]
    return out
