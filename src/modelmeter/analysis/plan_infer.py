"""The multi-device inference planner: tensor and pipeline parallel serving of a decoder (layer 3).

Built on the LLM view's traced per-op costs (`llm.py`: prefill and decode
traced on meta, each op's cost fitted in batch and cache length). A layout of
tp x pp devices is one replica; dp replicas serve independent requests.

* Sharding: an op's FLOPs, weight reads and activation traffic / tp (Megatron-LM
  sharding of attention heads and MLP columns), except the ops tensor parallelism
  replicates: those that are not matrix products and whose largest output is one
  hidden-size tensor (norms, residual adds; `OpInfo.replicated`) run whole on
  every rank; KV-cache traffic and size / min(tp, KV heads) (a
  KV head cannot be split, so beyond that tp replicates the cache); weights
  / (tp x pp) in memory; activations peak / tp. The sharded costs run through
  the LLM view's own estimate (`llm_estimate`), so TTFT, TPOT, memory, fit and
  max batch per replica follow its roofline exactly.
* Pipeline stages of one batch run one after another: latency is the sum of
  the stages (the whole model / tp) plus pp - 1 point-to-point sends per
  forward; pp buys memory, not speed, for a single batch.
* Communication, not overlapped: 2 all-reduces of the hidden states per layer
  per forward (Megatron-LM's attention + MLP split) over the tp group, priced by
  `comm.py`. TTFT adds the prefill's, TPOT the decode step's.
* Throughput: dp x batch x generated tokens / end-to-end time. MFU = the
  request's FLOPs (prefill + decode steps) per replica / (replica devices x
  peak x end-to-end time); HFU = MFU (inference recomputes nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from ..core.errors import UserInputError
from ..core.precision import parse_precision
from ..formulas import decoder_dims
from ..hardware import Hardware
from ..hardware.gpumodel import GpuModel
from ..hardware.headroom import usable_memory_bytes
from ..hardware.interconnect import Interconnect
from .comm import ALL_REDUCE, P2P, collective_time, make_group
from .llm import LLMCosts, _Coster, llm_estimate
from .llm_gpu import gpu_llm_figures
from .llm_steps import KV_READ, KV_WRITE
from .plan import FREE, Fixed, Plan, check_fixed

OBJECTIVES = ("throughput", "latency")


@dataclass(frozen=True)
class InferLayout:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1

    @property
    def devices(self) -> int:
        return self.tp * self.pp * self.dp * self.ep


@dataclass(frozen=True)
class InferCandidate:
    layout: InferLayout
    fits: bool
    batch: int  # sequences per replica
    memory_per_device_bytes: float
    weight_bytes_per_device: float
    kv_cache_bytes_per_device: float
    activation_bytes_per_device: float
    capacity_bytes: float | None
    max_batch: int | None  # per replica
    ttft_s: float
    tpot_s: float
    e2e_s: float
    comm_prefill_s: float
    comm_decode_step_s: float
    decode_steps: int
    tokens_per_s: float
    mfu: float
    why_not: str | None = None

    @property
    def comm_time_s(self) -> float:
        """Communication on one request's critical path: the prefill's and every decode step's."""
        return self.comm_prefill_s + self.decode_steps * self.comm_decode_step_s


def shard_costs(costs: LLMCosts, tp: int, pp: int, kv_heads: int | None) -> LLMCosts:
    """The per-device costs of one replica of tp x pp devices (module docstring)."""
    kv_div = min(tp, kv_heads) if kv_heads else tp

    def scale(v: tuple[float, ...], key: Any) -> tuple[float, ...]:
        info = costs.info.get(key)
        whole = 1 if info is not None and info.replicated else tp
        return tuple(x / (kv_div if i in (KV_READ, KV_WRITE) else whole) for i, x in enumerate(v))

    return replace(
        costs,
        params=max(1, round(costs.params / (tp * pp))),
        prefill={k: (scale(a, k), scale(b, k)) for k, (a, b) in costs.prefill.items()},
        decode={k: tuple(scale(c, k) for c in cs) for k, cs in costs.decode.items()},  # type: ignore[misc]
        kv_elems_per_token=costs.kv_elems_per_token / (kv_div * pp),
        prefill_peak=(costs.prefill_peak[0] / tp, costs.prefill_peak[1] / tp),
        decode_peak=(costs.decode_peak[0] / tp, costs.decode_peak[1] / tp),
    )


