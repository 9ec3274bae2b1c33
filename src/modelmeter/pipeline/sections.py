"""The typed sections of a run and the one place a `Report` is assembled from them (layer 5).

Each analysis yields one frozen section: `CountSection` (model, settings,
totals, modules, uncounted ops), `MemorySection` (activation liveness and the
training budget), `RooflineSection` (the prediction), `MeasuredSection`
(timing, memory, energy and carbon per batch: energy is measured in the same
window as the latency and its keys live in the `measured` rows, so it is not a
section of its own), `LLMSection`, `PlanSection` and `RunInfo` (the full report's notes,
measurement decision and environment). Each has `to_dict()`: its part of the
JSON report, schema "modelmeter.report/1", in base units.

`Sections.to_report()` composes them: the totals are the counts' totals plus
the memory figures, each module row is the counted row plus that module's
memory and roofline columns, the methods are every section's method. Nothing
is patched afterwards: a section never writes into another or into the report.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..analysis.gpu_predict import METHOD as GPU_METHOD
from ..analysis.llm import LLMResult, llm_section
from ..analysis.memory import attention_figures, memory_sections
from ..analysis.predict import PredictionResult, prediction_section
from ..analysis.roofline import RooflineResult, roofline_section
from ..core.attention import attention_setting
from ..core.events import Trace
from ..core.jsonable import to_json
from ..core.report import Report
from ..core.results import Counts
from ..hardware.headroom import memory_budget
from ..measure.bench import BenchResult, measured_section
from ..measure.module_times import ModuleTimes, module_times_section
from .count_parts import (
    FallbackRow,
    InputRow,
    ModelPart,
    ModuleRow,
    OperatorRow,
    SettingsPart,
    TotalsPart,
    UncountedRow,
)
from .model import Analysis

__all__ = [
    "CountSection",
    "LLMSection",
    "MeasuredSection",
    "MemorySection",
    "PlanSection",
    "RooflineSection",
    "RunInfo",
    "Sections",
]

COUNT_METHODS = {
    "params": "counted",
    "param_bytes": "counted",
    "macs": "counted",
    "flops": "counted",
    "bytes": "counted (unfused: each op reads its inputs and writes its outputs once)",
    "formulas": ("modelmeter's own formulas; PyTorch's flop_registry only as a fallback "
                 "for ops without one (listed in totals.fallback_ops)"),
}
ACTIVE_PARAMS_METHOD = ("counted: dense parts, shared experts, routers and top_k of each "
                        "routed expert group; MACs of routed experts do not depend on the "
                        "routing, the expert weights read do")
ACTIVATIONS_METHOD = ("counted: liveness of every storage in one eager trace "
                      "(allocated when produced, freed when PyTorch released it)")


def _copy(value: Any) -> Any:
    return copy.deepcopy(value)


# ------------------------------------------------------------------ counts


@dataclass(frozen=True)
class CountSection:
    """What was analysed and what it costs: the report's `model`, `settings`, `totals`,
    `modules` and `uncounted_ops` (all counted). Each is a typed part (`count_parts.py`:
    its JSON follows from its fields); a partial section (`bare`, the inference planner's)
    may hold plain mappings instead."""

    model: ModelPart | Mapping[str, Any]
    settings: SettingsPart | Mapping[str, Any]
    totals: TotalsPart | Mapping[str, Any]
    modules: tuple[ModuleRow | Mapping[str, Any], ...]
    uncounted_ops: tuple[UncountedRow | Mapping[str, Any], ...]
    methods: Mapping[str, str]

    @classmethod
    def from_analysis(cls, analysis: Analysis) -> CountSection:
        loaded, counts = analysis.loaded, analysis.counts
        settings = SettingsPart(
            dtype=analysis.precision or analysis.traced_dtype,
            trace_dtype=analysis.trace_dtype or analysis.traced_dtype,
            group_size=analysis.group_size, batch=analysis.batch, seq=analysis.seq,
            mode=analysis.trace.mode, inputs=_input_rows(analysis), inputs_from=loaded.inputs_from,
            notes=tuple(analysis.notes),
            attention=attention_setting(analysis.attention, analysis.trace.attention,
                                        analysis.trace.attention_kernels),
            routing=counts.routing,  # mixture of experts: how routed experts were costed
        )
        methods = dict(COUNT_METHODS)
        if counts.routing is not None:
            methods["active_params"] = ACTIVE_PARAMS_METHOD
        return cls(
            model=ModelPart(name=loaded.name, kind=loaded.kind, source=loaded.source,
                            description=loaded.description, build=loaded.build),
            settings=settings, totals=_totals(counts), modules=_module_rows(counts),
            uncounted_ops=uncounted_rows(counts), methods=methods,
        )

    @classmethod
    def bare(cls, name: str, dtype: str | None) -> CountSection:
        """No trace ran (a benchmark whose every batch failed): the name and precision only."""
        return cls(model={"name": name}, settings={"dtype": dtype}, totals={}, modules=(),
                   uncounted_ops=(), methods={})

    def to_dict(self) -> dict[str, Any]:
        return to_json({"model": self.model, "settings": self.settings, "totals": self.totals,  # type: ignore[no-any-return]
                        "modules": self.modules, "uncounted_ops": self.uncounted_ops,
                        "methods": self.methods})


def _input_rows(analysis: Analysis) -> tuple[InputRow, ...]:
    """The traced inputs: shape, dtype and, for a keyword input, the argument it feeds."""
    from ..trace.modules import input_names

    names = input_names(analysis.loaded.args, analysis.loaded.kwargs)
    if len(names) != len(analysis.trace.inputs):  # never expected: then no names rather than wrong ones
        names = [None] * len(analysis.trace.inputs)
    return tuple(InputRow(name=name or None, shape=tuple(t.shape), dtype=t.dtype)
                 for name, t in zip(names, analysis.trace.inputs, strict=True))


def _totals(counts: Counts) -> TotalsPart:
    t, quantization = counts.totals, counts.quantization
    return TotalsPart(
        params=t.params, active_params=t.active_params,  # type: ignore[arg-type]  # set by every counter
        active_params_without_embeddings=t.active_params_without_embeddings,  # type: ignore[arg-type]
        trainable_params=t.trainable_params, buffers=t.buffers, buffer_bytes=t.buffer_bytes,
        param_bytes=t.param_bytes, param_scale_bytes=t.param_scale_bytes,
        macs=t.macs, flops=t.flops, other_flops=t.other_flops, total_flops=t.flops + t.other_flops,
        bytes_read=t.bytes_read, bytes_written=t.bytes_written,
        coverage=counts.coverage, call_coverage=counts.call_coverage, flop_coverage=counts.flop_coverage,
        uncounted_flops_estimate=counts.uncounted_flops_estimate,
        fallback_ops=fallback_rows(counts), fallback_flops=sum(f for _, _, f in counts.fallback_ops),
        by_operator=operator_rows(counts),
        # The weight-only layout behind param_bytes, and the naive all-tensors figure beside it.
        param_bytes_naive=quantization.naive_bytes if quantization is not None else None,
        quantization=quantization.to_dict() if quantization is not None else None,
    )


def uncounted_rows(counts: Counts) -> tuple[UncountedRow, ...]:
    """Ops without a formula: how often each ran and the FLOPs estimated from its shapes."""
    estimates = counts.uncounted_estimates()
    return tuple(UncountedRow(op=op, count=n, estimated_flops=estimates.get(op, 0)) for op, n in counts.uncounted_ops)


def fallback_rows(counts: Counts) -> tuple[FallbackRow, ...]:
    """Ops counted with PyTorch's flop_registry (a fallback: we have no formula for them)."""
    return tuple(FallbackRow(op=op, count=n, flops=f, source="pytorch flop_registry")
                 for op, n, f in counts.fallback_ops)


def operator_rows(counts: Counts) -> tuple[OperatorRow, ...]:
    """Totals by op kind (`count --by op`): calls, MACs, FLOPs, bytes, share of all FLOPs."""
    whole = counts.totals.flops + counts.totals.other_flops
    return tuple(OperatorRow(op=r.op, category=r.category, calls=r.calls, macs=r.macs, flops=r.flops,
                             other_flops=r.other_flops, bytes_read=r.bytes_read, bytes_written=r.bytes_written,
                             share_of_total_flops=(r.flops + r.other_flops) / whole if whole else None)
                 for r in counts.by_operator)


def _module_rows(counts: Counts) -> tuple[ModuleRow, ...]:
    return tuple(
        ModuleRow(
            path=m.path, type=m.type, depth=m.depth, calls=m.calls, params=m.params, own_params=m.own_params,
            param_bytes=m.param_bytes, macs=m.macs, flops=m.flops, other_flops=m.other_flops,
            bytes_read=m.bytes_read, bytes_written=m.bytes_written, input_bytes=m.input_bytes,
            output_bytes=m.output_bytes, seed_bytes=m.seed_bytes,
            # 0 experts: not a mixture-of-experts group, and neither key is written.
            experts=m.experts or None, top_k=m.top_k if m.experts else None,
            input_shapes=tuple(tuple(s) for s in m.input_shapes), input_dtypes=tuple(m.input_dtypes),
            output_shapes=tuple(tuple(s) for s in m.output_shapes), output_dtypes=tuple(m.output_dtypes),
        )
        for m in counts.modules
    )


# ------------------------------------------------------------------ memory


@dataclass(frozen=True)
class MemorySection:
    """Activation memory (totals.activations, per-module bytes) and, after a training
    trace, the backward FLOPs and the `training` budget."""

    activations: Mapping[str, Any]
    module_bytes: Mapping[str, Mapping[str, int]]  # path -> peak_share_bytes (, saved_bytes)
    backward: Mapping[str, Any] | None = None  # backward_flops, backward_macs, backward_{fallback,uncounted}_ops
    training: Mapping[str, Any] | None = None

    @classmethod
    def from_traces(cls, analysis: Analysis, train_trace: Trace | None, backward_counts: Counts | None,
                    *, optimizer: str, master_fp32: bool = False, checkpoint: bool = False,
                    other_attention: Mapping[str, tuple[Trace, Trace | None]] | None = None,
                    dropout: bool = True) -> MemorySection:
        """`other_attention`: {kernel: (inference, training trace)} of the attention kernels
        not assumed (`model.other_attention_traces`); with them, `activations_by_attention`
        holds each kernel's figures, the assumed one marked."""
        totals = analysis.counts.totals
        out = memory_sections(
            analysis.trace, train_trace, precision=analysis.precision or analysis.traced_dtype,
            optimizer=optimizer, master_fp32=master_fp32, params=totals.params,
            trainable=totals.trainable_params, backward_counts=backward_counts,
            forward_counts=analysis.counts, checkpoint=checkpoint, dropout=dropout,
            # A quantised precision stores the weights in the weight-only layout the count used.
            param_bytes=totals.param_bytes if analysis.counts.quantization is not None else None,
        )
        activations = dict(out["activations"])
        if analysis.trace.attention is not None and other_attention is not None:
            activations["activations_by_attention"] = {
                analysis.trace.attention: {**attention_figures(analysis.trace, train_trace), "assumed": True},
                **{kernel: {**attention_figures(inference, training), "assumed": False}
                   for kernel, (inference, training) in other_attention.items()},
            }
        backward = None
        if "backward_flops" in out and backward_counts is not None:
            backward = {"backward_flops": out["backward_flops"], "backward_macs": out["backward_macs"],
                        "backward_fallback_ops": to_json(fallback_rows(backward_counts)),
                        "backward_uncounted_ops": to_json(uncounted_rows(backward_counts)),
                        **({"backward_attention": out["backward_attention"]}
                           if "backward_attention" in out else {})}
        return cls(activations, out["modules"], backward, out.get("training"))

    def totals_part(self) -> dict[str, Any]:
        """Its keys of the report's `totals`."""
        return {"activations": self.activations, **(self.backward or {})}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.totals_part(), "modules": self.module_bytes}
        if self.training is not None:
            out["training"] = self.training
        return _copy(out)


