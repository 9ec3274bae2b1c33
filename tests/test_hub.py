"""Model ids from the Hugging Face Hub: config.json only, from a cache laid out on disk (no hub here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelmeter.presets import load_preset
from modelmeter.sources import hub

SHA = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo_id: str, files: dict[str, str]) -> Path:
    """The layout huggingface_hub writes: models--owner--name/{refs/main, snapshots/<sha>/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    snapshot = repo / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)
    return snapshot


def run(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_HOME": str(cache.parent)}
    return subprocess.run([sys.executable, "-m", "modelmeter.cli.main", *args],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_count_a_hub_id_from_the_cache_offline(tmp_path):
    config = load_preset("qwen3-30b-a3b")["config"]
    cache = tmp_path / "hub"
    hub_cache(cache, "Qwen/Qwen3-30B-A3B", {"config.json": json.dumps(config)})
    proc = run(cache, "count", "Qwen/Qwen3-30B-A3B", "--seq", "8", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["model"]["name"] == "Qwen/Qwen3-30B-A3B"
    assert report["model"]["source"] == "hub"
    assert report["totals"]["params"] == 30_532_122_624
    assert report["totals"]["active_params"] == 3_353_032_704
    assert report["settings"]["routing"] == "balanced (assumed on meta)"


@pytest.mark.slow
def test_an_id_missing_from_the_offline_cache_is_one_line_exit_2(tmp_path):
    proc = run(tmp_path / "hub", "count", "nobody/no-such-model")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nobody/no-such-model" in lines[0] and "cache" in lines[0]


def test_only_config_json_is_fetched_and_remote_code_only_when_trusted(tmp_path, monkeypatch):
    import huggingface_hub

    config = {"model_type": "deepseek_v3", "auto_map": {
        "AutoConfig": "configuration_deepseek.DeepseekV3Config",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM",
        "AutoTokenizer": ["other/repo--tokenization.Tok", None]}}
    snapshot = hub_cache(tmp_path, "deepseek-ai/DeepSeek-V3", {"config.json": json.dumps(config)})
    asked: list[str] = []

    def fake_download(repo_id: str, filename: str, **_: object) -> str:
        asked.append(filename)
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert hub.fetch_config_folder("deepseek-ai/DeepSeek-V3") == snapshot
    assert asked == ["config.json"]
    asked.clear()
    hub.fetch_config_folder("deepseek-ai/DeepSeek-V3", trust_remote_code=True)
    assert asked == ["config.json", "configuration_deepseek.py", "modeling_deepseek.py"]


def test_a_gated_id_gets_one_clear_line(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    from modelmeter.core.errors import UnknownModelError

    def gated(repo_id: str, filename: str, **_: object) -> str:
        # What huggingface_hub raises for a 403 on a gated repo (the response is not needed here).
        error = GatedRepoError.__new__(GatedRepoError)
        Exception.__init__(error, "403 Client Error: access to this model is restricted")
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    with pytest.raises(UnknownModelError, match="is gated on the Hugging Face Hub: accept its terms"):
        hub.fetch_config_folder("meta-llama/Llama-4-Scout-17B-16E")


def test_hub_ids_are_told_apart_from_other_specs(tmp_path):
    assert hub.looks_like_hub_id("Qwen/Qwen3-30B-A3B")
    assert not hub.looks_like_hub_id("resnet50")
    assert not hub.looks_like_hub_id("pkg.module:factory")
    assert not hub.looks_like_hub_id(str(tmp_path))  # an existing folder is a folder
