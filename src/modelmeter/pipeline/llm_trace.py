"""Trace a decoder's LLM inference steps and fit their costs (layer 5: builds and traces models).

`DecoderTracer` holds a decoder built once on the meta device and traces the
two phases through the model's real transformers cache path:

* prefill: `batch` sequences of `prompt` tokens into an empty `DynamicCache`
  (`logits_to_keep=1`, as `generate()` asks: only the last position's logits);
* decode: one new token per sequence with a `DynamicCache` already holding
  `past` tokens per sequence (meta tensors of the shape a real prefill leaves).

transformers 5.24 takes the cache as `cache=` (`past_key_values=` is its
deprecated alias) and derives `position_ids` from the cache length, so no
`cache_position` is passed.

Attention runs as one fused op while tracing (`trace_model(attention='flash')`,
the default): on meta, SDPA would otherwise decompose into fp32 math with a
materialised score matrix, which no GPU inference engine runs; `attention='math'`
asks for that unfused form as a what-if.

Each step's trace becomes per-op cost vectors (`analysis/llm_steps.py`), and
`analysis/llm.py` fits and costs them: this module only builds and traces.
"""

from __future__ import annotations

from typing import Any

from ..analysis.llm import DecoderFacts, LLMCosts, check_lengths, fit_llm_costs, trace_points
from ..analysis.llm_steps import StepCosts, step_costs
from ..core.errors import UserInputError
from ..core.events import ExpertGroup, Trace
from ..core.precision import WeightTensor
from ..count.quantization import weight_tensors
from ..sources import LoadedModel, resolve_model
from ..trace.moe import MetaExperts, find_expert_groups
from ..trace.run import trace_model
from .options import LLMOptions

__all__ = ["DecoderTracer", "measure_llm_costs", "trace_costs"]


