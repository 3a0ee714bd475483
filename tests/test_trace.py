"""The trace is what the model computed: same outputs as the fast path, and every stored tensor consistent.

Also pins the dotted names the app and notebooks use, and checks the token streams that label the axes.
"""

from __future__ import annotations

import math

import pytest
import torch
from numerics import assert_close, assert_same_bits, longest_sum, sublayers
from torch import nn

from transformer.api import build_model, trace_text
from transformer.checkpoints.tokenizer import UNK
from transformer.model.config import ModelConfig

pytestmark = pytest.mark.numerics

D_MODEL, N_HEADS = 16, 2


def tiny_model(kind: str, norm_first: bool = True, seed: int = 0, **overrides):
    """A tiny model with large random weights: std-0.02 init would make every difference look small."""
    cfg = ModelConfig(kind=kind, vocab_size=40, n_layers=2, n_heads=N_HEADS, d_model=D_MODEL, d_ff=32, max_len=32,
                      norm_first=norm_first, **overrides)  # fmt: skip
    model = build_model(cfg, seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.normal_(1.0, 0.2)
    return model.eval().requires_grad_(False)


def keep_of(lengths, T):
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T) bool


def padded_batch(kind: str):
    """Model inputs for a batch of 2 with right padding, and the (B, T) keep masks used."""
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(6, 40, (2, 7), generator=g), torch.randint(6, 40, (2, 5), generator=g)
    src_keep, tgt_keep = keep_of((7, 4), 7), keep_of((5, 3), 5)
    if kind == "encoder-decoder":
        kwargs = dict(decoder_input_ids=tgt, attention_mask=src_keep.long(), decoder_attention_mask=tgt_keep.long())
        return src, kwargs, src_keep, tgt_keep
    if kind == "encoder":
        return src, dict(attention_mask=src_keep.long()), src_keep, None
    return tgt, dict(attention_mask=tgt_keep.long()), None, tgt_keep


KINDS = ["encoder-decoder", "encoder", "decoder"]


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-LN", "post-LN"])
@pytest.mark.parametrize("kind", KINDS)
def test_traced_path_equals_fast_path_with_padding(kind, norm_first):
    model = tiny_model(kind, norm_first, n_classes=3 if kind == "encoder" else 0)
    ids, kwargs, _, _ = padded_batch(kind)
    with torch.no_grad():
        fast, none = model(ids, **kwargs)
        traced, trace = model(ids, **kwargs, trace=True)
    assert none is None and trace is not None
    assert fast.abs().max() > 0.1  # the comparison below is not between two near-zero tensors
    cfg = model.cfg
    assert_close(fast, traced, terms=longest_sum(cfg, ids.shape[1]), depth=sublayers(cfg, head=True),
                 why="the fused attention kernel against the manual path, through every sublayer")  # fmt: skip
    assert_same_bits(trace.logits, traced, why="the trace's logits are the logits the traced run returned")


def expected_masks(kind: str, src_keep, tgt_keep) -> dict[str, torch.Tensor]:
    """(B, 1, Tq, Tk) bool masks per attention kind, built here independently of the model."""
    masks = {}
    if src_keep is not None:
        masks["encoder self"] = src_keep[:, None, None, :].expand(-1, 1, src_keep.shape[1], -1)
    if tgt_keep is not None:
        T = tgt_keep.shape[1]
        masks["decoder self"] = torch.ones(T, T, dtype=torch.bool).tril() & tgt_keep[:, None, None, :]
    if kind == "encoder-decoder":
        masks["cross"] = src_keep[:, None, None, :].expand(-1, 1, tgt_keep.shape[1], -1)
    return masks


