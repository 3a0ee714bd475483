"""Llama, Mistral, Qwen2 and Qwen3 folders imported into our model: parity with `transformers`, config mapping, refusals.

Each folder is a tiny `transformers` model with random weights saved by `save_pretrained`, with a byte-level
BPE trained here (tests/hf_reference.py); nothing is downloaded. `verify.compare` runs transformers' own class
(eager attention, float32) on the folder and returns the largest difference of every layer's attention
weights and of the next-token probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from hf_reference import TEXTS, bpe_tokenizer, copy_folder, edit_config, randomise, save_random
from safetensors.torch import load_file, save_file

from transformer import CheckpointError
from transformer.api import attention_maps, trace_text
from transformer.checkpoints import importers
from transformer.checkpoints.importers import llama as llama_family
from transformer.checkpoints.importers import load_hf_dir
from transformer.checkpoints.importers import mistral as mistral_family
from transformer.checkpoints.importers import qwen2 as qwen2_family
from transformer.checkpoints.importers import qwen3 as qwen3_family
from transformer.checkpoints.verify import compare

pytestmark = pytest.mark.numerics

# The issue's contract: ours and transformers' eager float32 differ by float32 rounding only. Measured on these
# tiny models: at most a few 1e-7 (see the report printed by each test, `pytest -s`).
TOL = 1e-4
TOK = bpe_tokenizer()  # <s>=0 </s>=1 <pad>=2, "<s> $A"
SIZES = dict(
    vocab_size=TOK.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=1, pad_token_id=2,
)  # fmt: skip
LLAMA, MISTRAL = transformers.LlamaForCausalLM, transformers.MistralForCausalLM
QWEN2, QWEN3 = transformers.Qwen2ForCausalLM, transformers.Qwen3ForCausalLM


def build(cls, **fields) -> torch.nn.Module:
    torch.manual_seed(0)
    return cls(cls.config_class(**{**SIZES, **fields})).eval()


def make(path: Path, cls=LLAMA, seed: int = 1, save: dict | None = None, **fields) -> Path:
    """A random-weight `cls` with SIZES overridden by `fields`, saved into `path` with TOK."""
    return save_random(build(cls, **fields), TOK, path, seed, **(save or {}))


def parity(folder: Path, texts=TEXTS, per_text: bool = False) -> dict:
    """verify.compare on `folder`: every layer's attention weights and the next-token probabilities.
    per_text: a fresh transformers model for each text (its dynamic rope keeps what it grew on a longer text)."""
    ckpt = load_hf_dir(folder, device="cpu")
    results = [compare(folder, ckpt, (t,)) for t in texts] if per_text else [compare(folder, ckpt, tuple(texts))]
    att = max(r["max_attention_diff"] for r in results)
    out = max(r["max_output_diff"] for r in results)
    print(f"{folder.name}: attention {att:.2e}, output {out:.2e}, {sum(r['tokens'] for r in results)} tokens")
    assert att <= TOL and out <= TOL, f"attention {att:.2e}, output {out:.2e} > TOL {TOL}"
    return {"ckpt": ckpt, "attention": att, "output": out}


ROPE_LLAMA3 = dict(
    rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
    original_max_position_embeddings=32,
)  # fmt: skip
# name -> (class, config fields, what our config must say about it)
CASES = {
    # pretraining_tp only split the matmuls into slices in transformers 4.x (same sums); 5.x ignores it
    "llama_gqa": (LLAMA, dict(pretraining_tp=2), dict(n_heads=4, kv_heads=2, d_head=8, tie_embeddings=False)),
    "llama_mqa": (LLAMA, dict(num_key_value_heads=1), dict(kv_heads=1)),
    "llama_head_dim": (LLAMA, dict(head_dim=16), dict(d_head=16, head_dim=16)),  # 4 × 16 ≠ 32
    "llama_biases": (
        LLAMA,
        dict(attention_bias=True, mlp_bias=True),
        dict(attn_bias=True, attn_out_bias=True, mlp_bias=True),
    ),
    "llama_tied": (LLAMA, dict(tie_word_embeddings=True), dict(tie_embeddings=True)),
    "llama_base_tied": (transformers.LlamaModel, dict(tie_word_embeddings=True), dict(tie_embeddings=True)),
    "llama_rope_linear": (
        LLAMA,
        dict(rope_parameters=dict(rope_type="linear", rope_theta=500.0, factor=4.0)),
        dict(rope_scaling="linear", rope_factor=4.0, rope_theta=500.0),
    ),
    # head_dim 16, theta 1e4: wavelengths 6.3 (kept: < 32/4), 20 (blended), 63 and up (stretched: > 32/1)
    "llama_rope_llama3": (
        LLAMA,
        dict(hidden_size=64, rope_parameters=ROPE_LLAMA3),
        dict(rope_scaling="llama3", rope_factor=8.0, rope_original_max_len=32, d_head=16),
    ),
    "mistral_window": (MISTRAL, dict(sliding_window=4), dict(sliding_window=4, full_attention_layers=())),
    "mistral_full": (MISTRAL, dict(sliding_window=None, num_key_value_heads=4), dict(sliding_window=0, kv_heads=4)),
    # layer 0 full, layers 1 and 2 windowed; q/k/v with biases, o without
    "qwen2_window": (
        QWEN2,
        dict(num_hidden_layers=3, use_sliding_window=True, sliding_window=4, max_window_layers=1),
        dict(sliding_window=4, full_attention_layers=(0,), attn_bias=True, attn_out_bias=False),
    ),
    "qwen2_tied": (QWEN2, dict(tie_word_embeddings=True), dict(tie_embeddings=True, sliding_window=0)),
    "qwen3": (
        QWEN3,
        dict(head_dim=16),
        dict(qk_norm=True, d_head=16, attn_bias=False, attn_out_bias=False, sliding_window=0),
    ),
    "qwen3_bias_window": (
        QWEN3,
        dict(head_dim=16, attention_bias=True, use_sliding_window=True, sliding_window=4, max_window_layers=1),
        dict(qk_norm=True, attn_bias=True, attn_out_bias=True, sliding_window=4, full_attention_layers=(0,)),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_transformers(tmp_path, name):
    cls, fields, expect = CASES[name]
    folder = make(tmp_path / name, cls, **fields)
    cfg = parity(folder)["ckpt"].config
    got = {key: getattr(cfg, key) for key in expect}
    assert got == expect
    assert (cfg.kind, cfg.norm, cfg.mlp, cfg.activation, cfg.positional, cfg.layer_norm_eps) == (
        "decoder", "rms", "gated", "silu", "rope", 1e-5,
    )  # fmt: skip


def test_old_config_and_rotary_buffers(tmp_path):
    """A transformers 4.x folder: rope_theta and rope_scaling {"type": ...} beside the fields, and the
    rotary_emb.inv_freq buffers it saved with the weights (left out, and said so)."""
    folder = make(tmp_path / "llama_4x", rope_parameters=dict(rope_type="linear", rope_theta=500.0, factor=2.0))
    edit_config(folder, rope_parameters=None, rope_theta=500.0, rope_scaling={"type": "linear", "factor": 2.0})
    tensors = load_file(folder / "model.safetensors")
    inv_freq = 1.0 / 500.0 ** (torch.arange(0, 8, 2).float() / 8)
    for i in range(SIZES["num_hidden_layers"]):
        tensors[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    ckpt = parity(folder)["ckpt"]
    assert (ckpt.config.rope_scaling, ckpt.config.rope_factor, ckpt.config.rope_theta) == ("linear", 2.0, 500.0)
    assert "layers.0.self_attn.rotary_emb.inv_freq" in ckpt.training["ignored"]


def test_qwen2_config_without_layer_types(tmp_path):
    """A Qwen2 config from before transformers 5: no layer_types, the window from use_sliding_window and
    max_window_layers (layers below it full)."""
    folder = make(tmp_path / "qwen2_4x", QWEN2, num_hidden_layers=3, use_sliding_window=True, sliding_window=4,
                  max_window_layers=2)  # fmt: skip
    edit_config(folder, layer_types=None)
    cfg = parity(folder)["ckpt"].config
    assert (cfg.sliding_window, cfg.full_attention_layers) == (4, (0, 1))


def test_dynamic_rope_reads_past_max_position_embeddings(tmp_path):
    """Dynamic NTK scaling grows the base once a text is longer than max_position_embeddings (16 here): the
    import reads up to factor × 16 tokens, and each text is compared with a freshly loaded reference (transformers
    keeps the frequencies it grew on a longer text)."""
    folder = make(tmp_path / "llama_dynamic", max_position_embeddings=16,
                  rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=4.0))  # fmt: skip
    result = parity(folder, per_text=True)
    cfg = result["ckpt"].config
    assert (cfg.rope_scaling, cfg.rope_factor, cfg.rope_original_max_len, cfg.max_len) == ("dynamic", 4.0, 16, 64)
    assert len(result["ckpt"].tokenizer.encode(TEXTS[0], max_len=cfg.max_len).ids) > 16 > len(TOK.encode(TEXTS[1]).ids)


@pytest.mark.parametrize("name", ["llama_rope_llama3", "llama_rope_linear"])
def test_rope_scaling_is_not_vacuous(tmp_path, name):
    """The scaled-rope cases above can fail: the same file read as plain rope is far from the reference."""
    cls, fields, _ = CASES[name]
    folder = make(tmp_path / name, cls, **fields)
    theta = fields["rope_parameters"]["rope_theta"]
    plain = copy_folder(folder, tmp_path / "plain", rope_parameters=dict(rope_type="default", rope_theta=theta))
    ckpt = load_hf_dir(plain, device="cpu")
    assert ckpt.config.rope_scaling == "default"
    result = compare(folder, ckpt, TEXTS)  # transformers on the scaled folder, ours with plain rope
    assert result["max_attention_diff"] > 1e-2, result


def test_bfloat16_weights_load_and_compute_in_float32(tmp_path):
    model = build(LLAMA)
    randomise(model, 1)
    folder = tmp_path / "llama_bf16"
    model.to(torch.bfloat16).save_pretrained(folder)
    TOK.save(str(folder / "tokenizer.json"))
    assert load_file(folder / "model.safetensors")["model.embed_tokens.weight"].dtype == torch.bfloat16
    ckpt = parity(folder)["ckpt"]  # the reference: transformers' model loaded in float32 from the same file
    embed = ckpt.model.tok_embed.weight
    assert embed.dtype == torch.float32
    assert torch.equal(embed, model.model.embed_tokens.weight.float())


def test_sharded_safetensors(tmp_path):
    folder = make(tmp_path / "llama_shards", save=dict(max_shard_size="20KB"))
    assert (folder / "model.safetensors.index.json").is_file() and not (folder / "model.safetensors").exists()
    assert len(list(folder.glob("model-*-of-*.safetensors"))) > 1
    ckpt = parity(folder)["ckpt"]
    assert ckpt.training["weights"] == "model.safetensors.index.json"


def test_facts(tmp_path):
    llama3 = load_hf_dir(make(tmp_path / "llama3", **CASES["llama_rope_llama3"][1]), device="cpu").training
    assert (llama3["model_type"], llama3["architecture"], llama3["context"], llama3["rope_theta"]) == (
        "llama", "LlamaForCausalLM", 64, 10000.0,
    )  # fmt: skip
    assert llama3["rope_scaling"] == {"type": "llama3", "factor": 8.0, "original_context": 32}
    qwen2 = load_hf_dir(make(tmp_path / "qwen2", QWEN2, **CASES["qwen2_window"][1]), device="cpu").training
    assert (qwen2["sliding_window"], qwen2["full_attention_layers"]) == (4, "0")
    mistral = load_hf_dir(make(tmp_path / "mistral", MISTRAL, sliding_window=4), device="cpu").training
    assert mistral["sliding_window"] == 4 and "full_attention_layers" not in mistral and "rope_scaling" not in mistral


MINIMAL = dict(vocab_size=300, hidden_size=256, intermediate_size=96, num_hidden_layers=30, num_attention_heads=32)


@pytest.mark.parametrize(
    ("family", "cls", "more"),
    [
        (llama_family, transformers.LlamaConfig, {}),
        (mistral_family, transformers.MistralConfig, {}),
        (qwen2_family, transformers.Qwen2Config, {}),
        (qwen2_family, transformers.Qwen2Config, dict(use_sliding_window=True)),
        (qwen3_family, transformers.Qwen3Config, dict(use_sliding_window=True, sliding_window=64)),
    ],
)
def test_absent_fields_take_transformers_defaults(family, cls, more):
    """A config.json that leaves fields out means transformers' defaults, not ours."""
    hf = {**MINIMAL, **more}
    ours, theirs = family.config({"model_type": cls.model_type, **hf}), cls(**hf)
    assert ours["n_kv_heads"] == theirs.num_key_value_heads
    head_dim = getattr(theirs, "head_dim", None) or theirs.hidden_size // theirs.num_attention_heads  # as the attention
    assert (ours["head_dim"] or ours["d_model"] // ours["n_heads"]) == head_dim
    assert ours["layer_norm_eps"] == theirs.rms_norm_eps and ours["activation"] == theirs.hidden_act
    assert ours["tie_embeddings"] == theirs.tie_word_embeddings
    assert ours["rope_theta"] == theirs.rope_parameters["rope_theta"]
    assert ours["max_len"] == min(theirs.max_position_embeddings, 2048)
    windows = [0 if i in ours.get("full_attention_layers", ()) else ours.get("sliding_window", 0) for i in range(30)]
    if hasattr(theirs, "layer_types"):
        expected = [theirs.sliding_window if t == "sliding_attention" else 0 for t in theirs.layer_types]
    else:  # Mistral: one window on every layer; Llama: none
        expected = [getattr(theirs, "sliding_window", None) or 0] * 30
    assert windows == expected


# --- refusals ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return make(tmp_path_factory.mktemp("llama"))


def refused(folder: Path, tmp_path: Path, **changes) -> str:
    """load_hf_dir's CheckpointError message for a copy of `folder` whose config.json has `changes`."""
    copy = copy_folder(folder, tmp_path / "edited", **changes)
    with pytest.raises(CheckpointError) as e:
        load_hf_dir(copy, device="cpu")
    return str(e.value)


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        (dict(rope_parameters=dict(rope_type="yarn", rope_theta=1e4, factor=4.0, original_max_position_embeddings=32)),
         ("rope", "yarn")),
        (dict(rope_parameters=None, rope_scaling=dict(type="longrope", factor=4.0)), ("rope", "longrope")),
        (dict(hidden_act="quick_gelu"), ("hidden_act", "quick_gelu")),
        (dict(rope_parameters=dict(rope_type="default", rope_theta=1e4, partial_rotary_factor=0.5)),
         ("partial_rotary_factor",)),
        (dict(is_causal=False), ("is_causal",)),
        (dict(quantization_config=dict(quant_method="gptq", bits=4)), ("quantization_config", "gptq")),
        (dict(num_key_value_heads=1), ("k_proj", "shape")),  # the file's k/v projections are for 2 heads
        (dict(intermediate_size=48), ("gate_proj", "shape")),
        (dict(num_hidden_layers=None), ("num_hidden_layers",)),
    ],
    ids=["yarn", "longrope", "hidden_act", "partial_rotary", "is_causal", "quantized", "kv_heads", "d_ff", "missing"],
)  # fmt: skip
def test_refusals_name_the_field(llama_folder, tmp_path, changes, names):
    message = refused(llama_folder, tmp_path, **changes)
    assert all(n in message for n in names), message


