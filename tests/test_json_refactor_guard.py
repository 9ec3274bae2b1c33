"""Refactoring guard (temporary): the typed count parts write the same JSON, byte for byte.

This is NOT a correctness test: it compares our own output with our own output, the
base commit's code (extracted with `git archive`) against this tree's, run side by
side in two child processes on the same real models (gpt2 and a tiny Sequential
through count/memory/roofline/report --no-measure/llm, a mixture-of-experts decoder
built from its config, an ONNX graph). It proves that deriving the JSON from
`pipeline/count_parts.py` instead of hand-built dicts changed no key, order or value.
Once intended changes to the numbers land, base and tree differ on purpose, so the
guard is deleted in the commit after the one that ran it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = "1589e20"  # the commit this refactoring started from
CHILD = Path(__file__).with_name("_json_guard_child.py")
MIXTRAL = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 256,
    "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2,
    "max_position_embeddings": 256, "torch_dtype": "float32",
}


def _base_src(tmp: Path) -> Path:
    archive = tmp / "base.tar"
    try:
        with archive.open("wb") as f:
            subprocess.run(["git", "-C", str(ROOT), "archive", BASE, "src"], stdout=f, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the base commit {BASE} is not available here ({exc})")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp / "base-src", filter="data")
    return tmp / "base-src" / "src"


def _onnx(path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="the ONNX row needs the onnx package")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((16, 8), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.slow
def test_the_typed_parts_write_the_json_the_hand_built_dicts_wrote(tmp_path: Path) -> None:
    base_src = _base_src(tmp_path)
    (tmp_path / "mixtral").mkdir()
    (tmp_path / "mixtral" / "config.json").write_text(json.dumps(MIXTRAL))
    _onnx(tmp_path / "g.onnx")
    outputs = {}
    for label, src in (("base", base_src), ("tree", ROOT / "src")):
        out = tmp_path / label
        out.mkdir()
        env = {**os.environ, "PYTHONPATH": str(src)}
        subprocess.run([sys.executable, str(CHILD), str(out), str(tmp_path / "mixtral"), str(tmp_path / "g.onnx")],
                       env=env, check=True, timeout=900)
        outputs[label] = {p.name: p.read_bytes() for p in sorted(out.glob("*.json"))}
    assert len(outputs["tree"]) == 10 and outputs["base"].keys() == outputs["tree"].keys()
    for name, data in outputs["base"].items():
        assert data == outputs["tree"][name], name
    # The documents exercise the optional keys: experts/top_k, routing, an ONNX model's path.
    moe = json.loads(outputs["tree"]["count_mixtral.json"])
    assert moe["settings"]["routing"] and any("experts" in m for m in moe["modules"])
    assert json.loads(outputs["tree"]["count_onnx.json"])["model"]["path"].endswith("g.onnx")
