"""A dispatch mode that refuses an allocation before it exceeds a byte budget (layer 1).

Used while a model is built on the CPU only to be moved to meta: a model too
big for the machine must fail with a message, not take the machine's memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class TooLarge(Exception):
    """The build asked for more memory than its budget."""


class AllocationGuard(TorchDispatchMode):
    """Sums what factory ops allocate; raises TooLarge *before* the one that would pass the budget.

    Each factory op (one that takes a `device`: empty, zeros, arange, _to_copy,
    ...) is first run on meta for its size. Frees are not subtracted, so the
    total over-estimates and the check errs on the safe side.
    """

    def __init__(self, budget: int | None) -> None:
        super().__init__()
        self.budget = budget  # None: unknown free memory, nothing refused
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.budget is not None and any(a.name == "device" for a in func._schema.arguments):
            shape_only = func(*args, **{**kwargs, "device": torch.device("meta")})
            outs = shape_only if isinstance(shape_only, (tuple, list)) else (shape_only,)
            self.total += sum(t.untyped_storage().nbytes() for t in outs if isinstance(t, torch.Tensor))
            if self.total > self.budget:
                raise TooLarge(self.total)
        return func(*args, **kwargs)
