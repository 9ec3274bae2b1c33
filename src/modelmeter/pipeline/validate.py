"""`modelmeter validate`: the GPU performance model held against published measurements (layer 5).

The package ships published rows (`validation_rows.json`, each with its source):
training runs of Megatron-LM (2021 Table 1, Korthikanti et al. 2022 Table 5,
Megatron-Core r0.8 on H100) and TensorRT-LLM's online-serving table on H100.
Each row is predicted with its configuration fixed as it ran:

* training: the GPT of that codebase (`sources/megatron_gpt.py`) traced once on
  meta with two blocks, the second block repeated to the row's depth (the blocks
  are identical, so this is the profile a full trace gives), priced by the GPU
  performance model per layout (`analysis/plan_gpu.py`), planned with the row's
  tp / pp / dp / micro-batch / interleaving / recomputation / overlap fixed (a
  micro-batch the source does not publish is searched);
* serving: the shipped Llama preset traced by the LLM view, sharded over tp,
  priced by the GPU model with the row's runtime, and served at the row's request
  rate (`analysis/llm_gpu.served`); tp all-reduces at NCCL's modelled bus bandwidth.

A user's own rows (`--table FILE`, CSV or JSON) take the same path: a training row
plans the named model with its layout fixed; a serving row runs the LLM view.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError

__all__ = ["ROW_METRICS", "RowResult", "TableSummary", "Validation", "load_rows", "shipped_rows", "validate"]

SCHEMA = "modelmeter.validation/1"
ROW_METRICS = ("step_time_s", "tflops_per_gpu_hfu", "tflops_per_gpu_mfu", "activation_bytes", "model_states_bytes",
               "ttft_s", "itl_s", "tpot_s")
_TRAIN_METRICS = ("step_time_s", "tflops_per_gpu_hfu", "tflops_per_gpu_mfu", "activation_bytes", "model_states_bytes")


@dataclass(frozen=True)
class RowResult:
    row: dict[str, Any]
    predicted: float | None
    error: float | None  # predicted / published - 1
    note: str = ""


@dataclass(frozen=True)
class TableSummary:
    table: str
    rows: int
    median_abs_error: float | None
    worst_abs_error: float | None
    worst_label: str | None


@dataclass(frozen=True)
class Validation:
    results: tuple[RowResult, ...]
    tables: tuple[TableSummary, ...]
    sources: dict[str, Any]
    excluded: tuple[dict[str, Any], ...]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "settings": self.settings,
            "rows": [{**{k: v for k, v in r.row.items()}, "predicted": r.predicted, "error": r.error,
                      "note": r.note} for r in self.results],
            "tables": [dataclasses.asdict(t) for t in self.tables],
            "sources": self.sources,
            "excluded": list(self.excluded),
        }


# ------------------------------------------------------------------ rows


def _shipped() -> dict[str, Any]:
    return json.loads(resources.files("modelmeter.pipeline").joinpath("validation_rows.json").read_text())


def shipped_rows() -> list[dict[str, Any]]:
    return list(_shipped()["rows"])


_USER_FIELDS = ("model", "hardware", "metric", "published")


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """A user's measured rows: CSV (one row a line) or JSON (a list, or {'rows': [...]}).

    Fields: model (a preset, folder or Hub id), hardware, precision (default bf16), metric
    (one of ROW_METRICS), published (the measured figure, in the metric's unit); training
    rows: tp, pp, dp, micro_batch, global_batch, seq, recompute (none/full); serving rows:
    tp, prompt, gen, rate_per_s (requests/s; absent: one request alone), runtime.
    """
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"--table {path}: no such file")
    try:
        text = p.read_text()
        if p.suffix.lower() == ".json":
            doc = json.loads(text)
            raw = doc["rows"] if isinstance(doc, dict) else doc
        else:
            raw = list(csv.DictReader(text.splitlines()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, csv.Error) as exc:
        raise UserInputError(f"--table {path}: cannot read it ({exc})") from exc
    if not isinstance(raw, list) or not raw:
        raise UserInputError(f"--table {path}: no rows")
    return [_user_row(r, i + 1, path) for i, r in enumerate(raw)]


def _number(v: Any, name: str, where: str, integer: bool = False) -> Any:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise UserInputError(f"{where}: {name} must be a number, got {v!r}") from None
    if not math.isfinite(x) or x <= 0 or (integer and x != int(x)):
        raise UserInputError(f"{where}: {name} must be a positive {'integer' if integer else 'number'}, got {v!r}")
    return int(x) if integer else x


def _user_row(r: Any, n: int, path: str | Path) -> dict[str, Any]:
    where = f"--table {path} row {n}"
    if not isinstance(r, dict):
        raise UserInputError(f"{where}: expected an object with {', '.join(_USER_FIELDS)}")
    missing = [k for k in _USER_FIELDS if r.get(k) in (None, "")]
    if missing:
        raise UserInputError(f"{where}: missing {', '.join(missing)}")
    metric = str(r["metric"])
    if metric not in ROW_METRICS:
        raise UserInputError(f"{where}: metric {metric!r}; expected one of {', '.join(ROW_METRICS)}")
    kind = "train" if metric in _TRAIN_METRICS else "serve"
    ints = {k: _number(r[k], k, where, integer=True) for k in
            ("tp", "pp", "dp", "micro_batch", "global_batch", "seq", "prompt", "gen") if r.get(k) not in (None, "")}
    row: dict[str, Any] = {
        "table": str(r.get("table") or "user"), "label": str(r.get("label") or f"row {n}"), "kind": kind,
        "hardware": str(r["hardware"]), "precision": str(r.get("precision") or "bf16"),
        "model": {"spec": str(r["model"]), "seq": ints.get("seq")}, "metric": metric,
        "published": _number(r["published"], "published", where),
    }
    if kind == "train":
        for k in ("tp", "pp", "dp", "global_batch"):
            if k not in ints:
                raise UserInputError(f"{where}: a training row needs {k}")
        row["layout"] = {"tp": ints["tp"], "pp": ints["pp"], "dp": ints["dp"], "micro_batch": ints.get("micro_batch"),
                         "vp": 1, "recompute": str(r.get("recompute") or "none"), "sp": False, "zero": 0,
                         "overlap_grad_reduce": False}
        row["global_batch"] = ints["global_batch"]
        if row["layout"]["recompute"] not in ("none", "full"):
            raise UserInputError(f"{where}: recompute must be none or full")
    else:
        row["layout"] = {"tp": ints.get("tp", 1)}
        row["prompt"], row["gen"] = ints.get("prompt", 512), ints.get("gen", 128)
        row["rate_per_s"] = _number(r["rate_per_s"], "rate_per_s", where) if r.get("rate_per_s") not in (None, "") else None
        row["runtime"] = str(r.get("runtime") or "eager")
    return row


# ------------------------------------------------------------------ prediction


@functools.cache
def _gpt_trace(variant: str, hidden: int, heads: int, vocab: int, seq: int) -> tuple[Any, Any, Any]:
    import torch

    from ..count import count_trace
    from ..sources.megatron_gpt import MegatronGPT
    from ..trace import trace_model

    with torch.device("meta"):
        model = MegatronGPT(vocab, seq, hidden, heads, 2, variant).to(torch.bfloat16)
    ids = torch.zeros((1, seq), dtype=torch.long, device="meta")
    # The core variant's fused attention as its training kernels run it (flash).
    trace = trace_model(model, (), {"input_ids": ids, "labels": ids}, backward=True,
                        attention="flash" if variant == "core" else None)
    return trace, count_trace(trace), count_trace(trace, phase="backward")


def _train_profile(row: dict[str, Any], hw: Any, gpu: Any) -> Any:
    from ..analysis.plan_profile import build_profile

    m = row["model"]
    variant = "2021" if m["arch"] == "megatron-gpt-2021" else "core"
    trace, fwd, bwd = _gpt_trace(variant, m["hidden"], m["heads"], m["vocab"], m["seq"])
    profile = build_profile(trace, fwd, bwd, hw, model=f"gpt-{m['layers']}x{m['hidden']}", seq=m["seq"],
                            config={"hidden_size": m["hidden"], "num_attention_heads": m["heads"]}, gpu=gpu)
    block = profile.blocks[-1]
    params = profile.first.params + profile.last.params + m["layers"] * block.params
    return dataclasses.replace(profile, blocks=(block,) * m["layers"], params=params)


def _predict_train(row: dict[str, Any], hw: Any, gpu: Any, net: Any) -> tuple[float, str]:
    from ..analysis.plan import Fixed, TrainSettings, plan_training

    lay = row["layout"]
    profile = _train_profile(row, hw, gpu) if "arch" in row["model"] else _user_profile(row, hw, gpu)
    settings = TrainSettings(global_batch=row["global_batch"], optimizer="adamw", master_fp32=True, param_bytes=2,
                             overlap_grad_reduce=bool(lay.get("overlap_grad_reduce")),
                             overlap_tp_comm=bool(lay.get("overlap_tp_comm")))
    devices = lay["tp"] * lay["pp"] * lay["dp"]
    fixed = Fixed(tp=lay["tp"], pp=lay["pp"], dp=lay["dp"], ep=1, zero=lay.get("zero", 0), sp=bool(lay.get("sp")),
                  checkpoint=lay.get("recompute") == "full", micro_batch=lay.get("micro_batch"), vp=lay.get("vp", 1))
    plan = plan_training(profile, settings, devices=devices, nodes=max(1, devices // 8), net=net, fixed=fixed)
    best = plan.best or (plan.candidates[0] if plan.candidates else None)
    if best is None:
        raise UserInputError(f"{row['label']}: no layout matches")
    peak = hw.peak_flops_for(row["precision"], "matmul")
    value = {"step_time_s": best.step_time_s, "tflops_per_gpu_hfu": best.hfu * peak / 1e12,
             "tflops_per_gpu_mfu": best.mfu * peak / 1e12,
             "activation_bytes": best.activation_bytes_per_device,
             "model_states_bytes": best.model_states_bytes_per_device}[row["metric"]]
    note = f"micro-batch {best.layout.micro_batch}" + ("" if best.fits else ", does not fit memory")
    return value, note


def _user_profile(row: dict[str, Any], hw: Any, gpu: Any) -> Any:
    from ..analysis.plan_profile import build_profile
    from ..count import count_trace
    from ..trace import trace_model
    from .model import load
    from .options import ModelOptions

    seq = row["model"].get("seq") or 2048
    loaded = load(ModelOptions(row["model"]["spec"], batch=1, seq=seq, dtype=row["precision"]))
    # Fused attention, as training kernels run it (flash), as `plan --train` traces.
    trace = trace_model(loaded.module, loaded.args, loaded.kwargs, backward=True, attention="flash")
    fwd, bwd = count_trace(trace), count_trace(trace, phase="backward")
    return build_profile(trace, fwd, bwd, hw, model=loaded.name, seq=seq, config=loaded.config, gpu=gpu)


@functools.cache
def _llm_costs(spec: str, prompt: int, gen: int, dtype: str) -> Any:
    from .llm_trace import measure_llm_costs

    return measure_llm_costs(spec, prompt=prompt, gen=gen, dtype=dtype)


def _predict_serve(row: dict[str, Any], hw: Any, gpu: Any, net: Any) -> tuple[float, str]:
    from ..analysis.comm import ALL_REDUCE, collective_time, make_group
    from ..analysis.llm import _Coster
    from ..analysis.llm_gpu import gpu_llm_figures, served
    from ..analysis.plan_infer import shard_costs
    from ..core.precision import parse_precision
    from ..formulas import decoder_dims

    spec = row["model"].get("preset") or row["model"]["spec"]
    costs = _llm_costs(spec, row["prompt"], row["gen"], row["precision"])
    tp = row["layout"].get("tp", 1)
    dims = decoder_dims(costs.config)
    sharded = shard_costs(costs, tp, 1, dims.kv_heads) if tp > 1 else costs
    coster = _Coster(sharded, hw, row["precision"], row["precision"])
    runtime = row.get("runtime", "eager")
    act = parse_precision(costs.dtype).bits / 8

    def comm(tokens: float) -> float:
        if tp <= 1 or net is None:
            return 0.0
        return 2 * dims.layers * collective_time(ALL_REDUCE, tokens * dims.d_model * act, make_group(tp, 1, net))

    @functools.cache
    def step(batch: int) -> float:
        return gpu_llm_figures(sharded, coster, gpu, batch, tp=tp, runtime=runtime).tpot_s + comm(batch)

    def step_at(c: float) -> float:
        lo = max(1, math.floor(c))
        return step(lo) + (step(lo + 1) - step(lo)) * (c - lo)

    prefill = gpu_llm_figures(sharded, coster, gpu, 1, tp=tp, runtime=runtime).prefill_s + comm(row["prompt"])
    rate = row.get("rate_per_s")
    if rate is None:
        value = {"ttft_s": prefill, "itl_s": step(1), "tpot_s": step(1)}[row["metric"]]
        return value, "one request alone"
    s = served(step_at, prefill, rate, row["gen"], max_concurrency=4096)
    if s.concurrency is None:
        raise UserInputError(f"{row['label']}: {rate} requests/s exceeds what the model predicts the device serves")
    value = {"ttft_s": s.ttft_s, "itl_s": s.itl_s, "tpot_s": s.itl_s}[row["metric"]]
    return value, f"steady concurrency {s.concurrency:.1f}"


def validate(rows: Iterable[dict[str, Any]] | None = None, *, user: bool = False,
             progress: Callable[[str, int, int], None] | None = None) -> Validation:
    """Predict every row (the shipped ones by default) and summarise the errors per table."""
    from ..hardware import get_hardware
    from ..hardware.gpumodel import gpu_model, has_gpu_model
    from ..hardware.interconnect import get_interconnect

    todo = list(rows) if rows is not None else shipped_rows()
    results: list[RowResult] = []
    for i, row in enumerate(todo):
        if progress is not None:
            progress(f"{row['table']}: {row['label']}", i, len(todo))
        hw = get_hardware(row["hardware"])
        if not has_gpu_model(hw):
            raise UserInputError(f"{row['label']}: {hw.id} is not a GPU with peaks in the database")
        gpu = gpu_model(hw, "graphs" if row.get("runtime") in ("graphs", "fused") else "eager")
        try:
            net = get_interconnect(hw.id)
        except UserInputError:
            net = None
        predict = _predict_train if row["kind"] == "train" else _predict_serve
        value, note = predict(row, hw, gpu, net)
        results.append(RowResult(row, value, value / row["published"] - 1, note))
    if progress is not None:
        progress("done", len(todo), len(todo))
    shipped = _shipped()
    return Validation(tuple(results), _summaries(results), shipped["sources"] if not user else {},
                      tuple(shipped["excluded"]) if not user else (),
                      {"prediction": "gpu-shape-model/1", "constants": "modelmeter/hardware/gpu_perf.json"})


def _summaries(results: list[RowResult]) -> tuple[TableSummary, ...]:
    out = []
    for table in dict.fromkeys(r.row["table"] for r in results):
        errs = [(abs(r.error), r.row["label"]) for r in results if r.row["table"] == table and r.error is not None]
        worst = max(errs) if errs else None
        out.append(TableSummary(table, len(errs), statistics.median(e for e, _ in errs) if errs else None,
                                worst[0] if worst else None, worst[1] if worst else None))
    return tuple(out)
