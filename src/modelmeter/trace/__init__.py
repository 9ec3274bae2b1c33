"""Layer 1: one TorchDispatchMode pass over a model, recorded as op events."""

from .run import trace_model

__all__ = ["trace_model"]
