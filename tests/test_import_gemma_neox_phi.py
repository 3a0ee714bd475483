"""Gemma, GPT-NeoX (Pythia) and Phi-3 folders imported into our model: parity with `transformers`, fused weights, refusals.

Each model is built by `transformers` from a tiny config, its weights moved off their init (norm gains too),
saved with `save_pretrained` beside a tokenizer.json trained here (tests/hf_reference.py), loaded back by
`load_hf_dir`, and `verify.compare` runs transformers' own class (eager attention, float32) on the same folder.
"""

import dataclasses
import json
import os
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never reach for the hub

import pytest
import torch
import transformers
from hf_reference import TEXTS, bpe_tokenizer, save_random
from numerics import assert_close, longest_sum, sublayers
from safetensors.torch import load_file, save_file

from transformer import CheckpointError
from transformer.api import attention_maps, pool_trace, trace_text
from transformer.checkpoints.format import Checkpoint
from transformer.checkpoints.importers import gemma as gemma_family
from transformer.checkpoints.importers import gpt_neox as neox_family
from transformer.checkpoints.importers import load_hf_dir
from transformer.checkpoints.importers import phi3 as phi3_family
from transformer.checkpoints.importers.parts import HF_ACTIVATIONS
from transformer.checkpoints.verify import compare
from transformer.model.network import TransformerModel

pytestmark = pytest.mark.numerics

# The issue's contract: every layer's attention weights and the next-token probabilities within 1e-4 of
# transformers'. Measured: at most 1e-7 on these models (float32 rounding of the same sums in another order).
# The tiny models cannot tell every mistake from rounding at that tolerance (the exact GELU in place of
# Gemma's tanh one moves them by 1e-5), so the tests also pin the config each import chose.
TOL = 1e-4
WINDOW = 4  # Phi-3's sliding window in these tests: TEXTS[0] is much longer


def gemma(vocab: int, **changes) -> transformers.PreTrainedModel:
    """Gemma 2B's shape in miniature: one key/value head (MQA), heads 16 wide in a 32-wide model (4 × 16 ≠ 32)."""
    fields = dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-6,
    )  # fmt: skip
    return transformers.GemmaForCausalLM(transformers.GemmaConfig(**{**fields, **changes}))


def neox(vocab: int, **changes) -> transformers.PreTrainedModel:
    """Pythia's shape in miniature: rotary on a quarter of each 16-wide head, biases, parallel residual."""
    fields = dict(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=128, rotary_pct=0.25, hidden_act="gelu", use_parallel_residual=True,
    )  # fmt: skip
    return transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**{**fields, **changes}))


def phi3(vocab: int, **changes) -> transformers.PreTrainedModel:
    """Phi-3's shape in miniature: fused q|k|v with 2 key/value heads for 4 query heads, rotary on half of each head."""
    fields = dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, partial_rotary_factor=0.5, bos_token_id=0,
        eos_token_id=1, pad_token_id=2,
    )  # fmt: skip
    return transformers.Phi3ForCausalLM(transformers.Phi3Config(**{**fields, **changes}))


