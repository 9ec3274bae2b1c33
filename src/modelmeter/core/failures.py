"""What went wrong when a model could not be built or run: meta-device limits and memory (layer 0).

The meta device has shapes but no values, so some code cannot run on it:
reading values (`.tolist()`, `.item()`, `bool(t)`), ops whose output size
depends on values (`nonzero`, masked indexing, `unique`), ops with no meta
kernel, and ops whose meta kernel is narrower than the real one
(`_grouped_mm` accepts only bf16 on meta). None of these says anything about
the inputs; each is fixed by running on real tensors. Out-of-memory is fixed
by the opposite move. This module tells them apart from exception text
(PyTorch raises plain RuntimeError/NotImplementedError for all of them), so
the messages can say what happened and what to do.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

# Substrings of PyTorch's messages (torch 2.x) -> what the model needed.
_VALUE_READS = (
    "cannot copy out of meta tensor",  # .tolist(), .numpy(), .cpu()
    "cannot be called on meta tensors",  # .item(), bool(t), int(t)
)
_DATA_DEPENDENT = "register_meta function for"  # nonzero and friends: output size needs values
_NO_KERNEL = "with meta tensors, but there was no fake impl or meta kernel"
_BF16_ONLY = "expected inputs of bf16 type"  # _grouped_mm's meta kernel
_OOM = ("out of memory", "can't allocate memory", "cannot allocate memory")


@dataclass(frozen=True)
class MetaLimit:
    """The meta device could not run something: `what` happened, `advice` fixes it."""

    what: str
    advice: str


def meta_limit(exc: BaseException, op: str | None = None) -> MetaLimit | None:
    """The meta-device limit `exc` (or an exception it was raised from) shows, else None.

    `op` is the aten op that raised, when known (the trace knows it; a build does not).
    """
    real = "--device cpu (real tensors: the weights and activations are allocated)"
    for err in _chain(exc):
        text = str(err).lower()
        if any(s in text for s in _VALUE_READS):
            return MetaLimit("the code reads tensor values (.tolist(), .item(), a Python "
                             "if on a tensor), which meta tensors do not have", real)
        if _DATA_DEPENDENT in text:
            name = _quoted_op(str(err), "function for ") or op or "an op"
            return MetaLimit(f"{name}'s output size depends on tensor values, which meta "
                             "tensors do not have", real)
        if _NO_KERNEL in text:
            head = str(err).split(": ", 1)[0]  # "aten::_unique2: attempted to run ..."
            name = head.replace("::", ".") if "::" in head else op
            return MetaLimit(f"{name or 'an op'} has no meta kernel", real)
        if _BF16_ONLY in text and (op is None or "_grouped_mm" in op):
            return MetaLimit(f"{op or 'aten._grouped_mm'} runs on the meta device only in bf16",
                             "--dtype bf16, or " + real)
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    """True for MemoryError, torch.OutOfMemoryError and the CPU allocator's RuntimeError."""
    for err in _chain(exc):
        if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
            return True
        if isinstance(err, RuntimeError) and any(s in str(err).lower() for s in _OOM):
            return True
    return False


def failing_op(exc: BaseException) -> str | None:
    """The aten op a TorchDispatchMode was running when `exc` was raised, if any.

    Read from the traceback (the mode's `func` local) so the dispatch mode need
    not catch and re-raise every op's exceptions.
    """
    tb: types.TracebackType | None = exc.__traceback__
    found = None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "__torch_dispatch__" and "func" in frame.f_locals:
            found = str(frame.f_locals["func"]).removesuffix(".default")
        tb = tb.tb_next
    return found


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    err: BaseException | None = exc
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _quoted_op(text: str, after: str) -> str | None:
    # "The register_meta function for torch.nonzero() raises unimplemented ..." -> torch.nonzero
    start = text.find(after)
    if start < 0:
        return None
    rest = text[start + len(after):].split()
    return rest[0].removesuffix("()") if rest else None
