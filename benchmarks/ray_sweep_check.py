"""A 24-configuration analysis sweep through a real local Ray cluster, then a killed worker.

    python benchmarks/ray_sweep_check.py [--models gpt2,bert-base,mobilenet-v2,resnet50]

Starts `ray start --head` on 127.0.0.1 (2 CPUs), then:

1. runs 4 models x 3 batches x 2 precisions of `report --no-measure --depth 0` with
   `modelmeter sweep --ray`, and checks 24 rows are stored, each with the totals of the same
   `report` command run alone (one direct run per model; the others by the closed form that
   MACs scale with the batch);
2. clears the store, starts the sweep again, SIGKILLs one Ray worker process that is running a
   configuration, waits for the sweep to end, checks that every row it reported done is stored
   and readable, then reruns it and checks the rerun runs exactly the missing configurations.

Needs the `[ray]` extra. Prints what it measured; exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "modelmeter"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(path: Path, models: list[str]) -> None:
    path.write_text(
        'command = "report"\n'
        f"models = {json.dumps(models)}\n"
        "batches = [1, 2, 4]\n"
        'precisions = ["fp32", "bf16"]\n'
        "[options]\nmeasure = false\ndepth = 0\n")


def _sweep(spec: Path, address: str, db: Path, summary: Path) -> tuple[int, dict, float]:
    start = time.monotonic()
    done = subprocess.run([*CLI, "sweep", str(spec), "--ray", address, "--db", str(db),
                           "--json", str(summary), "--quiet"], capture_output=True, text=True)
    return done.returncode, json.loads(summary.read_text()) if summary.exists() else {}, \
        time.monotonic() - start


def _stored(db: Path) -> dict[str, dict]:
    """config_hash -> the stored report, every row parsed (a corrupt one raises)."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT config_hash, report FROM runs").fetchall()
    finally:
        conn.close()
    return {h: json.loads(r) for h, r in rows}


def _ray_task_workers() -> list[int]:
    """Pids of Ray worker processes running a task now (their title is `ray::<function>`)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "ray::" in line and "ray::IDLE" not in line]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="gpt2,bert-base,mobilenet-v2,resnet50")
    models = parser.parse_args().models.split(",")
    work = Path(tempfile.mkdtemp(prefix="mmrs"))
    port = _free_port()
    ray = subprocess.Popen(["ray", "start", "--head", "--block", "--num-cpus=2", "--num-gpus=0",
                            f"--port={port}", "--include-dashboard=false", "--disable-usage-stats",
                            f"--temp-dir={work / 'r'}", "--object-store-memory=100000000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    failures: list[str] = []
    try:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(3)
        spec = work / "grid.toml"
        _spec(spec, models)

        # 1. the whole grid
        db = work / "runs.sqlite"
        code, summary, wall = _sweep(spec, address, db, work / "s1.json")
        stored = _stored(db)
        print(f"sweep 1: exit {code}, done {summary.get('done')}, failed {summary.get('failed')}, "
              f"{len(stored)} rows stored, {wall:.1f} s wall")
        if len(stored) != 24 or code != 0:
            failures.append(f"sweep 1 stored {len(stored)} rows (exit {code})")
        by_model: dict[tuple[str, str, int], dict] = {}
        for report in stored.values():
            s = report["settings"]
            by_model[(report["model"]["name"], s["dtype"], s["batch"])] = report["totals"]
        for model in models:
            direct = subprocess.run([*CLI, "report", model, "--no-measure", "--depth", "0", "--batch", "2",
                                     "--dtype", "bf16", "--json", "-"], capture_output=True, text=True)
            alone = json.loads(direct.stdout)
            swept = by_model.get((alone["model"]["name"], "bf16", 2))
            same = swept is not None and all(swept[k] == alone["totals"][k]
                                             for k in ("macs", "flops", "params"))
            scale = all(by_model[(alone["model"]["name"], d, b)]["macs"]
                        == by_model[(alone["model"]["name"], d, 1)]["macs"] * b
                        for d in ("fp32", "bf16") for b in (1, 2, 4)
                        if (alone["model"]["name"], d, b) in by_model)
            print(f"  {model}: stored bf16 batch 2 equals the command run alone: {same}; "
                  f"MACs scale with batch: {scale}")
            if not same:
                failures.append(f"{model}: stored row differs from the direct run")

        # 2. a killed worker
        db2 = work / "runs2.sqlite"
        sweep = subprocess.Popen([*CLI, "sweep", str(spec), "--ray", address, "--db", str(db2),
                                  "--json", str(work / "s2.json"), "--quiet"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed = None
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and sweep.poll() is None:
            time.sleep(1)
            if db2.exists() and len(_stored(db2)) >= 3:
                pids = _ray_task_workers()
                if pids:
                    killed = pids[0]
                    os.kill(killed, signal.SIGKILL)
        sweep.communicate(timeout=900)
        summary2 = json.loads((work / "s2.json").read_text())
        stored2 = _stored(db2)  # every row parses: none is corrupt
        done_rows = [r for r in summary2["rows"] if r["status"] == "done"]
        lost = [r for r in done_rows if r["config_hash"] not in stored2]
        print(f"sweep 2: killed worker pid {killed}; done {summary2['done']}, failed {summary2['failed']}, "
              f"{len(stored2)} rows stored, {len(lost)} finished rows lost")
        for r in summary2["rows"]:
            if r["status"] == "failed":
                print(f"  failed: {r['error']}")
        if killed is None or lost:
            failures.append(f"kill test: killed {killed}, lost {len(lost)}")
        code3, summary3, wall3 = _sweep(spec, address, db2, work / "s3.json")
        print(f"rerun: exit {code3}, done {summary3.get('done')}, skipped {summary3.get('skipped')}, "
              f"{len(_stored(db2))} rows stored, {wall3:.1f} s wall")
        if summary3.get("done") != 24 - len(stored2) or len(_stored(db2)) != 24:
            failures.append("the rerun did not run exactly the missing configurations")
    finally:
        ray.send_signal(signal.SIGTERM)
        ray.wait(timeout=60)
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
