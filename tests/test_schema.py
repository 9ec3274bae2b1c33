"""The report contract: the shipped JSON Schema validates the real JSON of every command.

Each command runs in-process (`run_main`) on a small model and its `--json -`
output is validated against `modelmeter.core.schema.load_schema()`. Objects with
fixed keys set `additionalProperties: false`, so a section that starts emitting a
key the schema does not know fails here: extend the schema (a key added) or bump
the schema version (a key renamed or moved).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

jsonschema = pytest.importorskip("jsonschema")
from jsonschema import Draft202012Validator  # noqa: E402

from modelmeter.core.report import SCHEMA  # noqa: E402
from modelmeter.core.schema import DOCUMENTS, load_schema, schema_path  # noqa: E402

# A real model small enough to time in well under a second per call.
TINY_MODEL = """
import torch

def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.LayerNorm(64),
                                torch.nn.Linear(64, 8))
    return model, (torch.randn(2, 32),)
"""

# A mixture-of-experts decoder transformers builds from its config alone: routed experts
# (modules' experts/top_k, settings.routing, the llm section's MoE settings and reads).
TINY_MIXTRAL = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 256,
    "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2,
    "max_position_embeddings": 256, "torch_dtype": "float32",
}

FAST_BENCH = ("--min-time", "0.02", "--min-iters", "2", "--warmup", "0", "--malloc", "default")


def validate(document: Any, which: str = "report") -> None:
    Draft202012Validator(load_schema(which)).validate(document)


def run_json(run_main, *args: str) -> Any:
    code, out, err = run_main(*args, "--json", "-")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture()
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tinyschema.py").write_text(TINY_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.fixture()
def tiny_mixtral(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-mixtral"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_MIXTRAL))
    return folder


# ------------------------------------------------------------------ the schema itself


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    # The other documents share its $defs; only the root differs.
    for document in DOCUMENTS:
        assert load_schema(document)["$ref"] == f"#/$defs/{document}"


def test_schema_names_the_report_schema_id_and_ships_as_a_file() -> None:
    assert load_schema()["$defs"]["report"]["properties"]["schema"]["const"] == SCHEMA
    assert json.loads(schema_path().read_text(encoding="utf-8")) == load_schema()
    with pytest.raises(ValueError, match="unknown document"):
        load_schema("nonsense")


def _fixed_objects(node: Any, where: str = "#") -> list[str]:
    """Paths of object schemas with `properties` that do not close their keys."""
    found = []
    if isinstance(node, dict):
        if "properties" in node and node.get("additionalProperties") is not False:
            found.append(where)
        for key, value in node.items():
            found += _fixed_objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _fixed_objects(value, f"{where}/{i}")
    return found


def test_every_fixed_key_object_refuses_unknown_keys_and_every_key_is_described() -> None:
    schema = load_schema()
    assert _fixed_objects(schema) == []
    undescribed = [f"{name}.{key}" for name, d in schema["$defs"].items()
                   for key, value in (d.get("properties") or {}).items() if "description" not in value]
    assert undescribed == []


# ------------------------------------------------------------------ real outputs


def test_count_json(run_main) -> None:
    data = run_json(run_main, "count", "gpt2", "--seq", "16")
    validate(data)
    assert data["settings"]["attention"]["implementation"] == "flash"
    assert data["totals"]["fallback_ops"] == [] or "op" in data["totals"]["fallback_ops"][0]


def test_count_json_quantised_and_moe(run_main, tiny_mixtral: Path) -> None:
    quantised = run_json(run_main, "count", "gpt2", "--seq", "16", "--dtype", "int4")
    assert "quantization" in quantised["totals"] and "param_bytes_naive" in quantised["totals"]
    validate(quantised)
    moe = run_json(run_main, "count", str(tiny_mixtral), "--seq", "8")
    assert moe["settings"]["routing"] and any("experts" in m for m in moe["modules"])
    validate(moe)


@pytest.mark.slow
def test_memory_json_inference_and_training(run_main) -> None:
    validate(run_json(run_main, "memory", "gpt2", "--seq", "16"))
    train = run_json(run_main, "memory", "gpt2", "--seq", "16", "--train", "--checkpoint")
    assert "checkpoint" in train["training"] and "backward_flops" in train["totals"]
    assert set(train["totals"]["activations"]["activations_by_attention"]) == {"flash", "math"}
    validate(train)
    validate(run_json(run_main, "memory", "gpt2", "--seq", "16", "--attention", "math"))


def test_roofline_json(run_main) -> None:
    data = run_json(run_main, "roofline", "gpt2", "--seq", "16", "--hardware", "h100-sxm",
                    "--weights", "int4")
    assert "quantization" in data["roofline"]
    validate(data)
    w8a8 = run_json(run_main, "roofline", "gpt2", "--seq", "16", "--hardware", "h100-sxm",
                    "--activations", "int8", "--attention", "math")
    assert w8a8["roofline"]["activations"] == "int8"
    validate(w8a8)


def test_bench_json(run_main, tiny: Path) -> None:
    data = run_json(run_main, "bench", "tinyschema:build", "--batch", "1,2", *FAST_BENCH,
                    "--hardware", "h100-sxm", "--energy", "--meter", "none")
    assert len(data["measured"]["sweep"]) == 2
    validate(data)


@pytest.mark.slow
def test_llm_json_activation_quantisation_and_attention(run_main) -> None:
    data = run_json(run_main, "llm", "gpt2", "--hardware", "h100-sxm", "--prompt", "16", "--gen", "4",
                    "--activations", "fp8", "--attention", "math")
    settings = data["llm"]["settings"]
    assert settings["activations"] == "fp8" and settings["attention"]["implementation"] == "math"
    validate(data, "llm_document")


@pytest.mark.slow  # seven meta traces per model
def test_llm_json_dense_quantised_and_moe(run_main, tiny_mixtral: Path) -> None:
    dense = run_json(run_main, "llm", "tinyllama", "--hardware", "h100-sxm", "--prompt", "64",
                     "--gen", "8", "--batch", "1,4", "--weights", "int4", "--max-batch")
    assert set(dense) == {"schema", "llm"} and "quantization" in dense["llm"]
    assert dense["schema"] == "modelmeter.llm/1"
    validate(dense, "llm_document")
    moe = run_json(run_main, "llm", str(tiny_mixtral), "--hardware", "h100-sxm", "--prompt", "16",
                   "--gen", "4")
    assert moe["llm"]["settings"]["experts"] == 4
    validate(moe, "llm_document")


def test_report_json_with_measurement_environment_summary_and_history(run_main, tiny: Path) -> None:
    db = tiny / "runs.sqlite"
    data = run_json(run_main, "report", "tinyschema:build", "--hardware", "h100-sxm", "--measure",
                    "--train", "--save", "--db", str(db))
    for section in ("roofline", "measured", "environment", "training", "summary"):
        assert section in data, section
    validate(data)
    code, out, err = run_main("history", "--db", str(db), "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["schema"] == "modelmeter.history/1" and len(document["runs"]) == 1
    assert document["runs"][0]["report"]["schema"] == "modelmeter.report/1"
    validate(document, "history_document")


def test_compare_json(run_main, tiny: Path) -> None:
    data = run_json(run_main, "compare", "tinyschema:build", "--dtype", "fp32,bf16",
                    "--hardware", "h100-sxm")
    assert data["schema"] == "modelmeter.compare/1" and len(data["reports"]) == 2
    validate(data, "compare_document")


def test_diff_json(run_main, tiny: Path) -> None:
    """The document a CI gate reads: two real reports, with and without a settings change."""
    a, b, c = (str(tiny / name) for name in ("a.json", "b.json", "c.json"))
    for path, extra in ((a, ()), (b, ()), (c, ("--dtype", "bf16"))):
        code, _, err = run_main("roofline", "tinyschema:build", "--hardware", "h100-sxm", *extra,
                                "--json", path)
        assert code == 0, err

    def diff_json(*args: str) -> Any:
        code, out, err = run_main("diff", *args, "--json")  # a flag here: diff writes to stdout
        assert code in (0, 1), err
        return json.loads(out)

    same = diff_json(a, b, "--fail-on", "flops>0%,latency_p50>+5%")
    assert same["schema"] == "modelmeter.diff/1" and same["same_settings"] is True
    assert [gate["status"] for gate in same["gates"]] == ["pass", "missing"]
    validate(same, "diff_document")
    changed = diff_json(a, c, "--fail-on", "flops>0%", "--allow-settings-change")
    # The float input follows the precision: [2, 32] float32 vs bfloat16.
    assert [row["setting"] for row in changed["settings_changed"]] == ["inputs", "dtype"]
    assert changed["settings_changed"][1] == {"setting": "dtype", "a": "fp32", "b": "bf16"}
    assert changed["allow_settings_change"] is True and changed["notes"]
    validate(changed, "diff_document")


@pytest.mark.slow  # the LLM traces plus a traced training step
def test_plan_json_inference_and_training(run_main) -> None:
    infer = run_json(run_main, "plan", "tinyllama", "--hardware", "h100-sxm", "--devices", "2",
                     "--prompt", "64", "--gen", "8", "--limit", "5")
    assert infer["plan"]["mode"] == "infer"
    validate(infer)
    train = run_json(run_main, "plan", "gpt2", "--hardware", "h100-sxm", "--devices", "8", "--train",
                     "--seq", "32", "--limit", "5")
    assert train["plan"]["mode"] == "train" and train["plan"]["candidates"]
    validate(train)


# ------------------------------------------------------------------ unknown keys fail


@pytest.fixture(scope="module")
def roofline_report() -> dict[str, Any]:
    import modelmeter

    return modelmeter.roofline("gpt2", seq=8, hardware="h100-sxm").to_dict()


@pytest.mark.parametrize("where", ["report", "totals", "module row", "roofline", "roofline module",
                                   "settings", "methods"])
def test_a_key_the_schema_does_not_know_fails(roofline_report: dict[str, Any], where: str) -> None:
    validate(roofline_report)  # the untouched report is valid
    data = json.loads(json.dumps(roofline_report))
    target = {"report": data, "totals": data["totals"], "module row": data["modules"][1],
              "roofline": data["roofline"], "roofline module": data["roofline"]["modules"][0],
              "settings": data["settings"], "methods": data["methods"]}[where]
    target["not_in_the_schema"] = 1
    with pytest.raises(jsonschema.ValidationError, match="not_in_the_schema"):
        validate(data)


def test_a_wrong_type_or_schema_id_fails(roofline_report: dict[str, Any]) -> None:
    data = json.loads(json.dumps(roofline_report))
    data["totals"]["params"] = "124M"
    with pytest.raises(jsonschema.ValidationError):
        validate(data)
    data = json.loads(json.dumps(roofline_report))
    data["schema"] = "modelmeter.report/2"
    with pytest.raises(jsonschema.ValidationError):
        validate(data)


def test_the_readme_example_runs() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## JSON contract", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md (JSON contract)", "exec"), {})


def test_llm_json_carries_its_schema_id(run_main, tmp_path: Path) -> None:
    # `llm --json` used to write {"llm": ...} with no id: nothing said which contract it follows.
    target = tmp_path / "llm.json"
    code, _, err = run_main("llm", "gpt2", "--hardware", "h100-sxm", "--prompt", "8", "--gen", "2",
                            "--json", str(target))
    assert code == 0, err
    data = json.loads(target.read_text())
    assert data["schema"] == "modelmeter.llm/1"
    validate(data, "llm_document")


def test_documents_without_their_id_are_refused() -> None:
    # A history is an object now: the bare array of 0.1.x, or a document without its id, is not one.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([], load_schema("history_document"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"runs": []}, load_schema("history_document"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"llm": {}}, load_schema("llm_document"))
