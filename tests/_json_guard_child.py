"""Child of test_json_refactor_guard: writes each document's JSON with whichever modelmeter
is first on sys.path (the base commit's or this tree's)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import modelmeter


def _tiny() -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.LayerNorm(64),
                                torch.nn.Linear(64, 8))
    return model, (torch.randn(2, 32),)


def main(out: Path, mixtral: str, onnx_file: str) -> None:
    m, x = _tiny()
    docs = {
        "count_gpt2": lambda: modelmeter.count("gpt2", seq=16),
        "count_gpt2_int4": lambda: modelmeter.count("gpt2", seq=16, dtype="int4"),
        "count_tiny": lambda: modelmeter.count(m, x),
        "count_mixtral": lambda: modelmeter.count(mixtral, seq=8),
        "count_onnx": lambda: modelmeter.count(onnx_file),
        "memory_gpt2_train": lambda: modelmeter.memory("gpt2", seq=16, train=True, checkpoint=True),
        "memory_tiny_train": lambda: modelmeter.memory(m, x, train=True),
        "roofline_gpt2": lambda: modelmeter.roofline("gpt2", seq=16, hardware="h100-sxm", weights="int4"),
        "report_tiny": lambda: modelmeter.report(m, x, hardware="h100-sxm", measure=False, environment=False,
                                                 train=True),
        "llm_gpt2": lambda: modelmeter.llm("gpt2", hardware="h100-sxm", prompt=16, gen=4),
    }
    for name, make in docs.items():
        (out / f"{name}.json").write_text(json.dumps(make().to_dict(), indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