# name -> (builder, what the import must choose)
MODELS = {
    "gemma-mqa": (
        lambda v: gemma(v),
        dict(
            norm="rms_plus_one",
            scale_embeddings=True,
            n_heads=4,
            n_kv_heads=1,
            d_head=16,
            mlp="gated",
            activation="gelu_tanh",
            attn_bias=False,
            tie_embeddings=True,
            rotary_dim=16,
            layer_norm_eps=1e-6,
        ),
    ),
    "gemma-bias-untied": (
        lambda v: gemma(v, num_key_value_heads=2, attention_bias=True, tie_word_embeddings=False),
        dict(n_kv_heads=2, attn_bias=True, attn_out_bias=True, mlp_bias=False, tie_embeddings=False),
    ),
    "pythia-parallel": (
        lambda v: neox(v),
        dict(
            norm="layer",
            norm_bias=True,
            mlp="plain",
            activation="gelu",
            parallel_residual=True,
            rotary_dim=4,
            tie_embeddings=False,
            attn_bias=True,
            attn_out_bias=True,
        ),
    ),
    "neox-sequential-tied": (
        lambda v: neox(v, use_parallel_residual=False, tie_word_embeddings=True, attention_bias=False),
        dict(parallel_residual=False, tie_embeddings=True, attn_bias=False, attn_out_bias=False, mlp_bias=True),
    ),
    "neox-linear-rope": (
        lambda v: neox(v, rope_scaling={"rope_type": "linear", "factor": 4.0}, rotary_pct=0.5),
        dict(rope_scaling="linear", rope_factor=4.0, rotary_dim=8),
    ),
    "phi3-window": (
        lambda v: phi3(v, sliding_window=WINDOW),
        dict(
            norm="rms",
            mlp="gated",
            activation="silu",
            n_kv_heads=2,
            rotary_dim=4,
            sliding_window=WINDOW,
            full_attention_layers=(),
            tie_embeddings=False,
            attn_bias=False,
            mlp_bias=False,
        ),
    ),
    "phi3-tied-head-dim": (
        lambda v: phi3(v, tie_word_embeddings=True, head_dim=16, partial_rotary_factor=1.0, rope_theta=500.0),
        dict(tie_embeddings=True, d_head=16, rotary_dim=16, rope_theta=500.0, sliding_window=0),
    ),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """folder(name) -> the saved folder of MODELS[name], built once per module."""
    tok = bpe_tokenizer(vocab_size=320)  # above the 256 byte symbols, so BPE learns merges
    made = {}

    def make(name: str):
        if name not in made:
            torch.manual_seed(0)
            model = MODELS[name][0](tok.get_vocab_size()).eval()
            made[name] = save_random(model, tok, tmp_path_factory.mktemp(name), seed=len(made) + 1)
        return made[name]

    return make


@pytest.mark.parametrize("name", list(MODELS))
def test_import_matches_transformers(folder, name):
    path = folder(name)
    ckpt = load_hf_dir(path, device="cpu")
    cfg = ckpt.config
    for field, expected in MODELS[name][1].items():
        assert getattr(cfg, field) == expected, f"{name}: {field} is {getattr(cfg, field)!r}, expected {expected!r}"
    assert (cfg.kind, cfg.positional, cfg.embed_norm) == ("decoder", "rope", False)
    assert cfg.norm_first and cfg.has_final_norm
    assert len(ckpt.tokenizer.encode(TEXTS[0]).ids) > 2 * WINDOW
    result = compare(path, ckpt, TEXTS)
    att, out = result["max_attention_diff"], result["max_output_diff"]
    print(f"{name}: attention {att:.2e}, next-token probabilities {out:.2e}")
    assert att <= TOL and out <= TOL, f"{name}: attention {att:.2e}, probabilities {out:.2e} > TOL {TOL}"


def unscaled(ckpt: Checkpoint) -> Checkpoint:
    """The same weights read with plain rotary positions (no scaling)."""
    model = TransformerModel(dataclasses.replace(ckpt.config, rope_scaling="default", rope_factor=1.0, rope_original_max_len=0))
    model.load_state_dict(ckpt.model.state_dict())
    return Checkpoint(model=model.eval(), tokenizer=ckpt.tokenizer)


def test_linear_rope_is_not_vacuous(folder):
    """neox-linear-rope can fail: the same file read as plain rope is far from the reference."""
    path = folder("neox-linear-rope")
    result = compare(path, unscaled(load_hf_dir(path, "cpu")), TEXTS)
    assert result["max_attention_diff"] > 100 * TOL


def test_dynamic_rope_reads_past_max_position_embeddings(tmp_path):
    """GPT-NeoX with dynamic NTK scaling over its partial rotary: the base grows once a text is longer than
    max_position_embeddings (16 here), so the import reads up to factor × 16 tokens; each text is compared with a
    freshly loaded reference (transformers keeps the frequencies it grew on a longer text)."""
    tok = bpe_tokenizer(vocab_size=320)
    torch.manual_seed(0)
    model = neox(tok.get_vocab_size(), max_position_embeddings=16, rope_scaling={"rope_type": "dynamic", "factor": 4.0})
    path = save_random(model.eval(), tok, tmp_path / "dynamic")
    ckpt = load_hf_dir(path, "cpu")
    cfg = ckpt.config
    assert (cfg.rope_scaling, cfg.rope_factor, cfg.rope_original_max_len) == ("dynamic", 4.0, 16)
    assert (cfg.max_len, cfg.rotary_dim) == (64, 4)  # factor × 16 tokens; a quarter of each 16-wide head turned
    assert len(ckpt.tokenizer.encode(TEXTS[0], max_len=cfg.max_len).ids) > 16 > len(ckpt.tokenizer.encode(TEXTS[1]).ids)
    for text in TEXTS:
        result = compare(path, ckpt, (text,))
        assert result["max_attention_diff"] <= TOL and result["max_output_diff"] <= TOL, text
    # not vacuous: the same weights with unscaled rotary are far from the reference on the long text
    result = compare(path, unscaled(ckpt), (TEXTS[0],))
    assert result["max_attention_diff"] > 100 * TOL


MINIMAL = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4)


