"""HTML rendering: one self-contained page, or a fragment for Jupyter (layer 4).

The page holds the summary, the notes, the roofline plot and the slowest-layer
chart (inline SVG), measured against predicted time per module (when the
report timed its modules and has a prediction), the top memory- and compute-bound layers,
a per-module table sortable in the browser (a few lines of inline JS, plus a
depth filter), uncounted ops, methods and the environment. Nothing is fetched
from the network: no external script, style, font or image.

Every string that comes from the user or the model (names, paths, module and
type names, notes) passes through `html.escape`; absolute paths are shown by
their last component unless `absolute_paths=True`.
"""

from __future__ import annotations

import html
import itertools
import json
from typing import Any

from .summary import (
    as_dict,
    build_summary,
    header_facts,
    module_bound,
    module_latency,
    strip_paths,
    summary_notes,
)

__all__ = ["render_html", "render_html_fragment"]

_ids = itertools.count(1)

# Scoped to .mm-report so a notebook's own styles are left alone.
_CSS = """
.mm-report{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1b1f24;
  max-width:1200px;margin:0 auto;padding:8px 16px;line-height:1.4;font-size:14px}
.mm-report h1{font-size:22px;margin:8px 0 4px}.mm-report h2{font-size:17px;margin:22px 0 6px;
  border-bottom:1px solid #d0d7de;padding-bottom:3px}
.mm-report table{border-collapse:collapse;margin:6px 0;font-size:13px}
.mm-report th,.mm-report td{border:1px solid #d0d7de;padding:3px 8px;vertical-align:top}
.mm-report th{background:#f3f5f7;text-align:left}
.mm-report td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.mm-report .facts td{border:none;padding:1px 10px 1px 0}.mm-report .facts td:first-child{font-weight:600}
.mm-report .badge{display:inline-block;border-radius:8px;padding:0 7px;font-size:12px}
.mm-report .counted{background:#dafbe1}.mm-report .estimated{background:#fff1c2}
.mm-report .measured{background:#ddf4ff}
.mm-report table.mm-sortable th{cursor:pointer;user-select:none;white-space:nowrap}
.mm-report table.mm-sortable th[data-dir=asc]::after{content:" \\25B2"}
.mm-report table.mm-sortable th[data-dir=desc]::after{content:" \\25BC"}
.mm-report .plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.mm-report .plots figure{margin:0;flex:1 1 420px;max-width:580px}
.mm-report .plots svg{max-width:100%;height:auto;border:1px solid #d0d7de}
.mm-report .scroll{overflow-x:auto}
.mm-report .muted{color:#57606a;font-size:12px}.mm-report ul{margin:4px 0 4px 18px;padding:0}
.mm-report tr.mm-hidden{display:none}.mm-report code{font-size:12px}
"""

# Sorting: numbers sort by data-v (base units), text by its content; '#' restores tree order.
# The depth filter hides rows deeper than the chosen level. Plain ES5: runs everywhere.
_JS = """
(function(){
var root=document.getElementById("%(id)s");if(!root){return;}
function key(cell){var v=cell.getAttribute("data-v");
  if(v!==null){var f=parseFloat(v);return isNaN(f)?-Infinity:f;}return cell.textContent.trim().toLowerCase();}
var tables=root.querySelectorAll("table.mm-sortable");
Array.prototype.forEach.call(tables,function(t){
  var ths=t.tHead.rows[0].cells;
  Array.prototype.forEach.call(ths,function(th,i){th.addEventListener("click",function(){
    var asc=th.getAttribute("data-dir")!=="asc";
    Array.prototype.forEach.call(ths,function(o){o.removeAttribute("data-dir");});
    th.setAttribute("data-dir",asc?"asc":"desc");
    var body=t.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);
      var r=(typeof x==="number"&&typeof y==="number")?x-y:String(x).localeCompare(String(y));
      return asc?r:-r;});
    rows.forEach(function(r){body.appendChild(r);});});});});
var sel=root.querySelector("select.mm-depth");
function filter(){if(!sel){return;}var d=parseInt(sel.value,10);
  Array.prototype.forEach.call(root.querySelectorAll("tr[data-depth]"),function(r){
    r.className=parseInt(r.getAttribute("data-depth"),10)>d?"mm-hidden":"";});}
if(sel){sel.addEventListener("change",filter);filter();}
})();
"""


class _Esc:
    """Escaping (and path hiding) for every user- or model-provided string."""

    def __init__(self, absolute_paths: bool) -> None:
        self.absolute_paths = absolute_paths

    def __call__(self, value: Any) -> str:
        text = "" if value is None else str(value)
        if not self.absolute_paths:
            text = strip_paths(text)
        return html.escape(text, quote=True)


def _method_class(method: str) -> str:
    for kind in ("counted", "estimated", "measured"):
        if method.startswith(kind):
            return kind
    return ""


