"""Every page of the app on a modern decoder: grouped-query attention, rotary positions, RMSNorm, a gated MLP, a sliding
window in some layers, and a head width that is not d_model / n_heads.

The numbers on the page are read back from the figures' JSON and the tables, and checked against a trace made here
with the core API under the app's thread setting (the same computation: the same bits), or against an independent
computation of the same number (another formula, another code path: within float32 rounding, `numerics.py`).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from numerics import app_threads, assert_close, assert_same_bits, longest_sum, sublayers
from test_app import charts, frame, no_errors, start
from test_literal import assert_no_markup
from test_why_app import naive_rollout

from transformer.api import build_model, trace_text
from transformer.checkpoints import catalog, verify
from transformer.checkpoints.format import load_checkpoint, save_checkpoint
from transformer.checkpoints.tokenizer import train_tokenizer
from transformer.data.toy_english import generate_corpus
from transformer.model.config import ModelConfig
from transformer.model.describe import describe
from viz.labels import plotly_text

pytestmark = pytest.mark.numerics

KIND = "decoder self"
TEXT = "the proud grumpy foxes are shy . a frog carries the scientist . the proud grumpy foxes are shy ."
MODERN = dict(
    kind="decoder", n_layers=3, n_heads=6, n_kv_heads=2, head_dim=6, d_model=24, d_ff=40, max_len=48,
    positional="rope", norm="rms", mlp="gated", activation="silu", sliding_window=4, full_attention_layers=(0,),
    attn_bias=False, attn_out_bias=False, mlp_bias=False, scale_embeddings=False, tie_embeddings=False,
)  # fmt: skip
HOSTILE_ORIGIN = "[click](http://evil.example/x) <b>bold</b> :rocket: $x$"
PARITY = {
    "max_attention_diff": 3e-7,
    "max_output_diff": 1e-8,
    "output": "next-token probabilities",
    "texts": 3,
    "tokens": 40,
    "transformers": "5.23.0",
    "torch": "2.9.0",
    "date": "2026-12-03",
}


@pytest.fixture(scope="module")
def modern_assets(tmp_path_factory) -> Path:
    """A folder with a random-weight modern decoder saved as lm.safetensors (the catalogue's "lm")."""
    folder = tmp_path_factory.mktemp("modern")
    tok = train_tokenizer([s.text for s in generate_corpus(200, 0)], "decoder", vocab_size=150, min_frequency=1)
    cfg = ModelConfig(vocab_size=tok.vocab_size, **MODERN)
    assert cfg.d_head * cfg.n_heads != cfg.d_model and cfg.group_size == 3
    model = build_model(cfg, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # far from the small init: heads attend sharply and each differently
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    training = {"task": "lm", "source": "huggingface", "model_type": "llama", "architecture": "LlamaForCausalLM"}
    training |= {"weights": "model.safetensors", "origin": HOSTILE_ORIGIN, "parity": PARITY}
    save_checkpoint(folder / "lm.safetensors", model, tok, training)
    return folder


@pytest.fixture
def env(serve_assets, modern_assets):
    serve_assets(modern_assets)
    return modern_assets


def reference(folder: Path, text: str = TEXT):
    """The checkpoint and its trace made here with the core API, on the app's threads (the same computation as the app's)."""
    ckpt = load_checkpoint(folder / "lm.safetensors", device="cpu")
    with app_threads():
        return ckpt, trace_text(ckpt, text)


def z_of(fig: dict) -> np.ndarray:
    return np.asarray(fig["data"][0]["z"])


# ---------------------------------------------------------------------------------------------
# Every page runs, and draws the model's numbers.
# ---------------------------------------------------------------------------------------------

PAGES = ("qkv", "model_view", "checkpoint", "output", "training", "ablation", "attribution", "lens", "compare")


def test_every_page_runs_on_the_modern_model(env):
    at = start({"checkpoint": "lm", "text": TEXT, "layer": "2", "head": "4"})
    no_errors(at)
    _, ref = reference(env)
    assert_same_bits(z_of(charts(at)["attn_heatmap"]), ref.head(KIND, 2, 4)["weights"], why="the attention page's heatmap")
    assert any("Query head 4 reads key/value head 1, shared by query heads 3, 4 and 5." in c.value for c in at.caption)
    for page in PAGES:
        at.switch_page(f"pages/{page}.py").run()
        no_errors(at)
        assert charts(at) or at.dataframe or (page == "training" and at.info), f"{page} drew nothing"


# ---------------------------------------------------------------------------------------------
# Q, K, V: the shared key/value head and the rotation.
# ---------------------------------------------------------------------------------------------


def test_qkv_page_shows_the_shared_key_value_head_and_q_k_before_and_after_rotation(env):
    query = 6
    at = start({"checkpoint": "lm", "page": "qkv", "text": TEXT, "layer": "1", "head": "5", "q": str(query)})
    no_errors(at)
    _, ref = reference(env)
    h, att = ref.head(KIND, 1, 5), ref.attention(KIND, 1)
    figs = charts(at)
    assert any("Query head 5 reads key/value head 1, shared by query heads 3, 4 and 5." in i.value for i in at.info)
    # K and V are key/value head 1's: the tensors query heads 3, 4 and 5 all read, not "head 5" of anything.
    assert not torch.equal(att.k[0, 0], att.k[0, 1])
    assert_same_bits(z_of(figs["qkv_k"]), att.k[0, 1], why="K drawn is key/value head 1's")
    assert_same_bits(z_of(figs["qkv_v"]), att.v[0, 1], why="V drawn is key/value head 1's")
    assert_same_bits(z_of(figs["qkv_k"]), ref.head(KIND, 1, 3)["k"], why="query head 3 reads the same K")
    assert "key/value head 1" in figs["qkv_k"]["layout"]["title"]["text"]
    # q and k before the rotation and after it (what the scores use); position 0 is turned by angle 0.
    for part in ("q", "k", "q_pre", "k_pre"):
        assert_same_bits(z_of(figs[f"qkv_{part}"]), h[part], why=f"{part} drawn is the trace's")
    assert torch.equal(h["q"][0], h["q_pre"][0]) and not torch.allclose(h["q"][1:], h["q_pre"][1:])
    assert any("Rotary positions" in i.value for i in at.info)

    # The worked row: the turned score recomputed equals the model's; the unturned one is q_pre·k_pre / √d_head.
    steps = frame(at, column="softmax weight")
    d = h["q"].shape[-1]
    assert d == 6
    assert_same_bits(steps.iloc[:, 1].to_numpy(), h["scores"][query], why="the model's own score column")
    dot_size = float((h["q"][query].abs() @ h["k"].abs().T).max()) / math.sqrt(d)
    assert_close(
        steps[f"turned q·k ÷ √{d}"].to_numpy(),
        h["scores"][query],
        terms=d,
        magnitude=dot_size,
        why="q·k / √d_head by numpy from the turned q and k, against the model's matmul",
    )
    unturned = (h["k_pre"].double() @ h["q_pre"][query].double()) / math.sqrt(d)
    pre_size = float((h["q_pre"][query].abs() @ h["k_pre"].abs().T).max()) / math.sqrt(d)
    shown = steps[f"unturned q·k ÷ √{d}"].to_numpy()
    assert_close(shown, unturned, terms=d, magnitude=pre_size, why="q_pre·k_pre / √d_head, float32 there, float64 here")
    assert steps["distance i − j"].tolist() == [query - j for j in range(len(steps))]
    # Rotation changes a score by the distance only: at distance 0 (the query's own key) turning changes nothing.
    turned = steps[f"turned q·k ÷ √{d}"].to_numpy()
    gap = np.abs(turned - shown)
    assert gap[query] <= 8 * d * 2**-23 * max(dot_size, pre_size), "distance 0: both turned by the same angle"
    assert gap[:query].max() > 1e-3, "at other distances the turn changes the score"


# ---------------------------------------------------------------------------------------------
# Model view: grouping by key/value head, and the first token out of the colour scale.
# ---------------------------------------------------------------------------------------------


def test_model_view_groups_heads_by_key_value_head_and_can_leave_the_first_token_out(env):
    at = start({"checkpoint": "lm", "page": "model_view", "text": TEXT})
    no_errors(at)
    _, ref = reference(env)
    T = len(ref.source.ids)
    plain = charts(at)["mv_grid"]
    assert plain["layout"]["xaxis"]["ticktext"] == [str(h) for h in range(6)]
    at.toggle(key="mv_group").set_value(True).run()
    no_errors(at)
    fig = charts(at)["mv_grid"]
    z = z_of(fig)
    assert fig["layout"]["xaxis"]["ticktext"] == ["H0 · kv0", "H1 · kv0", "H2 · kv0", "H3 · kv1", "H4 · kv1", "H5 · kv1"]
    dark = [s["x0"] for s in fig["layout"]["shapes"] if s["type"] == "line" and s["line"]["color"] == "#222"]
    assert dark == [2.5], "one dark line, between the two key/value groups"
    assert any("key/value head 0: query heads 0–2; key/value head 1: query heads 3–5" in c.value for c in at.caption)
    for layer in range(3):  # each thumbnail is its head's weights (a short text: one cell per weight)
        for head in range(6):
            block = z[layer * T : (layer + 1) * T, head * T : (head + 1) * T]
            assert_same_bits(block, ref.attention(KIND, layer).weights[0, head], why=f"thumbnail L{layer} H{head}")

    at.toggle(key="mv_skip_first").set_value(True).run()
    no_errors(at)
    skipped = charts(at)["mv_grid"]["data"][0]
    assert_same_bits(skipped["z"], z, why="leaving the first token out changes the colours, never the values")
    others = z[:, np.arange(z.shape[1]) % T != 0]
    assert skipped["zmax"] == float(others.max()) < float(z[:, ::T].max()) == 1.0  # causal query 0: weight 1 on token 0
    assert "first token left out" in skipped["colorbar"]["title"]["text"]
    assert any("first column of every thumbnail" in c.value for c in at.caption)


# ---------------------------------------------------------------------------------------------
# The switch, on the Attention page, the Q, K, V page and Compare (one setting for the session).
# ---------------------------------------------------------------------------------------------


def test_first_token_switch_rescales_every_attention_heatmap_and_keeps_the_values(env):
    at = start({"checkpoint": "lm", "text": TEXT, "layer": "2", "head": "4"})
    _, ref = reference(env)
    w = ref.head(KIND, 2, 4)["weights"]
    assert charts(at)["attn_heatmap"]["data"][0]["zmax"] == 1.0
    at.toggle(key="attn_skip_first").set_value(True).run()
    no_errors(at)
    hm = charts(at)["attn_heatmap"]["data"][0]
    assert_same_bits(hm["z"], w, why="the values (and so the hover) are the trace's")
    assert hm["zmin"] == 0.0 and hm["zmax"] == float(w[:, 1:].max())
    mean = charts(at)["attn_mean"]["data"][0]
    assert mean["zmax"] == float(np.asarray(mean["z"])[:, 1:].max())
    first = ref.source.tokens[0]
    notes = [c.value for c in at.caption if c.value.startswith("Colours: the first token's column")]
    assert len(notes) == 2 and all(f"` {first} `" in n or f"`{first}`" in n for n in notes), notes
    assert f"values up to {float(w[:, 0].max()):.3g}" in notes[0]

    at.switch_page("pages/qkv.py").run()  # the same setting, on the next page
    no_errors(at)
    assert at.toggle(key="qkv_skip_first").value
    weights = charts(at)["qkv_weights"]["data"][0]
    assert weights["zmax"] == float(w[:, 1:].max()) and weights["zmin"] == 0.0

    at.switch_page("pages/compare.py").run()
    no_errors(at)
    figs = charts(at)
    panels = [figs["cmp_heatmap_a"]["data"][0], figs["cmp_heatmap_b"]["data"][0]]
    tops = [float(np.asarray(p["z"])[:, 1:].max()) for p in panels]
    assert panels[0]["zmax"] == panels[1]["zmax"] == max(tops), "both panels on one scale"
    at.toggle(key="cmp_skip_first").set_value(False).run()
    assert charts(at)["cmp_heatmap_a"]["data"][0]["zmax"] == 1.0


# ---------------------------------------------------------------------------------------------
# Checkpoint: the architecture in words, where it came from, parity, the shared W_K, and the sink grid.
# ---------------------------------------------------------------------------------------------


def naive_sinks(trace) -> np.ndarray:
    """Sink scores by the definition, as a loop over the trace's weights and mask (independent of transformer.why.sinks)."""
    out = np.zeros((trace.n_layers(KIND), 6))
    for layer in range(trace.n_layers(KIND)):
        att = trace.attention(KIND, layer)
        w, m = att.weights[0].double().numpy(), att.mask[0, 0].numpy()
        rows = [q for q in range(m.shape[0]) if m[q, 0] and m[q, 1:].any()]
        out[layer] = [np.mean([w[h, q, 0] for q in rows]) for h in range(6)]
    return out


def test_checkpoint_page_states_the_architecture_origin_parity_and_sinks(env):
    at = start({"checkpoint": "lm", "page": "checkpoint", "text": TEXT, "layer": "1", "head": "5"})
    no_errors(at)
    ckpt, ref = reference(env)
    cfg = ckpt.config
    words = describe(cfg)
    assert "6 query heads sharing 2 key/value heads, 3 each (head width 6)" in words
    assert "sliding window of 4 tokens in layers 1, 2" in words and "RoPE θ = 10 000 on all dims" in words
    assert any(m.value == f"**Architecture:** {words}." for m in at.markdown)
    origin = next(df.value for df in at.dataframe if "name" in df.value and "source" in set(df.value["name"]))
    facts = dict(zip(origin["name"], origin["value"]))
    assert facts["source"] == "huggingface" and facts["model_type"] == "llama" and facts["origin"] == HOSTILE_ORIGIN
    for element in ("markdown", "caption", "info", "warning", "error", "success"):
        for e in at.get(element):
            assert_no_markup(e.value, f"checkpoint page {element}")
    assert any(
        t.value == "Checked against transformers 5.23.0 (torch 2.9.0) on 2026-12-03: attention weights differ by at "
        "most 3e-07, next-token probabilities by 1e-08, on 3 texts / 40 tokens."
        for t in at.text
    )
    parity = frame(at, column="checked")
    assert parity["value"].tolist()[:2] == ["3e-07", "1e-08"]
    assert not [b for b in at.button if b.key == "ck_verify"], "our own file is no Hugging Face folder: nothing to check"
    assert any(e.label == "Where this server finds models" for e in at.expander)  # server.model_sources.render_sources

    figs = charts(at)
    k_proj = ckpt.model.decoder.layers[1].self_attn.k_proj.weight.detach()  # (H_kv · d_head, d_model)
    assert_same_bits(figs["ck_W_K"]["data"][0]["z"], k_proj[6:12].T, why="head 5's W_K is key/value head 1's rows")
    q_proj = ckpt.model.decoder.layers[1].self_attn.q_proj.weight.detach()
    assert_same_bits(figs["ck_W_Q"]["data"][0]["z"], q_proj[30:36].T, why="head 5's own W_Q rows (d_head = 6, not 4)")

    sink = figs["ck_sinks"]["data"]
    expected = naive_sinks(ref)
    assert_close(sink[0]["z"], expected, terms=len(ref.source.ids), why="sink grid against the definition's loop")
    assert float(np.asarray(sink[0]["z"]).std()) > 0.01  # heads differ: a grid, not one number
    assert figs["ck_sinks"]["layout"]["xaxis"]["ticktext"][5] == "H5 · kv1"
    assert plotly_text(ref.source.tokens[0]) in figs["ck_sinks"]["layout"]["title"]["text"]
    assert any("An attention sink is a token" in c.value for c in at.caption)


# ---------------------------------------------------------------------------------------------
# Output, Ablation, Rollout & saliency, Logit lens: against independent computations.
# ---------------------------------------------------------------------------------------------


def without_head(ckpt, layer: int, head: int):
    """A copy whose model has query head `head`'s d_head columns of W_O zeroed: the head adds nothing."""
    import copy

    model = copy.deepcopy(ckpt.model)
    d = model.cfg.d_head  # 6 here: d_model // n_heads (4) would zero the wrong columns
    model.decoder.layers[layer].self_attn.out_proj.weight[:, head * d : (head + 1) * d] = 0.0
    return dataclasses.replace(ckpt, model=model)


def test_output_ablation_lens_and_rollout_on_the_modern_model(env):
    ckpt, ref = reference(env)
    cfg, T = ckpt.config, len(ref.source.ids)

    at = start({"checkpoint": "lm", "page": "output", "text": TEXT})
    no_errors(at)
    table = frame(at, column="#1")
    top = ref.probs[0].argmax(-1)
    assert len(table) == T
    assert [cell.split("  (")[0] for cell in table["#1"]] == [ckpt.tokenizer.id_to_token(int(i)) for i in top]

    at = start({"checkpoint": "lm", "page": "ablation", "text": TEXT, "heads": "d1.4"})
    no_errors(at)
    after = trace_text(without_head(ckpt, 1, 4), TEXT).probs[0]
    ids = torch.tensor(ref.source.ids)
    rows = torch.arange(T - 1)
    sums = dict(terms=longest_sum(cfg, T, vocab=True), depth=sublayers(cfg, head=True))
    effect = charts(at)["abl_effect"]["data"]
    assert_close(effect[0]["y"], ref.probs[0][rows, ids[1:]], **sums, why="p(next) with every head")
    assert_close(effect[1]["y"], after[rows, ids[1:]], **sums, why="p(next) without query head 4: ablate= vs zeroed W_O")
    assert float((after - ref.probs[0])[rows, ids[1:]].abs().max()) > 1e-4, "the head matters on this text"
    assert z_of(charts(at)["abl_sweep_decoder_self"]).shape == (3, 6)  # one cell per query head
    assert any("share 2 key/value heads" in c.value for c in at.caption)

    at = start({"checkpoint": "lm", "page": "lens", "text": TEXT})
    no_errors(at)
    lens = charts(at)["lens_grid"]["data"][0]
    assert_close(
        np.asarray(lens["z"])[-1],
        ref.probs[0].max(-1).values,
        terms=max(cfg.d_model, cfg.vocab_size),
        depth=2,
        why="the lens's final RMSNorm and unembedding of the last residual against the forward's own",
    )
    assert any("Applied here: the final RMSNorm, then the unembedding." in c.value for c in at.caption)

    at = start({"checkpoint": "lm", "page": "attribution", "text": TEXT, "layer": "2", "head": "1", "q": "9"})
    no_errors(at)
    weights = [ref.attention(KIND, layer).weights[0].double().numpy() for layer in range(3)]
    figs = charts(at)
    assert_close(
        z_of(figs["attr_rollout"]),
        naive_rollout(weights)[2],
        terms=max(T, cfg.n_heads),
        depth=3 * len(weights),
        why="the app's float32 rollout against the paper's formula in float64",
    )
    assert_same_bits(z_of(figs["attr_raw"]), ref.head(KIND, 2, 1)["weights"], why="the raw weights are the trace's")


# ---------------------------------------------------------------------------------------------
# "Check against transformers": a real Hugging Face folder, checked by transformers itself.
# ---------------------------------------------------------------------------------------------


def hf_entry(name: str, label: str, path: Path) -> catalog.CatalogEntry:
    """A catalogue entry for a Hugging Face folder (whichever way this version of CatalogEntry marks one)."""
    fields = {f.name for f in dataclasses.fields(catalog.CatalogEntry)}
    return catalog.CatalogEntry(name, label, path, **({"kind": "huggingface"} if "kind" in fields else {"hf_dir": True}))


@pytest.mark.skipif(not verify.available(), reason="needs the transformers package")
def test_check_against_transformers_button_runs_transformers_on_the_folder(env, monkeypatch, tmp_path):
    import transformers
    from hf_reference import bpe_tokenizer, save_random

    tok = bpe_tokenizer()
    llama = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, head_dim=6, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    folder = save_random(transformers.LlamaForCausalLM(llama), tok, tmp_path / "tiny-llama")
    real = catalog.available
    monkeypatch.setattr(catalog, "available", lambda: {**real(), "tinyllama": hf_entry("tinyllama", "Tiny Llama", folder)})

    at = start({"checkpoint": "tinyllama", "page": "checkpoint"})
    no_errors(at)
    button = [b for b in at.button if b.key == "ck_verify"]
    assert button and not any(t.value.startswith("Checked against") for t in at.text)
    button[0].click().run()
    no_errors(at)
    checked = [t.value for t in at.text if t.value.startswith("Checked against")]
    assert len(checked) == 1 and f"transformers {transformers.__version__} " in checked[0]
    assert datetime.date.today().isoformat() in checked[0]
    table = frame(at, column="checked")
    attention_diff, output_diff = (float(v) for v in table["value"][:2])
    assert 0 <= attention_diff <= 1e-5 and 0 <= output_diff <= 1e-5, "our import computes what transformers does"
    from transformer.checkpoints.importers import load_any

    ckpt = load_any(folder, device="cpu")
    n_tokens = sum(len(ckpt.tokenizer.encode(t, max_len=ckpt.config.max_len).ids) for t in verify.TEXTS)
    assert table["value"][2] == f"{len(verify.TEXTS)} / {n_tokens}"
    # The result stays when the page reruns for something else.
    at.button(key="ck_next_head").click().run()
    no_errors(at)
    assert [t.value for t in at.text if t.value.startswith("Checked against")] == checked

    monkeypatch.setattr(verify, "available", lambda: False)  # without transformers: no button at all
    at = start({"checkpoint": "tinyllama", "page": "checkpoint"})
    no_errors(at)
    assert not [b for b in at.button if b.key == "ck_verify"]
