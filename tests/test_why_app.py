"""AppTests of the "Ask why" pages (Ablation, Logit lens, Rollout & saliency) on the shipped checkpoints.

The numbers on the page are checked against references made here independently of the code under
test: a copy of the model with a head's slice of W_O zeroed, the model's own logits, and so on.
Those are other computations of the same numbers, so they agree within float32 rounding
(`numerics.assert_close`); what the page only reads from the trace (an attention row) is the trace's own bits.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from numerics import app_threads, assert_close, assert_same_bits, longest_sum, rounding_atol, sublayers
from test_app import charts, no_errors, start
from test_lens import lens_row_tokens

from transformer.api import streams, trace_text
from transformer.checkpoints.format import load_checkpoint
from viz.labels import plotly_text

pytestmark = pytest.mark.numerics


def without_heads(ckpt, heads):
    """A copy of the checkpoint whose model has each head's d_head columns of W_O zeroed: the head adds nothing."""
    model = copy.deepcopy(ckpt.model)
    d = model.cfg.d_head
    for kind, layer, head in heads:
        stack = model.encoder if kind == "encoder self" else model.decoder
        attn = {"encoder self": "self_attn", "decoder self": "self_attn", "cross": "cross_attn"}[kind]
        getattr(stack.layers[layer], attn).out_proj.weight[:, head * d : (head + 1) * d] = 0.0
    return type(ckpt)(model=model, tokenizer=ckpt.tokenizer, training=ckpt.training, name=ckpt.name)


def test_ablation_page_lm_next_token_probabilities_equal_a_model_without_the_head(shipped):
    text = "the dog sees the cats . the dog sees the cats ."
    at = start({"checkpoint": "lm", "page": "ablation", "text": text, "heads": "d1.3,d0.2"})
    no_errors(at)
    ckpt = load_checkpoint(shipped["lm"].path, device="cpu")
    ids = streams(ckpt, text)[0].ids
    before = trace_text(ckpt, text).probs[0]
    after = trace_text(without_heads(ckpt, [("decoder self", 1, 3), ("decoder self", 0, 2)]), text).probs[0]
    nxt = torch.tensor(ids[1:])
    rows = torch.arange(len(nxt))
    fig = charts(at)["abl_effect"]
    # The page's forward (and its forward(ablate=...)) against the trace here (of a copy with W_O's slices zeroed):
    # other code paths through the whole model and the softmax over the vocabulary.
    sums = dict(terms=longest_sum(ckpt.config, len(ids), vocab=True), depth=sublayers(ckpt.config, head=True))
    assert_close(fig["data"][0]["y"], before[rows, nxt], **sums, why="p(next) with every head: the page's forward and the trace")
    assert_close(
        fig["data"][1]["y"], after[rows, nxt], **sums, why="p(next) knocked out: forward(ablate=...) and the zeroed copy"
    )
    moved = float((after - before)[rows, nxt].abs().max())
    assert moved > rounding_atol(1.0, **sums), f"knocking the heads out moves p(next) by {moved:.3g}: more than rounding"
    assert at.query_params["heads"] == "d1.3,d0.2"  # as picked
    # The sweep grid is drawn with one cell per layer and head, and the page names the metric.
    grid = charts(at)["abl_sweep_decoder_self"]
    assert np.asarray(grid["data"][0]["z"]).shape == (2, 4)
    assert any("KL divergence" in c.value for c in at.caption)


def test_ablation_page_every_head_and_bad_heads(shipped):
    at = start({"checkpoint": "translator", "page": "ablation", "heads": "e0.0,x1,e9.9"})
    no_errors(at)
    assert any("Ignored 1 head" in w.value for w in at.warning)
    assert any("do not exist in this model" in w.value for w in at.warning)
    at.button(key="abl_all").click().run()
    no_errors(at)
    assert len(at.session_state["sel_heads"]) == 3 * 2 * 4
    fig = charts(at)["abl_effect"]
    assert np.isfinite(fig["data"][1]["y"]).all()
    assert any("Every head is knocked out" in c.value for c in at.caption)
    # A translation is text from the model: shown with st.text, literally.
    assert any(t.value.startswith("before: ") for t in at.text)


