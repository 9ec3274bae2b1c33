"""`modelmeter count model.onnx`: an ONNX graph counted like the module it was exported from.

A model with a convolution, a depthwise strided convolution, a transposed
convolution, linears, a LayerNorm, GELU and an attention written as two matmuls
is exported with torch.onnx (both exporters) and counted through the CLI: MACs
must equal the aten count exactly and PyTorch's FlopCounterMode, parameters the
module's. Hand-built graphs check the formulas torch does not emit (Gemm with
transB, conv attributes) against closed forms, and an op without a formula is
listed as uncounted.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import modelmeter

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None, reason='onnx not installed (pip install "modelmeter[onnx]")')
needs_onnxscript = pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None,
    reason="torch.onnx's torch.export-based exporter needs onnxscript")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, stride=2, padding=2, dilation=2, groups=16)
        self.up = torch.nn.ConvTranspose2d(16, 8, 2, stride=2, groups=2)
        self.proj = torch.nn.Linear(8, 32)
        self.norm = torch.nn.LayerNorm(32)
        self.q = torch.nn.Linear(32, 32)
        self.k = torch.nn.Linear(32, 32)
        self.v = torch.nn.Linear(32, 24)
        self.head = torch.nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        x = self.up(self.dw(x))  # [B, 8, 8, 8]
        x = x.flatten(2).transpose(1, 2)  # [B, 64 tokens, 8]
        x = self.norm(torch.nn.functional.gelu(self.proj(x)))
        q, k, v = self.q(x), self.k(x), self.v(x)
        attn = torch.softmax(q @ k.transpose(1, 2) / 32 ** 0.5, dim=-1)
        return self.head(attn @ v)


def _export(path: Path, dynamo: bool, batch: int = 2, **options) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(batch, 3, 8, 8)
    torch.onnx.export(model, (x,), str(path), dynamo=dynamo, **options)
    return model, x


def _count_cli(run_main, *args: str) -> dict:
    code, out, err = run_main("count", *args, "--json", "-")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("dynamo", [pytest.param(True, marks=needs_onnxscript), False],
                         ids=["torch.export-exporter", "torchscript-exporter"])
def test_onnx_count_equals_the_aten_count(run_main, tmp_path: Path, dynamo: bool) -> None:
    path = tmp_path / "net.onnx"
    model, x = _export(path, dynamo)
    aten = modelmeter.count(model, (x,)).to_dict()
    with FlopCounterMode(display=False) as counter:
        model(x)
    report = _count_cli(run_main, str(path))
    t = report["totals"]
    assert t["macs"] == aten["totals"]["macs"] == counter.get_total_flops() // 2
    assert t["params"] == aten["totals"]["params"] == sum(p.numel() for p in model.parameters())
    assert report["uncounted_ops"] == [] and t["coverage"] == 1.0
    assert report["model"]["kind"] == "onnx" and report["settings"]["inputs"][0]["shape"] == [2, 3, 8, 8]
    # Per module, from the exporter's scopes (metadata) or node names (/conv/Conv).
    by_path = {m["path"]: m for m in report["modules"]}
    aten_by_path = {m["path"]: m for m in aten["modules"]}
    for name in ("conv", "dw", "up", "proj", "q", "k", "v", "head"):
        assert by_path[name]["macs"] == aten_by_path[name]["macs"], name
        assert by_path[name]["params"] == aten_by_path[name]["params"], name
    assert by_path[""]["macs"] == t["macs"]
    # The ONNX-only keys (model.path, settings.inputs[].name) are in the JSON contract.
    jsonschema = pytest.importorskip("jsonschema")
    from modelmeter.core.schema import load_schema

    jsonschema.Draft202012Validator(load_schema()).validate(report)


def test_conv_output_shapes_follow_the_onnx_attributes() -> None:
    """The fallback when shape inference leaves a conv's output unknown, against torch."""
    from modelmeter.count.onnx_ops import conv_output

    x = torch.randn(1, 4, 17, 12)
    conv = torch.nn.Conv2d(4, 6, (3, 5), stride=(2, 3), padding=(1, 2), dilation=(2, 1), groups=2)
    attrs = {"strides": [2, 3], "pads": [1, 2, 1, 2], "dilations": [2, 1], "group": 2}
    assert conv_output(tuple(x.shape), tuple(conv.weight.shape), attrs, False) == tuple(conv(x).shape)
    up = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1], "group": 2}
    assert conv_output(tuple(x.shape), tuple(up.weight.shape), attrs, True) == tuple(up(x).shape)
    same = {"strides": [2, 2], "auto_pad": "SAME_UPPER"}
    assert conv_output((1, 4, 17, 12), (6, 4, 3, 3), same, False) == (1, 6, 9, 6)


