"""Every page of the app on encoder-decoders shaped like real translators and summarisers: a T5-like one (relative
position bias, unscaled scores, RMSNorm, a gated MLP, a decoder deeper than its encoder, a scaled head, a <pad> start
token) and a BART-like one (learned positions from row 2, a norm on the embeddings, post-LN, a bias on the logits, a
decoder shallower than its encoder, an </s> start token with a forced <s>, a forced end and no repeated 3-grams).

Both are random-weight checkpoints of ours, saved with `save_checkpoint`, their generation rules in the training
facts as an importer stores them (`training["decoding"]`), and no task of ours: so they also stand for an import on
the pages that treat those differently (head jobs). The numbers on the pages are read back from the figures' JSON and
the tables, and checked against a trace made here with the core API on the app's threads (the same computation: the
same bits) or against an independent computation of the same number (within float32 rounding, `numerics.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from numerics import app_threads, assert_close, assert_same_bits, assert_same_greedy, longest_sum, sublayers
from test_app import charts, frame, no_errors, start
from test_lens import lens_row_tokens
from test_why_app import naive_rollout, without_heads

from transformer.api import build_model, greedy_decode, streams, trace_text
from transformer.checkpoints.format import load_checkpoint, save_checkpoint
from transformer.checkpoints.tokenizer import train_tokenizer
from transformer.data.toy_english import generate_corpus
from transformer.decoding import Decoding
from transformer.model.config import ModelConfig
from transformer.why import ablation, head_jobs
from viz.labels import plotly_text, unique_labels

pytestmark = pytest.mark.numerics

TEXT = "the big dog near the old tables sees the cats ."
# The decoder's text for the pages that are checked against a reference trace: with random weights two greedy
# runs may part at a near tie (another buffer alignment, another kernel), so those pages read a given target.
# The Output and Ablation tests check greedy decoding itself.
TARGET = "the cats see the big dog near the old tables ."
COMMON = dict(kind="encoder-decoder", n_layers=2, n_heads=4, d_model=32, d_ff=48, max_len=32, scale_embeddings=False)
T5_LIKE = dict(
    n_decoder_layers=3, positional="relative", rel_buckets=8, rel_max_distance=16, scale_scores=False, norm="rms",
    mlp="gated", activation="gelu_tanh", head_scale=32**-0.5, attn_bias=False, attn_out_bias=False, mlp_bias=False,
)  # fmt: skip
BART_LIKE = dict(n_decoder_layers=1, positional="learned", position_offset=2, embed_norm=True, norm_first=False, logits_bias=True)
# The catalogue offers checkpoints by the shipped names: the T5-like one is "translator", the BART-like one "reverse".
T5, BART = "translator", "reverse"
KINDS = ("encoder self", "decoder self", "cross")


@pytest.fixture(scope="module")
def translator_assets(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("translators")
    tok = train_tokenizer([s.text for s in generate_corpus(200, 0)], "encoder-decoder", vocab_size=150, min_frequency=1)
    rules = {
        T5: Decoding(start=tok.pad_id, eos=(tok.eos_id,)),
        BART: Decoding(
            start=tok.eos_id, eos=(tok.eos_id,), forced_bos=tok.bos_id, forced_eos=(tok.eos_id,), no_repeat_ngram_size=3
        ),
    }
    for name, extra in ((T5, T5_LIKE), (BART, BART_LIKE)):
        model = build_model(ModelConfig(vocab_size=tok.vocab_size, **COMMON, **extra), seed=0)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():  # far from the small init: heads attend sharply and each differently
            for key, p in model.named_parameters():
                if "norm" not in key:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        training = {"source": "huggingface", "model_type": "t5" if name == T5 else "bart", "decoding": rules[name].to_facts()}
        save_checkpoint(folder / f"{name}.safetensors", model, tok, training)
    return folder


@pytest.fixture
def env(serve_assets, translator_assets):
    serve_assets(translator_assets)
    return translator_assets


def reference(folder: Path, name: str, text: str = TEXT, target: str | None = TARGET):
    """The checkpoint and its trace made here with the core API, on the app's threads (the same computation as the app's)."""
    ckpt = load_checkpoint(folder / f"{name}.safetensors", device="cpu")
    with app_threads():
        return ckpt, trace_text(ckpt, text, target)


def z_of(fig: dict) -> np.ndarray:
    return np.asarray(fig["data"][0]["z"])


def ticks(tokens) -> list[str]:
    return [plotly_text(t) for t in tokens]


def page_text(at) -> list[str]:
    """Every sentence the page writes: markdown, captions, boxes, subheaders, texts, and its tables' column names."""
    out = [e.value for kind in ("markdown", "caption", "info", "warning", "success", "subheader", "text") for e in at.get(kind)]
    return out + [str(c) for df in at.dataframe for c in df.value.columns]


