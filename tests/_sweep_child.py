"""Child process for test_sweep: a real sweep that the parent interrupts with SIGINT.

Prints one JSON line per finished row (flushed), then one final summary line.
"""

from __future__ import annotations

import json
import sys

import torch

from modelmeter.measure import throughput_sweep


def main() -> int:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    model.eval()

    def make_call(batch: int):
        x = torch.randn(batch, 64)

        def call() -> None:
            with torch.no_grad():
                model(x)

        return call

    def on_row(row) -> None:
        print(json.dumps({"batch": row.batch, "status": row.status,
                          "throughput_per_s": row.throughput_per_s}), flush=True)

    # Many slow-enough batches, so the parent's SIGINT lands while a batch is being timed.
    result = throughput_sweep(make_call, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
                              min_time_s=float(sys.argv[1]) if len(sys.argv) > 1 else 0.5,
                              min_iters=5, warmup_s=0.0, warmup_iters=1, on_row=on_row)
    print(json.dumps({"final": True, "interrupted": result.interrupted,
                      "rows": [r.status for r in result.rows]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
