"""Attention implementations a trace can assume, and how the report says which (layer 0).

`trace/attention.py` routes SDPA calls to the chosen kernel; this module holds
the names and the report's wording, so the upper layers need no torch.
"""

from __future__ import annotations

from .errors import UserInputError

FLASH, MATH = "flash", "math"
IMPLEMENTATIONS = (MATH, FLASH)


def check_attention(name: str | None) -> str | None:
    """A valid implementation name (None stays None: the caller's default)."""
    if name is None:
        return None
    key = name.strip().lower()
    if key not in IMPLEMENTATIONS:
        raise UserInputError(f"unknown attention implementation {name!r}; choose one of "
                             f"{', '.join(IMPLEMENTATIONS)}")
    return key


def attention_setting(requested: str | None, traced: str | None) -> dict[str, str]:
    """The report's `settings.attention`: the implementation assumed and why.

    `requested`: the caller's choice (None: the default, flash); `traced`: what
    the trace recorded (None: the model made no SDPA call).
    """
    if traced is None:
        return {"implementation": "as written",
                "why": "the model makes no scaled_dot_product_attention call (its own attention "
                       "code, or none): traced as written; --attention does not apply"}
    if requested is None:
        return {"implementation": traced,
                "why": "default: the fused kernel the device runs (flash / memory-efficient on GPUs, "
                       "_scaled_dot_product_flash_attention_for_cpu on CPUs), which never "
                       "materialises the L x S scores; --attention math for unfused attention"}
    return {"implementation": traced, "why": f"--attention {requested} (what-if)"}