@pytest.mark.parametrize("kind", KINDS)
def test_attention_trace_is_internally_consistent(kind):
    model = tiny_model(kind)
    ids, kwargs, src_keep, tgt_keep = padded_batch(kind)
    with torch.no_grad():
        _, trace = model(ids, **kwargs, trace=True)
    masks = expected_masks(kind, src_keep, tgt_keep)
    assert set(trace.kinds) == set(masks)
    for att_kind, mask in masks.items():
        for layer in range(2):
            a = trace.attention(att_kind, layer)
            assert torch.equal(a.mask, mask.expand_as(a.mask))
            assert a.q.shape[1] == N_HEADS and a.q.shape[-1] == D_MODEL // N_HEADS
            # Each row is a distribution over the keys; disallowed keys get exactly zero.
            n_keys = a.weights.shape[-1]
            ones = torch.ones(a.weights.shape[:-1])
            assert_close(a.weights.sum(-1), ones, terms=n_keys, depth=2, why="softmax rows: its own sum, then this one")
            assert torch.all(a.weights.masked_select(~a.mask.expand_as(a.weights)) == 0)
            assert torch.all(a.weights.masked_select(a.mask.expand_as(a.weights)) > 0)
            # scores are before the mask; output is what the stored weights do to the stored values.
            d_head = a.q.shape[-1]
            qk = a.q.abs() @ a.k.abs().transpose(-2, -1) / math.sqrt(d_head)  # Σ|q_i k_i| behind each score
            assert_close(a.scores, a.q @ a.k.transpose(-2, -1) / math.sqrt(d_head), terms=d_head, depth=2,
                         magnitude=float(qk.max()), why="q·k / √d_head recomputed: a d_head-term dot product, then the division")  # fmt: skip
            assert_close(a.output, a.weights @ a.v, terms=n_keys, magnitude=float((a.weights @ a.v.abs()).max()),
                         why="Σ weight·v recomputed from the stored weights and values")  # fmt: skip
            if att_kind == "decoder self":
                assert torch.all(a.weights.triu(1) == 0)  # nothing above the diagonal: no peeking ahead
    if src_keep is not None:  # padded source keys: no query of any layer or kind looks at them
        for att_kind in ("encoder self", "cross"):
            if att_kind in masks:
                assert torch.all(trace.attention(att_kind, 1).weights[1, :, :, 4:] == 0)


def merge_heads(output: torch.Tensor) -> torch.Tensor:
    B, H, T, d_head = output.shape
    return output.transpose(1, 2).reshape(B, T, H * d_head)  # (B, T, d_model)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-LN", "post-LN"])
@pytest.mark.parametrize("kind", KINDS)
def test_stored_intermediates_rebuild_every_sublayer(kind, norm_first):
    """q from the stream, out_proj(merged heads) back into the stream, the feed-forward after it.

    Each step is recomputed with the model's own modules from the stored tensors: the same sums in
    the same order today (bit for bit), compared within float32 rounding so that another kernel (a
    fused q/k/v projection, say) still passes: a norm (d_model terms), a projection (d_model or d_ff
    terms), the residual add.
    """
    model = tiny_model(kind, norm_first)
    ids, kwargs, _, _ = padded_batch(kind)
    with torch.no_grad():
        _, trace = model(ids, **kwargs, trace=True)
        for stack_name in ("encoder", "decoder"):
            stack, st = getattr(model, stack_name), getattr(trace, stack_name)
            if stack is None:
                continue
            x = st.embed
            for layer, lt in zip(stack.layers, st.layers):
                subs = [("self_attn", layer.self_attn, layer.attn_block, lt.resid_attn)]
                if lt.cross_attn is not None:
                    subs.append(("cross_attn", layer.cross_attn, layer.cross_block, lt.resid_cross))
                for sub, attn, block, resid in subs:
                    a = getattr(lt, sub)
                    h = block.norm(x) if norm_first else x
                    B, T, _ = h.shape
                    q = attn.q_proj(h).view(B, T, N_HEADS, -1).transpose(1, 2)
                    assert_close(a.q, q, terms=D_MODEL, depth=2, why=f"{stack_name} {sub}: q = W_Q · norm(stream)")
                    update = attn.out_proj(merge_heads(a.output))
                    rebuilt = x + update if norm_first else block.norm(x + update)
                    assert_close(rebuilt, resid, terms=D_MODEL, depth=3, why=f"{stack_name} {sub}: W_O · heads, residual, norm")
                    x = resid
                h = layer.ff_block.norm(x) if norm_first else x
                ff = layer.feed_forward(h)
                rebuilt = x + ff if norm_first else layer.ff_block.norm(x + ff)
                d_ff = model.cfg.d_ff
                assert_close(rebuilt, lt.resid_ff, terms=d_ff, depth=4, why=f"{stack_name}: up, down, residual, norm")
                x = lt.resid_ff
            final = stack.final_norm(x) if stack.final_norm is not None else x
            assert_close(final, st.final, terms=D_MODEL, why=f"{stack_name}: the final norm of the last residual stream")


