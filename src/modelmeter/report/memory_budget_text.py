"""A device's memory budget in words, in the unit the sizes beside it use (layer 4).

One unit (decimal GB, as every per-device size in the `llm` and `plan` tables): a
capacity printed in GiB beside uses in GB read as "25.6 GB fits in 24.0 GiB".
"""

from __future__ import annotations

from typing import Any

from ..core.units import format_bytes


def budget_text(budget: dict[str, Any]) -> str:
    """'device memory 25.8 GB, 2.58 GB kept for the runtime (...), 23.2 GB usable'."""
    device = f"device memory {format_bytes(budget['device_bytes'])}"
    if not budget["headroom_bytes"]:
        return device
    return (f"{device}, {format_bytes(budget['headroom_bytes'])} kept for the runtime (CUDA context and "
            f"allocator fragmentation: {budget['reserve_fraction']:.0%}, at least "
            f"{format_bytes(budget['cuda_context_bytes'])}), {format_bytes(budget['usable_bytes'])} usable: "
            "fits are tested against that")


__all__ = ["budget_text"]
