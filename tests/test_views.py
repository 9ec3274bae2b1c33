"""The views users know from torchinfo and fvcore, on real models.

Shapes per module (torchinfo's input/output sizes), totals by aten operator
(fvcore's `by_operator`, FlopCounterMode's per-op breakdown), the compact
`str`/`repr` of results, and the inputs each command traced. Expected shapes
are derived by hand from the architectures; per-op FLOPs are checked against
PyTorch's own FlopCounterMode.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import modelmeter

# ------------------------------------------------------------------ shapes per module


def _rows(report) -> dict[str, dict]:
    return {m["path"]: m for m in report.to_dict()["modules"]}


def test_resnet50_stage_shapes_are_the_architectures():
    rows = _rows(modelmeter.count("resnet50", batch=2))
    # Stem: 224 -> /2 conv -> 112, /2 max-pool -> 56, 64 channels.
    assert rows["resnet.embedder.embedder.convolution"]["output_shapes"] == [[2, 64, 112, 112]]
    assert rows["resnet.embedder"]["output_shapes"] == [[2, 64, 56, 56]]
    # Bottleneck stages: 4x expansion of 64/128/256/512, stride 2 from the second stage on.
    expected = {0: [2, 256, 56, 56], 1: [2, 512, 28, 28], 2: [2, 1024, 14, 14], 3: [2, 2048, 7, 7]}
    for stage, shape in expected.items():
        assert rows[f"resnet.encoder.stages.{stage}"]["output_shapes"] == [shape]
    assert rows["resnet.encoder.stages.1"]["input_shapes"] == [[2, 256, 56, 56]]
    assert rows["classifier"]["input_shapes"] == [[2, 2048, 1, 1]]
    assert rows["classifier"]["output_shapes"] == [[2, 1000]]
    assert rows["classifier"]["output_dtypes"] == ["float32"]
    # The root takes the traced input and returns the logits (a ModelOutput, flattened).
    assert rows[""]["input_shapes"] == [[2, 3, 224, 224]]
    assert rows[""]["output_shapes"] == [[2, 1000]]


def test_bert_layer_shapes_dtypes_and_nested_model_output():
    rows = _rows(modelmeter.count("bert-base", seq=8))
    assert rows["embeddings.word_embeddings"]["input_shapes"] == [[1, 8]]
    assert rows["embeddings.word_embeddings"]["input_dtypes"] == ["int64"]  # token ids
    assert rows["embeddings.word_embeddings"]["output_dtypes"] == ["float32"]
    for i in range(12):
        assert rows[f"encoder.layer.{i}"]["output_shapes"] == [[1, 8, 768]]
    assert rows["encoder.layer.0.intermediate.dense"]["output_shapes"] == [[1, 8, 3072]]  # 4 x 768
    # BertModel returns last_hidden_state and pooler_output in one ModelOutput: both, in order.
    assert rows[""]["output_shapes"] == [[1, 8, 768], [1, 768]]
    assert rows[""]["output_dtypes"] == ["float32", "float32"]
    # A container that is never called itself has no shapes.
    assert rows["encoder.layer"]["input_shapes"] == rows["encoder.layer"]["output_shapes"] == []


KEYWORD_MODEL = """
import torch

class Inner(torch.nn.Module):
    def forward(self, x, *, pair=None, scale=2.0):
        return {"sum": x + pair[0], "both": (pair[1].to(torch.float16), x.long())}

class Outer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 6)
        self.inner = Inner()

    def forward(self, x):
        h = self.proj(x)
        return self.inner(h, pair=(h * 2, h[:, :3]), scale=3.0)

def build():
    return Outer(), (torch.randn(5, 4),)