# ---------------------------------------------------------------------------------------------
# Every page, at the cross-attention of the last decoder layer (a layer the encoder does not have, or the only one).
# ---------------------------------------------------------------------------------------------

PAGES = ("qkv", "model_view", "checkpoint", "output", "ablation", "attribution", "lens", "compare")


@pytest.mark.parametrize("name", [T5, BART])
def test_every_page_runs_at_the_last_decoder_layers_cross_attention(env, name):
    ckpt, ref = reference(env, name)
    cfg = ckpt.config
    last = cfg.dec_layers - 1
    at = start({"checkpoint": name, "text": TEXT, "target": TARGET, "kind": "cross", "layer": str(last), "head": "3"})
    no_errors(at)
    assert not at.warning, [w.value for w in at.warning]  # the layer is this kind's own: nothing clamped
    # Cross-attention: the target (the decoder's start token, a forced one, then the greedy output) on the query axis,
    # the source on the key axis.
    assert ref.target.ids[: len(ckpt.decoding.prefix)] == ckpt.decoding.prefix
    fig = charts(at)["attn_heatmap"]
    assert_same_bits(z_of(fig), ref.head("cross", last, 3)["weights"], why="the cross heatmap against the trace")
    assert fig["layout"]["yaxis"]["ticktext"] == ticks(ref.target.tokens)
    assert fig["layout"]["xaxis"]["ticktext"] == ticks(ref.source.tokens)
    assert any(f"{cfg.n_layers} + {cfg.dec_layers} layers × 4 heads" in c.value for c in at.sidebar.caption)
    for page in PAGES:
        at.switch_page(f"pages/{page}.py").run()
        no_errors(at)
        assert charts(at) or at.dataframe, f"{page} drew nothing"


def test_layer_choices_follow_each_kinds_depth(env):
    at = start({"checkpoint": T5, "text": TEXT, "target": TARGET, "kind": "encoder self", "layer": "2"})
    no_errors(at)
    assert any("encoder self layer 2 is out of range (0–1); showing encoder self layer 1." in w.value for w in at.warning)
    assert at.slider(key="attn_layer").max == 1
    at.radio(key="attn_kind").set_value("decoder self").run()
    no_errors(at)
    assert at.slider(key="attn_layer").max == 2  # the decoder is deeper than the encoder
    at = start({"checkpoint": BART, "text": TEXT, "target": TARGET, "kind": "decoder self", "layer": "1"})
    assert any("decoder self layer 1 is out of range (0–0)" in w.value for w in at.warning)
    assert any(m.value.startswith("**Layer:** 0 (the only one)") for m in at.markdown)