@pytest.mark.parametrize(
    ("family", "cls"),
    [
        (gemma_family, transformers.GemmaConfig),
        (neox_family, transformers.GPTNeoXConfig),
        (phi3_family, transformers.Phi3Config),
    ],
)
def test_absent_fields_take_transformers_defaults(family, cls):
    """A config.json that leaves fields out means transformers' defaults (Gemma's: 7B's 16 kv heads of 256), not ours."""
    ours, theirs = family.config({"model_type": cls.model_type, **MINIMAL}), cls(**MINIMAL)
    assert (ours.get("n_kv_heads") or ours["n_heads"]) == (
        getattr(theirs, "num_key_value_heads", None) or theirs.num_attention_heads
    )
    head_dim = getattr(theirs, "head_dim", None) or theirs.hidden_size // theirs.num_attention_heads  # as the attention
    assert (ours.get("head_dim", 0) or ours["d_model"] // ours["n_heads"]) == head_dim
    assert ours["layer_norm_eps"] == getattr(theirs, "rms_norm_eps", getattr(theirs, "layer_norm_eps", None))
    assert ours["activation"] == HF_ACTIVATIONS[theirs.hidden_act]
    assert ours["tie_embeddings"] == theirs.tie_word_embeddings
    assert ours["rope_theta"] == theirs.rope_parameters["rope_theta"]
    assert ours["rotary_fraction"] == theirs.rope_parameters.get("partial_rotary_factor", 1.0)
    assert ours["max_len"] == min(theirs.max_position_embeddings, 2048)
    assert ours["attn_bias"] == getattr(theirs, "attention_bias", False)
    assert ours.get("parallel_residual", False) == getattr(theirs, "use_parallel_residual", False)
    assert ours.get("sliding_window", 0) == (getattr(theirs, "sliding_window", None) or 0)


def test_phi3_window_hides_far_keys_on_every_layer(folder):
    ckpt = load_hf_dir(folder("phi3-window"), device="cpu")
    trace = trace_text(ckpt, TEXTS[0])
    for layer in range(ckpt.config.n_layers):
        weights = trace.attention("decoder self", layer).weights[0]  # (H, T, T)
        assert bool((weights[:, -1, :-WINDOW] == 0).all()), f"layer {layer}: the last token sees past its window"
        assert bool((weights[:, -1, -WINDOW:] > 0).all())


def edited_copy(src, dst, config=None, tensors=None):
    """A copy of folder `src` with config.json fields replaced (None deletes one) and tensors replaced or added."""
    shutil.copytree(src, dst)
    if config:
        hf = json.loads((dst / "config.json").read_text())
        for key, value in config.items():
            if value is None:
                hf.pop(key, None)
            else:
                hf[key] = value
        (dst / "config.json").write_text(json.dumps(hf))
    if tensors:
        state = load_file(dst / "model.safetensors")
        state.update(tensors(state))
        save_file(state, dst / "model.safetensors")
    return dst


def assert_same_weights(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_pythia_from_transformers_4_with_old_fields_and_buffers(folder, tmp_path):
    """Pythia as people have it cached: rotary_pct / rotary_emb_base instead of rope_parameters, and the causal-mask
    and rotary buffers that transformers 4 saved in the weights."""
    modern = folder("pythia-parallel")
    T, rotary = 128, 4

    def buffers(state):
        extra = {}
        for i in range(2):
            extra[f"gpt_neox.layers.{i}.attention.bias"] = torch.tril(torch.ones(T, T, dtype=torch.bool))[None, None]
            extra[f"gpt_neox.layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
            extra[f"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq"] = torch.ones(rotary // 2)
        return extra

    old = {"rope_parameters": None, "rotary_pct": 0.25, "rotary_emb_base": 10000, "transformers_version": "4.40.0"}
    legacy = edited_copy(modern, tmp_path / "legacy", old, buffers)
    a, b = load_hf_dir(legacy, "cpu"), load_hf_dir(modern, "cpu")
    assert a.config == b.config and a.config.rotary_fraction == 0.25
    assert_same_weights(a, b)
    assert "layers.1.attention.masked_bias" in a.training["ignored"]  # named without the "gpt_neox." prefix
    result = compare(legacy, a, TEXTS)  # transformers 5 reads the old fields the same way
    assert result["max_attention_diff"] <= TOL and result["max_output_diff"] <= TOL
    # A config that names no rotary fraction at all: GPT-NeoX's default, a quarter
    bare = edited_copy(modern, tmp_path / "bare", {"rope_parameters": None})
    assert load_hf_dir(bare, "cpu").config.rotary_fraction == 0.25


def test_gemma_released_config_gelu_means_the_tanh_one(folder, tmp_path):
    """Google's configs say hidden_act="gelu" (and later hidden_activation="gelu_pytorch_tanh"): the tanh GELU."""
    modern = folder("gemma-mqa")
    released = {"hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh", "rope_parameters": None, "rope_theta": 10000.0}
    old = edited_copy(modern, tmp_path / "released", released)
    a = load_hf_dir(old, "cpu")
    assert a.config == load_hf_dir(modern, "cpu").config and a.config.activation == "gelu_tanh"
    result = compare(old, a, TEXTS)
    assert result["max_attention_diff"] <= TOL and result["max_output_diff"] <= TOL


LONGROPE = {"short_factor": [1.0] * 2, "long_factor": [2.0] * 2, "original_max_position_embeddings": 64}


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        (
            "phi3-window",
            {"rope_parameters": None, "rope_scaling": {"type": "longrope", **LONGROPE}},
            r"rope_scaling type 'longrope'",
        ),
        (
            "phi3-window",
            {"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4, **LONGROPE}},
            r"rope_scaling type 'longrope'",
        ),
        ("phi3-window", {"rope_parameters": None, "rope_scaling": {"type": "su", **LONGROPE}}, r"rope_scaling type 'su'"),
        # transformers refuses every other scaling type for Phi-3 ("must be one of ['longrope']"): so do we
        ("phi3-window", {"rope_parameters": {"rope_type": "linear", "factor": 2.0}}, r"rope_scaling type 'linear'"),
        ("phi3-window", {"hidden_act": "gelu_fast"}, r"hidden_act='gelu_fast'"),
        ("phi3-window", {"architectures": ["Phi3SmallForCausalLM"]}, r"unsupported architectures \['Phi3SmallForCausalLM'\]"),
        ("pythia-parallel", {"hidden_act": "gelu_fast"}, r"hidden_act='gelu_fast'"),
        ("pythia-parallel", {"hidden_act": "quick_gelu"}, r"hidden_act='quick_gelu'"),
        ("pythia-parallel", {"rope_theta": 500.0}, r"rope_theta=500\.0"),
        ("pythia-parallel", {"partial_rotary_factor": 1.0}, r"partial_rotary_factor=1\.0"),
        ("pythia-parallel", {"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}, r"rope scaling type 'yarn'"),
        ("gemma-mqa", {"use_bidirectional_attention": True}, r"use_bidirectional_attention=True"),
        ("gemma-mqa", {"hidden_activation": "gelu"}, r"hidden_activation='gelu'"),
        ("gemma-mqa", {"hidden_act": "gelu_fast"}, r"hidden_act='gelu_fast'"),
        ("gemma-mqa", {"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}}, r"partial_rotary_factor=0\.5"),
        ("gemma-mqa", {"architectures": ["Gemma2ForCausalLM"]}, r"unsupported architectures \['Gemma2ForCausalLM'\]"),
    ],
)
def test_unsupported_configs_are_refused_by_name(folder, tmp_path, name, changes, message):
    with pytest.raises(CheckpointError, match=message):
        load_hf_dir(edited_copy(folder(name), tmp_path / "edited", changes), "cpu")


def test_fused_weights_that_disagree_with_the_config_are_refused(folder, tmp_path):
    # One key/value head fewer: q|k|v is 32 + 2·8 = 48 rows by the config, 64 in the file.
    fewer_kv = edited_copy(folder("phi3-window"), tmp_path / "kv", {"num_key_value_heads": 1})
    with pytest.raises(CheckpointError, match=r"layers\.0\.self_attn\.qkv_proj\.weight has shape \(64, 32\).*\(48, 32\)"):
        load_hf_dir(fewer_kv, "cpu")
    narrower = edited_copy(folder("phi3-window"), tmp_path / "ff", {"intermediate_size": 48})
    with pytest.raises(CheckpointError, match=r"layers\.0\.mlp\.gate_up_proj\.weight has shape \(128, 32\).*\(96, 32\)"):
        load_hf_dir(narrower, "cpu")
    fused = "gpt_neox.layers.1.attention.query_key_value.weight"
    cut = edited_copy(folder("pythia-parallel"), tmp_path / "qkv", tensors=lambda s: {fused: s[fused][:128].contiguous()})
    with pytest.raises(
        CheckpointError, match=r"layers\.1\.attention\.query_key_value\.weight has shape \(128, 64\).*\(192, 64\)"
    ):
        load_hf_dir(cut, "cpu")


def test_base_models_without_a_head(tmp_path):
    """GemmaModel's head is its embedding (tied): it imports. GPTNeoXModel has no embed_out: refused by name."""
    tok = bpe_tokenizer(vocab_size=320)
    vocab = tok.get_vocab_size()
    base = save_random(transformers.GemmaModel(gemma(vocab).config), tok, tmp_path / "gemma")
    ckpt = load_hf_dir(base, "cpu")
    assert ckpt.training["architecture"] == "GemmaModel"
    result = compare(base, ckpt, TEXTS)
    assert result["max_attention_diff"] <= TOL and result["max_output_diff"] <= TOL
    headless = save_random(transformers.GPTNeoXModel(neox(vocab).config), tok, tmp_path / "neox")
    with pytest.raises(CheckpointError, match=r"missing weight 'embed_out\.weight'"):
        load_hf_dir(headless, "cpu")


def test_trace_and_attention_maps_of_an_imported_pythia(folder):
    ckpt = load_hf_dir(folder("pythia-parallel"), device="cpu")
    cfg = ckpt.config
    trace = trace_text(ckpt, TEXTS[0])
    n = len(trace.source.ids)
    assert trace.kinds == ("decoder self",) and trace.n_layers("decoder self") == cfg.n_layers == 2
    assert trace.probs.shape == (1, n, cfg.vocab_size)
    head = trace.head("decoder self", 1, 3)
    weights = head["weights"]  # (T, T)
    assert weights.shape == (n, n) and bool((weights.triu(1) == 0).all()), "causal: no token sees a later one"
    assert_close(weights.sum(-1), torch.ones(n), terms=n, why="each query's weights sum to 1")
    maps = attention_maps(ckpt, TEXTS[0], max_cells=8)
    pooled = pool_trace(trace, max_cells=8)
    assert maps.maps["decoder self"].shape == (cfg.n_layers, cfg.n_heads, 8, 8)
    assert_close(
        maps.maps["decoder self"], pooled.maps["decoder self"],
        terms=longest_sum(cfg, n), depth=sublayers(cfg), why="pooled maps and the pooled full trace",
    )  # fmt: skip
