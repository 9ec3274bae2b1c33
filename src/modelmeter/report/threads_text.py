"""The thread count a command ran torch with, in words, for its header (layer 4)."""

from __future__ import annotations


def threads_text(count: int, given: bool) -> str:
    """'2 (--threads)' or '2 (default: this CPU's physical cores, ...)': the count and why."""
    if given:
        return f"{count} (--threads)"
    return f"{count} (default: this CPU's physical cores, the same every run; --threads N for another)"


__all__ = ["threads_text"]
