"""The few lines `str()` and `repr()` of a result print (layer 0, stdlib only).

A report's dict holds every module, op and section (hundreds of kilobytes for
an LLM); printing it in a notebook or a REPL buries the handful of figures
people look for. These functions pick those: the model and its inputs,
parameters, MACs/FLOPs, peak memory, and the latency when one was predicted
or measured, and say that the full data is one `.to_dict()` away.
"""

from __future__ import annotations

from typing import Any

from .units import format_bytes, format_count, format_seconds, format_value

FULL = "the full data: .to_dict()"


def report_brief(data: dict[str, Any], kind: str = "Report") -> str:
    """A `Report.to_dict()` in a few lines."""
    m, s, t = data.get("model") or {}, data.get("settings") or {}, data.get("totals") or {}
    lines = [f"modelmeter {kind}: {m.get('name', '?')}" + (f" ({m['kind']})" if m.get("kind") else "")]
    if s.get("inputs"):
        lines.append(_line("inputs", inputs_text(s)))
    if "params" in t:
        size = f" ({format_bytes(t['param_bytes'])} at {s.get('dtype')})" if "param_bytes" in t else ""
        lines.append(_line("parameters", f"{format_count(t['params'])}{size}"))
    if "macs" in t:
        other = f", + {format_count(t['other_flops'])} other FLOPs" if t.get("other_flops") else ""
        lines.append(_line("compute", f"{format_count(t['macs'])} MACs, {format_count(t['flops'])} FLOPs{other}"))
    act = t.get("activations") or {}
    if act.get("peak_inference_bytes") is not None:
        whole = act.get("peak_inference_total_bytes")
        lines.append(_line("peak memory", f"{format_bytes(act['peak_inference_bytes'])} activations, inference"
                           + (f" ({format_bytes(whole)} with parameters and inputs)" if whole else "")))
    training = data.get("training") or {}
    if training.get("total_bytes") is not None:
        lines.append(_line("training", f"{format_bytes(training['total_bytes'])} per step "
                                       f"(parameters, gradients, {training.get('optimizer', 'optimizer')}, "
                                       "activations)"))
    rl = data.get("roofline") or {}
    if rl.get("latency_s") is not None:
        lines.append(_line("latency", f"{format_seconds(rl['latency_s'])} predicted on {rl.get('hardware')} "
                                      f"({rl.get('precision')}, {rl.get('bound')}-bound)"
                                      + (f"; calibrated here: {format_seconds(rl['predicted_latency_s'])}"
                                         if rl.get("predicted_latency_s") is not None else "")))
    measured = data.get("measured") or {}
    p50 = (measured.get("latency_s") or {}).get("p50")
    if p50 is not None:
        lines.append(_line("measured", f"{format_seconds(p50)} p50 at batch {measured.get('batch')} "
                                       f"on {measured.get('device')}"))
    if data.get("llm"):
        lines.append(_line("llm", llm_text(data["llm"])))
    if data.get("plan"):
        lines.append(_line("plan", "multi-device plan in .to_dict()['plan']"))
    lines.append(f"  ({len(data.get('modules') or [])} modules, "
                 f"{len(t.get('by_operator') or [])} op kinds; {FULL})")
    return "\n".join(lines)


def llm_brief(llm: dict[str, Any]) -> str:
    """An LLM section (`LLMSection.to_dict()`) in a few lines."""
    hw = llm.get("hardware_detail") or {}
    st = llm.get("settings") or {}
    lines = [f"modelmeter LLM estimate: {llm.get('model', '?')} on {hw.get('name') or llm.get('hardware')}",
             _line("settings", f"prompt {st.get('prompt')}, generate {st.get('gen')}, weights "
                               f"{st.get('weights')}, KV cache {st.get('kv_dtype')}")]
    if llm.get("params") is not None:
        lines.append(_line("parameters", f"{format_count(llm['params'])} "
                                         f"({format_bytes(llm.get('weight_bytes'))} of weights)"))
    for b in llm.get("batches") or []:
        fits = {True: "fits", False: "does not fit", None: "memory unknown"}[b.get("fits")]
        lines.append(_line(f"batch {b['batch']}", f"TTFT {format_seconds(b['ttft_s'])}, TPOT "
                                                  f"{format_seconds(b['tpot_s'])}, "
                                                  f"{format_count(b['tokens_per_s'])} tokens/s, "
                                                  f"{format_bytes(b['memory_bytes'])} ({fits})"))
    lines.append(f"  ({FULL})")
    return "\n".join(lines)


def llm_text(llm: dict[str, Any]) -> str:
    """One line: the first batch's TTFT, TPOT and tokens/s."""
    first = (llm.get("batches") or [{}])[0]
    if "ttft_s" not in first:
        return "see .to_dict()['llm']"
    return (f"TTFT {format_seconds(first['ttft_s'])}, TPOT {format_seconds(first['tpot_s'])} "
            f"at batch {first.get('batch')} on {llm.get('hardware')}")


def comparison_brief(comparison: dict[str, Any]) -> str:
    """A `Comparison.to_dict()` in a few lines: each metric's values, ratios to the first."""
    labels = comparison.get("labels") or []
    lines = [f"modelmeter Comparison: {' vs '.join(labels)}"]
    for row in comparison.get("rows") or []:
        cells = []
        for j, (value, ratio) in enumerate(zip(row["values"], row["ratios"], strict=True)):
            text = format_value(value, row.get("unit", ""))
            cells.append(text + (f" ({ratio:.3g}x)" if j and ratio is not None else ""))
        lines.append(f"  {row['metric']}: " + " | ".join(cells))
    lines.append(f"  ({FULL})")
    return "\n".join(lines)


def inputs_text(settings: dict[str, Any]) -> str:
    """'input_ids [1, 128] int64 (preset default)': the traced inputs and how they were chosen."""
    items = [(f"{i['name']} " if i.get("name") else "") + "[" + ", ".join(str(d) for d in i["shape"]) + "] "
             + str(i["dtype"]).removeprefix("torch.") for i in settings.get("inputs") or []]
    how = f" ({settings['inputs_from']})" if settings.get("inputs_from") else ""
    return (", ".join(items) or "none") + how


def _line(label: str, value: str) -> str:
    return f"  {label + ':':<13}{value}"