# ---------------------------------------------------------------------------------------------
# Q, K, V: T5's score is q·k plus the bias, never divided by √d_head.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "layer", "query"), [("encoder self", 1, 4), ("decoder self", 2, 6)])
def test_qkv_works_t5s_score_as_q_dot_k_plus_the_bias_without_a_square_root(env, kind, layer, query):
    at = start(
        {
            "checkpoint": T5,
            "page": "qkv",
            "text": TEXT,
            "target": TARGET,
            "kind": kind,
            "layer": str(layer),
            "head": "2",
            "q": str(query),
        }
    )
    no_errors(at)
    _, ref = reference(env, T5)
    h = ref.head(kind, layer, 2)
    steps = frame(at, column="bias (model)")
    assert list(steps.columns) == [
        "q·k (recomputed)", "bias (model)", "score = q·k + bias (model)", "q·k + bias (recomputed)", "may attend", "softmax weight",
    ]  # fmt: skip
    assert_same_bits(steps["bias (model)"].to_numpy(), h["bias"][query], why="the bias column is the trace's")
    assert_same_bits(steps["score = q·k + bias (model)"].to_numpy(), h["scores"][query], why="the score column is the trace's")
    # The model's score is q·k + bias, unscaled: q·k in float64 here from the trace's q and k, plus the trace's bias.
    qk = h["k"].double() @ h["q"][query].double()
    size = float((h["k"].abs() @ h["q"][query].abs()).max())
    d = h["q"].shape[-1]
    assert_close(h["scores"][query], qk + h["bias"][query].double(), terms=d, magnitude=max(1.0, size), why="q·k + bias")
    assert_close(steps["q·k (recomputed)"].to_numpy(), qk, terms=d, magnitude=max(1.0, size), why="q·k by numpy, float32")
    recomputed = steps["q·k + bias (recomputed)"].to_numpy()
    assert_close(recomputed, h["scores"][query], terms=d, magnitude=max(1.0, size), why="q·k + bias by numpy")
    assert float((qk / d**0.5 - qk).abs().max()) > 1.0, "dividing by √d_head would change these scores: the check has teeth"
    figs = charts(at)
    assert_same_bits(z_of(figs["qkv_bias"]), h["bias"], why="the bias heatmap is the trace's")
    assert "scores = Q Kᵀ + bias" in figs["qkv_scores"]["layout"]["title"]["text"]
    assert any("Relative positions (T5)" in i.value for i in at.info)
    # This model never divides by √d_head: wherever the page names √d_head, it says so.
    words = page_text(at) + [f["layout"]["title"]["text"] for f in figs.values()]
    assert not [w for w in words if "√" in w and "not divide" not in w]
    assert any("does not divide Q Kᵀ by √d_head" in c.value for c in at.caption)


def test_qkv_cross_attention_of_t5_has_no_bias_and_bart_divides_by_the_square_root(env):
    at = start(
        {"checkpoint": T5, "page": "qkv", "text": TEXT, "target": TARGET, "kind": "cross", "layer": "2", "head": "1", "q": "3"}
    )
    no_errors(at)
    steps = frame(at, column="softmax weight")
    assert list(steps.columns)[:2] == ["q·k (recomputed)", "score = q·k (model)"]
    assert "qkv_bias" not in charts(at)
    assert not [w for w in page_text(at) if ("√" in w and "not divide" not in w) or "bias (model)" in w]

    at = start(
        {
            "checkpoint": BART,
            "page": "qkv",
            "text": TEXT,
            "target": TARGET,
            "kind": "decoder self",
            "layer": "0",
            "head": "1",
            "q": "3",
        }
    )
    no_errors(at)
    _, ref = reference(env, BART)
    h = ref.head("decoder self", 0, 1)
    steps = frame(at, column="softmax weight")
    assert list(steps.columns)[:2] == ["q·k (recomputed)", "score = q·k ÷ √8 (model)"]
    qk = (h["k"].double() @ h["q"][3].double()) / 8**0.5
    size = float((h["k"].abs() @ h["q"][3].abs()).max())
    assert_close(steps.iloc[:, 1].to_numpy(), qk, terms=8, magnitude=max(1.0, size), why="BART's score is q·k ÷ √d_head")
    assert "scores = Q Kᵀ / √8" in charts(at)["qkv_scores"]["layout"]["title"]["text"]


# ---------------------------------------------------------------------------------------------
# Model view, Output, Checkpoint (sinks, head jobs).
# ---------------------------------------------------------------------------------------------