def test_head_returns_slices_of_the_layer_trace():
    model = tiny_model("encoder-decoder")
    ids, kwargs, _, _ = padded_batch("encoder-decoder")
    with torch.no_grad():
        _, trace = model(ids, **kwargs, trace=True)
    head = trace.head("cross", 1, 1, item=1)
    a = trace.attention("cross", 1)
    for name in ("q", "k", "v", "scores", "weights", "output"):
        assert torch.equal(head[name], getattr(a, name)[1, 1])
    assert torch.equal(head["mask"], a.mask[1, 0])
    with pytest.raises(IndexError, match="head 2 out of range"):
        trace.head("cross", 0, 2)
    with pytest.raises(IndexError, match="layer 2 out of range"):
        trace.attention("encoder self", 2)


# The full list of names; the app, notebooks and docs refer to these. Changing it is an API change.
TWO_LAYER_ENCODER_DECODER_NAMES = [
    "encoder.embed",
    "encoder.layers.0.self_attn.q",
    "encoder.layers.0.self_attn.k",
    "encoder.layers.0.self_attn.v",
    "encoder.layers.0.self_attn.scores",
    "encoder.layers.0.self_attn.mask",
    "encoder.layers.0.self_attn.weights",
    "encoder.layers.0.self_attn.output",
    "encoder.layers.0.resid_attn",
    "encoder.layers.0.resid_ff",
    "encoder.layers.1.self_attn.q",
    "encoder.layers.1.self_attn.k",
    "encoder.layers.1.self_attn.v",
    "encoder.layers.1.self_attn.scores",
    "encoder.layers.1.self_attn.mask",
    "encoder.layers.1.self_attn.weights",
    "encoder.layers.1.self_attn.output",
    "encoder.layers.1.resid_attn",
    "encoder.layers.1.resid_ff",
    "encoder.final",
    "decoder.embed",
    "decoder.layers.0.self_attn.q",
    "decoder.layers.0.self_attn.k",
    "decoder.layers.0.self_attn.v",
    "decoder.layers.0.self_attn.scores",
    "decoder.layers.0.self_attn.mask",
    "decoder.layers.0.self_attn.weights",
    "decoder.layers.0.self_attn.output",
    "decoder.layers.0.cross_attn.q",
    "decoder.layers.0.cross_attn.k",
    "decoder.layers.0.cross_attn.v",
    "decoder.layers.0.cross_attn.scores",
    "decoder.layers.0.cross_attn.mask",
    "decoder.layers.0.cross_attn.weights",
    "decoder.layers.0.cross_attn.output",
    "decoder.layers.0.resid_attn",
    "decoder.layers.0.resid_cross",
    "decoder.layers.0.resid_ff",
    "decoder.layers.1.self_attn.q",
    "decoder.layers.1.self_attn.k",
    "decoder.layers.1.self_attn.v",
    "decoder.layers.1.self_attn.scores",
    "decoder.layers.1.self_attn.mask",
    "decoder.layers.1.self_attn.weights",
    "decoder.layers.1.self_attn.output",
    "decoder.layers.1.cross_attn.q",
    "decoder.layers.1.cross_attn.k",
    "decoder.layers.1.cross_attn.v",
    "decoder.layers.1.cross_attn.scores",
    "decoder.layers.1.cross_attn.mask",
    "decoder.layers.1.cross_attn.weights",
    "decoder.layers.1.cross_attn.output",
    "decoder.layers.1.resid_attn",
    "decoder.layers.1.resid_cross",
    "decoder.layers.1.resid_ff",
    "decoder.final",
    "logits",
    "probs",
]