def _num(value: Any, text: str) -> str:
    """A numeric cell: shown formatted, sorted by its base-unit value."""
    v = "" if value is None else repr(float(value))
    return f'<td class="num" data-v="{v}">{html.escape(text)}</td>'


def render_html_fragment(report: Any, *, depth: int = 2, absolute_paths: bool = False,
                         plots: bool = True) -> str:
    """The report as one `<div>` with its own scoped style and script (Jupyter's `_repr_html_`)."""
    from ..core.units import format_bytes, format_count, format_percent, format_seconds

    r = as_dict(report)
    e = _Esc(absolute_paths)
    rid = f"mm-report-{next(_ids)}"
    name = r.get("model", {}).get("name", "model")
    out = [f'<div class="mm-report" id="{rid}"><style>{_CSS}</style>',
           f"<h1>{e(name)} — efficiency report</h1>", '<table class="facts">']
    out += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in header_facts(r)]
    out.append("</table>")

    out += ["<h2>Summary</h2>", '<table class="mm-summary"><thead><tr><th>metric</th><th>value</th>'
            "<th>how obtained</th><th>hardware-dependent</th><th>mainly affects</th></tr></thead><tbody>"]
    for row in build_summary(r):
        out.append(
            f'<tr data-metric="{e(row.key)}"><td>{e(row.metric)}</td>'
            f'<td class="num" data-v="{"" if row.raw is None else float(row.raw)!r}">{e(row.value)}</td>'
            f'<td><span class="badge {_method_class(row.how)}">{e(row.how)}</span></td>'
            f'<td>{"yes" if row.hardware_dependent else "no"}</td><td>{e(row.affects)}</td></tr>')
    out.append("</tbody></table>")
    notes = summary_notes(r)
    if notes:
        out += ['<ul class="notes">'] + [f"<li>{e(n)}</li>" for n in notes] + ["</ul>"]

    out += _plots(r, e) if plots else []
    out += _measured_modules(r, e) if plots else []
    out += _bound_layers(r, e, format_seconds)
    out += _modules(r, e, depth, format_count, format_bytes, format_percent, format_seconds)
    if r.get("uncounted_ops"):
        out += ["<h2>Uncounted ops</h2>", '<p class="muted">Arithmetic with no formula: not in the '
                "FLOP totals.</p>", "<table><thead><tr><th>op</th><th>calls</th></tr></thead><tbody>"]
        out += [f'<tr><td><code>{e(u["op"])}</code></td>{_num(u["count"], str(u["count"]))}</tr>'
                for u in r["uncounted_ops"]]
        out.append("</tbody></table>")
    out += _details(r, e)
    out.append(f"<script>{_JS % {'id': rid}}</script></div>")
    return "\n".join(out)


def _plots(r: dict[str, Any], e: _Esc) -> list[str]:
    from .html_plots import module_times_svg, roofline_svg

    if not r.get("roofline"):
        return []
    figures = [(roofline_svg(r), "roofline: attainable FLOP/s against arithmetic intensity; one dot "
                                 "per leaf layer, sized by its predicted time"),
               (module_times_svg(r), "slowest layers, predicted (roofline, unfused)")]
    out = ["<h2>Roofline</h2>", '<div class="plots">']
    for svg, caption in figures:
        if svg is None:
            continue
        # `svg` is generated markup (matplotlib escapes every label), never user text as such.
        out.append(f'<figure>{svg}<figcaption class="muted">{e(caption)}</figcaption></figure>')
    out.append("</div>")
    if len(out) == 3:
        out.insert(2, '<p class="muted">plots need matplotlib (pip install matplotlib)</p>')
    return out


def _measured_modules(r: dict[str, Any], e: _Esc) -> list[str]:
    """Measured (hooks) against predicted time per module, when the report has both."""
    from ..core.units import format_seconds
    from .html_plots import measured_modules_svg

    timing = (r.get("measured") or {}).get("module_timing")
    svg = measured_modules_svg(r) if timing else None
    if svg is None:
        return []
    hooked, plain = timing.get("hooked_latency_s"), timing.get("unhooked_latency_s")
    cost = (f"; the whole pass took {format_seconds(hooked)} with hooks, {format_seconds(plain)} without"
            if hooked is not None and plain is not None else "")
    caption = (f"Each module timed between forward pre- and post-hooks in a separate pass (median of "
               f"{timing['repeats']} passes, each after one without hooks). A figure includes the hooks of "
               f"the timed modules inside it (about {format_seconds(timing['hook_overhead_s'])} per hooked "
               f"call){cost}. Predicted: calibrated on this machine; bound: roofline at the device peaks.")
    return ["<h2>Measured against predicted per module</h2>",
            f'<div class="plots"><figure class="mm-measured-modules">{svg}'
            f'<figcaption class="muted">{e(caption)}</figcaption></figure></div>']