def test_ablation_page_classifier_and_metric_from_the_link(shipped):
    at = start({"checkpoint": "classifier", "page": "ablation", "heads": "e1.0", "metric": "logprob", "ablation": "mean"})
    no_errors(at)
    fig = charts(at)["abl_effect"]
    assert len(fig["data"][0]["y"]) == 2
    assert_close(sum(fig["data"][1]["y"]), 1.0, terms=2, depth=2, why="two class probabilities, exp(log_softmax), sum to 1")
    assert any("Drop in log-probability" in c.value for c in at.caption)
    assert any("Mean ablation" in c.value for c in at.caption)


def test_logit_lens_last_row_is_the_models_prediction(shipped):
    text = "the cats near the dog see the bird ."
    at = start({"checkpoint": "lm", "page": "lens", "text": text})
    no_errors(at)
    ckpt = load_checkpoint(shipped["lm"].path, device="cpu")
    with app_threads():  # the app's trace: the lens reads its last residual, as the model's own head did
        trace = trace_text(ckpt, text)
    fig = charts(at)["lens_grid"]["data"][0]
    top = trace.probs[0].max(-1)
    assert_close(
        np.asarray(fig["z"])[-1],
        top.values,
        terms=max(ckpt.config.d_model, ckpt.config.vocab_size),
        depth=2,
        why="the lens's final norm and unembedding of the last residual against the forward's own, softmax over the vocabulary",
    )
    expected = [plotly_text(ckpt.tokenizer.id_to_token(int(i))) for i in top.indices]
    assert lens_row_tokens(fig, -1) == expected
    assert fig["y"][-1] == "L1 feed-forward" and fig["y"][0] == "embed"


def test_logit_lens_on_an_encoder_says_why_not(shipped):
    at = start({"checkpoint": "classifier", "page": "lens"})
    no_errors(at)
    assert any("encoder-only" in i.value for i in at.info)
    assert not charts(at)


def naive_rollout(weights: list[np.ndarray]) -> list[np.ndarray]:
    """The paper's formula as a plain loop: mean over heads, ½A + ½I, rows renormalised, multiplied through the layers."""
    out, acc = [], None
    for w in weights:  # each (H, T, T)
        a = w.mean(0)
        n = a.shape[0]
        aug = [[0.5 * a[i][j] + (0.5 if i == j else 0.0) for j in range(n)] for i in range(n)]
        aug = np.array([[x / sum(row) for x in row] for row in aug])
        acc = aug if acc is None else aug @ acc
        out.append(acc)
    return out


def test_rollout_and_saliency_page_against_independent_references(shipped):
    text = "the dog sees the cats . the dog sees the cats ."
    at = start({"checkpoint": "lm", "page": "attribution", "text": text, "layer": "1", "head": "1", "q": "9"})
    no_errors(at)
    ckpt = load_checkpoint(shipped["lm"].path, device="cpu")
    with app_threads():  # the same computation as the app's trace: the same weights
        trace = trace_text(ckpt, text)
    weights = [trace.attention("decoder self", layer).weights[0].double().numpy() for layer in range(2)]
    figs = charts(at)
    # float32 here against float64 there, per layer: the mean over heads, the row sums and the product, of at most T terms ≤ 1.
    n_tokens = len(trace.source.ids)
    assert_close(
        figs["attr_rollout"]["data"][0]["z"],
        naive_rollout(weights)[1],
        terms=max(n_tokens, ckpt.config.n_heads),
        depth=3 * len(weights),
        why="the app's float32 rollout against the paper's formula in float64",
    )
    assert_same_bits(figs["attr_raw"]["data"][0]["z"], weights[1][1].astype(np.float32), why="the figure against the trace")
    # Gradient × input of log p(top-1 next token) at position 9, by autograd here on the raw token vectors.
    ids = torch.tensor([trace.source.ids[:10]])
    with torch.enable_grad():
        x = ckpt.model.tok_embed(ids).detach().requires_grad_(True)
        from transformer.model.network import causal_mask

        hidden, _ = ckpt.model.decoder(x, causal_mask(10, None, "cpu"))
        logp = ckpt.model.lm_logits(hidden[0, 9]).log_softmax(-1)
        logp[logp.argmax()].backward()
    expected = np.zeros(len(trace.source.ids))
    expected[:10] = (x.grad[0] * x[0]).sum(-1).detach().numpy()
    bars = figs["attr_scores"]["data"]
    assert len(bars) == 4  # attention row, rollout row, flow row, saliency
    assert_close(
        bars[-1]["y"],
        expected,
        terms=longest_sum(ckpt.config, len(trace.source.ids), vocab=True),
        depth=2 * sublayers(ckpt.config, head=True),
        why="gradient × input by the app on the whole text and by autograd here on 10 tokens: through the model and back",
    )
    assert_same_bits(bars[0]["y"], weights[1][1][9], why="the attention row is the trace's")
    assert at.query_params["q"] == "9"
    # Integrated gradients states its steps and how well its scores add up.
    at.radio(key="attr_method").set_value("integrated gradients").run()
    no_errors(at)
    assert any("64 steps" in c.value and "add up to the change within" in c.value for c in at.caption)


