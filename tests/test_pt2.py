"""`.pt2` archives: nothing in the file can run code, and a genuine exported program measures exactly.

Each malicious archive below is a genuine `torch.export.save` file with one trick
applied; the payload writes a marker file when unpickled or evaluated. The tricks
that run code under a plain `torch.export.load` are shown to do so (in a child
process), so the refusal tests cannot pass by accident.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import sympy
import torch

from modelmeter.core.errors import UserInputError
from modelmeter.sources import resolve_model

ORIGINALS = {
    "pickle.loads": pickle.loads, "pickle.load": pickle.load, "pickle.Unpickler": pickle.Unpickler,
    "torch.load": torch.load, "torch.serialization.load": torch.serialization.load,
    "torch._C._pickle_load_obj": torch._C._pickle_load_obj,
    "torch._C._aoti.AOTIModelPackageLoader": torch._C._aoti.AOTIModelPackageLoader,
    "sympy.sympify": sympy.sympify,
}


def _current() -> dict[str, object]:
    return {
        "pickle.loads": pickle.loads, "pickle.load": pickle.load, "pickle.Unpickler": pickle.Unpickler,
        "torch.load": torch.load, "torch.serialization.load": torch.serialization.load,
        "torch._C._pickle_load_obj": torch._C._pickle_load_obj,
        "torch._C._aoti.AOTIModelPackageLoader": torch._C._aoti.AOTIModelPackageLoader,
        "sympy.sympify": sympy.sympify,
    }


# ------------------------------------------------------------------ a genuine program

N, C_IN, C, H, W, OUT = 2, 3, 8, 8, 8, 4


class Net(torch.nn.Module):
    """conv 3x3 -> depthwise conv 3x3 -> global mean -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(C_IN, C, 3, padding=1)
        self.dw = torch.nn.Conv2d(C, C, 3, padding=1, groups=C)
        self.fc = torch.nn.Linear(C, OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dw(self.conv(x)).mean((2, 3)))