def _hand_built(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(torch.randn(20, 48).numpy(), "w")  # Gemm B with transB: [N, K]
    b = numpy_helper.from_array(torch.randn(20).numpy(), "b")
    kern = numpy_helper.from_array(torch.randn(8, 2, 3, 3).numpy(), "kern")
    nodes = [
        helper.make_node("Conv", ["img", "kern"], ["feat"], strides=[2, 2], pads=[1, 1, 1, 1],
                         dilations=[1, 1], group=2, name="/block/conv/Conv"),
        helper.make_node("Flatten", ["feat"], ["flat"], axis=1, name="/block/Flatten"),
        helper.make_node("Gemm", ["flat2", "w", "b"], ["y"], transB=1, name="/fc/Gemm"),
        helper.make_node("Det", ["sq"], ["det"], name="/det/Det"),
    ]
    graph = helper.make_graph(
        nodes, "hand",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["batch", 4, 8, 8]),
         helper.make_tensor_value_info("flat2", TensorProto.FLOAT, ["batch", 48]),
         helper.make_tensor_value_info("sq", TensorProto.FLOAT, ["batch", 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("det", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("flat", TensorProto.FLOAT, None)],
        initializer=[w, b, kern],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_hand_built_graph_closed_forms_and_uncounted_ops(run_main, tmp_path: Path) -> None:
    path = tmp_path / "hand.onnx"
    _hand_built(path)
    # Symbolic batch: one line asking for the shapes.
    code, _, err = run_main("count", str(path))
    assert code == 2 and err.count("\n") == 1 and "--input" in err and "batch" in err, err
    report = _count_cli(run_main, str(path), "--input", "3x4x8x8", "--input", "3x48",
                        "--input", "3x5x5")
    t = report["totals"]
    conv = 3 * 8 * 4 * 4 * 2 * 3 * 3  # out [3, 8, 4, 4] x C_in/groups x kernel
    gemm = 3 * 48 * 20  # M x K x N, B transposed
    assert t["macs"] == conv + gemm
    assert t["params"] == 20 * 48 + 20 + 8 * 2 * 3 * 3
    assert report["uncounted_ops"] == [{"op": "Det", "count": 1, "estimated_flops": 75}]
    assert t["call_coverage"] == pytest.approx(2 / 3)
    by_path = {m["path"]: m for m in report["modules"]}
    assert by_path["block.conv"]["macs"] == by_path["block"]["macs"] == conv
    assert by_path["fc"]["macs"] == gemm and by_path["fc"]["params"] == 20 * 48 + 20
    # --batch sets dim 0 of every input.
    assert _count_cli(run_main, str(path), "--batch", "6")["totals"]["macs"] == 2 * (conv + gemm)


def test_quantised_conv_counts_its_weight_at_input_3(run_main, tmp_path: Path) -> None:
    # QLinearConv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point):
    # the weight is input 3, not 1 (a scale); MACs as a Conv of the same shapes.
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def scalar(name, value, dtype):
        return numpy_helper.from_array(np.array(value, dtype=dtype), name)

    kern = numpy_helper.from_array(np.ones((6, 3, 3, 3), dtype=np.int8), "kern")
    graph = helper.make_graph(
        [helper.make_node("QLinearConv", ["x", "xs", "xz", "kern", "ws", "wz", "ys", "yz"], ["y"],
                          pads=[1, 1, 1, 1], strides=[1, 1], name="/q/QLinearConv")],
        "q", [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        initializer=[kern, scalar("xs", 0.1, np.float32), scalar("xz", 0, np.uint8),
                     scalar("ws", 0.1, np.float32), scalar("wz", 0, np.int8),
                     scalar("ys", 0.1, np.float32), scalar("yz", 0, np.uint8)],
    )
    path = tmp_path / "qconv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    report = _count_cli(run_main, str(path))
    assert report["totals"]["macs"] == 2 * 6 * 10 * 10 * 3 * 3 * 3  # out [2, 6, 10, 10] x C_in x 3 x 3
    assert report["uncounted_ops"] == []


def test_terminal_table_and_bad_files(run_main, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hand.onnx"
    _hand_built(path)
    code, out, err = run_main("count", str(path), "--batch", "1")
    assert code == 0, err
    assert "uncounted ops" in out and "Det" in out and "block" in out
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf \xff\xfe")
    for args, fragment in (([str(junk)], "not a readable ONNX model"),
                           ([str(tmp_path / "none.onnx")], "no such ONNX file"),
                           ([str(path), "--batch", "1", "--dtype", "fp16"], "--dtype cannot apply"),
                           ([str(path), "--input", "1x4x8x8"], "takes 3 input(s)")):
        code, _, err = run_main("count", *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and fragment in lines[0], (args, err)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real(name, *a))
    code, _, err = run_main("count", str(path), "--batch", "1")
    assert code == 2 and 'pip install "modelmeter[onnx]"' in err and err.count("\n") == 1, err


def test_an_input_shape_that_does_not_fit_the_graph_is_one_line(run_main, tmp_path: Path) -> None:
    # x[N, 64] @ W[64, 32]: --input 4x65 let shape inference give up quietly, and the count read
    # 0 MACs with MatMul "uncounted" (exit 0) -- a CI gate would have recorded zero work.
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((64, 32), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert _count_cli(run_main, str(path), "--input", "4x64")["totals"]["macs"] == 4 * 64 * 32
    for shape in ("4x65", "4x64x2"):
        code, out, err = run_main("count", str(path), "--input", shape)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (shape, out, err)
        assert "MatMul" in err or "shape" in err, err


@pytest.mark.parametrize("command", ["memory", "roofline", "report"])
def test_other_commands_say_onnx_is_for_count(run_main, tmp_path: Path, command: str) -> None:
    # They printed "unknown model 'hand.onnx'. Shipped presets: ..." for a file that exists.
    path = tmp_path / "hand.onnx"
    _hand_built(path)
    extra = ["--hardware", "h100-sxm"] if command == "roofline" else ["--no-measure"] if command == "report" else []
    code, _, err = run_main(command, str(path), *extra)
    assert code == 2 and err.count("\n") == 1, err
    assert "only `modelmeter count`" in err and "unknown model" not in err, err


def test_options_that_cannot_apply_to_an_onnx_file_are_errors(run_main, tmp_path: Path) -> None:
    path = tmp_path / "hand.onnx"
    _hand_built(path)
    code, _, err = run_main("count", str(path), "--batch", "2", "--device", "cpu")
    assert code == 2 and "--device" in err and err.count("\n") == 1, err