class DecoderTracer:
    """A decoder built once on meta; each call traces one inference step."""

    def __init__(self, model: str | LoadedModel, *, dtype: str = "fp16",
                 trust_remote_code: bool = False, attention: str = "flash") -> None:
        self.attention = attention  # the SDPA kernel assumed (trace/attention.py)
        if isinstance(model, LoadedModel):
            self.loaded = model
        else:
            self.loaded = resolve_model(model, device="meta", dtype=dtype,
                                        trust_remote_code=trust_remote_code)
        if self.loaded.kind != "decoder" or not self.loaded.config:
            raise UserInputError(
                f"{self.loaded.name} is not a decoder-only language model (kind: {self.loaded.kind}); "
                "the llm view needs a causal LM such as gpt2, llama3-8b or a local *ForCausalLM folder"
            )
        self._layout: list[tuple[tuple[int, ...], tuple[int, ...], Any]] | None = None
        self._weights: tuple[WeightTensor, ...] = ()

    @property
    def params(self) -> int:
        """Parameters, tied ones once (named_parameters removes duplicates)."""
        return sum(p.numel() for p in self.loaded.module.parameters())

    @property
    def weight_tensors(self) -> tuple[WeightTensor, ...]:
        """Parameters classified for the weight-only layout (from the first traced step)."""
        return self._weights

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.loaded.config or {})

    def step(self, batch: int, new_tokens: int, past: int = 0) -> StepCosts:
        """Trace prefill (`past=0`, `new_tokens=prompt`) or decode (`new_tokens=1`)."""
        trace, cache = self._trace(batch, new_tokens, past)
        shapes = {tuple(t.shape) for layer in cache.layers for t in (layer.keys, layer.values)}
        return step_costs(trace, batch=batch, new_tokens=new_tokens, past=past, cache_shapes=shapes,
                          hidden=self._hidden())

    def _hidden(self) -> int | None:
        from ..formulas import decoder_dims

        try:
            return int(decoder_dims(self.config).d_model)
        except (KeyError, TypeError, ValueError, UserInputError):  # a config it cannot read: none marked
            return None

    def trace_step(self, batch: int, new_tokens: int, past: int = 0) -> Trace:
        """The raw trace of one step, as eager transformers runs it (the cache grows by `torch.cat`)."""
        return self._trace(batch, new_tokens, past)[0]

    def _trace(self, batch: int, new_tokens: int, past: int) -> tuple[Trace, Any]:
        import torch
        from transformers import DynamicCache

        module = self.loaded.module
        cache = DynamicCache()
        if past:
            for i, (k_shape, v_shape, dtype) in enumerate(self._cache_layout()):
                keys = torch.empty((batch, k_shape[0], past, k_shape[1]), dtype=dtype, device="meta")
                values = torch.empty((batch, v_shape[0], past, v_shape[1]), dtype=dtype, device="meta")
                cache.update(keys, values, i)
        ids = torch.zeros((batch, new_tokens), dtype=torch.long, device="meta")
        kwargs = {"input_ids": ids, "cache": cache, "use_cache": True, "attention_mask": None,
                  "logits_to_keep": 1}
        trace = trace_model(module, (), kwargs, attention=self.attention)
        if not self._weights:
            self._weights = weight_tensors(trace)
        return trace, cache

    def facts(self) -> DecoderFacts:
        """What the fit needs besides the traces (the weights are classified by the first step)."""
        return DecoderFacts(self.loaded.name, self.config, self.params, self.active_params,
                            self.weight_tensors, self.expert_groups, self.attention)

    @property
    def expert_groups(self) -> tuple[ExpertGroup, ...]:
        """The model's routed-experts groups (empty for a dense model)."""
        return tuple(g for _, g in find_expert_groups(self.loaded.module))

    @property
    def active_params(self) -> int:
        """Parameters one token uses: all, less the routed experts it is not sent to."""
        unused = sum(sum(p.numel() for p in mod.parameters()) * (g.experts - g.top_k) // g.experts
                     for mod, g in find_expert_groups(self.loaded.module))
        return self.params - unused

    def _cache_layout(self) -> list[tuple[tuple[int, ...], tuple[int, ...], Any]]:
        """(kv_heads, head_dim) of K and V per layer and their dtype, from one untraced token."""
        if self._layout is None:
            import torch
            from transformers import DynamicCache

            cache = DynamicCache()
            ids = torch.zeros((1, 1), dtype=torch.long, device="meta")
            with torch.no_grad(), MetaExperts():
                self.loaded.module(input_ids=ids, cache=cache, use_cache=True, attention_mask=None,
                                   logits_to_keep=1)
            self._layout = [
                ((layer.keys.shape[1], layer.keys.shape[3]),
                 (layer.values.shape[1], layer.values.shape[3]), layer.keys.dtype)
                for layer in cache.layers
            ]
        return self._layout


def measure_llm_costs(model: str | Any, *, prompt: int = 512, gen: int = 128, dtype: str = "fp16",
                      trust_remote_code: bool = False, attention: str = "flash") -> LLMCosts:
    """Trace prefill and decode on meta and fit the per-op cost models (7 traces).

    `model`: a spec (preset, local HF folder), a `LoadedModel`, or a
    `DecoderTracer` to reuse one built model. The settings are checked as
    `LLMOptions` checks them (the one place), before the model is built.
    """
    options = LLMOptions(prompt=prompt, gen=gen, dtype=dtype, trust_remote_code=trust_remote_code,
                         attention=attention)
    return trace_costs(model, options, options.dtype or dtype)


def trace_costs(model: str | Any, options: LLMOptions, dtype: str) -> LLMCosts:
    """`measure_llm_costs` for options already checked; `dtype` is the resolved trace precision."""
    tracer = model if isinstance(model, DecoderTracer) else DecoderTracer(
        model, dtype=dtype, trust_remote_code=options.trust_remote_code, attention=options.attention or "flash")
    check_lengths(tracer.loaded.name, tracer.config, options.prompt, options.gen)  # before 7 traces
    steps = {point: tracer.step(*point) for point in trace_points(options.prompt, options.gen)}
    return fit_llm_costs(tracer.facts(), steps, prompt=options.prompt, gen=options.gen, dtype=dtype)