def _closed_form_macs() -> int:
    conv = N * C * H * W * (C_IN * 3 * 3)  # every output element: C_IN*k*k products
    dw = N * C * H * W * (3 * 3)           # depthwise: one input channel per output
    fc = N * C * OUT
    return conv + dw + fc


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "net.pt2"
    torch.manual_seed(0)
    torch.export.save(torch.export.export(Net(), (torch.randn(N, C_IN, H, W),)), str(path))
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODELMETER_DEBUG": ""}
    return subprocess.run([sys.executable, "-m", "modelmeter.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ crafting archives


class Payload:
    """Unpickling this writes `marker`: what an attacker's pickle would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('ran')",))


def rewrite(src: Path, dst: Path, edit: Callable[[str, bytes], bytes | None] | None = None,
            after: list[tuple[str, bytes]] = ()) -> None:
    """Copy a .pt2 with records edited (None drops one) and extra records appended."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            data = zin.read(info)
            data = edit(info.filename[len(root) + 1:], data) if edit else data
            if data is not None:
                zout.writestr(info, data)
        for name, data in after:
            zout.writestr(f"{root}/{name}", data)


CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
WEIGHTS_CONFIG = "data/weights/model_weights_config.json"


def case_collision(src: Path, dst: Path, marker: Path) -> None:
    # The exploit: a benign `...config.json` for a case-sensitive reader and,
    # found by torch's case-insensitive lookup in this order, a `.JSON` declaring an
    # opaque (pickled) constant.
    evil = {"config": {"evil": {"path_name": "opaque_obj_0", "is_param": False,
                                "use_pickle": True, "tensor_meta": None}}}
    rewrite(src, dst, lambda n, d: None if n == CONSTANTS_CONFIG else d,
            after=[(CONSTANTS_CONFIG.replace(".json", ".JSON"), json.dumps(evil).encode()),
                    (CONSTANTS_CONFIG, b'{"config": {}}'),
                    ("data/constants/opaque_obj_0", pickle.dumps(Payload(marker)))])


def pickled_weight(src: Path, dst: Path, marker: Path) -> None:
    # A weight declared `use_pickle`: torch.load(weights_only=False).
    def edit(name: str, data: bytes) -> bytes:
        if name == WEIGHTS_CONFIG:
            config = json.loads(data)
            config["config"]["conv.weight"]["use_pickle"] = True
            return json.dumps(config).encode()
        return pickle.dumps(Payload(marker)) if name == "data/weights/weight_0" else data
    rewrite(src, dst, edit)


def pickled_sample_inputs(src: Path, dst: Path, marker: Path) -> None:
    # The sample inputs are a torch.save file; torch retries a failed weights-only
    # load with weights_only=False. Nothing in any config says so.
    rewrite(src, dst, lambda n, d: pickle.dumps(Payload(marker)) if n == "data/sample_inputs/model.pt" else d)


def legacy_weights(src: Path, dst: Path, marker: Path) -> None:
    # `data/weights/<model>.pt` makes torch ignore the weights config and unpickle it.
    rewrite(src, dst, after=[("data/weights/model.pt", pickle.dumps(Payload(marker)))])


def sympy_expression(src: Path, dst: Path, marker: Path) -> None:
    # Symbolic sizes are parsed with sympy.sympify, which is eval().
    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    dynamic = dst.with_suffix(".dynamic.pt2")
    program = torch.export.export(Double(), (torch.randn(4, 3),),
                                  dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, str(dynamic))
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran') or "

    def edit(name: str, data: bytes) -> bytes:
        if name != "models/model.json":
            return data
        text = data.decode()
        assert '"expr_str": "Symbol(' in text
        return text.replace('"expr_str": "Symbol(', f'"expr_str": "{code}Symbol(').encode()
    rewrite(dynamic, dst, edit)


def custom_object(src: Path, dst: Path, marker: Path) -> None:
    # A TorchScript custom object: torch._C._pickle_load_obj.
    config = {"config": {"obj": {"path_name": "custom_obj_0", "is_param": False,
                                 "use_pickle": True, "tensor_meta": None}}}
    rewrite(src, dst, lambda n, d: json.dumps(config).encode() if n == CONSTANTS_CONFIG else d,
            after=[("data/constants/custom_obj_0", pickle.dumps(Payload(marker)))])


def compiled_code(src: Path, dst: Path, marker: Path) -> None:
    # AOTInductor members are shared libraries that torch.export.load dlopens.
    rewrite(src, dst, after=[("data/aotinductor/model/model.so", b"\x7fELF not really")])


def legacy_zip(src: Path, dst: Path, marker: Path) -> None:
    # The pre-2.8 layout (no archive_format): torch falls back to it and unpickles
    # `serialized_state_dict.pt` with weights_only=False when weights-only fails.
    with zipfile.ZipFile(src) as zin:
        root = zin.namelist()[0].split("/")[0]
        program = zin.read(f"{root}/models/model.json")
    from torch._export.serde.schema import SCHEMA_VERSION
    with zipfile.ZipFile(dst, "w") as zout:
        zout.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        zout.writestr("serialized_exported_program.json", program)
        zout.writestr("serialized_state_dict.pt", pickle.dumps(Payload(marker)))
        zout.writestr("serialized_constants.pt", pickle.dumps(Payload(marker)))
        zout.writestr("serialized_example_inputs.pt", pickle.dumps(Payload(marker)))


TRICKS = [case_collision, pickled_weight, pickled_sample_inputs, legacy_weights, sympy_expression,
          custom_object, compiled_code, legacy_zip]
# These write the marker under a plain torch.export.load (shown below).
RUNS_CODE_IN_PLAIN_TORCH = [case_collision, pickled_weight, pickled_sample_inputs, legacy_weights,
                            sympy_expression, legacy_zip]


@pytest.fixture(scope="module")
def evil(genuine: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """trick name -> (archive, marker it would write)."""
    folder = tmp_path_factory.mktemp("evil")
    made = {}
    for trick in TRICKS:
        archive, marker = folder / f"{trick.__name__}.pt2", folder / f"{trick.__name__}.marker"
        trick(genuine, archive, marker)
        made[trick.__name__] = (archive, marker)
    return made


@pytest.mark.slow
def test_the_tricks_run_code_under_plain_torch(evil: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    names = [t.__name__ for t in RUNS_CODE_IN_PLAIN_TORCH]
    script = (
        "import logging, sys, torch\n"
        "logging.disable(logging.CRITICAL)\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        torch.export.load(path)\n"
        "    except Exception:\n"
        "        pass\n"
    )
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", script,
                           *(str(evil[n][0]) for n in names)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ran = {n for n in names if evil[n][1].exists()}
    for n in names:
        evil[n][1].unlink(missing_ok=True)
    assert ran == set(names)


def test_case_collision_reads_differently_in_torch_and_zipfile(evil: dict[str, tuple[Path, Path]]) -> None:
    archive = evil["case_collision"][0]
    reader = torch._C.PyTorchFileReader(str(archive))
    with zipfile.ZipFile(archive) as z:
        plain = z.read(f"{z.namelist()[0].split('/')[0]}/{CONSTANTS_CONFIG}")
    assert plain == b'{"config": {}}' and b"opaque_obj_0" in reader.get_record(CONSTANTS_CONFIG)


@pytest.mark.parametrize("trick", [t.__name__ for t in TRICKS])
@pytest.mark.slow
def test_malicious_archive_is_refused_in_one_line(trick: str, evil: dict[str, tuple[Path, Path]],
                                                  tmp_path: Path) -> None:
    archive, marker = evil[trick]
    proc = cli("count", str(archive), cwd=tmp_path)
    assert not marker.exists(), f"{trick}: the archive ran code"
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelmeter: error:"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "--trust-remote-code" not in lines[0]  # no measuring command has that option


def test_loading_leaves_the_process_as_it_was(genuine: Path, evil: dict[str, tuple[Path, Path]]) -> None:
    assert _current() == ORIGINALS
    loggers = {name: logging.getLogger(name).disabled
               for name in ("torch.export", "torch._export.serde.serialize",
                            "torch.export.pt2_archive._package")}
    filters = list(warnings.filters)
    for trick in ("pickled_sample_inputs", "case_collision", "sympy_expression"):
        archive, marker = evil[trick]
        with pytest.raises(UserInputError):
            resolve_model(str(archive))
        assert not marker.exists()
        assert _current() == ORIGINALS
    loaded = resolve_model(str(genuine), device="cpu")
    assert loaded.args[0].shape == (N, C_IN, H, W)
    assert _current() == ORIGINALS
    assert {name: logging.getLogger(name).disabled for name in loggers} == loggers
    assert warnings.filters == filters


def test_unpickling_refuses_during_the_load_even_in_torch(genuine: Path, tmp_path: Path) -> None:
    # The runtime guard alone (the archive passes every static check): the sample
    # inputs hold a pickle that only torch's weights_only=False retry would run.
    archive, marker = tmp_path / "s.pt2", tmp_path / "s.marker"
    pickled_sample_inputs(genuine, archive, marker)
    with pytest.raises(UserInputError, match="unpickle"):
        resolve_model(str(archive))
    assert not marker.exists() and _current() == ORIGINALS


# ------------------------------------------------------------------ genuine programs measure


@pytest.mark.slow
def test_count_is_exact_on_an_exported_program(genuine: Path, tmp_path: Path) -> None:
    proc = cli("count", str(genuine), "--json", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["totals"]["macs"] == _closed_form_macs()
    assert report["totals"]["params"] == sum(p.numel() for p in Net().parameters())


def test_api_count_of_the_archive_is_exact(genuine: Path) -> None:
    from modelmeter import api

    assert api.count(str(genuine)).to_dict()["totals"]["macs"] == _closed_form_macs()
    assert api.count(str(genuine), device="cpu").to_dict()["totals"]["macs"] == _closed_form_macs()


@pytest.mark.parametrize("args", [
    ("memory",),
    ("memory", "--train"),
    ("roofline", "--hardware", "h100-sxm"),
])
@pytest.mark.slow
def test_memory_and_roofline_run_on_an_exported_program(genuine: Path, tmp_path: Path, args: tuple) -> None:
    proc = cli(*args, str(genuine), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_train_memory_counts_the_backward_of_the_module_it_came_from(genuine: Path, tmp_path: Path) -> None:
    from modelmeter import api

    proc = cli("memory", str(genuine), "--train", "--json", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    totals = json.loads(proc.stdout)["totals"]
    assert totals["macs"] == _closed_form_macs()
    # The exported graph differentiates like the nn.Module it was exported from.
    module = api.memory(Net(), torch.randn(N, C_IN, H, W), train=True).to_dict()["totals"]
    assert totals["backward_macs"] == module["backward_macs"] > 0


def test_the_api_measures_a_module_torch_export_loaded(genuine: Path) -> None:
    # torch's own .module() refuses train()/eval(); the trace must not need them.
    from modelmeter import api

    program = torch.export.load(str(genuine))
    args = program.example_inputs[0]
    assert api.count(program.module(), args).to_dict()["totals"]["macs"] == _closed_form_macs()
    trained = api.memory(program.module(), args, train=True).to_dict()["totals"]
    assert trained["backward_macs"] > 0


@pytest.mark.slow
def test_report_and_bench_measure_an_exported_program(genuine: Path, tmp_path: Path) -> None:
    proc = cli("report", str(genuine), "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["totals"]["macs"] == _closed_form_macs()
    proc = cli("bench", str(genuine), "--device", "cpu", "--min-time", "0.05", "--warmup", "0",
               "--malloc", "default", "--json", str(tmp_path / "b.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    measured = json.loads((tmp_path / "b.json").read_text())["measured"]
    assert measured["sweep"][0]["status"] == "ok" and measured["sweep"][0]["batch"] == N


class TwoInputs(torch.nn.Module):
    """Dynamic batch (a derived dim), batch norm, and a lifted tensor constant."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 5)
        self.bn = torch.nn.BatchNorm1d(5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(torch.cat([x, y]))) * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])


@pytest.mark.slow
def test_a_dynamic_shape_program_counts_at_any_batch(tmp_path: Path) -> None:
    # Its sizes are sympy expressions such as "Mul(Integer(2), Symbol('s0', ...))":
    # plain arithmetic, accepted.
    path = tmp_path / "dyn.pt2"
    half = torch.export.Dim("half", min=1, max=32)
    program = torch.export.export(TwoInputs().eval(), (torch.randn(4, 3), torch.randn(8, 3)),
                                  dynamic_shapes=({0: 2 * half}, {0: 4 * half}))
    torch.export.save(program, str(path))
    for rows, args in ((4 + 8, ()), (12 + 24, ("--input", "12x3", "--input", "24x3"))):
        proc = cli("count", str(path), *args, "--json", "-", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["totals"]["macs"] == rows * 3 * 5


@pytest.mark.slow
def test_other_inputs_than_exported_are_one_line(genuine: Path, tmp_path: Path) -> None:
    proc = cli("count", str(genuine), "--input", "1x3x16x16", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("expr", [
    "Symbol('s77', positive=True, integer=True)",
    "Mul(Integer(2), Symbol('s0', positive=True, integer=True))",
    "2*s0*s1*s2*s3 + 4096",
    "FloorDiv(s0 + 63, 64)",
    "Pow(s0, 2)",
    "LessThan(Symbol('u0', integer=True), Integer(12))",
    "Max(1, s0)*9223372036854775807",
])
def test_the_sizes_torch_writes_are_plain_arithmetic(expr: str) -> None:
    from modelmeter.sources.symexpr import is_plain_arithmetic

    assert is_plain_arithmetic(expr)


@pytest.mark.parametrize("expr", [
    "9**9**9**9", "Pow(9, Pow(9, Pow(9, 9)))", "2**257", "s0**(10**100)", "LShift(1, 10**12)",
    "PowByNatural(Integer(10), Integer(1000))", "1" + "0" * 100, "OpaqueUnaryFn_exp(10**6)",
])
def test_a_size_whose_constants_pass_2_to_the_256_is_refused(expr: str) -> None:
    from modelmeter.sources.symexpr import MAX_BITS, is_plain_arithmetic, magnitude_bits

    assert magnitude_bits(expr) > MAX_BITS and not is_plain_arithmetic(expr)