def test_huge_vocabulary_is_refused_before_any_tensor_is_read(llama_folder, tmp_path, monkeypatch):
    def read(*args):
        raise AssertionError("the weights were read")

    monkeypatch.setattr(importers, "_read_weights", read)
    message = refused(llama_folder, tmp_path, vocab_size=50_000_000)
    assert "vocab_size" in message, message


def test_untied_base_model_without_a_head_is_refused(tmp_path):
    folder = make(tmp_path / "base", transformers.LlamaModel)  # tie_word_embeddings False: no head in the file
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        load_hf_dir(folder, device="cpu")


def test_app_api_on_an_imported_model(tmp_path):
    """trace_text and attention_maps on a Qwen2 import: the trace keeps one k per key/value head, and the
    windowed layer's mask lets the last query see only the last 4 keys."""
    folder = make(tmp_path / "qwen2", QWEN2, **CASES["qwen2_window"][1])
    ckpt = load_hf_dir(folder, device="cpu")
    trace = trace_text(ckpt, TEXTS[0])
    n = len(trace.source.ids)
    full, windowed = trace.decoder.layers[0].self_attn, trace.decoder.layers[1].self_attn
    assert full.k.shape == (1, 2, n, 8) and full.q.shape == (1, 4, n, 8)
    assert int(full.mask[0, 0, -1].sum()) == n and int(windowed.mask[0, 0, -1].sum()) == 4
    assert bool((windowed.weights[0, :, -1, : n - 4] == 0).all())
    maps = attention_maps(ckpt, TEXTS[0], max_cells=16)
    assert maps.maps["decoder self"].shape[:2] == (3, 4)
    cells = -(-n // -(-n // 16))  # n keys in blocks of ⌈n / 16⌉
    assert maps.maps["decoder self"].shape[2:] == (cells, cells)


# --- the folder reader's own rules, shown on a Llama folder ---


def test_a_tied_model_whose_file_holds_another_head_is_refused(tmp_path):
    """transformers 4 used the embedding, 5 uses the file's head: which one the author meant is not ours to guess."""
    folder = make(tmp_path / "untied", tie_word_embeddings=False)
    edit_config(folder, tie_word_embeddings=True)
    with pytest.raises(CheckpointError, match="tie_word_embeddings=true, but the file's lm_head.weight differs"):
        load_hf_dir(folder, device="cpu")


@pytest.mark.parametrize(
    ("template", "add_bos", "starts_with_bos"), [(False, True, True), (False, False, False), (True, False, True)]
)
def test_tokenizer_config_adds_bos_only_where_tokenizer_json_has_no_template(tmp_path, template, add_bos, starts_with_bos):
    """add_bos_token: true gives a template-less tokenizer.json the BOS template transformers 4's Llama tokenizer built;
    a tokenizer.json with its own template keeps it (transformers 5.23 reads only that one for these tokenizers)."""
    folder = make(tmp_path / "llama")
    if not template:
        inner = json.loads((folder / "tokenizer.json").read_text())
        inner["post_processor"] = None
        (folder / "tokenizer.json").write_text(json.dumps(inner))
    (folder / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": add_bos, "bos_token": {"content": "<s>"}}))
    ids = load_hf_dir(folder, device="cpu").tokenizer.encode(TEXTS[1]).ids
    assert list(ids) == ([TOK.token_to_id("<s>")] if starts_with_bos else []) + TOK.encode(TEXTS[1], add_special_tokens=False).ids


def test_a_16_bit_model_over_the_budget_says_it_is_computed_in_float32(tmp_path):
    from transformer.checkpoints.budget import Budget

    folder = make(tmp_path / "bf16", save=None)
    edit_config(folder, dtype="bfloat16")
    with pytest.raises(CheckpointError, match="stored in bfloat16 and computed here in float32"):
        load_hf_dir(folder, device="cpu", budget=Budget(model_bytes=10_000, trace_bytes=512 * 2**20))


def test_convert_verify_records_the_parity_it_measured(tmp_path, capsys):
    from transformer.checkpoints.format import load_checkpoint
    from transformer.checkpoints.verify import compare
    from transformer.convert import main as convert_main

    folder = make(tmp_path / "llama")
    out = tmp_path / "llama.safetensors"
    assert convert_main([str(folder), str(out), "--verify"]) == 0
    assert "checked against transformers" in capsys.readouterr().out
    parity = load_checkpoint(out, device="cpu").training["parity"]
    assert parity["max_attention_diff"] <= 1e-4 and parity["max_output_diff"] <= 1e-4
    assert parity["transformers"] == transformers.__version__ and parity["texts"] == 3 and parity["tokens"] > 0
    # the check can fail: one query weight off, and compare sees it
    ckpt = load_hf_dir(folder, device="cpu")
    with torch.no_grad():
        ckpt.model.decoder.layers[1].self_attn.q_proj.weight[0, 0] += 1.0
    assert compare(folder, ckpt)["max_attention_diff"] > 1e-3
