"""benchmarks/gpu_check.py's logic on a CPU (`--device cpu --dry`): calibrate, predict, measure, table."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--device", "cpu", "--dry", "--hardware", "h100-sxm"])
    out = capsys.readouterr().out
    assert [r["case"] for r in rows] == ["tiny cnn", "tiny mlp (decode-like)"]
    for r in rows:
        assert r["bound_s"] > 0 and r["predicted_s"] > 0 and r["measured_s"] > 0
        assert r["ratio"] == pytest.approx(r["predicted_s"] / r["measured_s"])
        # The prediction adds the measured dispatch costs on top of the bound.
        assert r["predicted_s"] > r["bound_s"] and math.isfinite(r["ratio"])
        # The GPU shape model's figure for the named card: at least one kernel launch per op.
        assert r["gpu_model_s"] >= 5e-6 and r["gpu_model_ratio"] == pytest.approx(r["gpu_model_s"] / r["measured_s"])
    assert "pred/meas" in out and "shape/meas" in out and "median |predicted/measured - 1|" in out
    assert not any(tmp_path.rglob("*.json"))  # the check saves nothing
