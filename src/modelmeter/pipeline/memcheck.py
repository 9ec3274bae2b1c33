"""Refuse a CPU build that cannot fit in memory, before it starts (layer 5).

`count llama3-70b --device cpu` would allocate 282 GB of fp32 weights. Linux
overcommits, so such a build does not fail with an exception: it fills the
memory until the kernel kills the process (or another one). So the weights
(and inputs) are first counted on the meta device, where nothing is
allocated, and compared with the memory this process may still use. The
activations are not known before the trace; an allocation that fails later is
caught at the CLI boundary (`main`) and also becomes one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from ..core.units import format_bytes

# Share of the available memory the weights and inputs may take: the build
# has temporaries and the trace needs activations on top.
_SHARE = 0.8


def check_cpu_fit(model: str | None, *, inputs: list[str] | None, batch: int | None,
                  seq: int | None, advice: str, available: int | None = None) -> None:
    """UserInputError when `model`'s weights and inputs would not fit in this machine's memory.

    Only specs that build from a config (presets, transformers folders,
    torchvision:/timm:) are estimated: factories and .pt2 files run the user's
    code or read the file, which the build itself is about to do.
    """
    if not _estimable(model):
        return
    if available is None:
        available = available_memory_bytes()
    if available is None:
        return  # unknown: nothing to compare with; the CLI boundary still catches a failure
    from .model import load
    from .options import ModelOptions

    loaded = load(ModelOptions(model, inputs=tuple(inputs) if inputs else None, batch=batch, seq=seq,
                               device="meta"))
    need = _storage_bytes(loaded)
    if need > _SHARE * available:
        raise UserInputError(
            f"{loaded.name} needs {format_bytes(need)} for its weights and inputs as built (fp32) "
            f"on cpu, more than the {format_bytes(available)} of memory available here; {advice}"
        )


def _estimable(model: str | None) -> bool:
    from ..presets import preset_names
    from ..sources.resolve import DEFAULT_MODEL

    spec = (model or DEFAULT_MODEL).strip()
    if spec in preset_names() or spec.startswith(("torchvision:", "timm:")):
        return True
    return Path(spec).is_dir() and (Path(spec) / "config.json").is_file()


def _storage_bytes(loaded: Any) -> int:
    """Bytes of the distinct parameter, buffer and input storages (tied weights once)."""
    import torch

    seen: set[int] = set()
    total = 0
    tensors = [*loaded.module.parameters(), *loaded.module.buffers(), *loaded.args,
               *loaded.kwargs.values()]
    for t in tensors:
        if isinstance(t, torch.Tensor) and id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def available_memory_bytes(root: Path = Path("/")) -> int | None:
    """What this process may still allocate: the least of MemAvailable, the cgroup's
    remaining limit and the address-space rlimit; None when none is known."""
    from ..hardware.detect import read_cpu_info

    limits = [read_cpu_info(root).memory_available_bytes, _cgroup_room(root), _rlimit_room()]
    known = [v for v in limits if v is not None and v >= 0]
    return min(known) if known else None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) -> None


def _cgroup_room(root: Path) -> int | None:
    # cgroup v2 first, then v1; a container's limit is often far below MemAvailable.
    for limit_file, usage_file in (("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory.current"),
                                   ("sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_int(root / limit_file)
        if limit is not None and limit < 2**60:  # v1 writes "no limit" as a huge number
            return max(0, limit - (_read_int(root / usage_file) or 0))
    return None


def _rlimit_room() -> int | None:
    try:
        import resource  # Unix only
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return soft
