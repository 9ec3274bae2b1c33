"""`modelmeter llm` (layer 7): prefill/decode, KV cache, tokens/s and fit for a decoder.

Parses, runs `pipeline.run.llm`, renders a table per batch size
(`report.terminal_llm`); bad input becomes one line and exit 2 at the `main` boundary.
"""

from __future__ import annotations

import dataclasses
import warnings

import click

from ..core.report import LLM_SCHEMA
from .options import (
    attention_option,
    batch_list,
    check_outputs,
    make_console,
    model_spec,
    threads_option,
    write_json,
)
from .progress import quiet_option, step_progress


@click.command()
@click.argument("model", callback=model_spec)
@click.option("--hardware", metavar="ID",
              help="Device id (`modelmeter hardware list`); default: the calibrated 'local' profile.")
@click.option("--prompt", type=int, default=512, show_default=True, help="Prompt tokens per sequence.")
@click.option("--gen", type=int, default=128, show_default=True, help="Generated tokens per sequence.")
@click.option("--batch", "batches", type=batch_list(), default="1", show_default=True, metavar="B[,B...]",
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
@click.option("--runtime", type=click.Choice(["eager", "graphs", "fused"]), default="eager", show_default=True,
              help="GPU devices: how the GPU model runs the kernels: one host launch per op (PyTorch eager), "
                   "a CUDA graph replay, or graphs with elementwise runs fused (TensorRT-LLM, vLLM).")
@click.option("--rate", type=float, metavar="REQ/S",
              help="GPU devices: serve requests arriving at this rate (in-flight batching): steady "
                   "concurrency, TTFT and inter-token latency.")
@click.option("--ttft-target", type=float, metavar="MS", help="GPU devices: largest batch whose TTFT meets this.")
@click.option("--tpot-target", type=float, metavar="MS", help="GPU devices: largest batch whose TPOT meets this.")
@attention_option
@threads_option
@quiet_option
def llm(model, hardware, prompt, gen, batches, dtype, weights, kv_dtype, max_batch, trust_remote_code,
        plot_path, measure, json_path, activations, runtime, rate, ttft_target, tpot_target, attention, threads,
        no_progress) -> None:
    """LLM inference: TTFT, TPOT, tokens/s, KV cache and memory fit per batch size (estimated)."""
    from ..pipeline import run
    from ..pipeline.calibrated import apply_threads
    from ..pipeline.devices import resolve_hardware
    from ..pipeline.options import LLMOptions

    # Everything a user can get wrong is checked before minutes of tracing, once: by the
    # options (their fields become flags in the error line, cli/flags.py).
    options = LLMOptions(hardware=hardware, prompt=prompt, gen=gen, batches=batches, dtype=dtype,
                         weights=weights, kv_dtype=kv_dtype, max_batch=max_batch,
                         trust_remote_code=trust_remote_code, activations=activations, attention=attention,
                         measure=measure, runtime=runtime, rate=rate,
                         ttft_target_s=None if ttft_target is None else ttft_target / 1e3,
                         tpot_target_s=None if tpot_target is None else tpot_target / 1e3)
    if plot_path:
        from ..report.llm_plots import check_plot_path

        check_plot_path(plot_path)
    check_outputs(json=json_path)
    local = hardware is None or hardware.strip().lower() == "local"
    # Before the profile is looked up: the calibrated profile is keyed by the thread count.
    used = apply_threads(threads, "cpu")
    if local:
        _calibrate_local()
    options = dataclasses.replace(options, hardware=resolve_hardware(hardware))
    with step_progress(no_progress) as on_status:
        section = run.llm(model, options, run.Hooks(on_status=on_status)).to_dict()
    if plot_path:
        from ..report.llm_plots import plot_llm

        plot_llm(section, plot_path)
    if json_path == "-":
        write_json({"schema": LLM_SCHEMA, "llm": section}, "-")
        return
    from ..report.terminal_llm import llm_view

    console = make_console()
    if local or measure:  # figures measured here depend on the count
        from ..report.threads_text import threads_text

        console.print(f"threads {threads_text(used, threads is not None)}", markup=False, highlight=False)
    for item in llm_view(section):
        console.print(item)
    if plot_path:
        console.print(f"wrote {plot_path}")
    if json_path:
        write_json({"schema": LLM_SCHEMA, "llm": section}, json_path)
        console.print(f"wrote {json_path}")


def _calibrate_local() -> None:
    """This machine's profile on first use (at the threads already set); a refusal is shown, not fatal."""
    import sys

    from ..hardware.local import stderr_progress
    from ..hardware.plausible import InvalidProfile, ProfileSetAside
    from ..pipeline.calibrated import NO_LOCAL_PROFILE, local_hardware

    with warnings.catch_warnings(record=True) as set_aside:
        warnings.simplefilter("always", ProfileSetAside)
        hw, why = local_hardware(stderr_progress())
    if hw is None and set_aside:  # the profile this command needs was invalid: that is its one line
        raise InvalidProfile(str(set_aside[0].message))
    for w in set_aside:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if why and why != NO_LOCAL_PROFILE:
        print(f"warning: {why}", file=sys.stderr)
