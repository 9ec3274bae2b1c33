"""`modelmeter llm` (layer 7): prefill/decode, KV cache, tokens/s and fit for a decoder.

Parses, runs `pipeline.run.llm`, renders a table per batch size
(`report.terminal_llm`); bad input becomes one line and exit 2 at the `main` boundary.
"""

from __future__ import annotations

import click

from ..core.report import LLM_SCHEMA
from .options import attention_option, check_outputs, check_sizes, make_console, write_json


@click.command()
@click.argument("model")
@click.option("--hardware", metavar="ID",
              help="Device id (`modelmeter hardware list`); default: the calibrated 'local' profile.")
@click.option("--prompt", type=int, default=512, show_default=True, help="Prompt tokens per sequence.")
@click.option("--gen", type=int, default=128, show_default=True, help="Generated tokens per sequence.")
@click.option("--batch", "batches", default="1", show_default=True, metavar="B[,B...]",
              help="Batch sizes, comma-separated, e.g. 1,8,32.")
@click.option("--dtype", default=None,
              help="Activation/compute precision the model runs in: fp32, fp16, bf16 (default: fp16; "
                   "on the 'local' profile the precision it measured fastest).")
@click.option("--weights", metavar="PRECISION", help="Stored weight precision (int8, int4, nf4, fp8…); default --dtype.")
@click.option("--kv-dtype", metavar="PRECISION", help="KV-cache precision (fp8, int8…); default --dtype.")
@click.option("--max-batch", is_flag=True, help="Also report the largest batch that fits the device's memory.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a local folder's custom model code to run.")
@click.option("--plot", "plot_path", metavar="FILE", help="Write tokens/s vs batch and the roofline (.png/.svg).")
@click.option("--measure", is_flag=True,
              help="Also run prefill and decode here (random weights, first batch) beside the predictions.")
@click.option("--json", "json_path", metavar="PATH", help="Write the llm section as JSON ('-' = stdout).")
@click.option("--activations", metavar="int8|fp8",
              help="What-if: quantised activations (W8A8; W4A8 with --weights int4; fp8): matrix "
                   "products at the device's int8/fp8 peak; weights and KV default to it.")
@attention_option
def llm(model, hardware, prompt, gen, batches, dtype, weights, kv_dtype, max_batch, trust_remote_code,
        plot_path, measure, json_path, activations, attention) -> None:
    """LLM inference: TTFT, TPOT, tokens/s, KV cache and memory fit per batch size (estimated)."""
    from ..core.lists import parse_batch_sizes
    from ..pipeline import run
    from ..pipeline.devices import resolve_hardware
    from ..pipeline.options import LLMOptions

    # Everything a user can get wrong is checked before minutes of tracing.
    check_sizes(prompt, "--prompt")
    check_sizes(gen, "--gen")
    batch_sizes = parse_batch_sizes(batches)
    check_sizes(list(batch_sizes), "--batch")
    if hardware is None or hardware.strip().lower() == "local":
        _calibrate_local()
    hw = resolve_hardware(hardware)
    if plot_path:
        from ..report.llm_plots import check_plot_path

        check_plot_path(plot_path)
    check_outputs(json=json_path)
    options = LLMOptions(hw, prompt, gen, batch_sizes, dtype, weights, kv_dtype, max_batch, trust_remote_code,
                         activations=activations, attention=attention, measure=measure)
    section = run.llm(model, options).to_dict()
    if plot_path:
        from ..report.llm_plots import plot_llm

        plot_llm(section, plot_path)
    if json_path == "-":
        write_json({"schema": LLM_SCHEMA, "llm": section}, "-")
        return
    from ..report.terminal_llm import llm_view

    console = make_console()
    for item in llm_view(section):
        console.print(item)
    if plot_path:
        console.print(f"wrote {plot_path}")
    if json_path:
        write_json({"schema": LLM_SCHEMA, "llm": section}, json_path)
        console.print(f"wrote {json_path}")


def _calibrate_local() -> None:
    """This machine's profile on first use (threads as the command runs); a refusal is shown, not fatal."""
    import sys

    from ..hardware.local import stderr_progress
    from ..pipeline.calibrated import NO_LOCAL_PROFILE, apply_threads, local_hardware

    apply_threads(None, "cpu")
    _hw, why = local_hardware(stderr_progress())
    if why and why != NO_LOCAL_PROFILE:
        print(f"warning: {why}", file=sys.stderr)
