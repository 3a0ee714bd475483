"""`describe(cfg)`: the architecture in words says what is true of each config, and nothing that is not."""

from __future__ import annotations

import pytest

from transformer.model.config import ModelConfig
from transformer.model.describe import describe, kv_sharing, norm_name, number, rotation, spans

SMOLLM_LIKE = ModelConfig(
    kind="decoder", vocab_size=49152, n_layers=30, n_heads=9, n_kv_heads=3, d_model=576, head_dim=64, d_ff=1536,
    max_len=8192, positional="rope", rope_theta=100000.0, rope_scaling="llama3", rope_factor=8.0,
    rope_original_max_len=8192, norm="rms", mlp="gated", activation="silu", attn_bias=False, attn_out_bias=False,
    mlp_bias=False, scale_embeddings=False, final_norm=True, sliding_window=4096, full_attention_layers=(0, 1, 2),
)  # fmt: skip
BERT_LIKE = ModelConfig(
    kind="encoder", vocab_size=30522, n_layers=6, n_heads=12, d_model=384, d_ff=1536, max_len=512, positional="learned",
    norm_first=False, activation="gelu", embed_norm=True, n_token_types=2, scale_embeddings=False, layer_norm_eps=1e-12,
)  # fmt: skip


def test_a_modern_decoder_in_words():
    assert describe(SMOLLM_LIKE) == (
        "decoder-only, 30 layers of width 576, 9 query heads sharing 3 key/value heads, 3 each (head width 64), "
        "RoPE θ = 100 000 on all dims (llama3 scaling ×8), RMSNorm before each sublayer (pre-norm), "
        "SwiGLU feed-forward (1 536 wide), no biases, tied embeddings, "
        "sliding window of 4 096 tokens in layers 3–29, vocabulary of 49 152 tokens, at most 8 192 tokens a text"
    )


def test_bert_in_words():
    assert describe(BERT_LIKE) == (
        "encoder-only, 6 layers of width 384, 12 heads (head width 32), learned positions, "
        "LayerNorm after each sublayer (post-LN), LayerNorm on the embeddings, GELU feed-forward (1 536 wide), "
        "2 segment embeddings, vocabulary of 30 522 tokens, at most 512 tokens a text"
    )


def test_the_papers_model_in_words():
    text = describe(ModelConfig())  # the defaults: Vaswani et al.'s encoder-decoder, small
    assert text.startswith("encoder-decoder, 2 encoder and 2 decoder layers of width 128, 4 heads (head width 32), ")
    assert "sinusoidal positions" in text and "ReLU feed-forward (512 wide)" in text
    assert "tied embeddings" in text and "embeddings scaled by √d_model" in text
    # Nothing a modern model adds, and nothing the paper's model lacks, is claimed.
    for absent in ("key/value", "RoPE", "RMSNorm", "sliding", "parallel", "bias", "GLU"):
        assert absent not in text, absent


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (dict(n_kv_heads=1), "4 query heads sharing one key/value head (multi-query) (head width 6)"),
        (dict(rotary_fraction=0.25, head_dim=8, rope_theta=10000.0), "RoPE θ = 10 000 on 2 of 8 dims"),
        (dict(rope_scaling="linear", rope_factor=4.0), "(linear scaling ×4)"),
        (dict(rope_scaling="dynamic", rope_factor=2.0, rope_original_max_len=8), "(dynamic NTK scaling ×2)"),
        (dict(rope_theta=500000.0), "RoPE θ = 500 000 on all dims"),
        (dict(norm="rms_plus_one"), "RMSNorm (scale 1 + w) before each sublayer"),
        (dict(qk_norm=True), "RMSNorm on each head's q and k"),
        (dict(norm="layer", norm_bias=False), "LayerNorm without bias before each sublayer"),
        (dict(parallel_residual=True), "parallel attention and feed-forward (one residual step)"),
        (dict(attn_bias=True), "biases on q, k, v only"),
        (dict(activation="gelu_tanh"), "GeGLU (tanh approximation) feed-forward (40 wide)"),
        (dict(mlp="plain", activation="gelu"), "GELU feed-forward (40 wide)"),
        (dict(tie_embeddings=True), "tied embeddings"),
        (dict(sliding_window=5), "sliding window of 5 tokens in every layer"),
        (dict(sliding_window=5, full_attention_layers=(1,)), "sliding window of 5 tokens in layers 0, 2"),
        (dict(sliding_window=5, full_attention_layers=(0, 2)), "sliding window of 5 tokens in layer 1,"),
        (dict(final_norm=False), "no final norm"),
    ],
)
def test_each_modern_option_is_named(overrides, expected):
    base = dict(
        kind="decoder", vocab_size=60, n_layers=3, n_heads=4, n_kv_heads=2, d_model=24, head_dim=6, d_ff=40,
        positional="rope", norm="rms", mlp="gated", activation="silu", attn_bias=False, attn_out_bias=False,
        mlp_bias=False, scale_embeddings=False, tie_embeddings=False,
    )  # fmt: skip
    text = describe(ModelConfig(**{**base, **overrides}))
    assert expected in text, text


def test_what_is_left_out_when_it_is_not_so():
    base = describe(ModelConfig(kind="decoder", n_heads=4, n_kv_heads=2, positional="rope", norm="rms"))
    assert "4 query heads sharing 2 key/value heads, 2 each (head width 32)" in base
    for absent in ("sliding window", "parallel", "q and k", "final norm", "scaling", "no biases"):
        assert absent not in base, absent


def test_kv_sharing_names_the_key_value_head_and_its_group():
    assert kv_sharing(9, 3, 5) == "Query head 5 reads key/value head 1, shared by query heads 3, 4 and 5."
    assert kv_sharing(6, 2, 0) == "Query head 0 reads key/value head 0, shared by query heads 0, 1 and 2."
    assert kv_sharing(4, 2, 3) == "Query head 3 reads key/value head 1, shared by query heads 2 and 3."
    assert kv_sharing(4, 1, 2) == "Query head 2 reads the model's only key/value head (0), shared by all 4 query heads."
    assert kv_sharing(4, 4, 2) == ""  # plain multi-head attention: nothing is shared


def test_small_helpers():
    assert number(100000.0) == "100 000" and number(4096) == "4 096" and number(0.5) == "0.5" and number(12) == "12"
    assert spans([3, 4, 5, 9]) == "3–5, 9" and spans([1, 2]) == "1, 2" and spans([7]) == "7"
    assert norm_name(ModelConfig()) == "LayerNorm" and norm_name(ModelConfig(norm="rms")) == "RMSNorm"
    assert rotation(ModelConfig()) == ""
    partial = rotation(ModelConfig(positional="rope", head_dim=8, rotary_fraction=0.5))
    assert "the first 4 of each head's 8 dims" in partial and "i − j" in partial
