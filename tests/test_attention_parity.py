"""Our attention and layers against PyTorch's own modules, with the same weights copied in.

torch.nn's attention masks say True where attending is NOT allowed; ours say True where it is.
Every conversion below is written out, and both our paths (traced = manual, untraced = fused) are checked.
Ours and torch's add the same products in other orders (other kernels), so they agree within float32
rounding (`numerics.assert_close`): the longest sum (d_ff, d_model or the keys) times the sublayers stacked.
"""

from __future__ import annotations

import pytest
import torch
from numerics import assert_close
from torch import nn

from transformer.model.attention import MultiHeadAttention
from transformer.model.config import ModelConfig
from transformer.model.layers import DecoderLayer, EncoderLayer
from transformer.model.network import causal_mask, padding_mask

pytestmark = pytest.mark.numerics

B, T, D_MODEL, N_HEADS, D_FF = 3, 7, 32, 4, 64
LENGTHS = (7, 5, 3)  # real tokens per batch item; the rest is right padding


def keep_of(lengths: tuple[int, ...], T: int) -> torch.Tensor:
    """(B, T) bool, True at real tokens."""
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]


@torch.no_grad()
def copy_attention(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    """Our separate W_Q, W_K, W_V are torch's in_proj_weight split in three chunks, in that order."""
    ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
    ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
    ref.out_proj.weight.copy_(ours.out_proj.weight)
    ref.out_proj.bias.copy_(ours.out_proj.bias)


@torch.no_grad()
def randomise_norms(module: nn.Module) -> None:
    """LayerNorms start as the identity (weight 1, bias 0); random ones catch a swapped norm."""
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            m.weight.normal_(1.0, 0.3)
            m.bias.normal_(0.0, 0.3)


def mha_pair(seed: int = 0) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    torch.manual_seed(seed)
    ours = MultiHeadAttention(ModelConfig(d_model=D_MODEL, n_heads=N_HEADS)).eval()
    ref = nn.MultiheadAttention(D_MODEL, N_HEADS, dropout=0.0, batch_first=True).eval()
    copy_attention(ours, ref)
    return ours, ref


def layer_close(actual: torch.Tensor, expected: torch.Tensor, depth: int, why: str) -> None:
    """One layer against torch's: its longest sum is the feed-forward's d_ff; `depth` sublayers (and norms) stacked."""
    assert_close(actual, expected, terms=max(D_FF, D_MODEL, T), depth=depth, why=why)


@torch.no_grad()
def check_mha(ours, ref, x, memory, our_mask, ref_kwargs) -> None:
    kv = x if memory is None else memory
    expected, expected_weights = ref(x, kv, kv, need_weights=True, average_attn_weights=False, **ref_kwargs)
    fast, no_trace = ours(x, memory=memory, mask=our_mask)
    traced, trace = ours(x, memory=memory, mask=our_mask, trace=True)
    assert no_trace is None
    terms = max(D_MODEL, kv.shape[1])  # the projections' d_model-term sums, a row of attention over the keys
    assert_close(fast, expected, terms=terms, why="our fused path against torch's attention module")
    assert_close(traced, expected, terms=terms, why="our manual (traced) path against torch's attention module")
    assert_close(trace.weights, expected_weights, terms=terms, why="our weights against torch's, per head")  # (B, H, Tq, Tk)


def test_self_attention_with_key_padding_matches_torch():
    ours, ref = mha_pair()
    x = torch.randn(B, T, D_MODEL)
    keep = keep_of(LENGTHS, T)
    # Every query row has at least one real key, so every row is well defined in both: compare all of them.
    check_mha(ours, ref, x, None, padding_mask(keep, T), {"key_padding_mask": ~keep})


def test_self_attention_with_causal_mask_matches_torch():
    ours, ref = mha_pair(1)
    x = torch.randn(B, T, D_MODEL)
    not_allowed = torch.ones(T, T, dtype=torch.bool).triu(1)  # torch: True above the diagonal = blocked
    check_mha(ours, ref, x, None, causal_mask(T, None, x.device), {"attn_mask": not_allowed})


def test_causal_and_padding_masks_combined_match_torch():
    ours, ref = mha_pair(2)
    x = torch.randn(B, T, D_MODEL)
    keep = keep_of(LENGTHS, T)
    not_allowed = torch.ones(T, T, dtype=torch.bool).triu(1)
    check_mha(ours, ref, x, None, causal_mask(T, keep, x.device), {"attn_mask": not_allowed, "key_padding_mask": ~keep})


def test_cross_attention_to_padded_memory_matches_torch():
    ours, ref = mha_pair(3)
    Ts = 9
    x, memory = torch.randn(B, T, D_MODEL), torch.randn(B, Ts, D_MODEL)
    memory_keep = keep_of((9, 4, 1), Ts)
    check_mha(ours, ref, x, memory, padding_mask(memory_keep, T), {"key_padding_mask": ~memory_keep})


def test_attention_without_mask_matches_torch():
    ours, ref = mha_pair(4)
    check_mha(ours, ref, torch.randn(B, T, D_MODEL), None, None, {})


def layer_config(norm_first: bool, activation: str) -> ModelConfig:
    return ModelConfig(
        kind="encoder-decoder", vocab_size=50, n_layers=1, n_heads=N_HEADS, d_model=D_MODEL, d_ff=D_FF,
        norm_first=norm_first, activation=activation,
    )  # fmt: skip


@torch.no_grad()
def copy_feed_forward(ours, ref) -> None:
    ref.linear1.weight.copy_(ours.feed_forward.up.weight)
    ref.linear1.bias.copy_(ours.feed_forward.up.bias)
    ref.linear2.weight.copy_(ours.feed_forward.down.weight)
    ref.linear2.bias.copy_(ours.feed_forward.down.bias)


@torch.no_grad()
def copy_norm(ours: nn.LayerNorm, ref: nn.LayerNorm) -> None:
    ref.weight.copy_(ours.weight)
    ref.bias.copy_(ours.bias)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-LN", "post-LN"])
@torch.no_grad()
def test_encoder_layer_matches_torch(norm_first, activation):
    torch.manual_seed(10)
    ours = EncoderLayer(layer_config(norm_first, activation)).eval()
    randomise_norms(ours)
    ref = nn.TransformerEncoderLayer(
        D_MODEL, N_HEADS, D_FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()
    copy_attention(ours.self_attn, ref.self_attn)
    copy_feed_forward(ours, ref)
    copy_norm(ours.attn_block.norm, ref.norm1)
    copy_norm(ours.ff_block.norm, ref.norm2)

    x = torch.randn(B, T, D_MODEL)
    keep = keep_of(LENGTHS, T)
    expected = ref(x, src_key_padding_mask=~keep)
    fast, _ = ours(x, padding_mask(keep, T))
    traced, trace = ours(x, padding_mask(keep, T), trace=True)
    # torch's fused encoder fast path (eval + no grad) may return zeros or anything at padded
    # query positions, which nothing downstream reads; compare the real tokens only.
    layer_close(fast[keep], expected[keep], 2, "our encoder layer (fused attention) against torch's")
    layer_close(traced[keep], expected[keep], 2, "our encoder layer (manual attention) against torch's")
    layer_close(trace.resid_ff[keep], expected[keep], 2, "our traced residual stream against torch's layer output")
    # The fast path skips the weights; torch's attention module (slow path) gives them per head.
    ref_in = ref.norm1(x) if norm_first else x
    _, weights = ref.self_attn(ref_in, ref_in, ref_in, key_padding_mask=~keep, average_attn_weights=False)
    layer_close(trace.self_attn.weights, weights, 2, "self-attention weights (after the norm) against torch's")


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-LN", "post-LN"])
@torch.no_grad()
def test_decoder_layer_with_cross_attention_matches_torch(norm_first, activation):
    torch.manual_seed(20)
    ours = DecoderLayer(layer_config(norm_first, activation), cross=True).eval()
    randomise_norms(ours)
    ref = nn.TransformerDecoderLayer(
        D_MODEL, N_HEADS, D_FF, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()
    copy_attention(ours.self_attn, ref.self_attn)
    copy_attention(ours.cross_attn, ref.multihead_attn)
    copy_feed_forward(ours, ref)
    copy_norm(ours.attn_block.norm, ref.norm1)
    copy_norm(ours.cross_block.norm, ref.norm2)
    copy_norm(ours.ff_block.norm, ref.norm3)

    Ts = 9
    x, memory = torch.randn(B, T, D_MODEL), torch.randn(B, Ts, D_MODEL)
    keep, memory_keep = keep_of(LENGTHS, T), keep_of((9, 6, 2), Ts)
    expected = ref(
        x,
        memory,
        tgt_mask=torch.ones(T, T, dtype=torch.bool).triu(1),  # True = may NOT attend (the future)
        tgt_key_padding_mask=~keep,
        memory_key_padding_mask=~memory_keep,
    )
    self_mask, cross_mask = causal_mask(T, keep, x.device), padding_mask(memory_keep, T)
    fast, _ = ours(x, self_mask, memory, cross_mask)
    traced, trace = ours(x, self_mask, memory, cross_mask, trace=True)
    # The decoder layer has no fused fast path, and with right padding every query row still sees
    # key 0, so every row (padded ones included) is well defined: compare them all.
    layer_close(fast, expected, 3, "our decoder layer (fused attention) against torch's")
    layer_close(traced, expected, 3, "our decoder layer (manual attention) against torch's")
    layer_close(trace.resid_ff, expected, 3, "our traced residual stream against torch's layer output")
    ref_in = ref.norm1(x) if norm_first else x
    _, weights = ref.self_attn(ref_in, ref_in, ref_in, attn_mask=torch.ones(T, T, dtype=torch.bool).triu(1),
                               key_padding_mask=~keep, average_attn_weights=False)  # fmt: skip
    layer_close(trace.self_attn.weights, weights, 2, "self-attention weights (after the norm) against torch's")
    cross_in = ref.norm2(trace.resid_attn) if norm_first else trace.resid_attn
    _, cross_weights = ref.multihead_attn(cross_in, memory, memory, key_padding_mask=~memory_keep, average_attn_weights=False)
    layer_close(trace.cross_attn.weights, cross_weights, 2, "cross-attention weights (after the norm) against torch's")
