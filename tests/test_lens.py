"""The logit lens against the model's own logits and against a lens computed by hand in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numerics import assert_close

from transformer.api import trace_text
from transformer.why import lens
from transformer.why.lens import logit_lens

pytestmark = pytest.mark.numerics

TEXT = "the cat sat on the mat"
TARGET = "the dogs near the cat"

# (kind, config overrides): pre-LN and post-LN, with and without a final norm, tied and untied heads, GPT-2-like.
MODELS = {
    "decoder pre-LN": ("decoder", {}),
    "decoder post-LN, no final norm": ("decoder", {"norm_first": False}),
    "decoder post-LN, final norm": ("decoder", {"norm_first": False, "final_norm": True}),
    "decoder pre-LN, no final norm": ("decoder", {"final_norm": False}),
    "decoder untied head": ("decoder", {"tie_embeddings": False}),
    "decoder GPT-2-like": (
        "decoder",
        {"positional": "learned", "activation": "gelu_tanh", "scale_embeddings": False, "final_norm": True},
    ),
    "encoder-decoder pre-LN": ("encoder-decoder", {}),
    "encoder-decoder post-LN": ("encoder-decoder", {"norm_first": False}),
}


def rounding(ckpt) -> dict[str, int]:
    """assert_close's terms and depth for a lens cell computed another way from the same residual stream: the final
    LayerNorm (if any) and the unembedding sum over d_model, the softmax over the vocabulary."""
    cfg = ckpt.config
    return dict(terms=max(cfg.d_model, cfg.vocab_size), depth=2 + (ckpt.model.decoder.final_norm is not None))


def traced(make_checkpoint, name: str, seed: int = 0):
    kind, overrides = MODELS[name]
    ckpt = make_checkpoint(kind, seed=seed, **overrides)
    trace = trace_text(ckpt, TEXT, TARGET if kind == "encoder-decoder" else None)
    return ckpt, trace


@pytest.mark.parametrize("name", MODELS)
def test_last_row_is_the_models_prediction(make_checkpoint, name):
    ckpt, trace = traced(make_checkpoint, name)
    result = logit_lens(ckpt, trace)
    probs = trace.probs[0]  # (T, vocab), from the model's own forward
    last = result.row(result.labels[-1])
    assert result.labels[-1] == f"L{ckpt.config.n_layers - 1} feed-forward"
    # The lens's top-5 at the last row carry the model's probabilities, and the first is the model's top-1.
    tol = rounding(ckpt)
    why = "the lens's last row vs the model's own forward (another computation from the same residual stream)"
    assert_close(result.top_probs[last], probs.gather(-1, result.top_ids[last]), **tol, why=why)
    assert_close(result.top_probs[last, :, 0], probs.max(-1).values, **tol, why=why)
    assert_close(result.top_probs[last], probs.topk(5, -1).values, **tol, why=why)
    # The actual next token's probability, where there is one.
    ids = (trace.target or trace.source).ids
    expected = probs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    assert_close(result.next_probs[last, :-1], expected, **tol, why=why)
    assert math.isnan(result.next_probs[last, -1]) and result.next_ranks[last, -1] == -1


@pytest.mark.parametrize("name", ["decoder pre-LN", "decoder post-LN, no final norm", "encoder-decoder pre-LN"])
def test_every_row_matches_a_hand_computed_lens(make_checkpoint, name):
    ckpt, trace = traced(make_checkpoint, name, seed=3)
    model, cfg = ckpt.model, ckpt.config
    result = logit_lens(ckpt, trace, k=4)

    named = trace.named_tensors()
    subs = ("resid_attn", "resid_cross", "resid_ff") if cfg.kind == "encoder-decoder" else ("resid_attn", "resid_ff")
    names = ["decoder.embed"] + [f"decoder.layers.{i}.{s}" for i in range(cfg.n_layers) for s in subs]
    assert len(result.labels) == len(names)
    stream = trace.target if cfg.kind == "encoder-decoder" else trace.source
    assert result.tokens == stream.tokens
    norm = model.decoder.final_norm
    for row, name in enumerate(names):
        h = named[name][0]  # (T, d_model)
        if norm is not None:  # written out: LayerNorm over d_model with the model's weight, bias and eps
            h = F.layer_norm(h, (cfg.d_model,), norm.weight, norm.bias, cfg.layer_norm_eps)
        # tied unembedding: the token embedding matrix
        probs = F.linear(h, model.tok_embed.weight).softmax(-1)  # (T, vocab)
        top = probs.topk(4, -1)
        why = f"{name}: the lens vs the lens written out here (another computation)"
        assert_close(result.top_probs[row], top.values, **rounding(ckpt), why=why)
        assert_close(result.top_probs[row], probs.gather(-1, result.top_ids[row]), **rounding(ckpt), why=why)
        for t in range(len(stream.ids) - 1):
            p = probs[t, stream.ids[t + 1]]
            assert_close(result.next_probs[row, t], p, **rounding(ckpt), why=f"{why}, position {t}")
            assert result.next_ranks[row, t] == int((probs[t] > p).sum()), (name, t)
        assert result.top_tokens[row][0] == tuple(ckpt.tokenizer.id_to_token(i) for i in result.top_ids[row, 0].tolist())


def test_row_labels_name_every_sublayer(make_checkpoint):
    ckpt, trace = traced(make_checkpoint, "encoder-decoder pre-LN")
    assert logit_lens(ckpt, trace).labels == (
        "embed",
        "L0 self-attn",
        "L0 cross-attn",
        "L0 feed-forward",
        "L1 self-attn",
        "L1 cross-attn",
        "L1 feed-forward",
    )
    ckpt, trace = traced(make_checkpoint, "decoder pre-LN")
    assert logit_lens(ckpt, trace).labels == ("embed", "L0 self-attn", "L0 feed-forward", "L1 self-attn", "L1 feed-forward")


def test_says_what_is_applied_before_the_unembedding(make_checkpoint):
    assert logit_lens(*traced(make_checkpoint, "decoder pre-LN")).norm.startswith("the final LayerNorm")
    assert "already LayerNorm-ed" in logit_lens(*traced(make_checkpoint, "decoder post-LN, no final norm")).norm


def test_blocks_of_cells_give_the_same_numbers(make_checkpoint, monkeypatch):
    ckpt, trace = traced(make_checkpoint, "decoder pre-LN")
    whole = logit_lens(ckpt, trace)
    monkeypatch.setattr(lens, "BLOCK_FLOATS", 1)
    monkeypatch.setattr(lens, "MIN_CELLS", 5)  # blocks of 5 cells, across row boundaries
    blocked = logit_lens(ckpt, trace)
    assert torch.equal(whole.top_ids, blocked.top_ids)
    why = "blocks of 5 cells vs all cells at once (matrix products of other shapes: another computation)"
    assert_close(whole.top_probs, blocked.top_probs, **rounding(ckpt), why=why)
    assert_close(whole.next_probs[:, :-1], blocked.next_probs[:, :-1], **rounding(ckpt), why=why)


def test_a_window_of_positions_is_those_columns_of_the_whole(make_checkpoint):
    ckpt, trace = traced(make_checkpoint, "encoder-decoder pre-LN")
    whole = logit_lens(ckpt, trace)
    window = logit_lens(ckpt, trace, positions=[4, 1, 5])
    assert window.positions == (4, 1, 5)
    assert window.tokens == tuple(whole.tokens[p] for p in (4, 1, 5))
    assert window.next_ids == tuple(whole.next_ids[p] for p in (4, 1, 5))
    assert torch.equal(window.top_ids, whole.top_ids[:, [4, 1, 5]])
    why = "3 columns vs all of them (matrix products of other shapes: another computation)"
    assert_close(window.top_probs, whole.top_probs[:, [4, 1, 5]], **rounding(ckpt), why=why)
    assert window.next_ranks[:, 2].tolist() == whole.next_ranks[:, 5].tolist()
    with pytest.raises(IndexError, match="out of range"):
        logit_lens(ckpt, trace, positions=[len(whole.positions)])


def test_encoder_only_models_are_refused(make_checkpoint):
    ckpt = make_checkpoint("encoder", n_classes=2)
    with pytest.raises(ValueError, match="the logit lens needs a decoder with an unembedding"):
        logit_lens(ckpt, trace_text(ckpt, TEXT))


def test_explanation_is_one_sentence():
    assert lens.EXPLANATION.count(". ") == 0 and lens.EXPLANATION.endswith(".")


def test_lens_cells_cut_long_tokens_to_their_width_and_the_hover_keeps_them_whole():
    from viz import why

    n_rows, n_pos = 3, 21
    tokens = [[["grumpiest", "cat", "dog"] for _ in range(n_pos)] for _ in range(n_rows)]
    probs = np.full((n_rows, n_pos, 3), 0.3, np.float32)
    fig = why.lens_figure([f"L{i}" for i in range(n_rows)], ["the"] * n_pos, tokens, probs, "lens")
    cells = [t for row in fig.data[0].text for t in row]
    fits = int(why.LENS_PLOT_PX[False] / n_pos / (0.6 * 10))  # 13 px letters less 3 in the cells
    assert all(len(t) <= fits and t.endswith("…") for t in cells), (fits, cells[:3])
    assert all("grumpiest" in h for row in fig.data[0].customdata for h in row), "the hover names the whole token"
    wide = why.lens_figure(["L0"], ["the"] * 4, [[["grumpiest"]] * 4], np.full((1, 4, 1), 0.3, np.float32), "lens")
    assert wide.data[0].text[0][0] == "grumpiest", "a wide cell shows it whole"


def lens_row_tokens(fig: dict, row: int) -> list[str]:
    """The top-1 token of each cell of one lens row, as its hover names it whole (a cell's own text may be cut to its
    width: `lens_figure`), each checked against the cell's text."""
    out = []
    for text, hover in zip(fig["text"][row], fig["customdata"][row], strict=True):
        token = hover.split("<br>")[0].rsplit(": ", 1)[0]
        assert text == token or (text.endswith("…") and token.startswith(text[:-1])), (text, token)
        out.append(token)
    return out
