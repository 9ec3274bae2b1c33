"""The one matplotlib loader of the report layer: Agg backend, and a clear line without matplotlib."""

from __future__ import annotations

import sys

import pytest
from test_roofline import _matmul_counts  # a hand-made count of one matmul

from modelmeter.analysis.roofline import roofline, roofline_section
from modelmeter.core.errors import MissingDependencyError
from modelmeter.hardware import get_hardware
from modelmeter.report._mpl import load_pyplot
from modelmeter.report.html_plots import roofline_svg
from modelmeter.report.llm_plots import plot_llm
from modelmeter.report.plots import plot_roofline


@pytest.fixture()
def result():
    return roofline(_matmul_counts(64, 64, 64), get_hardware("h100-sxm"))


def test_pyplot_renders_off_screen() -> None:
    plt = load_pyplot()
    assert plt.get_backend().lower() == "agg"


def test_without_matplotlib_files_fail_clearly_and_the_page_leaves_plots_out(
    result, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = {"roofline": roofline_section(result)}
    assert roofline_svg(report) is not None  # with matplotlib: drawn
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    with pytest.raises(MissingDependencyError, match="pip install matplotlib"):
        plot_roofline(result, tmp_path / "r.png")
    with pytest.raises(MissingDependencyError, match="pip install matplotlib"):
        plot_llm({}, tmp_path / "llm.png")
    assert load_pyplot(optional=True) is None
    assert roofline_svg(report) is None