def test_model_view_draws_each_kinds_own_layers(env):
    ckpt, ref = reference(env, T5)
    at = start({"checkpoint": T5, "page": "model_view", "text": TEXT, "target": TARGET})
    for kind in KINDS:
        at.radio(key="mv_kind").set_value(kind).run()
        no_errors(at)
        z = z_of(charts(at)["mv_grid"])
        n_layers, q, k = ckpt.config.layers_of(kind), len(ref.query_tokens(kind)), len(ref.key_tokens(kind))
        assert z.shape == (n_layers * q, 4 * k), kind  # a short text: one cell per weight
        last = n_layers - 1
        assert_same_bits(z[last * q :, 3 * k :], ref.attention(kind, last).weights[0, 3], why=f"{kind}: the last layer's head 3")
        assert any(c.value.startswith(f"{n_layers} layers × 4 heads; {q} query × {k} key tokens.") for c in at.caption)
        assert len(at.selectbox(key="mv_pick").options) == n_layers * 4


@pytest.mark.parametrize("name", [T5, BART])
def test_output_page_shows_the_greedy_translation_and_each_positions_next_tokens(env, name):
    ckpt, ref = reference(env, name, target=None)
    at = start({"checkpoint": name, "page": "output", "text": TEXT})
    no_errors(at)
    ids = greedy_decode(ckpt.model, list(ref.source.ids), ckpt.decoding)  # the model's own rules, one text at a time
    assert [c.value for c in at.code][0] == (ckpt.tokenizer.decode(ids) or "(empty: no text before the end token)")
    table = frame(at, column="#1")
    assert list(table.index) == unique_labels(ref.target.tokens)
    top = ref.probs[0].argmax(-1)
    assert [cell.split("  (")[0] for cell in table["#1"]] == [ckpt.tokenizer.id_to_token(int(i)) for i in top]
    if name == BART:  # </s> starts the decoder, <s> is forced next: the table's first rows say so
        assert ref.target.tokens[:2] == ("[EOS]", "[BOS]")


def test_checkpoint_page_sinks_entropy_and_label_free_head_jobs_of_the_deeper_decoder(env):
    ckpt, ref = reference(env, T5)
    at = start(
        {"checkpoint": T5, "page": "checkpoint", "text": TEXT, "target": TARGET, "kind": "cross", "layer": "2", "head": "1"}
    )
    no_errors(at)
    figs = charts(at)
    w = ref.attention("cross", 2).weights[0]  # (H, Tt, Ts): every target row may read every source token
    expected = np.array(
        [[ref.attention("cross", layer).weights[0, h, :, 0].double().mean() for h in range(4)] for layer in range(3)]
    )
    assert_close(z_of(figs["ck_sinks"]), expected, terms=w.shape[1], why="sink grid: the mean weight on the first source token")
    assert z_of(figs["ck_entropy"]).shape == (3, 4)
    q_proj = ckpt.model.decoder.layers[2].cross_attn.q_proj.weight.detach()
    assert_same_bits(z_of(figs["ck_W_Q"]), q_proj[8:16].T, why="head 1's W_Q in decoder layer 2")
    jobs = frame(at, column="monotone")
    assert list(jobs.columns) == ["monotone", "focused"] and len(jobs) == 3 * 4
    assert any("Alignment and agreement compare attention with the gold labels" in c.value for c in at.caption)
    rules = [t.value for t in at.text if t.value.startswith("Starts with")]  # literal text: the tokens are the tokenizer's
    assert rules == ["Starts with [PAD]; ends at [EOS]; at most 31 tokens after the start."]


def test_the_checkpoint_page_says_how_the_bart_like_model_writes(env):
    at = start({"checkpoint": BART, "page": "checkpoint", "text": TEXT, "target": TARGET})
    no_errors(at)
    rules = [t.value for t in at.text if t.value.startswith("Starts with")]
    assert rules == [
        "Starts with [EOS], then [BOS] (forced); ends at [EOS]; at most 31 tokens after the start; never repeats a 3-gram; "
        "forced to end with [EOS] at the last step."
    ]


# ---------------------------------------------------------------------------------------------
# Ablation and its sweep: the page's batched greedy decoding is api.greedy_decode's, knocked out or not.
# ---------------------------------------------------------------------------------------------


