"""Benchmark: the full `modelmeter llm` command for llama3-70b with three batch sizes.

Runs the CLI in-process (as a user would, JSON to a temp file) and prints its
wall time and the process's peak resident memory (ru_maxrss). Everything runs
on the meta device, so a 70 B-parameter model needs no weights.

    python benchmarks/bench_llm.py
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARGS = ["llm", "llama3-70b", "--hardware", "h100-sxm", "--prompt", "1024", "--gen", "256",
        "--batch", "1,8,32", "--weights", "int4", "--max-batch"]


def main() -> None:
    from modelmeter.cli.main import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "llm.json"
        start = time.perf_counter()
        try:
            cli([*ARGS, "--json", str(target)])
        except SystemExit as exc:
            if exc.code:
                raise
        wall = time.perf_counter() - start
        section = json.loads(target.read_text())["llm"]
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    print(f"modelmeter {' '.join(ARGS)}")
    for row in section["batches"]:
        print(f"  batch {row['batch']:>4}: TTFT {row['ttft_s'] * 1e3:8.1f} ms  TPOT {row['tpot_s'] * 1e3:7.2f} ms"
              f"  {row['tokens_per_s']:9.0f} tokens/s  fits {row['fits']}")
    print(f"wall time {wall:.1f} s, peak memory (ru_maxrss) {rss / 2**20:.0f} MiB, "
          f"{section['fit']['traces']} traces")


if __name__ == "__main__":
    main()
