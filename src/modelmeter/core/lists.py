"""Comma-separated lists from the command line, e.g. ``--batch 1,8,32`` (layer 0, stdlib only).

One parser, so every option that takes a list splits, trims and rejects the
same way and says the same thing when the text is wrong: which option, which
item, why, and an example that works.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import TypeVar

from .errors import UserInputError

__all__ = ["parse_batch_sizes", "parse_list", "positive_int"]

T = TypeVar("T")


def parse_list(
    text: str,
    *,
    option: str,
    cast: Callable[[str], T],
    what: str = "item",
    example: str = "a,b",
) -> list[T]:
    """``'a, b,c'`` -> ``[cast('a'), cast('b'), cast('c')]``, in the order given, repeats kept.

    Empty text, an empty item (``'1,,2'``) or an item ``cast`` rejects with
    ``ValueError`` (its message says why) is a ``UserInputError`` naming
    ``option`` and showing ``example``.
    """
    items = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in items):
        raise UserInputError(
            f"{option} takes a comma-separated list like {option} {example}, got {text!r}"
        )
    values: list[T] = []
    for item in items:
        try:
            values.append(cast(item))
        except ValueError as exc:
            raise UserInputError(
                f"bad {what} {item!r} in {option} {text!r}: {exc}; e.g. {option} {example}"
            ) from None
    return values


def positive_int(text: str) -> int:
    """``'8'`` -> 8; ValueError (saying why) for anything but a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError("not an integer") from None
    if value < 1:
        raise ValueError("not a positive integer")
    return value


def parse_batch_sizes(batches: str | Iterable[int], *, option: str = "--batch") -> tuple[int, ...]:
    """``'1,8,8,32'`` or ``(1, 8, 32)`` -> distinct positive batch sizes, in the order given.

    A sequence (the Python API) is held to the same rule as text: whole numbers
    >= 1 (``True`` is not a batch size, nor is ``1.5``).
    """
    if isinstance(batches, str):
        values = parse_list(batches, option=option, cast=positive_int, what="batch size",
                            example="1,8,32")
    else:
        values = [_batch_item(item) for item in batches]
        if not values:
            raise UserInputError(f"no batch size given: e.g. {option} 1,8,32")
    return tuple(dict.fromkeys(values))


def _batch_item(item: object) -> int:
    value: int | None = None
    if isinstance(item, str):
        try:
            value = int(item.strip())
        except ValueError:
            pass
    elif not isinstance(item, bool):  # bool is an int to Python, not a batch size
        try:
            value = operator.index(item)  # Python and NumPy integers; not floats
        except TypeError:
            pass
    if value is None:
        raise UserInputError(f"bad batch size {item!r}: not an integer; e.g. (1, 8, 32)")
    if value < 1:
        raise UserInputError(f"bad batch size {item!r}: not a positive integer; e.g. (1, 8, 32)")
    return value
