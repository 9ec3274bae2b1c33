"""The host allocator's part in a CPU measurement (layer 3).

Why this module exists: with glibc's default heuristics, a PyTorch forward
pass on CPU hands much of its activation memory back to the kernel when the
tensors are freed (large blocks are ``mmap``-ed and ``munmap``-ed; the top of a
heap is trimmed), then faults it back in on the next call. On this project's
2-core VM a ResNet-50 batch-1 forward paid ~2,800 minor page faults per call,
and how many depends on the process's allocation history (glibc's mmap
threshold adapts as blocks are freed), so two fresh processes timing the same
model pay different costs (batch 32: p50 1.96 s in one run, 2.19 s in the
next; 1.26 s and 1.27 s with retention). Production CPU inference usually
runs on an allocator that keeps freed memory (jemalloc, tcmalloc: Intel's and
PyTorch's CPU tuning guides recommend them for this reason).

:func:`retain_freed_memory` makes glibc keep freed memory for reuse
(``mallopt``: no trimming, no per-block ``mmap`` below 1 GiB, a top pad), so
the timed calls measure the model, not the page-fault path: ~0 faults per
call. It changes the whole process from then on and cannot be undone: glibc
has no getter for ``mallopt`` parameters (the environment or ``GLIBC_TUNABLES``
may have set them), and setting any threshold switches its adaptive mmap
threshold off for good. Hence the policy: the ``bench`` and ``report``
commands retain (their process ends with the command); library calls
(``modelmeter.bench``, ``modelmeter.report``) leave the allocator alone unless
asked (``malloc="retain"``), since they run in the caller's process. A
measurement records both the policy (``conditions.malloc``) and the state
(``conditions.allocator``: 'retained' also when an earlier call retained).

:func:`resident_tracks_live_memory` is for the memory probe, which reads the
resident set: it returns free heap memory to the kernel (``malloc_trim``) so
the baseline counts live data only, and while retention is in force it
switches glibc to small fixed thresholds for the probe — kept memory would
otherwise inflate the measured peak (ResNet-50 batch 32: 895 MiB of RSS
growth without the switch, 344 MiB with it, 343 MiB of counted activations).

Where the C library is not glibc nothing changes and ``retain_freed_memory``
returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

_NO_TRIM = 2**31 - 1  # the largest int mallopt takes: in effect "never trim"
_TOP_PAD = 64 * 2**20  # grow the heap in 64 MiB steps rather than page by page
# Blocks above the threshold are still mmap-ed. Some glibc versions refuse values
# over 32 MiB (HEAP_MAX_SIZE / 2 on 64-bit); try the larger one first.
_MMAP_THRESHOLDS = (2**30, 32 * 2**20)
# glibc's documented defaults (mallopt(3)), fixed rather than adaptive: for memory probes.
_TIGHT = ((_M_MMAP_THRESHOLD, 128 * 2**10), (_M_TRIM_THRESHOLD, 128 * 2**10), (_M_TOP_PAD, 0))

RETAIN = "retain"
DEFAULT = "default"
POLICIES = (RETAIN, DEFAULT)


@cache
def _glibc() -> Any | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim")):
        return None
    lib.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    lib.mallopt.restype = ctypes.c_int
    lib.malloc_trim.argtypes = (ctypes.c_size_t,)
    lib.malloc_trim.restype = ctypes.c_int
    return lib


_retained: str | None = None  # what retain_freed_memory set, once it has run
_retained_threshold = 0


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory in the process (see the module docstring)."""
    global _retained, _retained_threshold
    if _retained is not None:
        return True
    lib = _glibc()
    if lib is None:
        return False
    # Both thresholds, never one: setting the trim threshold alone pins the mmap
    # threshold at its 128 KiB default and makes every large block an mmap
    # (17,000 faults per call on resnet50 instead of 2,800).
    threshold = next((t for t in _MMAP_THRESHOLDS if lib.mallopt(_M_MMAP_THRESHOLD, t) == 1), None)
    if threshold is None:
        return False
    ok = lib.mallopt(_M_TRIM_THRESHOLD, _NO_TRIM) == 1 and lib.mallopt(_M_TOP_PAD, _TOP_PAD) == 1
    if ok:
        _retained = f"glibc, freed memory retained (mmap threshold {threshold // 2**20} MiB, no trim)"
        _retained_threshold = threshold
    return ok


@contextmanager
def resident_tracks_live_memory() -> Iterator[None]:
    """While it is open, the resident set follows the bytes actually in use.

    For a memory probe. Free heap memory is handed back first (``malloc_trim``),
    so the baseline is live data only. When :func:`retain_freed_memory` is in
    force, glibc is switched for the probe to its small fixed thresholds (every
    block over 128 KiB its own mapping, trimmed at once: a freed buffer leaves
    the resident set as it goes, and the heap cannot grow with fragments that
    keeping memory produces), then back to retaining. Otherwise the allocator
    keeps its own settings (the user asked for them).
    """
    lib = _glibc()
    if lib is None:
        yield
        return
    tight = _retained is not None
    if tight:
        for param, value in _TIGHT:
            lib.mallopt(param, value)
    lib.malloc_trim(0)
    try:
        yield
    finally:
        if tight:
            lib.mallopt(_M_MMAP_THRESHOLD, _retained_threshold)
            lib.mallopt(_M_TRIM_THRESHOLD, _NO_TRIM)
            lib.mallopt(_M_TOP_PAD, _TOP_PAD)


def allocator_condition() -> str:
    """How the host allocator behaves now, for a measurement's conditions."""
    if _retained is not None:
        return _retained
    if _glibc() is None:
        return f"{platform.libc_ver()[0] or platform.system()} allocator, unchanged"
    return "glibc, default (freed memory may go back to the kernel)"