def teacher_forced(ckpt, trace) -> torch.Tensor:
    """(target tokens, vocab) next-token probabilities of `ckpt` fed the trace's own source and decoder ids."""
    with torch.no_grad():
        logits, _ = ckpt.model(torch.tensor([trace.source.ids]), torch.tensor([trace.target.ids]))
    return logits[0].softmax(-1)


@pytest.mark.parametrize("name", [T5, BART])
def test_ablation_knocks_out_every_cross_head_and_sweeps_every_kinds_layers(env, name):
    ckpt, ref = reference(env, name, target=None)
    cfg, tok = ckpt.config, ckpt.tokenizer
    heads = [("cross", layer, h) for layer in range(cfg.dec_layers) for h in range(4)]  # the decoder's depth, not the encoder's
    at = start(
        {"checkpoint": name, "page": "ablation", "text": TEXT, "heads": ",".join(f"c{layer}.{h}" for _, layer, h in heads)}
    )
    no_errors(at)
    assert at.session_state["sel_heads"] == heads
    knockout = ablation.head_ablation(cfg, [heads])
    with app_threads():
        before = tok.decode(greedy_decode(ckpt.model, list(ref.source.ids), ckpt.decoding))
        after = tok.decode(greedy_decode(ckpt.model, list(ref.source.ids), ckpt.decoding, ablate=knockout))
    assert before != after, "without cross-attention the decoder does not read the source: another output"
    assert [t.value for t in at.text if t.value.startswith("before: ")] == [f"before: {before}\nafter:  {after}"]
    assert any(c.value == "The translation changed." for c in at.caption)
    # Teacher-forced p(token) of the original translation with the heads knocked out: ablate= against zeroed W_O columns.
    forced = torch.tensor([*ref.target.ids[1:], ckpt.decoding.end])
    rows = torch.arange(len(forced))
    knocked = teacher_forced(without_heads(ckpt, heads), ref)
    sums = dict(terms=longest_sum(cfg, len(ref.source.ids), vocab=True), depth=sublayers(cfg, head=True) + cfg.dec_layers)
    assert_close(charts(at)["abl_effect"]["data"][1]["y"], knocked[rows, forced], **sums, why="p(token) knocked out")
    for kind in KINDS:
        assert z_of(charts(at)[f"abl_sweep_{kind.replace(' ', '_')}"]).shape == (cfg.layers_of(kind), 4), kind


def test_sweep_cell_of_a_cross_head_equals_a_model_without_it(env):
    ckpt, ref = reference(env, T5, target=None)
    at = start({"checkpoint": T5, "page": "ablation", "text": TEXT})
    no_errors(at)
    grid = z_of(charts(at)["abl_sweep_cross"])
    clean = ref.probs[0].double().log()
    knocked = teacher_forced(without_heads(ckpt, [("cross", 2, 1)]), ref).double().log()
    kl = float((clean.exp() * (clean - knocked)).sum(-1).mean())
    cfg = ckpt.config
    assert_close(
        grid[2, 1],
        kl,
        terms=longest_sum(cfg, len(ref.source.ids), vocab=True),
        depth=2 * (sublayers(cfg, head=True) + cfg.dec_layers),
        magnitude=max(1.0, float(clean.abs().max())),
        why="KL of cross L2 H1 knocked out: the batched sweep against a copy with its W_O columns zeroed",
    )


# ---------------------------------------------------------------------------------------------
# Rollout, Logit lens, Compare.
# ---------------------------------------------------------------------------------------------


def naive_cross_rollout(trace) -> np.ndarray:
    """rollout.py's joint graph written out as loops in float64: the encoder's rollout, then per decoder layer the
    self step (½A + ½I, rows renormalised) on both parts and the cross step (½ kept, ½ from the source)."""
    enc = [trace.attention("encoder self", i).weights[0].double().numpy() for i in range(trace.n_layers("encoder self"))]
    r_enc = naive_rollout(enc)[-1]
    T, S = len(trace.target.ids), len(trace.source.ids)
    d, c = np.eye(T), np.zeros((T, S))
    out = []
    for layer in range(trace.n_layers("decoder self")):
        a = trace.attention("decoder self", layer).weights[0].double().numpy().mean(0)
        aug = 0.5 * a + 0.5 * np.eye(T)
        aug /= aug.sum(-1, keepdims=True)
        d, c = aug @ d, aug @ c
        cross = trace.attention("cross", layer).weights[0].double().numpy().mean(0)
        d, c = 0.5 * d, 0.5 * c + 0.5 * cross @ r_enc
        out.append(c)
    return np.stack(out)