# ------------------------------------------------------------------ roofline


@dataclass(frozen=True)
class RooflineSection:
    """The roofline prediction. `depth` limits its module rows (None: all);
    `module_keys` are the per-module figures copied into the report's module rows.
    `calibrated`: this machine's calibrated prediction beside the bound (cpu 'local' profile only)."""

    result: RooflineResult
    depth: int | None = None
    module_keys: tuple[str, ...] = ()
    calibrated: PredictionResult | None = None
    # The GPU performance model's prediction beside the bound (GPU devices only).
    predicted: PredictionResult | None = None

    @cached_property
    def _dict(self) -> dict[str, Any]:
        out = roofline_section(self.result, self.depth)
        if self.predicted is not None:
            # Added keys: `latency_s` keeps its meaning (the bound); these sit beside it.
            out["predicted"] = {**prediction_section(self.predicted), "method": GPU_METHOD}
            out["predicted_latency_s"] = self.predicted.predicted_latency_s
            out["roofline_latency_s"] = self.result.latency_s
            out["prediction"] = self.predicted.conditions.get("prediction")
        if self.calibrated is not None:
            # Added keys: `latency_s` keeps its meaning (the bound); these sit beside it.
            out["calibrated"] = prediction_section(self.calibrated)
            out["predicted_latency_s"] = self.calibrated.predicted_latency_s
            out["roofline_latency_s"] = self.result.latency_s
        return out

    @property
    def predicted_latency_s(self) -> float | None:
        """The GPU model's figure, else the calibrated one, else None."""
        if self.predicted is not None:
            return self.predicted.predicted_latency_s
        return self.calibrated_latency_s

    @property
    def calibrated_latency_s(self) -> float | None:
        return self.calibrated.predicted_latency_s if self.calibrated is not None else None

    @property
    def latency_s(self) -> float:
        return self.result.latency_s

    def module_columns(self) -> dict[str, dict[str, Any]]:
        columns = {m["path"]: {k: m[k] for k in self.module_keys} for m in self._dict["modules"]}
        cal = self.predicted or self.calibrated
        if cal is not None and self.module_keys:
            # Beside each module's bound (`latency_s`, older): the GPU model's or calibrated
            # figure, and the bound again under the name the totals use.
            for path, row in columns.items():
                if path in cal.modules:
                    row["predicted_latency_s"] = cal.modules[path]
                    row["roofline_latency_s"] = cal.module_roofline.get(path, 0.0)
        return columns

    def to_dict(self) -> dict[str, Any]:
        return _copy(self._dict)


