"""The exception tree (layer 0).

    ModelmeterError                 anything modelmeter raises on purpose
    ├── UserInputError              bad input: the CLI prints one line and exits 2
    │   ├── UnknownModelError       a model spec that resolves to nothing
    │   ├── MissingDependencyError  an optional package the request needs is absent
    │   ├── ShapeError              example inputs that do not fit the model
    │   ├── UnknownPrecisionError   a precision name we do not know
    │   ├── UnknownHardwareError    a hardware id not in the database
    │   ├── ReportFormatError       a document that is not a report of this schema (also a ValueError)
    │   └── UnknownDocumentError    a schema document name we do not know (also a ValueError)
    └── MeasurementError            a meter or timer failed while running

Every error the public API raises on purpose is one of these; the bare builtins
left in library modules are internal checks their callers catch (the list, with
reasons, is `tests/test_errors_typed.py`'s allow-list).

Messages say what was wrong and what would work.
"""

from __future__ import annotations


class ModelmeterError(Exception):
    """Base of every error modelmeter raises on purpose."""


class UserInputError(ModelmeterError):
    """The user asked for something that cannot be done as asked (exit code 2).

    `hint` is advice that needs a command-line option (`hint_option`, e.g.
    "--trust-remote-code"): the message includes it, and the CLI drops it on a
    command that lacks that option, so no command suggests a flag it refuses.
    `field`: the option field(s) the message is about, named as the library spells
    them ('prompt', 'kv_dtype'); library messages name no command-line flag, and
    the CLI writes each field's flag in their place (`cli/flags.py`).
    """

    def __init__(self, message: str = "", *, hint: str | None = None,
                 hint_option: str | None = None, field: str | tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.hint_option = hint_option
        self.fields: tuple[str, ...] = (field,) if isinstance(field, str) else tuple(field or ())

    def text(self, options: frozenset[str] | set[str] | None = None) -> str:
        """The message, with the hint unless `options` (a command's flags) lacks `hint_option`."""
        if not self.hint or (options is not None and self.hint_option and self.hint_option not in options):
            return self.message
        return f"{self.message} ({self.hint})"

    def __str__(self) -> str:
        return self.text() if isinstance(getattr(self, "message", None), str) else super().__str__()


class UnknownModelError(UserInputError):
    pass


class MissingDependencyError(UserInputError):
    pass


class ShapeError(UserInputError):
    pass


class UnknownPrecisionError(UserInputError):
    pass


class UnknownHardwareError(UserInputError):
    pass


class ReportFormatError(UserInputError, ValueError):
    """Not a modelmeter report of this schema: a wrong id, or a required section missing.

    Also a ValueError, which `Report.from_dict` raised before it was typed.
    """


class UnknownDocumentError(UserInputError, ValueError):
    """`load_schema(document)` with a document the schema does not define (also a ValueError)."""


class MeasurementError(ModelmeterError):
    """A meter or timer failed; callers fall back to an estimate and warn."""
