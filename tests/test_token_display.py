"""What a newcomer reads on the figures (issue 18): byte-level tokens with visible spaces, the same position on
both sides of "Rollout & saliency", integer heads and a 0-bit colour scale on the entropy chart, token names in
the model view's hover, readable small numbers. Each is checked in the figure JSON the browser receives."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numerics import app_threads
from test_app import charts, no_errors, start
from test_hf_import import byte_level_tokenizer, make_gpt2, wordpiece_tokenizer
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from transformer import api
from transformer.api import trace_text
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint
from transformer.checkpoints.tokenizer import Tokenizer
from transformer.convert import main as convert_main
from viz import grid, why
from viz.labels import byte_level, looks_byte_level, plotly_text, shown_token, unique_labels

TEXT = "the big red dog ran\nsmall blue cats sat"


def metaspace_tokenizer() -> HFTokenizer:
    """A SentencePiece-style (T5, Llama 2) tokenizer: "▁" starts a word."""
    vocab = {t: i for i, t in enumerate(["<unk>", "▁the", "▁dog", "▁Ġ", "s"])}
    tok = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return tok


# ---------------------------------------------------------------------------------------------
# Labels: a visible space marker for byte-level tokens only.
# ---------------------------------------------------------------------------------------------


def test_byte_level_tokens_show_their_spaces_and_line_breaks():
    tok = byte_level_tokenizer()
    tokens = tok.encode(TEXT).tokens
    assert "Ġdog" in tokens and "Ċ" in tokens  # what GPT-2 writes for " dog" and "\n"
    assert byte_level(tok) and byte_level(Tokenizer(tok)) and looks_byte_level(tokens)
    labels = unique_labels(tokens)
    assert labels[tokens.index("Ġdog")] == f"{tokens.index('Ġdog')}·␣dog"
    assert labels[tokens.index("Ċ")] == f"{tokens.index('Ċ')}·↵"
    assert not any("Ġ" in label or "Ċ" in label for label in labels)
    # The bytes are decoded: "é" is two byte characters; half a character is shown by number; tabs are visible.
    assert shown_token("ĠcafÃ©") == "␣café" and shown_token("Ġâ") == "␣⟨e2⟩" and shown_token("ĉx") == "⇥x"
    assert shown_token("<|endoftext|>") == "<|endoftext|>"  # a special token is ASCII: itself


def test_wordpiece_and_metaspace_tokens_are_left_as_they_are():
    wp = wordpiece_tokenizer()
    tokens = wp.encode("the dog").tokens
    assert not byte_level(wp) and unique_labels(tokens) == [f"{i}·{t}" for i, t in enumerate(tokens)]
    assert unique_labels(["[CLS]", "m", "##y", "[UNK]"]) == ["0·[CLS]", "1·m", "2·##y", "3·[UNK]"]
    sp = metaspace_tokenizer()
    tokens = sp.encode("the dog Ġ").tokens
    assert tokens == ["▁the", "▁dog", "▁Ġ"] and not byte_level(sp)
    assert unique_labels(tokens) == ["0·▁the", "1·▁dog", "2·▁Ġ"]  # a typed "Ġ" stays a letter
    assert unique_labels(["Ġ", "[UNK]"], byte_level=False) == ["0·Ġ", "1·[UNK]"]  # the tokenizer's word wins


# ---------------------------------------------------------------------------------------------
# Figure builders.
# ---------------------------------------------------------------------------------------------


def contrast_on_white(colour: str) -> float:
    """WCAG contrast ratio of a "#rrggbb" colour against white."""
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lum = sum(
        w * (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4) for w, c in zip((0.2126, 0.7152, 0.0722), channels)
    )
    return 1.05 / (lum + 0.05)


def test_token_scores_read_tiny_values_and_keep_the_raw_token():
    tokens = ["the", "Ġdog", "Ċ"]
    series = {f"s{i}": np.array([3e-7, -2e-6, 1e-7]) for i in range(4)}
    fig = why.token_scores_figure(tokens, series, "t").to_plotly_json()
    assert fig["data"][0]["x"] == ["0·the", "1·␣dog", "2·↵"]
    assert list(fig["data"][0]["customdata"]) == ["", " (raw Ġdog)", " (raw Ċ)"]
    assert "%{x}%{customdata}" in fig["data"][0]["hovertemplate"]
    layout = fig["layout"]
    axes = [layout[k] for k in layout if k.startswith("yaxis")]
    assert len(axes) == 4 and all(a["exponentformat"] == "power" for a in axes)  # 3×10⁻⁷, not "300n" or "μ"
    assert all(contrast_on_white(bar["marker"]["color"]) >= 4.5 for bar in fig["data"]), [
        b["marker"]["color"] for b in fig["data"]
    ]


def test_logit_lens_cells_show_the_marker_and_the_hover_the_raw_token():
    probs = np.full((1, 2, 2), 0.5, dtype=np.float32)
    top = [[["Ġdog", "Ċ"], ["Ġcat", "s"]]]
    fig = why.lens_figure(["embed"], ["the", "Ġdog"], top, probs, "t").to_plotly_json()
    heat = fig["data"][0]
    assert heat["x"] == ["0·the", "1·␣dog"] and heat["text"] == [["␣dog", "␣cat"]]
    assert heat["customdata"][0][0] == "␣dog (raw Ġdog): 0.5000<br>↵ (raw Ċ): 0.5000"
    # A WordPiece model's tokens, unchanged.
    fig = why.lens_figure(["embed"], ["the", "##s"], [[["a", "##b"], ["Ġ", "c"]]], probs, "t").to_plotly_json()
    assert fig["data"][0]["x"] == ["0·the", "1·##s"] and fig["data"][0]["text"] == [["a", "Ġ"]]


def test_model_view_hover_names_the_tokens_and_a_click_on_a_cell_opens_its_head():
    tok = byte_level_tokenizer()
    tokens = tuple(tok.encode(TEXT).tokens)
    from test_figures import synthetic_trace

    from transformer.model.trace import Stream

    trace = synthetic_trace(2, 3, len(tokens))
    trace = type(trace)(
        encoder=None,
        decoder=trace.decoder,
        logits=trace.logits,
        probs=trace.probs,
        source=Stream(text=TEXT, ids=tuple(range(len(tokens))), tokens=tokens, offsets=((0, 0),) * len(tokens)),
    )
    fig = grid.head_grid(api.pool_trace(trace), "decoder self").to_plotly_json()
    heat = fig["data"][0]
    n = len(tokens)
    i = tokens.index("Ġdog")
    assert heat["hovertemplate"].startswith("%{y}%{x}<br>weight")
    assert heat["x"][2 * n + i] == f"head 2<br>key {i}·␣dog (raw Ġdog)"  # Plotly's line break, the token literal
    assert heat["y"][n + i] == f"query {i}·␣dog (raw Ġdog)<br>layer 1 · "
    # The image lies on hidden category axes laid over the numeric ones: the same span, cell for cell.
    assert fig["layout"]["xaxis2"]["range"] == [-0.5, 3 * n - 0.5] and fig["layout"]["xaxis"]["range"] == [-0.5, 2.5]
    assert fig["layout"]["yaxis2"]["range"] == [2 * n - 0.5, -0.5] and fig["layout"]["yaxis"]["range"] == [1.5, -0.5]
    assert grid.pick_from_selection([{"x": heat["x"][2 * n + i], "y": heat["y"][n + i]}]) == (1, 2)
    assert grid.pick_from_selection([{"x": 2.0, "y": 1.0}]) == (1, 2)  # a thumbnail's centre
    assert grid.block_names(["<b>x", "%{z}"], 1, 2, "key", "keys") == ["key 0·&lt;b&gt;x", "key 1·&#37;{z}"]


# ---------------------------------------------------------------------------------------------
# Pages, on the shipped checkpoints.
# ---------------------------------------------------------------------------------------------


def score_titles(fig: dict) -> list[str]:
    return [a["text"] for a in fig["layout"]["annotations"]]


def test_attention_row_and_saliency_explain_the_same_position_on_the_lm(shipped):
    text = "the dog sees the cats . the dog sees the cats ."
    at = start({"checkpoint": "lm", "page": "attribution", "text": text, "layer": "1", "head": "1", "q": "4"})
    no_errors(at)
    label = unique_labels(load_checkpoint(shipped["lm"].path, device="cpu").tokenizer.encode(text).tokens)[4]
    titles = score_titles(charts(at)["attr_scores"])
    assert all(t.endswith(f"at position {plotly_text(label)}") for t in titles), titles
    assert titles[-1].startswith("gradient × input of the prediction")
    assert any(f"next token predicted at position ` {label} `" in c.value for c in at.caption)


def test_attention_row_and_saliency_explain_the_same_decoder_position_on_the_translator(shipped):
    text = "the dog sees the cats ."
    at = start(
        {"checkpoint": "translator", "page": "attribution", "text": text, "kind": "encoder self", "layer": "0", "head": "0"}
    )
    no_errors(at)
    picker = at.selectbox(key="attr_dec_position")
    labels = picker.options  # the decoder positions, as unique labels
    last = len(labels) - 1
    assert picker.value == last
    titles = score_titles(charts(at)["attr_scores"])
    # The default: the last decoder position, for the cross attention row, its rollout and the saliency alike.
    assert all(t.endswith(f"at position {plotly_text(labels[last])}") for t in titles), titles
    assert titles[0].startswith("cross attention of layer 0")
    ckpt = load_checkpoint(shipped["translator"].path, device="cpu")
    with app_threads():
        trace = trace_text(ckpt, text)
    assert labels == unique_labels(trace.query_tokens("cross"))
    row = trace.head("cross", 0, 0)["weights"]
    np.testing.assert_array_equal(charts(at)["attr_scores"]["data"][0]["y"], row[last].numpy())
    picker.set_value(2).run()
    no_errors(at)
    titles = score_titles(charts(at)["attr_scores"])
    assert all(t.endswith(f"at position {plotly_text(labels[2])}") for t in titles), titles
    np.testing.assert_array_equal(charts(at)["attr_scores"]["data"][0]["y"], row[2].numpy())


def test_classifier_rows_are_those_of_the_position_it_reads(shipped):
    at = start({"checkpoint": "classifier", "page": "attribution", "q": "3"})
    no_errors(at)
    fig = charts(at)["attr_scores"]
    first = fig["data"][0]["x"][0]  # "0·[CLS]"
    assert all(t.endswith(f"at position {first}") for t in score_titles(fig))
    assert any("reads its class at position" in c.value for c in at.caption)


@pytest.mark.parametrize("name", ["lm", "translator"])
def test_entropy_chart_has_whole_heads_and_starts_at_zero_bits(shipped, name):
    at = start({"checkpoint": name, "page": "checkpoint"})
    no_errors(at)
    fig = charts(at)["ck_entropy"]
    heat = fig["data"][0]
    x = fig["layout"]["xaxis"]
    assert (x["tickmode"], x["tick0"], x["dtick"]) == ("linear", 0, 1)  # heads 0, 1, 2 …, never 0.5
    n_keys = int(round(2 ** heat["zmax"]))
    assert heat["zmin"] == 0 and heat["zmax"] == pytest.approx(math.log2(n_keys))
    assert 0 < np.max(heat["z"]) <= heat["zmax"] + 1e-6
    assert any(
        "Colours from 0 bits" in c.value and f"log₂ {n_keys} = {math.log2(n_keys):.2f} bits" in c.value for c in at.caption
    )


# ---------------------------------------------------------------------------------------------
# A byte-level GPT-2, in the app.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def gpt2_app(tmp_path, monkeypatch):
    _, folder = make_gpt2(tmp_path / "gpt2")
    assets = tmp_path / "assets"
    assets.mkdir()
    assert convert_main([folder, str(assets / "lm.safetensors")]) == 0
    monkeypatch.setenv("ATTNVIZ_DEVICE", "cpu")
    monkeypatch.setenv(catalog.ASSETS_ENV, str(assets))
    monkeypatch.setenv(catalog.NO_MINILM_ENV, "1")
    return load_checkpoint(assets / "lm.safetensors", device="cpu")


def test_gpt2_pages_show_space_markers_and_keep_the_raw_tokens(gpt2_app):
    text = "the big red dog ran"
    tokens = gpt2_app.tokenizer.encode(text).tokens
    assert "Ġdog" in tokens
    i = tokens.index("Ġdog")
    at = start({"checkpoint": "lm", "text": text})
    no_errors(at)
    heat = charts(at)["attn_heatmap"]
    # The heatmap's category values (what its hover names) and its tick labels carry the marker.
    assert heat["data"][0]["x"][i] == f"{i}·␣dog" and heat["data"][0]["y"][i] == f"{i}·␣dog"
    for axis in ("xaxis", "yaxis"):
        ticks = dict(zip(heat["layout"][axis]["tickvals"], heat["layout"][axis]["ticktext"]))
        assert ticks[f"{i}·␣dog"] == "␣dog" and not any("Ġ" in t for t in ticks.values())
    # The Model view's CSV names each cell's tokens the same way.
    from server.widgets import pooled_frame

    table = pooled_frame(
        np.ones((1, 1, len(tokens), len(tokens)), np.float32), [0], len(tokens), len(tokens), (1, 1), tokens, tokens
    )
    assert "␣dog" in set(table["key_tokens"]) and not table["key_tokens"].str.contains("Ġ").any()
    at = start({"checkpoint": "lm", "page": "model_view", "text": text})
    no_errors(at)
    assert f"key {i}·␣dog (raw Ġdog)" in charts(at)["mv_grid"]["data"][0]["x"][i]
    at = start({"checkpoint": "lm", "page": "attribution", "text": text, "q": str(i)})
    no_errors(at)
    fig = charts(at)["attr_scores"]
    assert fig["data"][0]["x"][i] == f"{i}·␣dog" and fig["data"][0]["customdata"][i] == " (raw Ġdog)"
    assert all(t.endswith(f"at position {i}·␣dog") for t in score_titles(fig))