# ------------------------------------------------------------------ measurement


@dataclass(frozen=True)
class MeasuredSection:
    """Measured latency, throughput, memory, energy and carbon per batch (the `measured` section).

    `notes` are the pipeline's (no prediction, inputs tiled…), listed before the measurement's own.
    """

    result: BenchResult
    notes: tuple[str, ...] = ()
    # `measured.backends` (measure/backends.py's backends_section): eager first, then each
    # backend timed beside it; empty when only eager ran (the key is then left out).
    backends: tuple[Mapping[str, Any], ...] = ()
    # `measured.module_timing` (report): each module to the report's depth timed with hooks
    # in a separate pass; `module_depths` gives each path's depth.
    module_times: ModuleTimes | None = None
    module_depths: Mapping[str, int] | None = None

    @property
    def interrupted(self) -> bool:
        return self.result.interrupted

    def module_columns(self) -> dict[str, dict[str, Any]]:
        """`measured_latency_s` of each timed module, for the report's module rows."""
        if self.module_times is None:
            return {}
        return {m.path: {"measured_latency_s": m.latency_s} for m in self.module_times.modules}

    def to_dict(self) -> dict[str, Any]:
        out = measured_section(self.result)
        out["notes"] = [*self.notes, *out["notes"]]
        if self.backends:
            out["backends"] = _copy(list(self.backends))
        if self.module_times is not None:
            out["module_timing"] = module_times_section(self.module_times, dict(self.module_depths or {}))
        return out


