"""`modelmeter validate` in the terminal (layer 4): one table per published table, then the summary."""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

_UNITS = {"step_time_s": ("s", 1.0), "ttft_s": ("ms", 1e3), "itl_s": ("ms", 1e3), "tpot_s": ("ms", 1e3),
          "tflops_per_gpu_hfu": ("TFLOP/s/GPU", 1.0), "tflops_per_gpu_mfu": ("TFLOP/s/GPU", 1.0),
          "activation_bytes": ("GiB", 2.0**-30), "model_states_bytes": ("GiB", 2.0**-30)}


def _layout(row: dict[str, Any]) -> str:
    lay = row.get("layout", {})
    if row["kind"] == "serve":
        rate = row.get("rate_per_s")
        return (f"tp {lay.get('tp', 1)}, {row['prompt']}/{row['gen']} tokens, "
                + (f"{rate:g} req/s" if rate else "one request") + f", {row.get('runtime', 'eager')}")
    mb = lay.get("micro_batch")
    return (f"tp {lay['tp']} pp {lay['pp']} dp {lay['dp']}, batch {row['global_batch']}, mb {mb or 'searched'}"
            + (f", vp {lay['vp']}" if lay.get("vp", 1) > 1 else "") + f", recompute {lay.get('recompute', 'none')}")


def validate_view(data: dict[str, Any]) -> list[RenderableType]:
    out: list[RenderableType] = []
    for t in data["tables"]:
        rows = [r for r in data["rows"] if r["table"] == t["table"]]
        title = f"{t['table']} — {rows[0]['hardware']}, {rows[0]['precision']}" if rows else t["table"]
        table = Table(title=title)
        for col in ("row", "configuration", "metric", "published", "predicted", "error"):
            table.add_column(col, justify="left" if col in ("row", "configuration", "metric") else "right")
        for r in rows:
            unit, scale = _UNITS[r["metric"]]
            err = r["error"]
            style = "red" if err is not None and abs(err) > 0.25 else ""
            table.add_row(r["label"], _layout(r), f"{r['metric'].removesuffix('_s').removesuffix('_bytes')} ({unit})",
                          f"{r['published'] * scale:.4g}",
                          "—" if r["predicted"] is None else f"{r['predicted'] * scale:.4g}",
                          Text("—" if err is None else f"{err:+.1%}", style=style))
        out.append(table)
        if t["median_abs_error"] is not None:
            out.append(Text(f"{t['table']}: {t['rows']} rows, median |error| {t['median_abs_error']:.1%}, "
                            f"worst {t['worst_abs_error']:.1%} ({t['worst_label']})"))
    for x in data.get("excluded", []):
        if x["rows"] != "none":
            out.append(Text(f"not validated: {x['table']}, {x['rows']}: {x['why']}"))
    src = data.get("sources") or {}
    if src:
        out.append(Text("sources: " + "; ".join(f"{k}: {v['title'].split(',')[0]}" for k, v in src.items())))
    out.append(Text(f"prediction: {data['settings']['prediction']} (constants and their sources: "
                    f"{data['settings']['constants']}; two fitted on these public rows, see the README)"))
    return out