def test_rollout_page_composes_the_encoder_with_a_decoder_of_another_depth(env):
    ckpt, ref = reference(env, T5)
    at = start(
        {
            "checkpoint": T5,
            "page": "attribution",
            "text": TEXT,
            "target": TARGET,
            "kind": "cross",
            "layer": "2",
            "head": "0",
            "q": "4",
        }
    )
    no_errors(at)
    figs = charts(at)
    T, S = len(ref.target.ids), len(ref.source.ids)
    assert z_of(figs["attr_rollout"]).shape == (T, S)
    assert figs["attr_rollout"]["layout"]["yaxis"]["ticktext"] == ticks(ref.target.tokens)
    assert figs["attr_rollout"]["layout"]["xaxis"]["ticktext"] == ticks(ref.source.tokens)
    assert_close(
        z_of(figs["attr_rollout"]),
        naive_cross_rollout(ref)[2],
        terms=max(T, S, 4),
        depth=3 * (ckpt.config.n_layers + 2 * ckpt.config.dec_layers),
        why="the app's cross rollout through 2 encoder and 3 decoder layers against the formula in float64",
    )
    bars = figs["attr_scores"]["data"]
    assert len(bars[-1]["y"]) == S and np.isfinite(bars[-1]["y"]).all()  # saliency of the prediction at target position 4


@pytest.mark.parametrize("name", [T5, BART])
def test_logit_lens_last_row_is_the_models_own_output_through_its_head(env, name):
    ckpt, ref = reference(env, name)
    cfg = ckpt.config
    at = start({"checkpoint": name, "page": "lens", "text": TEXT, "target": TARGET})
    no_errors(at)
    fig = charts(at)["lens_grid"]["data"][0]
    assert len(fig["y"]) == 1 + 3 * cfg.dec_layers and fig["y"][-1] == f"L{cfg.dec_layers - 1} feed-forward"
    assert fig["x"] == [plotly_text(f"{i}·{t}") for i, t in enumerate(ref.target.tokens)]
    top = ref.probs[0].max(-1)
    assert_close(
        np.asarray(fig["z"])[-1],
        top.values,
        terms=max(cfg.d_model, cfg.vocab_size),
        depth=3,
        why="the lens's end (final norm, head scale, unembedding, logits bias) of the last residual against the forward's",
    )
    assert lens_row_tokens(fig, -1) == ticks(ckpt.tokenizer.id_to_token(int(i)) for i in top.indices)
    applied = next(c.value for c in at.caption if "Applied here:" in c.value)
    if name == T5:
        assert applied.endswith(
            "Applied here: the final RMSNorm, then × 0.1768 (the scale this model's head applies), then the unembedding."
        )
    else:
        assert "no final norm (after each post-LN sublayer" in applied and applied.endswith(
            "the unembedding and its bias on the logits."
        )


def test_compare_two_checkpoints_of_different_decoder_depths(env):
    at = start(
        {
            "checkpoint": T5,
            "page": "compare",
            "text": TEXT,
            "cmp": "checkpoints",
            "checkpoint2": BART,
            "kind": "cross",
            "layer": "2",
        }
    )
    no_errors(at)
    assert any("B has 1 layers (no layer 2)" in i.value for i in at.info)
    at = start({"checkpoint": T5, "page": "compare", "text": TEXT, "text2": TEXT, "kind": "cross", "layer": "2", "head": "3"})
    no_errors(at)
    _, ref = reference(env, T5, target=None)
    figs = charts(at)
    assert_same_bits(z_of(figs["cmp_heatmap_a"]), ref.head("cross", 2, 3)["weights"], why="panel A is the trace's")
    assert not z_of(figs["cmp_diff"]).any(), "the link's text B is the sidebar's text: no difference"