# ------------------------------------------------------------------ llm


@dataclass(frozen=True, repr=False)
class LLMSection:
    """The LLM inference view: prefill, decode, KV cache and fit per batch (the `llm` section)."""

    result: LLMResult
    local: Mapping[str, Any] | None = None  # `pipeline.llm_measure.local_steps`: this machine
    dtype_reason: str | None = None  # why this precision, when the device chose it (no --dtype)
    # GPU devices: the GPU performance model's figures (`analysis.llm_gpu.predicted_view`).
    predicted: Mapping[str, Any] | None = None

    def __repr__(self) -> str:
        """A few lines: the device, settings and each batch's TTFT, TPOT, tokens/s and memory."""
        from ..core.brief import llm_brief

        return llm_brief(self.to_dict())

    __str__ = __repr__

    @property
    def ttft_s(self) -> float:
        return self.result.batches[0].ttft_s

    @property
    def tpot_s(self) -> float:
        return self.result.batches[0].tpot_s

    @property
    def tokens_per_s(self) -> float:
        return self.result.batches[0].tokens_per_s

    @property
    def notes(self) -> tuple[str, ...]:
        return self.result.notes

    def to_dict(self) -> dict[str, Any]:
        out = llm_section(self.result)
        budget = memory_budget(self.result.hardware)
        if budget is not None:  # what the fits were tested against
            out["memory_budget"] = budget.to_dict()
        if self.dtype_reason is not None:
            out["settings"]["dtype_reason"] = self.dtype_reason
        if self.local is not None:
            out["local"] = _copy(self.local)
        if self.predicted is not None:
            # Added keys: ttft_s / tpot_s keep their meaning (the bound); these sit beside them.
            out["predicted"] = _copy(self.predicted)
            out["settings"]["prediction"] = self.predicted["prediction"]
        return out