def test_named_tensors_pins_every_name_and_some_shapes():
    model = tiny_model("encoder-decoder")
    src, tgt = torch.randint(6, 40, (1, 5)), torch.randint(6, 40, (1, 4))
    with torch.no_grad():
        _, trace = model(src, tgt, trace=True)
    named = trace.named_tensors()
    assert list(named) == TWO_LAYER_ENCODER_DECODER_NAMES
    d_head = D_MODEL // N_HEADS
    assert named["encoder.embed"].shape == (1, 5, D_MODEL)
    assert named["encoder.layers.0.self_attn.q"].shape == (1, N_HEADS, 5, d_head)
    assert named["encoder.layers.1.self_attn.mask"].shape == (1, 1, 5, 5)
    assert named["decoder.layers.0.self_attn.weights"].shape == (1, N_HEADS, 4, 4)
    assert named["decoder.layers.1.cross_attn.k"].shape == (1, N_HEADS, 5, d_head)
    assert named["decoder.layers.1.cross_attn.weights"].shape == (1, N_HEADS, 4, 5)
    assert named["decoder.layers.1.resid_cross"].shape == (1, 4, D_MODEL)
    assert named["logits"].shape == named["probs"].shape == (1, 4, 40)
    probs = named["probs"]
    assert_close(
        probs.sum(-1), torch.ones(probs.shape[:-1]), terms=probs.shape[-1], depth=2, why="softmax rows: its sum, then this one"
    )
    assert trace.nbytes() == sum(t.numel() * t.element_size() for t in named.values())
    half = trace.map_tensors(lambda t: t.half() if t.is_floating_point() else t)
    assert list(half.named_tensors()) == TWO_LAYER_ENCODER_DECODER_NAMES
    assert half.named_tensors()["decoder.layers.1.cross_attn.weights"].dtype == torch.float16


# --- token streams: truncation and text from any script ---

LONG_TEXT = " ".join(["the cat sat on the mat"] * 30)


@pytest.mark.parametrize(
    ("kind", "first", "last"),
    [("encoder", "[CLS]", "[SEP]"), ("encoder-decoder", "the", "[EOS]"), ("decoder", "[BOS]", None)],
)
def test_truncation_keeps_the_closing_special_token_and_counts_the_cut(make_checkpoint, kind, first, last):
    tok = make_checkpoint(kind).tokenizer
    full = tok.encode(LONG_TEXT)
    short = tok.encode(LONG_TEXT, max_len=10)
    assert len(short.ids) == len(short.tokens) == len(short.offsets) == 10
    assert short.truncated == len(full.ids) - 10 > 0
    assert short.tokens[0] == first
    if last is None:  # no closing token in the template: simply the first 10 tokens
        assert short.ids == full.ids[:10]
    else:
        assert short.tokens[-1] == last
        assert short.ids == full.ids[:9] + full.ids[-1:]
    assert tok.encode("the cat", max_len=10).truncated == 0


@pytest.mark.parametrize("kind", KINDS)
def test_trace_text_truncates_to_max_len(make_checkpoint, kind):
    ckpt = make_checkpoint(kind, max_len=12)
    trace = trace_text(ckpt, LONG_TEXT, target="the cat sat" if kind == "encoder-decoder" else None)
    assert len(trace.source.ids) == 12 and trace.source.truncated > 0
    stack = trace.encoder if kind != "decoder" else trace.decoder
    assert stack.embed.shape[1] == 12
    assert trace.query_tokens(trace.kinds[0]) == trace.source.tokens


