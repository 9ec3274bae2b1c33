"""--mlflow against a real local tracking server (`mlflow server` on 127.0.0.1), read back."""

from __future__ import annotations

import builtins
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from modelmeter.report.mlflow_log import flatten_metrics, flatten_params

TINY = ("import torch\nfrom torch import nn\n\ndef build():\n"
        "    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)), (torch.randn(2, 16),)\n")


def _mlflow_missing() -> str | None:
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        return f"mlflow is not installed (pip install 'modelmeter[mlflow]'): {exc}"
    return None


needs_mlflow = pytest.mark.skipif(_mlflow_missing() is not None, reason=str(_mlflow_missing()))


def test_flatten_keys_steps_and_params() -> None:
    doc = {"model": {"name": "m"}, "settings": {"batch": 8, "inputs": [{"shape": [1, 2]}]},
           "totals": {"flops": 10, "coverage": 1.0, "ok": True, "none": None},
           "modules": [{"path": "", "flops": 10}, {"path": "a b.c", "flops": 4}],
           "measured": {"sweep": [{"batch": 1, "latency_s": {"p50": 0.5}}, {"batch": 8, "latency_s": {"p50": 2.0}}]},
           "plan": {"settings": {"gpu_model": {"sustained_compute (fitted)": 3.0}}, "hardware": "h100"}}
    metrics = flatten_metrics(doc)
    assert ("totals.flops", 10.0, 0) in metrics and ("modules.root.flops", 10.0, 0) in metrics
    assert ("modules.a_b.c.flops", 4.0, 0) in metrics
    assert ("measured.sweep.latency_s.p50", 0.5, 1) in metrics and ("measured.sweep.latency_s.p50", 2.0, 8) in metrics
    assert ("plan.settings.gpu_model.sustained_compute_fitted", 3.0, 0) in metrics
    assert not any(k.startswith(("settings", "model")) or k.endswith(("ok", "none")) for k, _, _ in metrics)
    params = flatten_params(doc, "plan")
    assert params["settings.inputs"] == '[{"shape": [1, 2]}]' and params["hardware"] == "h100"
    long = flatten_metrics({"x": {"a" * 400: 1}})
    assert len(long[0][0]) == 250 and long == flatten_metrics({"x": {"a" * 400: 1}})


def test_missing_mlflow_is_one_line_exit_2(run_main, monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.__import__

    def fail(name, *args, **kw):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", fail)
    code, _, err = run_main("plan", "llama3-8b", "--hardware", "h100-sxm", "--mlflow")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "install modelmeter[mlflow]" in err, err


@needs_mlflow
def test_unreachable_server_is_one_line_exit_2(run_main, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    start = time.monotonic()
    code, _, err = run_main("plan", "llama3-8b", "--hardware", "h100-sxm", "--mlflow")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "MLflow tracking at" in err, err
    assert time.monotonic() - start < 60  # MLflow's own retry defaults took 245 s here


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    if _mlflow_missing():
        pytest.skip(_mlflow_missing())
    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{root}/mlflow.db", "--default-artifact-root", str(root / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"))
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(uri + "/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("mlflow server did not start: " + (root / "server.log").read_text()[-800:])
            time.sleep(0.5)
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _run(server: str, run_main, monkeypatch, tmp_path: Path, *args: str):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    code, out, err = run_main(*args)
    assert code == 0, err
    line = [x for x in out.splitlines() if x.startswith("logged MLflow run ")]
    assert len(line) == 1 and f"to {server} (MLFLOW_TRACKING_URI)" in line[0], out
    client = MlflowClient(server)
    run = client.get_run(line[0].split()[3])
    return client, run


def test_report_logs_params_metrics_artifacts(server, run_main, monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "tinymodel.py").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    client, run = _run(server, run_main, monkeypatch, tmp_path, "report", "tinymodel:build", "--no-measure",
                       "--json", "r.json", "--html", "r.html", "--mlflow")
    doc = json.loads((tmp_path / "r.json").read_text())
    # Closed form: Linear(16,32)+Linear(32,4) on batch 2: MACs = 2*(16*32 + 32*4) = 1280.
    assert doc["totals"]["macs"] == 1280
    assert run.data.metrics["totals.macs"] == 1280 and run.data.metrics["totals.flops"] == doc["totals"]["flops"]
    assert run.data.params["model.name"] == "tinymodel:build" and run.data.params["command"] == "report"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"report.json", "r.html"} and run.info.status == "FINISHED"


def test_bench_rows_are_steps(server, run_main, monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "tinymodel.py").write_text(TINY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path / "home"))
    client, run = _run(server, run_main, monkeypatch, tmp_path, "bench", "tinymodel:build", "--batch", "1,4",
                       "--min-time", "0.02", "--min-iters", "2", "--warmup", "0", "--json", "b.json", "--mlflow")
    doc = json.loads((tmp_path / "b.json").read_text())
    history = client.get_metric_history(run.info.run_id, "measured.sweep.throughput_per_s")
    assert {m.step: m.value for m in history} == {r["batch"]: r["throughput_per_s"] for r in doc["measured"]["sweep"]}


def test_plan_logs_best_layout(server, run_main, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    client, run = _run(server, run_main, monkeypatch, tmp_path, "plan", "llama3-8b", "--hardware", "h100-sxm",
                       "--devices", "8", "--json", "p.json", "--mlflow")
    doc = json.loads((tmp_path / "p.json").read_text())
    assert run.data.metrics["plan.best.tokens_per_s"] == doc["plan"]["best"]["tokens_per_s"]
    assert run.data.params["hardware"] == "h100-sxm" and run.data.params["plan.devices"] == "8"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"report.json"}


def test_no_mlflow_import_without_the_flag() -> None:
    code = ("import sys, modelmeter.cli.report_cmd, modelmeter.cli.bench_cmd, modelmeter.cli.plan_cmd, "
            "modelmeter.report.mlflow_log; print('mlflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "False"


def test_sweep_nests_one_child_run_per_configuration(server, run_main, monkeypatch, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    (tmp_path / "tinymodel.py").write_text(TINY)
    (tmp_path / "grid.toml").write_text('command = "report"\nmodels = ["tinymodel:build"]\n'
                                        '[options]\nmeasure = false\ninput = ["1x16", "2x16"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    code, out, err = run_main("sweep", "grid.toml", "--db", str(tmp_path / "runs.sqlite"), "--workers", "1", "--mlflow")
    assert code == 0, err
    line = [x for x in out.splitlines() if x.startswith("logged MLflow parent run ")]
    assert len(line) == 1 and "2 child runs" in line[0], out
    parent = line[0].split()[4]
    client = MlflowClient(server)
    children = client.search_runs(["0"], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    # Closed form: MACs of Linear(16,32)+Linear(32,4) = 640 per sample.
    assert sorted(c.data.metrics["totals.macs"] for c in children) == [640, 1280]
    assert client.get_run(parent).info.status == "FINISHED"
