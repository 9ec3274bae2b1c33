"""modelmeter: how efficient is a PyTorch model, in every sense that matters.

Public API (everything else is private and may change)::

    import modelmeter
    report = modelmeter.count(model, example_inputs, dtype="bf16")
    report.to_dict()["totals"]["flops"]
    modelmeter.report("resnet50", hardware="h100-sxm", measure=False)   # every metric
    modelmeter.memory(...), modelmeter.roofline(...), modelmeter.bench(...),
    modelmeter.llm(...), modelmeter.compare([...]), modelmeter.plan(...)

Exceptions::

    ModelmeterError
    ├── UserInputError (UnknownModelError, MissingDependencyError, ShapeError,
    │                   UnknownPrecisionError, UnknownHardwareError,
    │                   ReportFormatError, UnknownDocumentError)
    └── MeasurementError
"""

# The counting and report subpackages are imported first so that the public
# functions `modelmeter.count` and `modelmeter.report` below, not the
# subpackages, are what the names mean here: importing a subpackage later (say
# `modelmeter.report.html`) would otherwise rebind the name to it. `from
# modelmeter.count import ...` still finds the subpackage in sys.modules.
from . import count as _count_package  # noqa: F401
from . import report as _report_package  # noqa: F401
from .api import analyse, bench, compare, count, llm, memory, plan, report, roofline
from .core.errors import (
    MeasurementError,
    MissingDependencyError,
    ModelmeterError,
    ReportFormatError,
    ShapeError,
    UnknownDocumentError,
    UnknownHardwareError,
    UnknownModelError,
    UnknownPrecisionError,
    UserInputError,
)
from .core.report import Report, set_html_renderer
from .report.html import render_html_fragment

# Jupyter's `Report._repr_html_` renders through report/ (layer 4); the package
# root is the one place that knows both, so core never imports upwards.
set_html_renderer(render_html_fragment)

__version__ = "0.1.0"

__all__ = [
    "MeasurementError",
    "MissingDependencyError",
    "ModelmeterError",
    "Report",
    "ReportFormatError",
    "ShapeError",
    "UnknownDocumentError",
    "UnknownHardwareError",
    "UnknownModelError",
    "UnknownPrecisionError",
    "UserInputError",
    "__version__",
    "analyse",
    "bench",
    "compare",
    "count",
    "llm",
    "memory",
    "plan",
    "report",
    "roofline",
]
