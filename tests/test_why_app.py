"""AppTests of the "Ask why" pages (Ablation, Logit lens, Rollout & saliency) on the shipped checkpoints.

The numbers on the page are checked against references made here independently of the code under
test: a copy of the model with a head's slice of W_O zeroed, the model's own logits, and so on.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from test_app import charts, no_errors, start

from transformer.api import streams, trace_text
from transformer.checkpoint import load_checkpoint
from viz.labels import plotly_text


def without_heads(ckpt, heads):
    """A copy of the checkpoint whose model has each head's d_head columns of W_O zeroed: the head adds nothing."""
    model = copy.deepcopy(ckpt.model)
    d = model.cfg.d_model // model.cfg.n_heads
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
    np.testing.assert_allclose(fig["data"][0]["y"], before[rows, nxt].numpy(), atol=1e-6)
    np.testing.assert_allclose(fig["data"][1]["y"], after[rows, nxt].numpy(), atol=1e-6)
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
    np.testing.assert_allclose(sum(fig["data"][1]["y"]), 1.0, atol=1e-5)
    assert any("Drop in log-probability" in c.value for c in at.caption)
    assert any("Mean ablation" in c.value for c in at.caption)


def test_logit_lens_last_row_is_the_models_prediction(shipped):
    text = "the cats near the dog see the bird ."
    at = start({"checkpoint": "lm", "page": "lens", "text": text})
    no_errors(at)
    ckpt = load_checkpoint(shipped["lm"].path, device="cpu")
    trace = trace_text(ckpt, text)
    fig = charts(at)["lens_grid"]["data"][0]
    top = trace.probs[0].max(-1)
    np.testing.assert_allclose(np.asarray(fig["z"])[-1], top.values.numpy(), atol=1e-5)
    expected = [plotly_text(ckpt.tokenizer.id_to_token(int(i))) for i in top.indices]
    assert list(fig["text"][-1]) == expected
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
    trace = trace_text(ckpt, text)
    weights = [trace.attention("decoder self", layer).weights[0].double().numpy() for layer in range(2)]
    figs = charts(at)
    np.testing.assert_allclose(figs["attr_rollout"]["data"][0]["z"], naive_rollout(weights)[1], atol=1e-6)
    np.testing.assert_array_equal(figs["attr_raw"]["data"][0]["z"], weights[1][1].astype(np.float32))
    # Gradient × input of log p(top-1 next token) at position 9, by autograd here on the raw token vectors.
    ids = torch.tensor([trace.source.ids[:10]])
    with torch.enable_grad():
        x = ckpt.model.tok_embed(ids).detach().requires_grad_(True)
        from transformer.model import causal_mask

        hidden, _ = ckpt.model.decoder(x, causal_mask(10, None, "cpu"))
        logp = ckpt.model.lm_logits(hidden[0, 9]).log_softmax(-1)
        logp[logp.argmax()].backward()
    expected = np.zeros(len(trace.source.ids))
    expected[:10] = (x.grad[0] * x[0]).sum(-1).detach().numpy()
    bars = figs["attr_scores"]["data"]
    assert len(bars) == 4  # attention row, rollout row, flow row, saliency
    np.testing.assert_allclose(bars[-1]["y"], expected, atol=1e-5)
    np.testing.assert_allclose(bars[0]["y"], weights[1][1][9], atol=1e-7)
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
        drop = np.mean([float(clean[t, ids[t + 1]] - knocked[t, ids[t + 1]]) for t in counted])
        np.testing.assert_allclose(grid[layer, head], drop, rtol=1e-4, atol=1e-5)


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
