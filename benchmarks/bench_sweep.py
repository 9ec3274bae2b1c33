"""A sweep of N analysis configurations against N separate `modelmeter` calls, in the same run.

Goal: ratio < 1. A sweep pays the imports (torch, transformers) once per worker
process, and separate CLI calls pay them once each.

    python benchmarks/bench_sweep.py [N] [WORKERS]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    batches = list(range(1, n + 1))
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "grid.toml"
        spec.write_text(f'command = "report"\nmodels = ["mobilenet-v2"]\nbatches = {batches}\n'
                        '[options]\nmeasure = false\ndepth = 0\n')
        t0 = time.perf_counter()
        for b in batches:
            subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "report", "mobilenet-v2", "--batch",
                            str(b), "--no-measure", "--depth", "0", "--json", f"{tmp}/r{b}.json"],
                           check=True, capture_output=True)
        separate = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "sweep", str(spec), "--db",
                        f"{tmp}/runs.sqlite", "--workers", str(workers), "--quiet"], check=True, capture_output=True)
        swept = time.perf_counter() - t0
    print(f"{n} configurations: separate CLI calls {separate:.2f} s ({separate / n:.2f} s each), "
          f"sweep --workers {workers} {swept:.2f} s ({swept / n:.2f} s each)")
    print(f"ratio sweep/separate = {swept / separate:.3f} (goal < 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
