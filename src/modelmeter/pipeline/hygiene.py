"""A library call leaves the process as it found it (layer 5).

`keeps_rng` wraps the public functions: building a model on a real device
(random init, random inputs) and a user's factory (which may seed) draw from
torch's global generators, and a caller who seeded before calling us must get
the same numbers after. Imports torch only when a wrapped function runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def keeps_rng(fn: F) -> F:
    """Put torch's random state back after the call: CPU always; CUDA devices when CUDA is
    already initialised (never initialised for this)."""

    @functools.wraps(fn)
    def kept(*args: Any, **kwargs: Any) -> Any:
        import torch

        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda):
            return fn(*args, **kwargs)

    return kept  # type: ignore[return-value]
