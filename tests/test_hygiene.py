"""Library calls leave the caller's process as they found it, and record what they did.

Issue 11, section 6: a call such as ``modelmeter.report(m, x)`` must not change
the process for good (C allocator, ``sys.path``, thread count, RNG, ...), and an
option that cannot apply is an error, never silently ignored yet recorded.

The process-state test runs in a child process: the C allocator cannot be put
back once changed (glibc has no getter for ``mallopt``), so a failure there must
not leak into this pytest process.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import modelmeter
from modelmeter import UserInputError

FAST = {"min_time_s": 0.05, "min_iters": 3, "warmup_s": 0.0}

# A factory with its own example inputs (batch 2), as `pkg.module:factory` specs load it.
TINY = """
import torch

def build():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 14 * 14, 10))
    return net, torch.randn(2, 3, 16, 16)
"""


@pytest.fixture(autouse=True)
def no_user_profile(tmp_path_factory, monkeypatch):
    """No calibrated 'local' profile of the user's machine leaks into these tests."""
    monkeypatch.setenv("MODELMETER_HOME", str(tmp_path_factory.mktemp("home")))


def tiny_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 14 * 14, 10))


# ---------------------------------------------------------------- process state, in a child

# Runs each public call and prints, per call, the process state that changed.
# The child's script lives apart from its working directory, so the working
# directory is *not* on sys.path (as under the `modelmeter` console script or
# an IDE), which is when `pkg.module:factory` specs had to add it.
CHILD = r'''
import ctypes, json, logging, os, platform, signal, sys, warnings
import torch
import modelmeter

GLIBC = platform.libc_ver()[0] == "glibc"
if GLIBC:
    libc = ctypes.CDLL("libc.so.6")
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)

def big_block_mmapped():
    """glibc's own behaviour: with its default settings a 64 MiB block is always mmap-ed
    (the adaptive threshold stops at 32 MiB); once mallopt retains memory it is not."""
    if not GLIBC:
        return None
    size = 64 << 20
    before = libc.mallinfo2().hblkhd
    p = libc.malloc(size)
    after = libc.mallinfo2().hblkhd
    libc.free(p)
    return after - before >= size

def state():
    mod = torch.nn.modules.module
    return {
        "sys.path": list(sys.path), "cwd": os.getcwd(), "environ": dict(os.environ),
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "default_dtype": str(torch.get_default_dtype()), "default_device": str(torch.get_default_device()),
        "grad_enabled": torch.is_grad_enabled(), "inference_mode": torch.is_inference_mode_enabled(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "backends": [torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled,
                     torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                     torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                     torch.get_float32_matmul_precision()],
        "torch_rng": torch.get_rng_state().tolist(),
        "global_module_hooks": [len(mod._global_forward_hooks), len(mod._global_forward_pre_hooks),
                                len(mod._global_backward_hooks)],
        "dispatch_modes": torch._C._len_torch_dispatch_stack(),
        "loggers": {name: [lg.level, lg.disabled] for name, lg in
                    [("", logging.getLogger())] + list(logging.Logger.manager.loggerDict.items())
                    if isinstance(lg, logging.Logger)},
        "warnings_filters": [repr(f) for f in warnings.filters],
        "sigint": repr(signal.getsignal(signal.SIGINT)),
        "recursion_limit": sys.getrecursionlimit(),
        "big_block_mmapped": big_block_mmapped(),
    }

def changed(before, after):
    out = {}
    for key, old in before.items():
        new = after[key]
        if key == "loggers":  # loggers created by a lazy import are new, not changed
            new = {k: v for k, v in new.items() if k in old}
        if old != new:
            out[key] = "changed" if key in ("torch_rng", "environ", "warnings_filters") else [old, new]
    return out

def tiny_net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 14 * 14, 10))

FAST = {"min_time_s": 0.05, "min_iters": 3, "warmup_s": 0.0}
# Warm-up: torch's own lazy imports (dynamo's loggers, sympy's warning filter) happen once.
modelmeter.count(tiny_net(), torch.randn(1, 3, 16, 16))
assert os.getcwd() not in sys.path and "" not in sys.path, sys.path

net, x = tiny_net().train(), torch.randn(2, 3, 16, 16)
calls = {
    "report(module)": lambda: modelmeter.report(net, x, measure=True, energy=False, timing=FAST),
    "bench(spec)": lambda: modelmeter.bench("tinyfactory:build", min_time_s=0.05, min_iters=3,
                                            warmup_s=0.0),
    "report(spec)": lambda: modelmeter.report("tinyfactory:build", measure=True, energy=False,
                                              timing=FAST),
    "count(spec)": lambda: modelmeter.count("tinyfactory:build"),
    "count(bad spec)": lambda: modelmeter.count("tinyfactory:no_such_factory"),
    "memory(module, train)": lambda: modelmeter.memory(net, x, train=True),
    "compare(specs, measure)": lambda: modelmeter.compare(["tinyfactory:build"], measure=True),
}
result = {}
for name, call in calls.items():
    before = state()
    try:
        call()
    except modelmeter.UserInputError:
        pass
    diff = changed(before, state())
    if not net.training:
        diff["module.training"] = [True, False]
        net.train()
    result[name] = diff
print(json.dumps(result))
'''


