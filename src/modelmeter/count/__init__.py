"""Layer 1: pure functions from op events to counts (parameters, MACs, FLOPs, bytes)."""

from . import temp_grouped_mm  # noqa: F401 - TEMP grouped_mm formula (drop on merge)
from .engine import count_op, count_trace
from .registry import register_macs, registered_ops

__all__ = ["count_op", "count_trace", "register_macs", "registered_ops"]