ODD_TEXTS = [
    "",
    "🙂🚀 emoji only 👩‍👩‍👧",
    "中文字符 日本語 한국어",
    "مرحبا بالعالم",
    "<script>alert('x')</script> <b>the cat</b> &amp;",
    "tab\tnew\nline\x00nul \u200b zero width",
    "ÀÉÎÕÜ çå ß ﬁ",
]


@pytest.mark.parametrize("kind", KINDS)
def test_any_script_or_html_traces_with_unknowns_as_unk(make_checkpoint, kind):
    ckpt = make_checkpoint(kind)
    tok = ckpt.tokenizer
    for text in ODD_TEXTS:
        trace = trace_text(ckpt, text, max_new_tokens=3)
        stream = trace.source
        assert stream.text == text
        assert all(0 <= i < tok.vocab_size for i in stream.ids)
        for name, t in trace.named_tensors().items():
            if t.is_floating_point():
                assert bool(torch.isfinite(t).all()), f"{text!r}: {name} not finite"
    emoji = tok.encode("🙂 the")
    assert emoji.tokens[emoji.tokens.index("the") - 1] == UNK
    assert tok.id_to_token(tok.token_id(UNK)) == UNK


# ---------------------------------------------------------------------------------------------
# The model view's light pass: pooled weights, a block of queries at a time.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", ["none", "causal", "padding"])
def test_pooled_attention_equals_block_max_of_the_full_weights(monkeypatch, masked):
    from transformer.model import attention as att

    monkeypatch.setattr(att, "QUERY_BLOCK", 8)  # many query blocks, and a partial last one
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 45, 4, generator=g) * 3 for _ in range(3))
    mask = {
        "none": None,
        "causal": torch.ones(45, 45, dtype=torch.bool).tril()[None, None],
        "padding": keep_of((45, 30), 45)[:, None, None, :].expand(-1, 1, 45, -1),
    }[masked]
    out, weights, _ = att.attention(q, k, v, mask)
    # The same operations on row blocks: equal up to float rounding (BLAS may pick another kernel for
    # a block's matrix product). A score moves by at most d_head·ε·Σ|q_i k_i|/√d_head, a softmax weight
    # by twice that plus its own n_keys-term sum, an output by max|v| times the weights' moves.
    d_head, n_keys = q.shape[-1], k.shape[-2]
    score_scale = float((q.abs() @ k.abs().transpose(-2, -1)).max()) / math.sqrt(d_head)
    terms = max(d_head, n_keys)
    for max_cells, blocks in ((64, (1, 1)), (10, (5, 5)), (4, (12, 12)), (7, (7, 7))):
        assert att.pool_blocks(45, 45, max_cells) == blocks
        pooled_out, pooled = att.pooled_attention(q, k, v, mask, max_cells)
        assert_close(pooled_out, out, terms=terms, depth=3, magnitude=score_scale * float(v.abs().max()),
                     why="attention a block of queries at a time against all at once (the stream the next layer reads)")  # fmt: skip
        assert pooled.shape[-2:] == (-(-45 // blocks[0]),) * 2 and max(pooled.shape[-2:]) <= max_cells
        # Independent reference: the max over each block, written as loops over the full weights.
        bq, bk = blocks
        expected = torch.empty_like(pooled)
        for r in range(pooled.shape[-2]):
            for c in range(pooled.shape[-1]):
                expected[..., r, c] = weights[..., r * bq : (r + 1) * bq, c * bk : (c + 1) * bk].amax(dim=(-2, -1))
        assert_close(pooled, expected, terms=terms, depth=2, magnitude=score_scale,
                     why="block max of weights computed a block of queries at a time against those of all at once")  # fmt: skip


def test_a_causal_block_of_queries_scores_only_the_keys_it_may_see(monkeypatch):
    """Keys after a block's last query get weight 0 under a causal mask: the light pass does not score them."""
    from transformer.model import attention as att

    monkeypatch.setattr(att, "QUERY_BLOCK", 8)
    scored = []
    real = att.attention
    monkeypatch.setattr(att, "attention", lambda q, k, v, *rest: scored.append(k.shape[-2]) or real(q, k, v, *rest))
    q = k = v = torch.randn(1, 2, 45, 4)
    att.pooled_attention(q, k, v, torch.ones(45, 45, dtype=torch.bool).tril()[None, None], max_cells=10)  # 5 × 5 blocks
    assert scored == [5, 10, 15, 20, 25, 30, 35, 40, 45]  # each block of 5 queries: the keys up to its last query
    scored.clear()
    att.pooled_attention(q, k, v, None, max_cells=7)  # 7 × 7 blocks: 7 queries a block, every key for each
    assert scored == [45] * 7
    scored.clear()
    att.pooled_attention(q, k, v, torch.ones(45, 45, dtype=torch.bool).tril()[None, None], max_cells=7)
    assert scored == [7, 14, 21, 28, 35, 42, 45]  # rounded up to whole pooling blocks of 7 keys, at most all 45


@pytest.mark.parametrize("kind", KINDS)
def test_attention_maps_equal_the_pooled_full_trace(make_checkpoint, monkeypatch, kind):
    from transformer import api
    from transformer.model import attention as att

    monkeypatch.setattr(att, "QUERY_BLOCK", 4)
    ckpt = make_checkpoint(kind, max_len=40)
    text = "the dogs near the cat are happy and the keys to the cabinet are on the table"
    targets = [None, "the cat sat"] if kind == "encoder-decoder" else [None]
    for target in targets:
        trace = trace_text(ckpt, text, target)
        # Weights of a model with std-0.02 weights: scores far below 1, so a weight moves by rounding on the order of ε.
        terms, depth = longest_sum(ckpt.config, len(trace.source.ids)), sublayers(ckpt.config, head=True)
        for max_cells in (64, 5):
            maps = api.attention_maps(ckpt, text, target, max_cells)
            assert maps.kinds == trace.kinds
            assert maps.source == trace.source and maps.target == trace.target
            reference = api.pool_trace(trace, max_cells)
            for kind_name in trace.kinds:
                assert maps.query_tokens(kind_name) == trace.query_tokens(kind_name)
                assert maps.key_tokens(kind_name) == trace.key_tokens(kind_name)
                m = maps.maps[kind_name]
                assert m.shape[:2] == (trace.n_layers(kind_name), N_HEADS)
                why = f"{kind_name}: the light pass (blocks of queries) against the full trace, through every sublayer"
                assert_close(m, reference.maps[kind_name], terms=terms, depth=depth, why=why)
                if max_cells == 64:  # nothing to pool at this length: the thumbnails are the weights themselves
                    full = torch.stack([trace.attention(kind_name, i).weights[0] for i in range(trace.n_layers(kind_name))])
                    assert_close(m, full, terms=terms, depth=depth, why=why)


def test_pooled_forward_skips_the_lm_head_and_refuses_dropout():
    """The light pass returns pooled maps only (test_attention_maps_equal_the_pooled_full_trace checks them against the
    full trace through every sublayer): an LM head's logits, its largest tensor at long lengths, are never made."""
    model = tiny_model("encoder-decoder")
    ids, kwargs, _, _ = padded_batch("encoder-decoder")
    with torch.no_grad():
        pooled_logits, maps = model(ids, **kwargs, pool=3)
    assert pooled_logits is None
    assert set(maps) == {"encoder self", "decoder self", "cross"}
    assert maps["cross"].shape == (2, 2, N_HEADS, 3, 3)  # (layers, batch, heads, rows, cols)
    model.train()
    model.encoder.layers[0].self_attn.dropout = 0.1
    with pytest.raises(ValueError, match="inference"):
        model(ids, **kwargs, pool=3)