# ------------------------------------------------------------------ plan


@dataclass(frozen=True)
class PlanSection:
    """The multi-device plan (the `plan` section): candidates, memory per device, step time."""

    data: Mapping[str, Any]  # `analysis.plan.plan_section` of the planner's result

    def to_dict(self) -> dict[str, Any]:
        return _copy(self.data)


# ------------------------------------------------------------------ the full report's context


@dataclass(frozen=True)
class RunInfo:
    """The full report's `settings.measure` and `settings.notes`, and its `environment`."""

    measure: Mapping[str, Any]  # ran, reason, device
    notes: tuple[str, ...] = ()
    environment: Mapping[str, Any] | None = None

    def settings_part(self, earlier_notes: Sequence[str] = ()) -> dict[str, Any]:
        """Its keys of `settings`; its notes follow the notes already there (the counts')."""
        return {"measure": self.measure, "notes": [*earlier_notes, *self.notes]}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = self.settings_part()
        if self.environment is not None:
            out["environment"] = self.environment
        return _copy(out)


# ------------------------------------------------------------------ assembly


@dataclass(frozen=True)
class Sections:
    """Everything one run produced; `to_report()` is the report, assembled once."""

    count: CountSection
    memory: MemorySection | None = None
    roofline: RooflineSection | None = None
    measured: MeasuredSection | None = None
    llm: LLMSection | None = None
    plan: PlanSection | None = None
    run: RunInfo | None = None

    def to_report(self) -> Report:
        count = self.count.to_dict()
        memory = self.memory.to_dict() if self.memory is not None else None
        roofline = self.roofline.to_dict() if self.roofline is not None else None
        measured = self.measured.to_dict() if self.measured is not None else None

        totals = {**count["totals"], **(_copy(self.memory.totals_part()) if self.memory else {})}
        columns: list[Mapping[str, Mapping[str, Any]]] = []
        if memory is not None:
            columns.append(memory["modules"])
        if self.roofline is not None:
            columns.append(self.roofline.module_columns())
        if self.measured is not None:
            columns.append(self.measured.module_columns())
        modules = [_row(m, columns) for m in count["modules"]]

        methods = dict(count["methods"])
        if memory is not None:
            methods["activations"] = ACTIVATIONS_METHOD
        if roofline is not None:
            methods["roofline"] = roofline["method"]
        if measured is not None:
            methods["measured"] = measured["method"]
        plan = self.plan.to_dict() if self.plan is not None else None
        if plan is not None:
            methods["plan"] = plan["method"]

        settings = dict(count["settings"])
        if self.run is not None:
            settings.update(self.run.settings_part(settings.get("notes", [])))
        return Report(
            model=count["model"], settings=_copy(settings), totals=totals, modules=modules,
            uncounted_ops=count["uncounted_ops"], methods=methods,
            training=memory.get("training") if memory else None, roofline=roofline, measured=measured,
            llm=self.llm.to_dict() if self.llm is not None else None,
            environment=_copy(self.run.environment) if self.run is not None else None,
            plan=plan,
        )


def _row(module: dict[str, Any], columns: list[Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    row = dict(module)
    for by_path in columns:
        row.update(by_path.get(module["path"], {}))
    return row