def run_child(tmp_path: Path) -> dict[str, dict]:
    work = tmp_path / "work"
    work.mkdir()
    (work / "tinyfactory.py").write_text(TINY)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "MODELMETER_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_library_calls_leave_the_process_as_they_found_it(tmp_path):
    """Allocator, sys.path, threads, RNG, grad mode, hooks, loggers, ... after each public call."""
    changes = run_child(tmp_path)
    assert changes == {name: {} for name in changes}, changes


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.slow
def test_the_allocator_probe_sees_retention():
    """The 64 MiB mmap probe of the child flips when the CLI's 'retain' policy is in force."""
    code = CHILD.split("def state():")[0] + textwrap.dedent("""
        before = big_block_mmapped()
        from modelmeter.measure.allocator import retain_freed_memory
        assert retain_freed_memory()
        print(before, big_block_mmapped())
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "False"], done.stderr[-2000:]


@pytest.mark.slow
def test_library_measurements_record_the_allocator_policy_they_used():
    # A fresh process: CLI tests run in-process in this one, and the CLI retains on purpose.
    code = textwrap.dedent("""
        import json, torch, modelmeter
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
        r = modelmeter.report(net, torch.randn(2, 3, 16, 16), measure=True, energy=False,
                              timing={"min_time_s": 0.05, "min_iters": 3, "warmup_s": 0.0})
        print(json.dumps(r.to_dict()["measured"]["conditions"]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    conditions = json.loads(done.stdout.strip().splitlines()[-1])
    assert conditions["malloc"] == "default"
    assert "retained" not in conditions["allocator"]  # the calling process was left alone


@pytest.mark.slow
def test_the_report_command_keeps_retaining_freed_memory(tmp_path):
    """The CLI's process ends with the command: it keeps the steadier 'retain' policy."""
    (tmp_path / "tinyfactory.py").write_text(TINY)
    out = tmp_path / "r.json"
    env = {**os.environ, "MODELMETER_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "report", "tinyfactory:build",
                           "--measure", "--json", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    conditions = json.loads(out.read_text())["measured"]["conditions"]
    assert conditions["malloc"] == "retain"
    if platform.libc_ver()[0] == "glibc":
        assert conditions["allocator"].startswith("glibc, freed memory retained")


# ---------------------------------------------------------------- pkg.module:factory and sys.path


@pytest.fixture
def cwd_not_on_path(tmp_path, monkeypatch):
    """A working directory holding user modules, and not on sys.path (as under an IDE)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    names = []

    def write(name: str, text: str) -> str:
        (tmp_path / f"{name}.py").write_text(text)
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_a_factory_spec_leaves_sys_path_unchanged(cwd_not_on_path):
    mod = cwd_not_on_path("hyg_factory_ok", TINY)
    before = list(sys.path)
    report = modelmeter.count(f"{mod}:build")
    assert sys.path == before
    # The factory really ran: Conv2d(3, 8, 3) + Linear(1568, 10) parameters, closed form.
    assert report.totals["params"] == (3 * 8 * 9 + 8) + (8 * 14 * 14 * 10 + 10)


def test_a_failing_factory_spec_leaves_sys_path_unchanged(cwd_not_on_path):
    broken = cwd_not_on_path("hyg_factory_broken", "raise ImportError('no such thing')\n")
    good = cwd_not_on_path("hyg_factory_good", TINY)
    raising = cwd_not_on_path("hyg_factory_raising", "def build():\n    raise RuntimeError('boom')\n")
    before = list(sys.path)
    for spec in (f"{broken}:build", f"{good}:no_such_factory", f"{raising}:build"):
        with pytest.raises(modelmeter.UnknownModelError):
            modelmeter.count(spec)
        assert sys.path == before, spec


def test_a_factory_may_import_its_siblings_while_it_builds(cwd_not_on_path):
    """The working directory is importable while the factory runs, not only while it is imported."""
    cwd_not_on_path("hyg_sibling_layers", "import torch\nLayer = torch.nn.Linear\n")
    mod = cwd_not_on_path("hyg_lazy_factory", textwrap.dedent("""
        import torch
        def build():
            import hyg_sibling_layers
            return hyg_sibling_layers.Layer(4, 3), torch.randn(1, 4)
    """))
    before = list(sys.path)
    assert modelmeter.count(f"{mod}:build").totals["macs"] == 4 * 3
    assert sys.path == before


# ---------------------------------------------------------------- options that cannot apply


@pytest.mark.parametrize("option", [{"batch": 64}, {"seq": 128}, {"inputs": ["8x3x16x16"]},
                                    {"device": "cpu"}])
def test_build_options_on_a_module_are_refused(option):
    net, x = tiny_net(), torch.randn(2, 3, 16, 16)
    (key,) = option
    with pytest.raises(UserInputError, match=key):
        modelmeter.count(net, x, **option)


def test_batch_a_factory_s_fixed_inputs_ignore_is_refused(cwd_not_on_path):
    mod = cwd_not_on_path("hyg_factory_batch", TINY)
    with pytest.raises(UserInputError, match="batch 2"):
        modelmeter.count(f"{mod}:build", batch=64)
    # With input shapes the batch applies: MACs scale with it (closed form per sample).
    per_sample = 8 * 3 * 9 * 14 * 14 + 8 * 14 * 14 * 10
    report = modelmeter.count(f"{mod}:build", inputs=["1x3x16x16"], batch=64)
    assert report.totals["macs"] == 64 * per_sample
    assert report.settings["batch"] == 64


def test_seq_on_a_model_without_a_sequence_is_refused(cwd_not_on_path):
    mod = cwd_not_on_path("hyg_factory_seq", TINY)
    with pytest.raises(UserInputError, match="seq"):
        modelmeter.count(f"{mod}:build", seq=128)


def test_example_inputs_beside_a_spec_are_refused():
    with pytest.raises(UserInputError, match="example_inputs"):
        modelmeter.count("resnet50", torch.randn(1, 3, 224, 224))


def test_a_name_given_for_a_spec_is_the_name_recorded(cwd_not_on_path):
    mod = cwd_not_on_path("hyg_factory_name", TINY)
    assert modelmeter.count(f"{mod}:build", name="mine").model["name"] == "mine"


def test_dtype_on_a_module_records_the_dtype_the_trace_ran_in():
    net = tiny_net()
    report = modelmeter.count(net, torch.randn(2, 3, 16, 16), dtype="bf16").to_dict()
    params = (3 * 8 * 9 + 8) + (8 * 14 * 14 * 10 + 10)
    s = report["settings"]
    assert s["dtype"] == "bf16" and report["totals"]["param_bytes"] == 2 * params  # the what-if
    assert s["trace_dtype"] == "fp32"  # what really ran
    assert all("float32" in i["dtype"] for i in s["inputs"])
    assert any("bf16" in n and "fp32" in n for n in s["notes"])
    assert next(net.parameters()).dtype == torch.float32  # the user's module is untouched


def test_dtype_on_a_module_already_in_it_adds_no_note():
    net = tiny_net().to(torch.bfloat16)
    s = modelmeter.count(net, torch.randn(2, 3, 16, 16, dtype=torch.bfloat16), dtype="bf16").settings
    assert s["trace_dtype"] == "bf16" and list(s["notes"]) == []


@pytest.mark.parametrize("dtype", [None, "fp32", "bf16"])
def test_group_size_without_block_quantised_weights_is_refused(dtype):
    with pytest.raises(UserInputError, match="group"):
        modelmeter.count(tiny_net(), torch.randn(1, 3, 16, 16), dtype=dtype, group_size=128)


def test_group_size_with_int4_applies():
    report = modelmeter.count(tiny_net(), torch.randn(1, 3, 16, 16), dtype="int4", group_size=128)
    assert report.settings["group_size"] == 128 and report.settings["dtype"] == "int4"


@pytest.mark.parametrize("option", ["checkpoint", "master_fp32"])
def test_training_options_without_train_are_refused(option):
    with pytest.raises(UserInputError, match="train"):
        modelmeter.memory(tiny_net(), torch.randn(1, 3, 16, 16), **{option: True})


def test_a_report_measures_the_module_in_the_dtype_it_ran_in():
    report = modelmeter.report(tiny_net(), torch.randn(2, 3, 16, 16), dtype="bf16", measure=True,
                               energy=False, timing=FAST).to_dict()
    assert report["measured"]["conditions"]["dtype"] == "fp32"
    assert report["settings"]["trace_dtype"] == "fp32"


def test_a_report_leaves_the_module_in_its_mode():
    net = tiny_net().train()
    modelmeter.report(net, torch.randn(2, 3, 16, 16), measure=True, energy=False, timing=FAST)
    assert net.training and all(m.training for m in net.modules())


def test_bench_region_implies_energy(cwd_not_on_path):
    mod = cwd_not_on_path("hyg_factory_bench", TINY)
    m = modelmeter.bench(f"{mod}:build", region="fr", meter="none", min_time_s=0.05, min_iters=3,
                         warmup_s=0.0).measured
    assert m["carbon_region"] == "fr" and m["energy_source"] == "estimate"
    assert m["conditions"]["malloc"] == "default"


def test_bench_seq_on_a_model_without_a_sequence_is_refused(cwd_not_on_path):
    mod = cwd_not_on_path("hyg_factory_bench_seq", TINY)
    with pytest.raises(UserInputError, match="seq"):
        modelmeter.bench(f"{mod}:build", seq=64, min_time_s=0.05, min_iters=3, warmup_s=0.0)


def test_importing_the_report_subpackage_keeps_modelmeter_report_the_function():
    """`import modelmeter.report.html` (the CLI and exporters do) must not replace the public call."""
    code = ("import modelmeter.report.html, modelmeter.count.engine, modelmeter\n"
            "print(callable(modelmeter.report), callable(modelmeter.count))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "True"], done.stderr[-2000:]


def test_training_trace_keeps_the_callers_modes_and_gradients():
    # memory(train=True) traces a backward: it must not flatten a frozen submodule's eval
    # mode, nor wipe the gradients the caller had accumulated.
    import torch

    import modelmeter

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 2))
    model.train()
    model[1].eval()
    model(torch.randn(3, 4)).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    modelmeter.memory(model, torch.randn(3, 4), train=True)
    assert [m.training for m in model] == [True, False, True] and model.training
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before, strict=True))
