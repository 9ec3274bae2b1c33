"""Library messages in command-line words (layer 7): each option field becomes its flag.

The library names what was wrong by the field a Python caller passed, in
backticks (`` `prompt` must be a positive whole number``), and lists those
fields on the `UserInputError` (`fields`). The CLI prints the flag instead
(``--prompt must be ...``), so a user reads the option they typed and the
library never names a flag that the Python API does not have.
"""

from __future__ import annotations

from ..core.errors import UserInputError

# Fields whose flag is not `--` + the field with '-' for '_'.
FLAGS = {
    "batches": "--batch",
    "inputs": "--input",
    "module_depth": "--depth",
    "ttft_target_s": "--ttft-target",
    "tpot_target_s": "--tpot-target",
}


def flag_of(field: str) -> str:
    """'kv_dtype' -> '--kv-dtype'; 'batches' -> '--batch' (`FLAGS`)."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def with_flags(exc: UserInputError, accepted: frozenset[str] | None) -> str:
    """The error's text with each of its fields (`` `name` ``) written as the command's flag.

    A field whose flag the command does not accept (`accepted`, None: unknown) stays as
    the library wrote it, so no command names a flag it refuses.
    """
    text = exc.text(accepted)
    for field in exc.fields:
        flag = flag_of(field)
        if accepted is None or flag in accepted:
            text = text.replace(f"`{field}`", flag)
    return text
