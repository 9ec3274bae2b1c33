"""`modelmeter sweep --ray`: a real local Ray cluster on 127.0.0.1 runs a grid; rows equal direct runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'modelmeter[ray]')")

SRC = str(Path(__file__).resolve().parents[1] / "src")
CLI = [sys.executable, "-c", "from modelmeter.cli.main import main; main()"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def cluster():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="mmray")  # short: Ray's socket paths have a length limit
    proc = subprocess.Popen(["ray", "start", "--head", "--block", "--num-cpus=2", "--num-gpus=0",
                             f"--port={port}", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp}", "--object-store-memory=100000000"],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    time.sleep(3)
    yield address
    proc.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
    proc.wait(timeout=60)


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=_env(), timeout=timeout)


def test_unreachable_cluster_is_one_line_exit_2(tmp_path):
    spec = tmp_path / "g.toml"
    spec.write_text('command = "report"\nmodels = ["gpt2"]\n[options]\nmeasure = false\n')
    done = _cli("sweep", str(spec), "--ray", "127.0.0.1:1", "--db", str(tmp_path / "r.sqlite"), timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no Ray cluster answers" in done.stderr


def test_grid_through_ray_equals_direct_runs(cluster, tmp_path):
    from modelmeter.store import RunStore

    spec = tmp_path / "g.toml"
    spec.write_text('command = "report"\nmodels = ["gpt2"]\nbatches = [1]\nprecisions = ["fp32", "bf16"]\n'
                    '[options]\nmeasure = false\n')
    db = tmp_path / "runs.sqlite"
    done = _cli("sweep", str(spec), "--ray", cluster, "--db", str(db), "--json", str(tmp_path / "s.json"))
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["done"] == 2
    store = RunStore(db)
    for row in summary["configurations"]:
        alone = tmp_path / "alone.json"
        direct = _cli("report", *row["args"], "--json", str(alone))
        assert direct.returncode == 0, direct.stderr
        assert store.get(row["run_id"]).report["totals"] == json.loads(alone.read_text())["totals"]
    again = _cli("sweep", str(spec), "--ray", cluster, "--db", str(db), "--json", str(tmp_path / "s2.json"))
    assert again.returncode == 0 and json.loads((tmp_path / "s2.json").read_text())["skipped"] == 2