def _bound_layers(r: dict[str, Any], e: _Esc, fmt_s: Any) -> list[str]:
    rl = r.get("roofline")
    if not rl:
        return []
    out = []
    for bound in ("memory", "compute"):
        rows = rl.get(f"top_{bound}_bound") or []
        if rows:
            out.append(f"<p><b>top {bound}-bound layers</b> (predicted): " + "; ".join(
                f"<code>{e(x['path'] or '(model)')}</code> {e(fmt_s(x['latency_s']))}" for x in rows) + "</p>")
    return out


def _modules(r: dict[str, Any], e: _Esc, depth: int, fmt_c: Any, fmt_b: Any, fmt_p: Any,
             fmt_s: Any) -> list[str]:
    mods = r.get("modules") or []
    if not mods:
        return []
    total = r.get("totals", {}).get("flops") or 0
    max_depth = max(m["depth"] for m in mods)
    has_act = any("peak_share_bytes" in m for m in mods)
    has_saved = any("saved_bytes" in m for m in mods)
    has_time = any("t_compute_s" in m for m in mods)
    has_cal = any("predicted_latency_s" in m for m in mods)
    has_meas = any("measured_latency_s" in m for m in mods)
    options = "".join(f'<option value="{d}"{" selected" if d == min(depth, max_depth) else ""}>{d}</option>'
                      for d in range(max_depth + 1))
    cols = ["#", "module", "type", "params", "MACs", "FLOPs", "other FLOPs", "bytes moved", "FLOPs %"]
    cols += ["live at peak"] * has_act + ["saved for bwd"] * has_saved
    cols += ["t_compute", "t_memory", "predicted", "bound"] * has_time
    gpu = (r.get("roofline") or {}).get("prediction", "").startswith("gpu")
    cols += ["GPU model" if gpu else "calibrated"] * has_cal + ["measured (hooks)"] * has_meas
    out = ["<h2>Modules</h2>",
           f'<p class="muted">Inclusive of sub-modules. Click a column to sort; # restores tree order. '
           f'Depth: <select class="mm-depth">{options}</select></p>',
           '<div class="scroll"><table class="mm-sortable mm-modules"><thead><tr>'
           + "".join(f"<th>{c}</th>" for c in cols) + "</tr></thead><tbody>"]
    for i, m in enumerate(mods):
        moved = m["bytes_read"] + m["bytes_written"]
        cells = [_num(i, str(i)),
                 f'<td title="{e(m["path"])}">{"&nbsp;&nbsp;" * m["depth"]}'
                 f'{e(m["path"].rpartition(".")[2] if m["path"] else "(model)")}</td>',
                 f"<td>{e(m['type'])}</td>", _num(m["params"], fmt_c(m["params"])),
                 _num(m["macs"], fmt_c(m["macs"])), _num(m["flops"], fmt_c(m["flops"])),
                 _num(m["other_flops"], fmt_c(m["other_flops"])), _num(moved, fmt_b(moved)),
                 _num(m["flops"] / total if total else None, fmt_p(m["flops"] / total if total else None))]
        if has_act:
            cells.append(_num(m.get("peak_share_bytes"), fmt_b(m.get("peak_share_bytes"))))
        if has_saved:
            cells.append(_num(m.get("saved_bytes"), fmt_b(m.get("saved_bytes"))))
        if has_time:
            tc, tm = m.get("t_compute_s"), m.get("t_memory_s")
            lat = module_latency(m)
            cells += [_num(tc, fmt_s(tc)), _num(tm, fmt_s(tm)), _num(lat, fmt_s(lat)),
                      f"<td>{e(module_bound(m))}</td>"]
        for key, present in (("predicted_latency_s", has_cal), ("measured_latency_s", has_meas)):
            if present:
                cells.append(_num(m.get(key), fmt_s(m.get(key))))
        out.append(f'<tr data-depth="{int(m["depth"])}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return out


def _details(r: dict[str, Any], e: _Esc) -> list[str]:
    out = []
    if r.get("methods"):
        out += ["<h2>How each figure was obtained</h2>", "<table><tbody>"]
        out += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in r["methods"].items()]
        out.append("</tbody></table>")
    if r.get("environment"):
        env = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r["environment"].items()}
        out += ["<details><summary>environment</summary><table><tbody>"]
        out += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in env.items()]
        out.append("</tbody></table></details>")
    out.append('<p class="muted">counted: from one trace of the model; estimated: roofline or energy '
               "model; measured: timed on the named device. Generated by modelmeter.</p>")
    return out


def render_html(report: Any, *, depth: int = 2, absolute_paths: bool = False, plots: bool = True) -> str:
    """One self-contained HTML document: inline style, inline script, embedded images."""
    r = as_dict(report)
    e = _Esc(absolute_paths)
    title = f"{e(r.get('model', {}).get('name', 'model'))} — modelmeter report"
    body = render_html_fragment(r, depth=depth, absolute_paths=absolute_paths, plots=plots)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title></head>\n<body>\n{body}\n</body></html>\n")
