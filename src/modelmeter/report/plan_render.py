"""Terminal view of the `plan` section: the ranked candidates and why the others do not fit (layer 4)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from ..core.units import format_bytes, format_count, format_percent, format_seconds

SHOWN = 12


def render_plan(console: Console, plan: dict[str, Any], shown: int = SHOWN) -> None:
    """Print the plan: settings line, ranked fitting layouts, min_devices, the reasons for the rest."""
    train = plan["mode"] == "train"
    st = plan["settings"]
    net = plan.get("interconnect") or {}
    if train:
        batch = (f"{st['global_batch']} samples" if rate_unit(plan) == "samples/s"
                 else f"{st['global_batch']} x seq {st['seq']}")
        what = (f"training, global batch {batch}, {st['dtype']}, "
                f"{st['optimizer']}{' + fp32 master' if st['master_fp32'] else ''}")
    else:
        what = (f"inference, prompt {st['prompt']}, gen {st['gen']}, batch {st['batch']} per replica, "
                f"{st['weights']} weights, {st['kv_dtype']} KV")
    console.print(f"[bold]{plan['model']}[/] on {plan['devices']} x {plan['hardware']} "
                  f"({plan['nodes']} node{'s' if plan['nodes'] > 1 else ''}) — {what} (estimated)")
    if net:
        console.print(f"links: {net['intra_node']['name']} {format_bytes(net['intra_node']['bandwidth_bytes_per_s'])}/s"
                      f" · {net['inter_node']['name']} {format_bytes(net['inter_node']['bandwidth_bytes_per_s'])}/s "
                      "per device (per direction)")
    if plan.get("memory_budget"):
        from .memory_budget_text import budget_text

        console.print(f"memory per device: {budget_text(plan['memory_budget'])}", markup=False, highlight=False)
    fitting = [c for c in plan["candidates"] if c["fits"]]
    rejected = [c for c in plan["candidates"] if not c["fits"]]
    if fitting:
        console.print(_table(fitting[:shown], train, f"{len(fitting)} of {plan['searched']} layouts fit; best first",
                             rate_unit(plan)))
    else:
        console.print(f"[red]none of the {plan['searched']} layouts fits[/]")
    md = plan["min_devices"]
    console.print(f"min_devices: {'unknown' if md is None else md}"
                  + ("" if md is None or md <= plan["devices"] else f" [red](more than the {plan['devices']} given)[/]"))
    for c in rejected[:shown]:
        console.print(f"[yellow]does not fit[/] {layout_label(c, train)}: {c['why_not']}")
    if len(rejected) > shown:
        console.print(f"… {len(rejected) - shown} more layouts that do not fit (all in --json)")
    best = plan.get("best")
    if best and best.get("comm_overlapped"):
        # Only the terms this layout pays (a dense model has no expert all-to-all).
        under = best.get("comm_hidden_s") or {}
        flags = {k: v for k, v in best["comm_overlapped"].items() if best["comm_s"].get(k) or under.get(k)}
        # An overlapped term says how much of it is hidden and how much still adds to the step.
        hidden = [_overlap_part(k.replace("_", "-"), under.get(k, 0.0), best["comm_s"].get(k, 0.0))
                  for k, v in flags.items() if v]
        exposed = [k.replace("_", "-") for k, v in flags.items() if not v]
        console.print("communication: " + "; ".join(
            part for part in (f"overlapped with compute: {'; '.join(hidden)}" if hidden else "",
                              f"not overlapped (adds to the step): {', '.join(exposed)}" if exposed else "")
            if part) if flags else "communication: none in this layout")
    if train and st.get("efficiency") is not None:
        console.print(f"matrix peak derated to {format_percent(st['efficiency'])} (measured max-achievable matmul)")
    for note in plan["notes"]:
        console.print(f"[bold yellow]note:[/] {note}")


def _overlap_part(name: str, hidden: float, exposed: float) -> str:
    text = f"{name}: {format_seconds(hidden)} of {format_seconds(hidden + exposed)} hidden"
    return text + (f", {format_seconds(exposed)} adds to the step" if exposed > 0 else "")


def layout_label(c: dict[str, Any], train: bool) -> str:
    text = f"tp{c['tp']} pp{c['pp']} dp{c['dp']}"
    if c["ep"] > 1:
        text += f" ep{c['ep']}"
    if train:
        text += f" zero{c['zero']} mb{c['micro_batch']}"
        if c.get("virtual_stages", 1) > 1:
            text += f" vp{c['virtual_stages']}"
        if c.get("sequence_parallel"):
            text += " sp"
        if c.get("checkpoint"):
            text += " ckpt"
    return text


def memory_cells(c: dict[str, Any]) -> list[str]:
    """A candidate's memory per device, model states and activations, for people."""
    return [format_bytes(c["memory_per_device_bytes"]), format_bytes(c["model_states_bytes_per_device"]),
            format_bytes(c["activation_bytes_per_device"])]


def training_cells(c: dict[str, Any]) -> list[str]:
    """A training candidate's step, communication, bubble, tokens/s, MFU and HFU, for people
    (the terminal table and the HTML page show the same columns)."""
    return [format_seconds(c["step_time_s"]), format_seconds(c["comm_time_s"]),
            format_percent(c["bubble_fraction"]), format_count(c["tokens_per_s"]),
            format_percent(c["mfu"]), format_percent(c["hfu"])]


def rate_unit(plan: dict[str, Any]) -> str:
    """What the throughput counts: tokens, or samples for a model traced without a sequence
    (an image model: one 'token' per sample)."""
    return "samples/s" if plan["mode"] == "train" and plan["settings"].get("seq") == 1 else "tokens/s"


def _table(rows: list[dict[str, Any]], train: bool, title: str, rate: str = "tokens/s") -> Table:
    table = Table(title=title)
    cols = ["#", "layout", "memory/dev", "states", "activations"]
    cols += ["step", "comm", "bubble", rate, "MFU", "HFU"] if train else \
        ["KV cache", "TTFT", "TPOT", "comm/token", "tokens/s", "max batch", "MFU"]
    for col in cols:
        table.add_column(col, justify="left" if col == "layout" else "right")
    for i, c in enumerate(rows, 1):
        cells = [str(i), layout_label(c, train), *memory_cells(c)]
        if train:
            cells += training_cells(c)
        else:
            cells += [format_bytes(c["kv_cache_bytes_per_device"]), format_seconds(c["ttft_s"]),
                      format_seconds(c["tpot_s"]), format_seconds(c["comm_s"]["decode_step"]),
                      format_count(c["tokens_per_s"]), str(c["max_batch"]), format_percent(c["mfu"])]
        table.add_row(*cells)
    return table
