"""`modelmeter plan` (layer 7): how many devices, laid out how, for training or serving a model.

Parses, calls `pipeline.plan.plan`, renders (`report/plan_render.py`, `report/plan_html.py`).
"""

from __future__ import annotations

import click

from .mlflow_option import mlflow_option
from .options import check_outputs, make_console, model_spec, write_json
from .progress import quiet_option, step_progress


@click.command()
@click.argument("model", callback=model_spec)
@click.option("--hardware", metavar="ID", required=True, help="Device id (`modelmeter hardware list`).")
@click.option("--devices", type=int, default=1, show_default=True, help="Devices in all.")
@click.option("--nodes", type=int, help="Nodes the devices are spread over (default: as many as the "
              "device's usual node size needs, 8 for SXM/OAM parts).")
@click.option("--fabric", metavar="ID", help="Inter-node fabric (ib-ndr-8x, ib-hdr-8x, roce-400-8x, …).")
@click.option("--train", is_flag=True, help="Plan training (default: inference).")
@click.option("--optimizer", default="adamw", show_default=True, help="sgd, sgd-momentum, adam, adamw.")
@click.option("--zero", type=int, help="ZeRO stage 0-3 (default: searched).")
@click.option("--global-batch", type=int, help="Sequences per optimizer step (default: 8 per device).")
@click.option("--seq", type=int, help="Training sequence length (default 2048).")
@click.option("--checkpoint/--no-checkpoint", default=None, help="Recompute every block (default: searched).")
@click.option("--sp/--no-sp", "sp", default=None, help="Sequence parallelism with tp (default: searched).")
@click.option("--master-fp32/--no-master-fp32", default=None,
              help="Training: keep fp32 master weights (the default: mixed precision, 16 B/param with "
                   "Adam) or not (pure 16-bit training).")
@click.option("--dtype", help="Compute precision (training default bf16, inference fp16).")
@click.option("--prompt", type=int, default=512, show_default=True, help="Inference: prompt tokens.")
@click.option("--gen", type=int, default=128, show_default=True, help="Inference: generated tokens.")
@click.option("--batch", type=int, default=1, show_default=True, help="Inference: sequences per replica.")
@click.option("--weights", metavar="PRECISION", help="Inference: stored weight precision.")
@click.option("--kv-dtype", metavar="PRECISION", help="Inference: KV-cache precision.")
@click.option("--tp", type=int, help="Fix tensor parallelism.")
@click.option("--pp", type=int, help="Fix pipeline parallelism.")
@click.option("--dp", type=int, help="Fix data parallelism.")
@click.option("--ep", type=int, help="Fix expert parallelism.")
@click.option("--micro-batch", type=int, help="Fix the micro-batch size.")
@click.option("--vp", type=int, help="Training: model chunks per pipeline rank (Megatron-LM's interleaved "
              "schedule; needs --pp; default 1, not searched).")
@click.option("--overlap-grad-reduce", is_flag=True, help="Training: reduce gradients during the last "
              "backward (PyTorch DDP) instead of after it (default, Megatron-LM 2021).")
@click.option("--efficiency", default="auto", show_default=True,
              help="Matrix-peak derating: auto (measured MAMF where known), mamf, none, or 0-1.")
@click.option("--objective", type=click.Choice(["throughput", "latency"]), default="throughput",
              show_default=True, help="Inference ranking: tokens/s of all devices, or TPOT.")
@click.option("--limit", type=int, default=50, show_default=True, help="Candidates kept in the JSON.")
@click.option("--html", "html_path", metavar="PATH", help="Write an HTML view with charts.")
@click.option("--json", "json_path", metavar="PATH", help="Write the report as JSON ('-' = stdout).")
@mlflow_option
@quiet_option
def plan(model, hardware, devices, nodes, fabric, train, optimizer, zero, global_batch, seq, checkpoint, sp,
         master_fp32, dtype, prompt, gen, batch, weights, kv_dtype, tp, pp, dp, ep, micro_batch, vp,
         overlap_grad_reduce, efficiency, objective, limit, html_path, json_path, mlflow_flag, no_progress) -> None:
    """Plan training or inference across devices: layouts, memory per device, communication, time."""
    from ..pipeline.options import PlanOptions
    from ..pipeline.plan import plan as run_plan
    from ..report.plan_render import render_plan

    if html_path:
        from ..report.plan_html import check_html_path

        check_html_path(html_path)
    check_outputs(json=json_path, html=html_path)  # before the trace, as every command does
    tracking = None
    if mlflow_flag:
        from .mlflow_option import connect_tracking

        tracking = connect_tracking()  # a missing extra or a dead server: before the work
    options = PlanOptions(hardware=hardware, devices=devices, nodes=nodes, train=train, optimizer=optimizer,
                          zero=zero, global_batch=global_batch, seq=seq, checkpoint=checkpoint,
                          master_fp32=master_fp32, sp=sp, dtype=dtype, prompt=prompt, gen=gen, batch=batch,
                          weights=weights, kv_dtype=kv_dtype, tp=tp, pp=pp, dp=dp, ep=ep, micro_batch=micro_batch,
                          efficiency=efficiency, fabric=fabric, objective=objective, limit=limit, vp=vp,
                          overlap_grad_reduce=overlap_grad_reduce or False)
    with step_progress(no_progress) as on_status:
        sections = run_plan(model, None, options, on_status=on_status)
    report = sections.to_report()
    data = report.to_dict()
    console = make_console(json_to_stdout=json_path == "-")
    render_plan(console, data["plan"])
    if html_path:
        from ..report.plan_html import write_plan_html

        write_plan_html(data, html_path)
        console.print(f"wrote {html_path}")
    if json_path:
        write_json(data, json_path)
        if json_path != "-":
            console.print(f"wrote {json_path}")
    if tracking is not None:
        from .mlflow_option import log_and_say

        log_and_say(tracking, console, data, "plan", (html_path,))
