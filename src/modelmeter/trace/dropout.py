"""Tracing a training step without dropout (layer 1).

A training trace runs the model in train mode, so dropout is active: each
dropout draws a mask and keeps it for backward (one byte per element for
`native_dropout`, the input's dtype for the math attention's `bernoulli_`),
and an SDPA call with `dropout_p > 0` takes the math form on a CPU. Models
are often fine-tuned with dropout off; this mode traces that step: every
functional dropout returns its input, and SDPA runs with `dropout_p = 0`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# What nn.Dropout*, and models calling dropout themselves, go through.
_DROPOUTS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
             F.feature_alpha_dropout, torch.dropout, torch.alpha_dropout,
             torch.feature_dropout, torch.feature_alpha_dropout}


class NoDropoutMode(TorchFunctionMode):
    """Every dropout is the identity; SDPA's dropout_p is 0."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        if func in _DROPOUTS:
            return args[0] if args else kwargs["input"]
        if func is F.scaled_dot_product_attention:
            if len(args) > 4:
                args = (*args[:4], 0.0, *args[5:])
            kwargs.pop("dropout_p", None)
        return func(*args, **kwargs)

