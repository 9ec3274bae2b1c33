"""The optional extras keep the tested install whole, and what they enable counts right.

`.[vision]` must not move torch: torchvision pins the exact torch it was built
against, so an unpinned torchvision pulled the newest release and, with it, a
newer torch and its CUDA packages over the CPU build. `.ci/run` installs the
extra into a fresh venv and checks torch is unmoved; here the pin itself is
checked against the torch the suite is tested with.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the suite runs on 3.11
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def _tested_torch() -> tuple[int, int]:
    """The torch release `.ci/run` (and the README's set-up) pins: torch==X.Y.Z."""
    pins = set(re.findall(r"torch==(\d+)\.(\d+)\.\d+", (ROOT / ".ci" / "run").read_text()))
    assert len(pins) == 1, pins
    major, minor = pins.pop()
    return int(major), int(minor)


def test_vision_extra_pins_the_torchvision_of_the_tested_torch() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = [spec for spec in extras["vision"] if spec.startswith("torchvision")]
    assert len(pins) == 1
    match = re.fullmatch(r"torchvision==0\.(\d+)\.\d+", pins[0].replace(" ", ""))
    assert match, f"torchvision is not pinned to one release: {pins[0]!r}"
    # PyTorch's compatibility table: torchvision 0.(m+15) is built for torch 2.m (0.15 for
    # 2.0, ... 0.28 for 2.13), and its metadata requires that torch exactly.
    major, minor = _tested_torch()
    assert (major, int(match[1])) == (2, minor + 15), (pins[0], f"torch {major}.{minor}")


def _torchvision_problem() -> str | None:
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure to import is the reason to skip
        return f"torchvision does not import here: {type(exc).__name__}: {exc}"[:300]
    return None


@pytest.mark.skipif(_torchvision_problem() is not None, reason=str(_torchvision_problem()))
def test_torchvision_resnet18_counts_the_macs_torchvision_publishes(run_main) -> None:
    from torchvision.models import ResNet18_Weights

    code, out, err = run_main("count", "torchvision:resnet18", "--json", "-")
    assert code == 0, err
    macs = json.loads(out)["totals"]["macs"]
    # torchvision publishes MACs as "GFLOPS", to three decimals (1.814 for ResNet-18).
    published = ResNet18_Weights.IMAGENET1K_V1.meta["_ops"]
    assert abs(macs / 1e9 - published) <= 0.0005, (macs, published)