def test_why_pages_in_presentation_mode_use_large_fonts(shipped):
    for page, chart in (
        ("ablation", "abl_sweep_decoder_self"),
        ("lens", "lens_grid"),
        ("attribution", "attr_scores"),
        ("compare", "cmp_heatmap_a"),
    ):
        at = start({"checkpoint": "lm", "page": page, "present": "1"})
        no_errors(at)
        assert charts(at)[chart]["layout"]["font"]["size"] == 20, page


def test_sweep_counts_only_copy_positions_when_asked(shipped):
    text = "the proud grumpy foxes are shy . a frog carries the scientist . the proud grumpy foxes are shy ."
    at = start({"checkpoint": "lm", "page": "ablation", "text": text, "metric": "logprob-next"})
    no_errors(at)
    at.toggle(key="abl_copies").set_value(True).run()
    no_errors(at)
    ckpt = load_checkpoint(shipped["lm"].path, device="cpu")
    ids = streams(ckpt, text)[0].ids
    counted = [t for t in range(len(ids) - 1) if any(ids[s : s + 2] == ids[t : t + 2] for s in range(t))]
    assert any(f"Counted positions: {counted[0]} " in c.value for c in at.caption)
    clean = trace_text(ckpt, text).probs[0].log()
    grid = np.asarray(charts(at)["abl_sweep_decoder_self"]["data"][0]["z"])
    for layer, head in ((0, 2), (1, 1)):
        knocked = trace_text(without_heads(ckpt, [("decoder self", layer, head)]), text).probs[0].log()
        logp = [float(x[t, ids[t + 1]]) for x in (clean, knocked) for t in counted]
        drop = np.mean([float(clean[t, ids[t + 1]] - knocked[t, ids[t + 1]]) for t in counted])
        # The batched sweep's forward(ablate=...) against traces here: each log p through the whole model, two of them a cell.
        assert_close(
            grid[layer, head],
            drop,
            terms=longest_sum(ckpt.config, len(ids), vocab=True),
            depth=2 * sublayers(ckpt.config, head=True),
            magnitude=max(1.0, *map(abs, logp)),
            why=f"the sweep's drop in log p(next) for decoder self L{layer} H{head} against the zeroed copy's",
        )


def test_ablation_page_with_no_head_chosen_says_so_and_still_sweeps(shipped):
    at = start({"checkpoint": "reverse", "page": "ablation"})
    no_errors(at)
    assert any("No head is knocked out yet" in i.value for i in at.info)
    assert "abl_effect" not in charts(at)
    assert {"abl_sweep_encoder_self", "abl_sweep_decoder_self", "abl_sweep_cross"} <= set(charts(at))
    # Clearing a selection (the multiselect emptied) comes back to the same state.
    at = start({"checkpoint": "reverse", "page": "ablation", "heads": "c0.1"})
    at.multiselect(key="abl_heads").set_value([]).run()
    no_errors(at)
    assert any("No head is knocked out yet" in i.value for i in at.info) and "heads" not in at.query_params
