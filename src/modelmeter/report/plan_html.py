"""HTML view of the `plan` section: memory per device and step time per layout (layer 4).

One self-contained page: two inline SVG bar charts drawn here from the report dict
(no plotting library, nothing fetched) and the table of candidates. Every text
from the report passes through `html.escape`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from ..core.units import format_bytes, format_count, format_percent, format_seconds
from .plan_render import layout_label, memory_cells, rate_unit, training_cells

SHOWN = 24
_W, _ROW, _LEFT, _PAD = 760, 22, 230, 16
_COLOURS = {"model states": "#1f77b4", "KV cache": "#9467bd", "activations": "#ff7f0e", "time": "#2ca02c",
            "communication": "#d62728"}


def check_html_path(path: str) -> None:
    target = Path(path)
    if target.suffix.lower() not in (".html", ".htm"):
        raise UserInputError(f"--html {path}: give a file name ending in .html")
    if not target.parent.exists():
        raise UserInputError(f"cannot write {path}: folder {target.parent} does not exist")


def render_plan_html(report: dict[str, Any]) -> str:
    plan = report["plan"]
    train = plan["mode"] == "train"
    rows = plan["candidates"][:SHOWN]
    esc = html.escape
    title = f"{plan['model']} on {plan['devices']} x {plan['hardware']} — {'training' if train else 'inference'} plan"
    mem_parts = (("model states", "model_states_bytes_per_device"),
                 *((("activations", "activation_bytes_per_device"),) if train else
                   (("KV cache", "kv_cache_bytes_per_device"), ("activations", "activation_bytes_per_device"))))
    capacity = next((c["capacity_bytes"] for c in rows if c.get("capacity_bytes")), None)
    memory = _bars(rows, train, mem_parts, format_bytes, "memory per device", capacity)
    time_key = "step_time_s" if train else "tpot_s"
    times = _bars(rows, train, (("time", time_key),), format_seconds,
                  "step time" if train else "time per output token (TPOT)", None,
                  overlay=("communication", "comm_time_s" if train else None))
    table = _table(rows, train, rate_unit(plan))
    notes = "".join(f"<li>{esc(n)}</li>" for n in (*plan["assumptions"], *plan["notes"]))
    md = plan["min_devices"]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title><style>body{{font-family:sans-serif;margin:2em;max-width:70em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "td.l{text-align:left}tr.no td{color:#999}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>{plan['fitting']} of {plan['searched']} layouts fit; min_devices: "
        f"{esc(str(md) if md is not None else 'unknown')}. All figures are estimates.</p>"
        f"<h2>Memory per device</h2>{memory}<h2>{'Step time' if train else 'TPOT'} per layout</h2>{times}"
        f"<h2>Candidates</h2>{table}<h2>Assumptions</h2><ul>{notes}</ul></body></html>\n"
    )


def _bars(rows: list[dict[str, Any]], train: bool, parts: tuple[tuple[str, str], ...], fmt: Any, label: str,
          limit: float | None, overlay: tuple[str, str | None] | None = None) -> str:
    esc = html.escape
    top = max([sum(c[k] or 0 for _, k in parts) for c in rows] + [limit or 0, 1e-30])
    scale = (_W - _LEFT - 90) / top
    height = _PAD * 2 + _ROW * len(rows) + 20
    out = [f'<svg role="img" aria-label="{esc(label)}" width="{_W}" height="{height}" '
           f'viewBox="0 0 {_W} {height}" style="max-width:100%;height:auto">']
    for i, c in enumerate(rows):
        y = _PAD + i * _ROW
        out.append(f'<text x="{_LEFT - 6}" y="{y + 14}" text-anchor="end" font-size="12">'
                   f'{esc(layout_label(c, train))}{"" if c["fits"] else " ✗"}</text>')
        x = _LEFT
        total = 0.0
        for name, key in parts:
            v = c[key] or 0
            total += v
            out.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{v * scale:.1f}" height="{_ROW - 6}" '
                       f'fill="{_COLOURS[name]}" opacity="{1 if c["fits"] else 0.4}"><title>{esc(name)}: '
                       f'{esc(fmt(v))}</title></rect>')
            x += v * scale
        if overlay and overlay[1]:
            v = c[overlay[1]] or 0
            out.append(f'<rect x="{_LEFT}" y="{y + 8}" width="{v * scale:.1f}" height="{_ROW - 16}" '
                       f'fill="{_COLOURS[overlay[0]]}"><title>{esc(overlay[0])}: {esc(fmt(v))}</title></rect>')
        out.append(f'<text x="{x + 4:.1f}" y="{y + 14}" font-size="11">{esc(fmt(total))}</text>')
    if limit:
        x = _LEFT + limit * scale
        out.append(f'<line x1="{x:.1f}" y1="{_PAD / 2}" x2="{x:.1f}" y2="{height - 20}" stroke="#000" '
                   f'stroke-dasharray="4 3"/><text x="{x:.1f}" y="{height - 6}" font-size="11" '
                   f'text-anchor="middle">device memory {esc(format_bytes(limit))}</text>')
    legend = [*(n for n, _ in parts), *([overlay[0]] if overlay and overlay[1] else [])]
    for j, name in enumerate(legend):
        out.append(f'<rect x="{10 + j * 130}" y="{height - 14}" width="10" height="10" fill="{_COLOURS[name]}"/>'
                   f'<text x="{24 + j * 130}" y="{height - 5}" font-size="11">{esc(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _table(rows: list[dict[str, Any]], train: bool, rate: str = "tokens/s") -> str:
    esc = html.escape
    head = ["layout", "fits", "memory/device", "model states", "activations"]
    head += ["step", "communication", "bubble", rate, "MFU", "HFU"] if train else \
        ["KV cache", "TTFT", "TPOT", "tokens/s", "max batch", "MFU"]
    out = ["<table><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr>"]
    for c in rows:
        cells = memory_cells(c)
        if train:
            cells += training_cells(c)
        else:
            cells += [format_bytes(c["kv_cache_bytes_per_device"]), format_seconds(c["ttft_s"]),
                      format_seconds(c["tpot_s"]), format_count(c["tokens_per_s"]), str(c["max_batch"]),
                      format_percent(c["mfu"])]
        fits = "yes" if c["fits"] else f"no: {c['why_not']}"
        out.append(f'<tr class="{"yes" if c["fits"] else "no"}"><td class="l">{esc(layout_label(c, train))}</td>'
                   f'<td class="l">{esc(fits)}</td>' + "".join(f"<td>{esc(x)}</td>" for x in cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def write_plan_html(report: dict[str, Any], path: str) -> None:
    """Write the page whole, then rename: never half a file."""
    check_html_path(path)
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.write_text(render_plan_html(report), encoding="utf-8")
        tmp.replace(target)
    except OSError as exc:
        raise UserInputError(f"cannot write {path}: {exc.strerror or exc}") from exc
