"""The one place the report layer loads matplotlib (layer 4).

matplotlib is imported only when a plot is drawn, so `import modelmeter` stays
light and works without it; the Agg backend is chosen before pyplot is
imported because servers and CI have no display.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import MissingDependencyError

__all__ = ["load_pyplot"]


def load_pyplot(*, optional: bool = False) -> Any:
    """``matplotlib.pyplot`` on the Agg backend.

    Without matplotlib: ``MissingDependencyError`` (saying how to install it),
    or None when ``optional`` (the HTML report then leaves its plots out and says so).
    """
    try:
        import matplotlib
    except ImportError as exc:
        if optional:
            return None
        raise MissingDependencyError("plots need matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