def evaluate_inference(costs: LLMCosts, hw: Hardware, layout: InferLayout, net: Interconnect | None, *,
                       batch: int, weights: str | None, kv_dtype: str | None,
                       gpu: GpuModel | None = None) -> InferCandidate:
    dims = decoder_dims(costs.config)
    sharded = shard_costs(costs, layout.tp, layout.pp, dims.kv_heads)
    result = llm_estimate(sharded, hw, batches=(batch,), weights=weights, kv_dtype=kv_dtype, max_batch=True)
    fig = result.batches[0]
    prefill_s, step_s = fig.ttft_s, fig.tpot_s
    if gpu is not None:  # the GPU performance model prices the sharded steps (llm_gpu.py)
        coster = _Coster(sharded, hw, result.weights, result.kv_dtype)
        g = gpu_llm_figures(sharded, coster, gpu, batch, tp=layout.tp)
        prefill_s, step_s = g.prefill_s, g.tpot_s
    act_bytes = parse_precision(costs.dtype).bits / 8
    prefill_msg = batch * costs.prompt * dims.d_model * act_bytes
    decode_msg = batch * dims.d_model * act_bytes
    comm_p = comm_d = 0.0
    if net is not None:
        tp_group = make_group(layout.tp, 1, net)
        pp_link = make_group(2, layout.tp, net)
        hops = layout.pp - 1
        comm_p = (2 * dims.layers * collective_time(ALL_REDUCE, prefill_msg, tp_group)
                  + hops * collective_time(P2P, prefill_msg, pp_link) * (hops > 0))
        comm_d = (2 * dims.layers * collective_time(ALL_REDUCE, decode_msg, tp_group)
                  + hops * collective_time(P2P, decode_msg, pp_link) * (hops > 0))
    ttft = prefill_s + comm_p
    tpot = step_s + comm_d
    steps = costs.gen - 1
    e2e = ttft + steps * tpot
    replica = layout.tp * layout.pp
    flops = (fig.prefill.flops + steps * fig.decode.flops) * layout.tp  # one replica's request FLOPs
    peak = hw.peak_flops_for(costs.dtype, "matmul")
    capacity = usable_memory_bytes(hw)  # as llm_estimate's fit: less the runtime's headroom
    fits = bool(fig.fits) if fig.fits is not None else True
    why = None
    if not fits:
        terms = {"weights": result.weight_bytes, "KV cache": fig.kv_cache_bytes,
                 "activations": fig.activation_bytes}
        big = max(terms, key=lambda k: terms[k])
        why = (f"needs {fig.memory_bytes / 1e9:.1f} GB per device, {(fig.memory_bytes - (capacity or 0)) / 1e9:.1f}"
               f" GB over {(capacity or 0) / 1e9:.1f} GB usable; largest term: {big} {terms[big] / 1e9:.1f} GB "
               f"(weights {result.weight_bytes / 1e9:.1f} + KV cache {fig.kv_cache_bytes / 1e9:.1f} + "
               f"activations {fig.activation_bytes / 1e9:.1f} GB)")
    return InferCandidate(
        layout=layout, fits=fits, batch=batch, memory_per_device_bytes=fig.memory_bytes,
        weight_bytes_per_device=result.weight_bytes, kv_cache_bytes_per_device=fig.kv_cache_bytes,
        activation_bytes_per_device=fig.activation_bytes, capacity_bytes=capacity,
        max_batch=result.max_batch, ttft_s=ttft, tpot_s=tpot, e2e_s=e2e, comm_prefill_s=comm_p,
        comm_decode_step_s=comm_d, decode_steps=steps, tokens_per_s=layout.dp * batch * costs.gen / e2e,
        mfu=flops / (replica * peak * e2e), why_not=why,
    )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def inference_layouts(costs: LLMCosts, devices: int, per_node: int, fixed: Fixed = FREE) -> Iterator[InferLayout]:
    dims = decoder_dims(costs.config)
    for tp in _divisors(devices):
        if tp > per_node or dims.heads % tp or (fixed.tp is not None and tp != fixed.tp):
            continue
        for pp in _divisors(devices // tp):
            if pp > dims.layers or (fixed.pp is not None and pp != fixed.pp):
                continue
            dp = devices // (tp * pp)
            if fixed.dp is not None and dp != fixed.dp:
                continue
            yield InferLayout(tp, pp, dp)


def _rank_key(objective: str) -> Any:
    if objective == "latency":
        return lambda c: (not c.fits, c.tpot_s if c.fits else c.memory_per_device_bytes, -c.tokens_per_s)
    return lambda c: (not c.fits, -c.tokens_per_s if c.fits else c.memory_per_device_bytes, c.tpot_s)


def plan_inference(costs: LLMCosts, hw: Hardware, *, devices: int, nodes: int, net: Interconnect | None,
                   batch: int = 1, weights: str | None = None, kv_dtype: str | None = None,
                   fixed: Fixed = FREE, objective: str = "throughput", limit: int = 50,
                   gpu: GpuModel | None = None) -> Plan:
    if objective not in OBJECTIVES:
        raise UserInputError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if fixed.ep not in (None, 1):
        raise UserInputError("--ep applies to training mixture-of-experts models; inference plans tp x pp x dp")
    for name in ("zero", "micro_batch", "sp", "checkpoint"):
        if getattr(fixed, name) not in (None, False):
            raise UserInputError(f"--{name.replace('_', '-')} applies to training; add --train")
    if devices > 1 and net is None:
        raise UserInputError(f"no interconnect figures for {hw.id}: plan it on one device")
    per_node = net.devices_per_node if net is not None else 1
    check_fixed(fixed, devices, per_node, decoder_dims(costs.config).layers)
    found = [evaluate_inference(costs, hw, lay, net, batch=batch, weights=weights, kv_dtype=kv_dtype, gpu=gpu)
             for lay in inference_layouts(costs, devices, per_node, fixed)]
    if not found:
        raise UserInputError(f"no tp x pp x dp layout of {devices} devices matches (tp within a node of "
                             f"{per_node} and dividing the {decoder_dims(costs.config).heads} heads)")
    ranked = sorted(found, key=_rank_key(objective))
    fitting = [c for c in ranked if c.fits][:limit]
    rejected = [c for c in ranked if not c.fits][:limit]
    first = found[0]
    return Plan(
        mode="infer", model=costs.model, hardware=hw.id, devices=devices, nodes=nodes,
        candidates=tuple(fitting + rejected),
        min_devices=_min_devices(costs, hw, net, per_node, batch, weights, kv_dtype),
        searched=len(found),
        settings={"prompt": costs.prompt, "gen": costs.gen, "batch": batch, "dtype": costs.dtype,
                  "weights": weights or costs.dtype, "kv_dtype": kv_dtype or costs.dtype,
                  "objective": objective, "capacity_bytes": first.capacity_bytes,
                  "prediction": "gpu-shape-model/1" if gpu is not None else "roofline",
                  **({"gpu_model": gpu.describe()} if gpu is not None else {})},
        interconnect=net.to_dict() if net is not None else {},
        assumptions=INFER_ASSUMPTIONS + ((INFER_GPU,) if gpu is not None else ()), notes=costs.notes,
    )


INFER_ASSUMPTIONS = (
    "per-op costs / tp (head and column sharding), except ops on one hidden-size tensor that are not "
    "matrix products (norms, residual adds): every tp rank runs them whole; KV cache / min(tp, KV heads); "
    "weights / (tp x pp)",
    "pipeline stages of one batch run in sequence: pp lowers memory per device, not latency",
    "2 all-reduces of the hidden states per layer per forward over the tp group, not overlapped",
    "batch = concurrent sequences per replica; dp replicas serve independent requests",
)


INFER_GPU = ("TTFT and TPOT: each replica's sharded prefill and decode steps priced by the GPU "
             "performance model (eager kernel launches), plus the tp all-reduces")


def _min_devices(costs: LLMCosts, hw: Hardware, net: Interconnect | None, per_node: int, batch: int,
                 weights: str | None, kv_dtype: str | None) -> int | None:
    """Fewest devices (a power of two) on which one replica holds the batch."""
    if not hw.memory_bytes:
        return None
    dims = decoder_dims(costs.config)
    n = 1
    while n <= 1 << 12:
        if n > 1 and net is None:
            return None
        for lay in inference_layouts(costs, n, per_node):
            if lay.dp == 1 and evaluate_inference(costs, hw, lay, None, batch=batch, weights=weights,
                                                  kv_dtype=kv_dtype).fits:
                return n
        if n > per_node * dims.layers:
            return None
        n *= 2
    return None


def infer_candidate_dict(c: InferCandidate) -> dict[str, Any]:
    lay = c.layout
    return {
        "tp": lay.tp, "pp": lay.pp, "dp": lay.dp, "ep": lay.ep, "zero": None, "micro_batch": None,
        "devices": lay.devices, "batch": c.batch,
        "memory_per_device_bytes": c.memory_per_device_bytes,
        "model_states_bytes_per_device": c.weight_bytes_per_device,
        "weight_bytes_per_device": c.weight_bytes_per_device,
        "kv_cache_bytes_per_device": c.kv_cache_bytes_per_device,
        "activation_bytes_per_device": c.activation_bytes_per_device,
        "capacity_bytes": c.capacity_bytes, "max_batch": c.max_batch,
        "ttft_s": c.ttft_s, "tpot_s": c.tpot_s, "e2e_s": c.e2e_s,
        "comm_time_s": c.comm_time_s,
        "comm_s": {"prefill": c.comm_prefill_s, "decode_step": c.comm_decode_step_s},
        # The tp all-reduces sit between the layers that need their result: never hidden.
        "comm_overlapped": {"prefill": False, "decode_step": False},
        "tokens_per_s": c.tokens_per_s, "mfu": c.mfu, "hfu": c.mfu, "fits": c.fits, "why_not": c.why_not,
    }