"""


def test_keyword_and_nested_tensors_are_flattened_in_order(tmp_path, monkeypatch):
    (tmp_path / "kwmodel.py").write_text(KEYWORD_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = _rows(modelmeter.count("kwmodel:build"))
    inner = rows["inner"]
    # Positional x, then the keyword tuple's two tensors (scale is no tensor).
    assert inner["input_shapes"] == [[5, 6], [5, 6], [5, 3]]
    # A dict holding a tensor and a tuple: walked in order, dtypes kept.
    assert inner["output_shapes"] == [[5, 6], [5, 3], [5, 6]]
    assert inner["output_dtypes"] == ["float32", "float16", "int64"]
    assert rows["proj"]["input_shapes"] == [[5, 4]]


def test_tracing_leaves_torchs_global_hook_tables_as_it_found_them():
    from torch.nn.modules import module

    tables = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_forward_hooks_with_kwargs",
              "_global_forward_hooks_always_called")
    before = {name: dict(getattr(module, name)) for name in tables}
    modelmeter.count("bert-base", seq=8)
    assert {name: dict(getattr(module, name)) for name in tables} == before


def test_count_table_shows_shapes_like_torchinfo(run_main):
    code, out, err = run_main("count", "resnet50", "--depth", "4")
    assert code == 0, err
    assert "input shape" in out and "output shape" in out
    assert "[1, 256, 56, 56]" in out and "[1, 2048, 7, 7]" in out
    code, out, err = run_main("count", "gpt2", "--seq", "8", "--depth", "2")
    assert code == 0, err
    # Token ids are no float: their dtype is named; a block's hidden state is not.
    assert "[1, 8] int64" in out
    assert "[1, 8, 768]" in out and "[1, 8, 768] float32" not in out


def test_count_json_carries_shapes_per_module(run_main):
    code, out, err = run_main("count", "gpt2", "--seq", "8", "--json", "-")
    assert code == 0, err
    rows = {m["path"]: m for m in json.loads(out)["modules"]}
    assert rows["transformer.h.0"]["input_shapes"][0] == [1, 8, 768]
    assert rows["transformer.h.0.mlp.c_fc"]["output_shapes"] == [[1, 8, 3072]]
    assert rows["lm_head"]["output_shapes"] == [[1, 8, 50257]]


# ------------------------------------------------------------------ per operator


def test_by_operator_columns_sum_to_the_totals():
    totals = modelmeter.count("gpt2", seq=8).to_dict()["totals"]
    rows = totals["by_operator"]
    assert len({r["op"] for r in rows}) == len(rows)
    for key in ("macs", "flops", "other_flops", "bytes_read", "bytes_written"):
        assert sum(r[key] for r in rows) == totals[key], key
    assert sum(r["share_of_total_flops"] for r in rows) == pytest.approx(1.0)
    # Most FLOPs first: the MLP and projection matmuls (addmm), then the tied LM head (mm).
    assert [r["op"] for r in rows[:2]] == ["aten.addmm.default", "aten.mm.default"]
    assert rows[0]["calls"] == 48  # 12 blocks x (qkv, out proj, fc, proj)
    assert rows[1]["flops"] == 2 * 8 * 768 * 50257  # seq x hidden x vocab
    flops = [r["flops"] + r["other_flops"] for r in rows]
    assert flops == sorted(flops, reverse=True)


def test_by_operator_matches_flop_counter_mode_per_op():
    analysis = modelmeter.analyse("resnet50")
    rows = modelmeter.count("resnet50").to_dict()["totals"]["by_operator"]
    ours: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["category"] == "contraction":
            ours[r["op"].rsplit(".", 1)[0]] += r["flops"]
    loaded = analysis.loaded
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        loaded.module(*loaded.args, **loaded.kwargs)
    theirs = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    # FlopCounterMode counts ResNet's convolutions and the classifier's addmm, nothing else.
    assert theirs == dict(ours)
    assert theirs["aten.convolution"] == 8_174_272_512
    assert sum(theirs.values()) == sum(r["flops"] for r in rows)


def test_count_by_op_prints_the_operator_table(run_main):
    code, out, err = run_main("count", "resnet50", "--by", "op")
    assert code == 0, err
    assert "per operator" in out and "per module" not in out
    line = next(ln for ln in out.splitlines() if "aten.convolution.default" in ln)
    assert "53" in line and "98.8%" in line  # 53 convolutions, 98.8 % of all FLOPs
    code, _, err = run_main("count", "resnet50", "--by", "layer")
    assert code == 2 and "layer" in err



# ------------------------------------------------------------------ str / repr


TINY = """
import torch

def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)), \\
        (torch.randn(2, 16),)
