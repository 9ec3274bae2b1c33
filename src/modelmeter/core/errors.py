"""The exception tree (layer 0).

    ModelmeterError                 anything modelmeter raises on purpose
    ├── UserInputError              bad input: the CLI prints one line and exits 2
    │   ├── UnknownModelError       a model spec that resolves to nothing
    │   ├── MissingDependencyError  an optional package the request needs is absent
    │   ├── ShapeError              example inputs that do not fit the model
    │   ├── UnknownPrecisionError   a precision name we do not know
    │   └── UnknownHardwareError    a hardware id not in the database
    └── MeasurementError            a meter or timer failed while running

Messages say what was wrong and what would work.
"""

from __future__ import annotations


class ModelmeterError(Exception):
    """Base of every error modelmeter raises on purpose."""


class UserInputError(ModelmeterError):
    """The user asked for something that cannot be done as asked (exit code 2)."""


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


class MeasurementError(ModelmeterError):
    """A meter or timer failed; callers fall back to an estimate and warn."""
