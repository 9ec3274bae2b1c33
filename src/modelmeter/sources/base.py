"""What every model source produces (layer 1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadedModel:
    """A model ready to trace: the module and the inputs of one forward call.

    `module(*args, **kwargs)` is one forward pass. On the meta device the
    module's parameters are meta tensors (no weights allocated).
    """

    name: str
    module: Any  # torch.nn.Module
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    # 'vision', 'encoder', 'decoder', 'custom'
    kind: str = "custom"
    description: str = ""
    # The transformers config as a dict when the model came from one (LLM view, formulas).
    config: dict[str, Any] | None = None
    # Where it came from: 'preset', 'hf-folder', 'hub', 'torchvision', 'timm', 'factory', 'pt2', 'module'.
    source: str = "module"
    # How the module was built: 'meta', 'cpu', 'cpu, then meta (construction needs real
    # values)' (see sources/build.py); None when the caller built it.
    build: str | None = None
    # How the example inputs were chosen, in words ('preset default, --seq 64'; `inputs_origin`).
    inputs_from: str = ""