"""


def test_report_repr_is_a_compact_summary_and_the_dict_stays_whole():
    report = modelmeter.memory("gpt2", seq=8)
    data = report.to_dict()
    text = repr(report)
    assert str(report) == text
    assert len(text) < 1000 < len(str(data))  # the dataclass repr printed every module row
    assert text.startswith("modelmeter Report: gpt2")
    assert "input_ids [1, 8] int64" in text
    assert "124 M" in text  # parameters
    assert "989 M MACs" in text and "1.98 G FLOPs" in text  # 12 x 8 x 7.08 M + 8 x 768 x 50257
    assert "activations" in text  # the peak memory line
    assert ".to_dict()" in text  # says where the rest is
    assert data["totals"]["macs"] == 989_435_904


def test_roofline_and_bench_reprs_carry_their_latency(tmp_path, monkeypatch):
    roofline = repr(modelmeter.roofline("bert-base", seq=8, hardware="h100-sxm"))
    assert "predicted on h100-sxm" in roofline and len(roofline) < 1000
    (tmp_path / "tinyrepr.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    bench = modelmeter.bench("tinyrepr:build", min_time_s=0.02, min_iters=2, warmup_s=0.0)
    text = repr(bench)
    p50 = bench.to_dict()["measured"]["latency_s"]["p50"]
    assert "p50 at batch 2 on cpu" in text and len(text) < 1000
    assert p50 > 0


TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}


def test_llm_repr_is_short(tmp_path):
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    llm = modelmeter.llm(str(folder), hardware="h100-sxm", prompt=16, gen=4, batches=[1, 4])
    text = repr(llm)
    assert len(text) < 1000 < len(str(llm.to_dict()))
    assert "batch 1:" in text and "batch 4:" in text and "TTFT" in text and "TPOT" in text


def test_compare_repr_is_short():
    comparison = modelmeter.compare(["resnet50", "mobilenet-v2"])
    text = repr(comparison)
    assert text.startswith("modelmeter Comparison: resnet50 vs mobilenet-v2") and len(text) < 1500
    assert "25.6 M | 3.51 M" in text  # published parameter counts


# ------------------------------------------------------------------ the inputs traced


@pytest.mark.parametrize("command, args, line", [
    ("count", ("gpt2", "--seq", "8", "--batch", "2", "--depth", "0"),
     "inputs traced: input_ids [2, 8] int64 (preset default, --batch 2, --seq 8)"),
    ("count", ("bert-base", "--input", "1x12:int64", "--depth", "0"),
     "inputs traced: input_ids [1, 12] int64 (given (--input))"),
    ("memory", ("resnet50", "--depth", "0"),
     "inputs traced: pixel_values [1, 3, 224, 224] float32 (preset default)"),
    ("roofline", ("gpt2", "--seq", "8", "--hardware", "h100-sxm", "--depth", "0"),
     "inputs traced: input_ids [1, 8] int64 (preset default, --seq 8)"),
])
def test_commands_print_the_inputs_they_traced(run_main, command, args, line):
    code, out, err = run_main(command, *args)
    assert code == 0, err
    assert out.splitlines()[0] == line


def test_inputs_from_a_config_folder_and_a_factory(run_main, tmp_path, monkeypatch):
    folder = tmp_path / "tiny-vit"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["ViTForImageClassification"], "model_type": "vit", "image_size": 32,
        "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "num_labels": 3}))
    code, out, err = run_main("count", str(folder), "--json", "-")
    assert code == 0, err
    settings = json.loads(out)["settings"]
    assert settings["inputs"] == [{"name": "pixel_values", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert settings["inputs_from"] == "the config's image size (32)"
    (tmp_path / "tinyinputs.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run_main("count", "tinyinputs:build", "--depth", "0")
    assert code == 0, err
    assert out.splitlines()[0] == "inputs traced: [2, 16] float32 (the factory's example inputs)"


def test_models_lists_default_inputs(run_main):
    code, out, err = run_main("models")
    assert code == 0, err
    assert "default inputs" in out
    assert "1x3x224x224" in next(ln for ln in out.splitlines() if "resnet50" in ln)
    assert "1x128:int64" in next(ln for ln in out.splitlines() if " gpt2 " in ln)
    code, out, err = run_main("models", "--json", "-")
    rows = {r["name"]: r for r in json.loads(out)["presets"]}
    assert rows["vit-base"]["inputs"] == ["1x3x224x224"]
    # The default the table lists is the one a count traces.
    code, out, err = run_main("count", "tinyllama", "--json", "-")
    assert json.loads(out)["settings"]["inputs"][0]["shape"] == [1, 128]
