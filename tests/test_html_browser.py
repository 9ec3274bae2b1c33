"""The HTML report in a real browser: headless Chromium renders it, runs its script, logs no error.

Skipped when `chromium` is not on PATH (CI installs Debian's package:
`apt-get install -y chromium`). Console messages reach stderr through
`--enable-logging=stderr`; a control page that logs on purpose proves the
capture works, so a silent report page means a clean one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import modelmeter
from modelmeter.core.units import format_count
from modelmeter.report.html import render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install -y chromium)"),
]


def chromium(page: Path, tmp_path: Path, *extra: str) -> tuple[str, str]:
    """(DOM after scripts ran, stderr with the console log) of `page` in headless Chromium."""
    assert CHROMIUM is not None
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         *extra, page.as_uri()],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def console_lines(stderr: str, page: Path) -> list[str]:
    return [line for line in stderr.splitlines()
            if ("CONSOLE" in line and page.name in line) or "Uncaught" in line]


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x))


@pytest.fixture(scope="module")
def report_page(tmp_path_factory) -> tuple[Path, dict]:
    report = modelmeter.report(Net(), torch.randn(1, 3, 8, 8), hardware="h100-sxm", measure=False,
                                 environment=False).to_dict()
    report["model"]["name"] = "<script>alert(1)</script>"  # must render as text, never run
    page = tmp_path_factory.mktemp("html") / "report.html"
    page.write_text(render_html(report, depth=1))
    return page, report


def test_console_capture_works(tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text('<!DOCTYPE html><html><body><script>console.error("mm-probe");</script></body></html>')
    _, stderr = chromium(probe, tmp_path, "--dump-dom")
    assert any("mm-probe" in line for line in console_lines(stderr, probe))


@pytest.mark.slow
def test_report_renders_with_values_and_no_console_errors(report_page, tmp_path):
    page, report = report_page
    dom, stderr = chromium(page, tmp_path, "--dump-dom")
    assert console_lines(stderr, page) == []
    # The summary's values are in the rendered page.
    for value in (format_count(report["totals"]["params"]), format_count(report["totals"]["macs"])):
        assert value in dom
    assert 'data-metric="latency_predicted"' in dom
    # Both charts are inline SVG the browser parsed, with their text as text.
    assert dom.count('<svg role="img"') == 2 and "arithmetic intensity" in dom
    # The escaped name is text: no alert script element was created from it.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script>alert(1)</script>" not in dom
    # The inline script ran: the depth filter (depth 1) hid the deeper module rows.
    deep = re.findall(r'<tr data-depth="2"[^>]*class="mm-hidden"', dom)
    assert deep and not re.search(r'<tr data-depth="[01]"[^>]*class="mm-hidden"', dom)


def test_screenshot_is_drawn(report_page, tmp_path):
    page, _ = report_page
    shot = tmp_path / "shot.png"
    _, stderr = chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600")
    assert console_lines(stderr, page) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
