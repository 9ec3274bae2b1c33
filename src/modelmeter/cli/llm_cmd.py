"""`modelmeter llm` (layer 6): prefill/decode, KV cache, tokens/s and fit for a decoder.

Parses, calls the library (`analysis.llm`), renders a table per batch size;
bad input becomes one line and exit 2 at the `main` boundary.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..core.units import format_bytes, format_count, format_seconds
from .options import check_outputs, check_sizes, make_console, write_json


@click.command()
@click.argument("model")
@click.option("--hardware", metavar="ID",
              help="Device id (`modelmeter hardware list`); default: the calibrated 'local' profile.")
@click.option("--prompt", type=int, default=512, show_default=True, help="Prompt tokens per sequence.")
@click.option("--gen", type=int, default=128, show_default=True, help="Generated tokens per sequence.")
@click.option("--batch", "batches", default="1", show_default=True, metavar="B[,B...]",
              help="Batch sizes, comma-separated, e.g. 1,8,32.")
@click.option("--dtype", default="fp16", show_default=True,
              help="Activation/compute precision the model runs in: fp32, fp16, bf16.")
@click.option("--weights", metavar="PRECISION", help="Stored weight precision (int8, int4, nf4, fp8…); default --dtype.")
@click.option("--kv-dtype", metavar="PRECISION", help="KV-cache precision (fp8, int8…); default --dtype.")
@click.option("--max-batch", is_flag=True, help="Also report the largest batch that fits the device's memory.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a local folder's custom model code to run.")
@click.option("--plot", "plot_path", metavar="FILE", help="Write tokens/s vs batch and the roofline (.png/.svg).")
@click.option("--measure", is_flag=True,
              help="Also run prefill and decode here (random weights, first batch) beside the predictions.")
@click.option("--json", "json_path", metavar="PATH", help="Write the llm section as JSON ('-' = stdout).")
def llm(model, hardware, prompt, gen, batches, dtype, weights, kv_dtype, max_batch, trust_remote_code,
        plot_path, measure, json_path) -> None:
    """LLM inference: TTFT, TPOT, tokens/s, KV cache and memory fit per batch size (estimated)."""
    from .. import api
    from ..analysis.llm import parse_batches

    # Everything a user can get wrong is checked before minutes of tracing.
    check_sizes(prompt, "--prompt")
    check_sizes(gen, "--gen")
    batch_sizes = parse_batches(batches)
    check_sizes(batch_sizes, "--batch")
    local = hardware is None or hardware.strip().lower() == "local"
    if local:
        _calibrate_local()
    hw = api.resolve_hardware(hardware)
    if plot_path:
        from ..report.llm_plots import check_plot_path

        check_plot_path(plot_path)
    check_outputs(json=json_path)
    section = api.llm(model, hardware=hw, prompt=prompt, gen=gen, batches=batch_sizes,
                      dtype=dtype, weights=weights, kv_dtype=kv_dtype, max_batch=max_batch,
                      trust_remote_code=trust_remote_code)
    if local or measure:
        from ..analysis.llm_measure import local_steps

        section["local"] = local_steps(model, prompt=prompt, gen=gen, batch=batch_sizes[0], hw=hw,
                                       dtype=dtype, measure=measure)
    if plot_path:
        from ..report.llm_plots import plot_llm

        plot_llm(section, plot_path)
    if json_path == "-":
        write_json({"llm": section}, "-")
        return
    console = make_console()
    _render(console, section)
    if section.get("local"):
        _render_local(console, section["local"])
    if plot_path:
        console.print(f"wrote {plot_path}")
    if json_path:
        write_json({"llm": section}, json_path)
        console.print(f"wrote {json_path}")


def _render(console: Console, s: dict[str, Any]) -> None:
    st = s["settings"]
    for note in s["notes"]:
        console.print(f"[bold yellow]warning:[/] {note}")
    table = Table(title=(f"{s['model']} on {s['hardware']} — prompt {st['prompt']}, gen {st['gen']}, "
                         f"{st['dtype']} activations, {st['weights']} weights, {st['kv_dtype']} KV "
                         "(estimated)"))
    for col in ("batch", "TTFT", "TPOT", "e2e", "tok/s", "tok/s/seq", "bound p/d", "KV cache",
                "memory", "fits"):
        table.add_column(col, justify="right")
    for b in s["batches"]:
        fits = "—" if b["fits"] is None else ("yes" if b["fits"] else "[red]no[/]")
        table.add_row(
            str(b["batch"]), format_seconds(b["ttft_s"]), format_seconds(b["tpot_s"]),
            format_seconds(b["e2e_s"]), format_count(b["tokens_per_s"]),
            format_count(b["tokens_per_s_per_seq"]),
            f"{b['prefill']['bound'][:3]}/{b['decode']['bound'][:3]}",
            format_bytes(b["kv_cache_bytes"]), format_bytes(b["memory_bytes"]), fits,
        )
    console.print(table)
    hw = s["hardware_detail"]
    limit = s["max_batch"]
    console.print(
        f"weights {format_bytes(s['weight_bytes'])}{_layout_note(s)} · KV cache {format_bytes(s['kv_cache_bytes_per_token'])}"
        f"/token (closed form {format_bytes(s['kv_cache_bytes_per_token_closed_form'])}) · device memory "
        f"{format_bytes(hw['memory_bytes'], binary=True)} · max batch "
        f"{'unknown' if limit is None else limit} · decode fit error "
        f"{s['fit']['decode_max_rel_error']:.1e}"
    )


def _calibrate_local() -> None:
    """This machine's profile on first use (threads as the command runs); a refusal is shown, not fatal."""
    import sys

    from ..benchsetup import apply_threads, local_hardware_for_prediction

    apply_threads(None, "cpu")
    _hw, why = local_hardware_for_prediction()
    if why and "no calibrated" not in why:
        print(f"warning: {why}", file=sys.stderr)


def _render_local(console: Console, s: dict[str, Any]) -> None:
    c = s["conditions"]
    table = Table(title=f"this machine, batch {c['batch']}, {c['threads']} threads, {c['dtype']}")
    for col in ("", "bound (roofline)", "predicted (calibrated)", "measured", "pred/meas - 1"):
        table.add_column(col, justify="right")
    m = s.get("measured") or {}
    for key, label in (("ttft", "TTFT"), ("tpot", "TPOT")):
        err = s.get(f"{key}_prediction_error")
        table.add_row(label, format_seconds(s[f"{key}_bound_s"]), format_seconds(s[f"{key}_predicted_s"]),
                      format_seconds(m.get(f"{key}_s")), f"{err:+.0%}" if err is not None else "—")
    console.print(table)
    if m:
        console.print(f"measured decode: {m['tokens_per_s']:.3g} tokens/s ({m['decode_steps']} steps, "
                      f"{m['prefill_runs']} prefills, random weights)")
    if s.get("note"):
        console.print(f"note: {s['note']}")


def _layout_note(s: dict[str, Any]) -> str:
    """' (embedding, head, norm kept fp16; naive …)' for a quantised weights precision."""
    q = s.get("quantization")
    if not q:
        return ""
    kept = ", ".join(k["kind"] for k in q["kept"]) or "nothing"
    return (f" ({kept} kept {q['kept_precision']}; naive, every tensor at {q['precision']}: "
            f"{format_bytes(s['weight_bytes_naive'])})")
