"""Attention-sink scores (`transformer.why.sinks`) against a plain loop over the weights, on hand-made maps and on a
grouped-query, rotary, sliding-window model; and the maps they can and cannot be read from."""

from __future__ import annotations

import math

import pytest
import torch
from numerics import assert_close, assert_same_bits

from transformer.api import attention_maps, pool_trace, trace_text
from transformer.why.sinks import maps_sink_scores, sink_scores, structural_mask, trace_sink_scores

MODERN = dict(
    n_layers=3, n_heads=6, n_kv_heads=2, d_model=24, head_dim=6, d_ff=40, max_len=64, positional="rope", norm="rms",
    mlp="gated", activation="silu", attn_bias=False, attn_out_bias=False, mlp_bias=False, scale_embeddings=False,
    tie_embeddings=False, sliding_window=4, full_attention_layers=(0,),
)  # fmt: skip
TEXT = "the dogs near the cat are happy and the keys to the cabinet are on the table"


def randomised(ckpt, seed: int = 0):
    """Weights far from their small init, so that heads attend sharply and differently."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in ckpt.model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.4)
    return ckpt


def naive(weights, mask) -> list[list[float]]:
    """The definition as a loop: per head, the mean of weight[q, 0] over the rows that may see key 0 and another key."""
    out = []
    for h in range(weights.shape[0]):
        m = mask[min(h, mask.shape[0] - 1)]
        rows = [q for q in range(weights.shape[1]) if bool(m[q, 0]) and bool(m[q, 1:].any())]
        out.append(sum(float(weights[h, q, 0]) for q in rows) / len(rows) if rows else math.nan)
    return out


def test_hand_made_causal_map_leaves_out_query_zero():
    weights = torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]])  # (H=1, 3, 3)
    mask = torch.ones(3, 3, dtype=torch.bool).tril()[None]
    assert sink_scores(weights, mask).tolist() == pytest.approx([(0.5 + 0.2) / 2])  # row 0 (weight 1 by necessity) out
    everything = torch.ones(1, 3, 3, dtype=torch.bool)
    assert sink_scores(weights, everything).tolist() == pytest.approx([(1.0 + 0.5 + 0.2) / 3])  # bidirectional: all rows
    # A window that has moved past token 0 (query 2 may see keys 1 and 2 only): that row is left out too.
    window = mask & torch.tensor([[True, True, False], [True, True, True], [False, True, True]])
    assert sink_scores(weights, window).tolist() == pytest.approx([0.5])
    # A one-token text: no row may look at token 0 and at another one.
    assert math.isnan(float(sink_scores(torch.ones(1, 1, 1), torch.ones(1, 1, 1, dtype=torch.bool))[0]))


def test_a_sink_head_scores_one_and_a_head_that_never_looks_there_zero():
    T = 5
    sink = torch.zeros(T, T)
    sink[:, 0] = 1.0
    diagonal = torch.eye(T)
    mask = torch.ones(T, T, dtype=torch.bool).tril()[None]
    assert sink_scores(torch.stack([sink, diagonal]), mask).tolist() == [1.0, 0.0]


def test_trace_scores_equal_the_loop_on_a_grouped_rotary_windowed_model(make_checkpoint):
    ckpt = randomised(make_checkpoint("decoder", **MODERN))
    trace = trace_text(ckpt, TEXT)
    T = len(trace.source.ids)
    assert T > 2 * MODERN["sliding_window"], "the text must be longer than the window, or the window changes nothing"
    scores = trace_sink_scores(trace, "decoder self")
    assert scores.shape == (3, 6)
    for layer in range(3):
        att = trace.attention("decoder self", layer)
        expected = naive(att.weights[0], att.mask[0])
        assert_close(scores[layer], expected, terms=T, why=f"layer {layer}: a mean of ≤ {T} weights, float64 both ways")
    # Heads differ (they are not one number repeated) and every score is a share.
    assert float(scores.std()) > 0.01 and bool(((scores >= 0) & (scores <= 1)).all())


def test_the_structural_mask_is_the_models_mask(make_checkpoint):
    """The mask rebuilt from the config (causal, window in layers 1 and 2, full attention in layer 0) is the trace's."""
    ckpt = make_checkpoint("decoder", **MODERN)
    trace = trace_text(ckpt, TEXT)
    T = len(trace.source.ids)
    for layer in range(3):
        assert torch.equal(
            structural_mask(ckpt.config, "decoder self", layer, T, T), trace.attention("decoder self", layer).mask[0]
        )
    assert bool(trace.attention("decoder self", 0).mask[0, 0, T - 1, 0])  # layer 0 sees token 0 from the last query
    assert not bool(trace.attention("decoder self", 1).mask[0, 0, T - 1, 0])  # layer 1's window does not


def test_unpooled_maps_give_the_same_scores_and_pooled_maps_are_refused(make_checkpoint):
    ckpt = randomised(make_checkpoint("decoder", **MODERN))
    trace = trace_text(ckpt, TEXT)
    T = len(trace.source.ids)
    expected = trace_sink_scores(trace, "decoder self")
    from_trace = pool_trace(trace, max_cells=64)  # T < 64: each cell one weight, the trace's own
    assert from_trace.block("decoder self") == (1, 1)
    assert_same_bits(maps_sink_scores(from_trace, "decoder self", ckpt.config), expected, why="the trace's weights, unpooled")
    light = attention_maps(ckpt, TEXT, max_cells=64)  # the light pass: another computation of the same weights
    assert_close(
        maps_sink_scores(light, "decoder self", ckpt.config), expected, terms=max(T, 40), depth=2 * 3, why="light pass vs trace"
    )
    pooled = pool_trace(trace, max_cells=4)
    with pytest.raises(ValueError, match="pooled"):
        maps_sink_scores(pooled, "decoder self", ckpt.config)


def test_encoder_and_cross_attention_count_every_row(make_checkpoint):
    ckpt = randomised(make_checkpoint("encoder-decoder"))
    trace = trace_text(ckpt, "the cat sat on the mat")
    for kind in ("encoder self", "cross"):
        w = trace.attention(kind, 1).weights[0]  # (H, Tq, Tk): nothing masked, so every row counts
        assert_close(trace_sink_scores(trace, kind)[1], w[:, :, 0].double().mean(-1), terms=w.shape[1], why=kind)
    decoder = trace.attention("decoder self", 1)
    assert_close(
        trace_sink_scores(trace, "decoder self")[1],
        naive(decoder.weights[0], decoder.mask[0]),
        terms=decoder.weights.shape[-1],
        why="decoder self: causal, query 0 left out",
    )
