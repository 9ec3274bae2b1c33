"""`modelmeter llm` in the terminal (layer 4): warnings, a row per batch size, the memory line."""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from ..core.units import format_bytes, format_count, format_rate, format_seconds, plural


def llm_view(s: dict[str, Any]) -> list[RenderableType]:
    """The report's `llm` section (`LLMSection.to_dict()`)."""
    st = s["settings"]
    out: list[RenderableType] = [Text.assemble(("warning:", "bold yellow"), f" {note}") for note in s["notes"]]
    reason = st.get("dtype_reason")
    if reason:  # the device's profile chose the precision: say which and why
        out.append(Text(f"precision {reason}; --dtype picks another"))
    table = Table(title=(f"{s['model']} on {s['hardware']} — prompt {st['prompt']}, gen {st['gen']}, "
                         f"{st.get('activations', st['dtype'])} activations, {st['weights']} weights, "
                         f"{st['kv_dtype']} KV{_attention(st)} (estimated)"))
    for col in ("batch", "time to 1st token", "time per token", "end to end", "tokens/s",
                "tokens/s per seq", "prefill / decode limited by", "KV cache", "memory", "fits"):
        table.add_column(col, justify="right")
    for b in s["batches"]:
        fits = "—" if b["fits"] is None else ("yes" if b["fits"] else Text("no", style="red"))
        table.add_row(
            str(b["batch"]), format_seconds(b["ttft_s"]), format_seconds(b["tpot_s"]),
            format_seconds(b["e2e_s"]), format_count(b["tokens_per_s"]),
            format_count(b["tokens_per_s_per_seq"]),
            f"{b['prefill']['bound']} / {b['decode']['bound']}",
            format_bytes(b["kv_cache_bytes"]), format_bytes(b["memory_bytes"]), fits,
        )
    out.append(table)
    hw = s["hardware_detail"]
    limit = s["max_batch"]
    out.append(Text(
        f"weights {format_bytes(s['weight_bytes'])}{_layout_note(s)} · KV cache "
        f"{format_bytes(s['kv_cache_bytes_per_token'])}"
        f"/token (closed form {format_bytes(s['kv_cache_bytes_per_token_closed_form'])}) · "
        f"{_memory(s, hw)} · max batch "
        f"{'unknown' if limit is None else limit}"))
    out.append(Text(fit_note(s["fit"])))
    if s.get("predicted"):
        out.extend(predicted_view(s["predicted"]))
    if s.get("local"):
        out.extend(local_view(s["local"]))
    return out


def _memory(s: dict[str, Any], hw: dict[str, Any]) -> str:
    # In GB, as the memory column: a capacity in GiB beside uses in GB misread as a fit
    from .memory_budget_text import budget_text

    if s.get("memory_budget"):
        return budget_text(s["memory_budget"])
    return f"device memory {format_bytes(hw['memory_bytes'])}" if hw.get("memory_bytes") else "device memory unknown"


def fit_note(fit: dict[str, Any]) -> str:
    """How the batch sizes and lengths not traced were obtained, and how far the check trace was off."""
    return (f"every batch size and cache length is fitted from {fit['traces']} traced steps, one of "
            f"them a check the fit misses by at most {fit['decode_max_rel_error']:.2%}")


def predicted_view(p: dict[str, Any]) -> list[RenderableType]:
    """`llm.predicted`: the GPU performance model's TTFT, TPOT and tokens/s beside the bound."""
    m = p["model"]
    table = Table(title=f"predicted by the GPU shape model ({p['runtime']} runtime; estimated)")
    for col in ("batch", "time to 1st token", "time per token", "end to end", "tokens/s", "kernels / step"):
        table.add_column(col, justify="right")
    for b in p["batches"]:
        table.add_row(str(b["batch"]), format_seconds(b["ttft_s"]), format_seconds(b["tpot_s"]),
                      format_seconds(b["e2e_s"]), format_count(b["tokens_per_s"]), str(b["kernels_decode"]))
    out: list[RenderableType] = [table, Text(
        f"GEMMs by their shape on {m.get('sms') or '?'} SMs at the measured best-shape matmul rate, memory at "
        f"{m['bandwidth_fraction']:.0%} of the datasheet bandwidth (measured) x {m['sustained_bandwidth (fitted)']:.2f} "
        f"sustained (fitted), each kernel at least {format_seconds(m['launch_s'])} to launch")]
    served = p.get("served")
    if served:
        if served["saturated"]:
            out.append(Text(f"served at {served['rate_per_s']:g} requests/s: beyond what the device serves "
                            "(no steady state: the queue grows)", style="yellow"))
        else:
            out.append(Text.assemble(
                f"served at {served['rate_per_s']:g} requests/s (in-flight batching): ",
                ("TTFT " + format_seconds(served["ttft_s"]), "bold"), ", ",
                ("inter-token " + format_seconds(served["itl_s"]), "bold"),
                f", {served['concurrency']:.1f} requests in flight, "
                f"{format_count(served['output_tokens_per_s'])} output tokens/s"))
    target = p.get("target")
    if target:
        wants = " and ".join(f"{k.split('_')[0].upper()} <= {format_seconds(v)}"
                             for k, v in target.items() if k.endswith("_target_s") and v is not None)
        out.append(Text(f"largest batch with {wants}: {target['max_batch']}"
                        + (f" (memory allows {target['memory_max_batch']})" if target["memory_max_batch"] else "")))
    return out


def local_view(s: dict[str, Any]) -> list[RenderableType]:
    """`llm.local`: this machine's bound, calibrated prediction and measurement for one batch."""
    c = s["conditions"]
    table = Table(title=f"this machine, batch {c['batch']}, {plural(c['threads'], 'thread')}, {c['dtype']}")
    for col in ("", "bound (roofline)", "predicted (calibrated)", "measured", "pred/meas - 1"):
        table.add_column(col, justify="right")
    m = s.get("measured") or {}
    for key, label in (("ttft", "TTFT"), ("tpot", "TPOT")):
        err = s.get(f"{key}_prediction_error")
        table.add_row(label, format_seconds(s[f"{key}_bound_s"]), format_seconds(s[f"{key}_predicted_s"]),
                      format_seconds(m.get(f"{key}_s")), f"{err:+.0%}" if err is not None else "—")
    out: list[RenderableType] = [table]
    if m:
        out.append(Text(f"measured decode: {format_rate(m['tokens_per_s'], 'tokens/s')} "
                        f"({plural(m['decode_steps'], 'step')}, {plural(m['prefill_runs'], 'prefill')}, "
                        "random weights)"))
    if s.get("note"):
        out.append(Text(f"note: {s['note']}"))
    return out


def _attention(settings: dict[str, Any]) -> str:
    """', flash attention': the kernel the traces assumed (absent from older reports)."""
    impl = (settings.get("attention") or {}).get("implementation")
    return f", {impl} attention" if impl else ""


def _layout_note(s: dict[str, Any]) -> str:
    """' (embedding, head, norm kept fp16; naive …)' for a quantised weights precision."""
    q = s.get("quantization")
    if not q:
        return ""
    kept = ", ".join(k["kind"] for k in q["kept"]) or "nothing"
    return (f" ({kept} kept {q['kept_precision']}; naive, every tensor at {q['precision']}: "
            f"{format_bytes(s['weight_bytes_naive'])})")
