"""`modelmeter roofline` in the terminal (layer 4): the device, per-module times, the bound layers."""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from ..analysis.roofline import RooflineResult
from ..core.units import format_bytes, format_count, format_seconds
from .summary import bound_label


def roofline_view(data: dict[str, Any], result: RooflineResult, depth: int, top: int) -> list[RenderableType]:
    """The report's `roofline` section; `result` gives the device record and the top layers at any `top`."""
    rl = data["roofline"]
    hw = result.hardware
    eff = f", derated x{rl['efficiency']:.2f}" if rl["efficiency"] else ""
    detail = rl["hardware_detail"]
    from .terminal import inputs_line

    out: list[RenderableType] = [inputs_line(data), Text.assemble(
        (hw.name, "bold"),
        f" ({hw.id}, {hw.source}): matrix peak {format_count(detail['peak_flops'], 'FLOP/s')} "
        f"at {rl['precision']}{eff}, vector {format_count(detail['vector_flops'], 'FLOP/s')}, "
        f"bandwidth {format_bytes(hw.memory_bandwidth_bytes_per_s)}/s, ridge point {rl['ridge_point']:.3g} "
        f"FLOP/byte; weights {rl['weights']}{_layout_note(rl)}, activations {rl['activations']}")]
    gpu = rl.get("predicted")
    cal = gpu or rl.get("calibrated")
    # Per-module predictions beside the bound: the GPU model's on a GPU, the calibrated one on
    # this machine's 'local' profile.
    cal_modules = {m["path"]: m["predicted_latency_s"] for m in cal["modules"]} if cal else {}
    table = Table(title=f"{data['model']['name']} — roofline per module (estimated, unfused)")
    cols = ("module", "FLOPs", "bytes", "FLOP/B", "t_compute", "t_memory", "bound")
    cols += ("bound time", "predicted (GPU model)" if gpu else "predicted (calibrated)") if cal else ()
    for col in cols:
        table.add_column(col, justify="left" if col in ("module", "bound") else "right")
    for m in rl["modules"]:
        if m["depth"] > depth:
            continue
        name = ("  " * m["depth"]) + (m["path"].rpartition(".")[2] or data["model"]["name"])
        intensity = "—" if m["intensity"] is None else f"{m['intensity']:.3g}"
        extra = ((format_seconds(m["latency_s"]), format_seconds(cal_modules.get(m["path"])))
                 if cal else ())
        table.add_row(Text(name), format_count(m["flops"]), format_bytes(m["bytes"]), intensity,
                      format_seconds(m["t_compute_s"]), format_seconds(m["t_memory_s"]),
                      bound_label(m["bound"]), *extra)
    out.append(table)
    out.append(Text.assemble(
        "predicted latency: ", (format_seconds(rl["latency_s"]), "bold"),
        f" per op, unfused ({rl['bound']}-bound: compute {format_seconds(rl['t_compute_s'])}, "
        f"memory {format_seconds(rl['t_memory_s'])}); {format_seconds(rl['latency_module_s'])} "
        f"per module (each reads its weights and input, writes its output once); "
        f"{format_seconds(rl['latency_fused_s'])} fully fused (lower bound)"))
    if gpu:
        c = gpu.get("conditions") or {}
        out.append(Text.assemble(
            "predicted (GPU shape model, estimated): ", (format_seconds(gpu["predicted_latency_s"]), "bold"),
            f" beside the bound {format_seconds(rl['latency_s'])}: {c.get('kernels', '?')} kernels, "
            f"{c.get('runtime')} launches; GEMMs by M, N, K on {c.get('sms') or '?'} SMs at the measured "
            f"best-shape matmul rate; other ops at {c.get('bandwidth_fraction', 0):.0%} of the datasheet "
            "bandwidth (measured), with a size ramp"))
    elif cal:
        c = cal.get("conditions") or {}
        out.append(Text.assemble(
            "calibrated prediction (this machine): ", (format_seconds(cal["predicted_latency_s"]), "bold"),
            f" beside the bound {format_seconds(rl['latency_s'])}: per op class rates and dispatch cost "
            f"measured here ({c.get('threads', '?')} threads, torch {c.get('torch_version', '?')}), "
            f"{cal.get('module_calls', 0)} module calls {format_seconds(cal.get('module_call_overhead_s'))}"))
        if c.get("load_warning"):
            out.append(Text(f"note: calibration: {c['load_warning']}"))
    for bound in ("memory", "compute"):
        rows = result.top(bound, top)
        if rows:
            out.append(Text(f"top {bound}-bound layers: " + "; ".join(
                f"{r.path or '(model)'}{' (own ops)' if r.kind != 'module' else ''} "
                f"{format_seconds(r.latency_s)}" for r in rows)))
    out += [Text(f"note: {note}") for note in rl["notes"]]
    return out


def _layout_note(rl: dict[str, Any]) -> str:
    """' (weight-only: embedding, head, norm kept fp16)' for a quantised weights precision."""
    q = rl.get("quantization")
    if not q:
        return ""
    kept = ", ".join(k["kind"] for k in q["kept"]) or "nothing"
    return f" (weight-only: {kept} kept {q['kept_precision']})"
