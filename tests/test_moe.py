"""Mixture-of-experts models: counted on meta and on CPU, total vs active parameters, presets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import transformers

import modelmeter
from modelmeter.presets import load_preset, preset_names

T = 128  # tokens of the shrunk Mixtral

# Tiny configs of every transformers MoE architecture the counter supports: (config, model, extra).
SMALL = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, vocab_size=100,
             num_attention_heads=4, num_key_value_heads=2)
DEEPSEEK = dict(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
                first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8,
                qk_nope_head_dim=8, v_head_dim=8, n_group=2, topk_group=1, num_key_value_heads=4)
ARCHITECTURES = {
    # name: (config class, model class, extra config, experts E, top_k, expert ffn, MoE layers)
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(num_local_experts=4, num_experts_per_tok=2),
                4, 2, 128, 2),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                  dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                       shared_expert_intermediate_size=64), 4, 2, 32, 2),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM",
                  dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32), 4, 2, 32, 2),
    "deepseek_v2": ("DeepseekV2Config", "DeepseekV2ForCausalLM", DEEPSEEK, 8, 2, 32, 1),
    "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM", DEEPSEEK, 8, 2, 32, 1),
    "gpt_oss": ("GptOssConfig", "GptOssForCausalLM",
                dict(num_local_experts=4, num_experts_per_tok=2, head_dim=16, sliding_window=8), 4, 2, 128, 2),
    "olmoe": ("OlmoeConfig", "OlmoeForCausalLM", dict(num_experts=4, num_experts_per_tok=2), 4, 2, 128, 2),
    "llama4_text": ("Llama4TextConfig", "Llama4ForCausalLM",
                    dict(num_local_experts=4, num_experts_per_tok=1, intermediate_size_mlp=128,
                         interleave_moe_layer_step=1), 4, 1, 128, 2),
}


def build(config_cls: str, model_cls: str, extra: dict, device: str) -> torch.nn.Module:
    conf = getattr(transformers, config_cls)(**{**SMALL, **extra})
    model = getattr(transformers, model_cls)
    attn = "sdpa" if model._supports_sdpa else "eager"
    torch.manual_seed(0)
    with torch.device(device):
        return model._from_config(conf, dtype=torch.float32, attn_implementation=attn).eval()


def ids(device: str, tokens: int = 16) -> dict:
    if device == "meta":
        return {"input_ids": torch.zeros((1, tokens), dtype=torch.long, device="meta"), "attention_mask": None}
    return {"input_ids": torch.randint(0, 100, (1, tokens)), "attention_mask": None}


def expert_macs(report: dict) -> int:
    return sum(m["macs"] for m in report["modules"] if m.get("experts"))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_moe_architecture_counts_on_meta_and_cpu_alike(name):
    config_cls, model_cls, extra, experts, top_k, ffn, layers = ARCHITECTURES[name]
    meta = modelmeter.count(build(config_cls, model_cls, extra, "meta"), ids("meta")).to_dict()
    cpu = modelmeter.count(build(config_cls, model_cls, extra, "cpu"), ids("cpu")).to_dict()
    # Each of the 16 tokens visits top_k experts: gate, up and down projections of 64 x ffn.
    closed = layers * 16 * top_k * 3 * 64 * ffn
    assert expert_macs(meta) == expert_macs(cpu) == closed
    assert meta["totals"]["macs"] == cpu["totals"]["macs"]
    assert meta["settings"]["routing"] == "balanced (assumed on meta)"
    assert cpu["settings"]["routing"] == "as the router chose (real tensors)"
    groups = [m for m in meta["modules"] if m.get("experts")]
    assert len(groups) == layers and {(m["experts"], m["top_k"]) for m in groups} == {(experts, top_k)}
    # Active parameters: the routed groups count top_k / E of their weights.
    routed = sum(m["params"] for m in groups)
    assert meta["totals"]["active_params"] == meta["totals"]["params"] - routed * (experts - top_k) // experts


def shrunk_mixtral(device: str) -> torch.nn.Module:
    conf = transformers.MixtralConfig(
        num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2, hidden_size=4096,
        intermediate_size=512, num_attention_heads=32, num_key_value_heads=8, vocab_size=1000)
    torch.manual_seed(0)
    with torch.device(device):
        return transformers.MixtralForCausalLM._from_config(
            conf, dtype=torch.float32, attn_implementation="sdpa").eval()


def test_shrunk_mixtral_counts_the_closed_form_on_meta_and_cpu():
    h, kv, heads, head_dim, ffn, vocab, e, k, layers = 4096, 1024, 32, 128, 512, 1000, 4, 2, 2
    per_layer = (
        T * h * (h + 2 * kv + h)  # q, k, v, o projections
        + heads * T * T * head_dim * 2  # Q·Kᵀ and A·V, dense
        + T * h * e  # router
        + T * k * 3 * h * ffn  # each token through its top-2 experts' gate, up, down
    )
    closed = layers * per_layer + T * h * vocab  # LM head over every position
    meta = modelmeter.count(shrunk_mixtral("meta"), ids("meta", T)).to_dict()
    model = shrunk_mixtral("cpu")
    cpu = modelmeter.count(model, ids("cpu", T)).to_dict()
    del model
    assert meta["totals"]["macs"] == cpu["totals"]["macs"] == closed
    assert meta["settings"]["routing"] == "balanced (assumed on meta)"
    # Parameters: all four experts count in total, two in active.
    experts = layers * e * 3 * h * ffn
    assert meta["totals"]["active_params"] == meta["totals"]["params"] - experts // 2


def test_real_routing_reads_only_the_experts_the_router_chose():
    # One token, 2 of 4 experts: the experts' forward reads half their weights on CPU.
    model = build("MixtralConfig", "MixtralForCausalLM", dict(num_local_experts=4, num_experts_per_tok=2), "cpu")
    report = modelmeter.count(model, ids("cpu", 1)).to_dict()
    group = next(m for m in report["modules"] if m.get("experts"))
    weights = group["params"] * 4  # fp32
    expert_ops_read = group["bytes_read"]
    assert weights / 2 <= expert_ops_read < weights  # two experts' weights plus the activations
    meta = modelmeter.count(build("MixtralConfig", "MixtralForCausalLM",
                                  dict(num_local_experts=4, num_experts_per_tok=2), "meta"),
                            ids("meta", 1)).to_dict()
    meta_group = next(m for m in meta["modules"] if m.get("experts"))
    assert meta_group["bytes_read"] == expert_ops_read  # balanced: E(1-(1-k/E)^1) = k experts


# Published totals, within one unit of their last digit (publishers round or truncate:
# Mixtral's 12.88 B is "12.9 B", Qwen3's 3.35 B is "3.3 B"). Active parameters: Mistral and
# Qwen count the embedding tables; OpenAI and DeepSeek leave out the input embedding a token
# only looks up.
PUBLISHED = {
    "mixtral-8x7b": (46.7e9, 0.1e9, "active_params", 12.9e9, 0.1e9),
    "qwen3-30b-a3b": (30.5e9, 0.1e9, "active_params", 3.3e9, 0.1e9),
    "gpt-oss-20b": (20.9e9, 0.1e9, "active_params_without_embeddings", 3.6e9, 0.1e9),
    "gpt-oss-120b": (116.8e9, 0.1e9, "active_params_without_embeddings", 5.1e9, 0.1e9),
    "deepseek-v3": (671e9, 1e9, "active_params_without_embeddings", 37e9, 1e9),
}


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
@pytest.mark.slow
def test_presets_match_published_total_and_active_parameters(preset):
    total, total_tol, key, active, active_tol = PUBLISHED[preset]
    report = modelmeter.count(preset, seq=8).to_dict()
    assert abs(report["totals"]["params"] - total) < total_tol
    assert abs(report["totals"][key] - active) < active_tol
    assert report["settings"]["routing"] == "balanced (assumed on meta)"
    # The figures `modelmeter models` lists without building the model are the counted ones.
    stored = load_preset(preset)
    assert (stored["params"], stored["active_params"]) == (
        report["totals"]["params"], report["totals"]["active_params"])


@pytest.mark.parametrize("preset", sorted(set(preset_names()) - set(PUBLISHED)))
def test_stored_parameters_of_dense_presets_are_the_counted_ones(preset):
    stored = load_preset(preset)
    # A short sequence keeps text presets fast; vision presets take no --seq.
    seq = {"seq": 8} if stored.get("kind", "text") != "vision" else {}
    report = modelmeter.count(preset, **seq).to_dict()
    assert stored["params"] == stored["active_params"] == report["totals"]["params"]
    assert report["totals"]["active_params"] == report["totals"]["params"]


def test_models_lists_family_total_and_active_parameters():
    proc = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "models", "--json", "-"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["presets"]}
    assert set(PUBLISHED) <= set(rows) and "resnet50" in rows
    assert (rows["mixtral-8x7b"]["family"], rows["mixtral-8x7b"]["params"],
            rows["mixtral-8x7b"]["active_params"]) == ("mixtral", 46_702_792_704, 12_879_925_248)
    table = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "models"],
                           capture_output=True, text=True, timeout=120)
    line = next(li for li in table.stdout.splitlines() if "deepseek-v3" in li)
    assert "deepseek_v3" in line and "671 G" in line and "37.6 G" in line


@pytest.mark.slow
def test_count_deepseek_v3_from_the_cli_without_weights():
    proc = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "count", "deepseek-v3", "--json", "-"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["totals"]["params"] == 671_026_404_352
    groups = [m for m in report["modules"] if m.get("experts")]
    assert len(groups) == 58 and groups[0]["experts"] == 256 and groups[0]["top_k"] == 8
    # 128 tokens x 8 experts x 3 x 7168 x 2048 per MoE layer.
    assert sum(m["macs"] for m in groups) == 58 * 128 * 8 * 3 * 7168 * 2048


@pytest.mark.slow
def test_count_table_shows_active_parameters_and_expert_groups():
    proc = subprocess.run([sys.executable, "-m", "modelmeter.cli.main", "count", "mixtral-8x7b", "--seq", "8",
                           "--depth", "5"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "active parameters per token" in proc.stdout
    assert "MixtralExperts ×8 (top-2)" in proc.stdout
    assert "balanced (assumed on meta)" in proc.stdout