def test_greedy_batch_is_api_greedy_decode_with_each_models_rules(env):
    """The batched greedy decoding of the Ablation page and the head jobs, row by row, against api.greedy_decode."""
    for name in (T5, BART):
        ckpt = load_checkpoint(env / f"{name}.safetensors", device="cpu")
        sources = [ckpt.tokenizer.encode(s.text, max_len=ckpt.config.max_len).ids for s in generate_corpus(6, 7)]
        rows = [(), (("cross", 0, 1),), (("decoder self", 0, 0), ("encoder self", 1, 3))]
        for heads in rows:
            knockout = ablation.head_ablation(ckpt.config, [heads] * len(sources)) if heads else None
            batched = ablation.greedy_batch(ckpt, sources, knockout)
            one = ablation.head_ablation(ckpt.config, [heads]) if heads else None
            alone = [tuple(greedy_decode(ckpt.model, list(s), ckpt.decoding, ablate=one)) for s in sources]
            for src, b, a in zip(sources, batched, alone, strict=True):
                assert_same_greedy(ckpt.model, ckpt.decoding, src, b, a, one, why=f"{name} {heads}")
        if name == BART:  # its rules at work: the forced <s> first, no 3-gram twice
            out = ablation.greedy_batch(ckpt, sources)
            assert all(r[0] == ckpt.tokenizer.bos_id for r in out)
            assert all(len({r[i : i + 3] for i in range(len(r) - 2)}) == len(r) - 2 for r in out)
        _, target = streams(ckpt, TEXT)
        assert target.ids == (ckpt.decoding.start, *ablation.greedy_batch(ckpt, [ckpt.tokenizer.encode(TEXT).ids])[0])


def test_sweep_rows_of_a_copy_knocked_out_in_advance(env):
    """The sweep's grid of each kind is laid out by that kind's own depth: a cell (kind, layer, head) is that head."""
    ckpt, ref = reference(env, BART)
    tokens = streams(ckpt, TEXT)
    result = ablation.sweep(ckpt, tokens, "kl")
    assert {k: tuple(g.shape) for k, g in result.grids.items()} == {
        "encoder self": (2, 4),
        "decoder self": (1, 4),
        "cross": (1, 4),
    }
    for kind, layer, head in (("encoder self", 1, 2), ("cross", 0, 3)):
        knocked = ckpt.model(
            *(torch.tensor([s.ids]) for s in tokens), ablate=ablation.head_ablation(ckpt.config, [[(kind, layer, head)]])
        )[0]
        clean = ckpt.model(*(torch.tensor([s.ids]) for s in tokens))[0]
        kl = float(ablation.kl_divergence(clean[0].log_softmax(-1), knocked[0].log_softmax(-1)).mean())
        assert_close(
            result.grids[kind][layer, head],
            kl,
            terms=longest_sum(ckpt.config, vocab=True),
            depth=2,
            why=f"{kind} L{layer} H{head}",
        )


def test_head_jobs_of_a_translator_whose_tokenizer_has_no_pad_token(env):
    """An import's tokenizer may have no [PAD]: the probes pad with the config's pad_id (masked, so any id would do)."""
    ckpt = load_checkpoint(env / f"{T5}.safetensors", device="cpu")
    scores = head_jobs.head_scores(ckpt, n=4)
    ckpt.tokenizer.pad_id = None
    assert {k: v.tolist() for k, v in head_jobs.head_scores(ckpt, n=4).items()} == {k: v.tolist() for k, v in scores.items()}
    assert set(scores) == {
        "previous-token (encoder self)", "previous-token (decoder self)", "first-token (encoder self)",
        "first-token (decoder self)", "monotone (cross)", "focused (cross)",
    }  # fmt: skip
    assert scores["monotone (cross)"].shape == scores["previous-token (decoder self)"].shape == (3, 4)
