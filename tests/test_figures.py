"""The pure figure builders (viz/): every number drawn is the trace's number, labels are the tokens, payloads are small."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from numerics import assert_close, rounding_atol

from server import urlstate
from transformer import api
from transformer.api import build_model, trace_text
from transformer.checkpoints.format import Checkpoint
from transformer.checkpoints.tokenizer import train_tokenizer
from transformer.data.toy_english import generate_corpus
from transformer.model.config import ModelConfig
from transformer.model.trace import AttentionTrace, LayerTrace, StackTrace, Stream, Trace
from viz import figures, grid, jsonfig, metrics, worked
from viz.labels import plotly_text, unique_labels

pytestmark = pytest.mark.numerics

TEXT = "the dog near the cats sees the dog ."  # repeated tokens: "the" ×3, "dog" ×2


@pytest.fixture(scope="module")
def tokenizers():
    texts = [s.text for s in generate_corpus(200, 0)]
    return {kind: train_tokenizer(texts, kind, vocab_size=150, min_frequency=1) for kind in ("encoder-decoder", "decoder")}


def _ckpt(tok, kind: str, seed: int = 0) -> Checkpoint:
    cfg = ModelConfig(kind=kind, vocab_size=tok.vocab_size, n_layers=2, n_heads=3, d_model=24, d_ff=32, max_len=40)
    model = build_model(cfg, seed=seed).eval()
    # Sharpen attention so heads differ visibly from the uniform pattern of a fresh model.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "q_proj.weight" in name or "k_proj.weight" in name:
                p.mul_(8.0)
    return Checkpoint(model=model, tokenizer=tok)


@pytest.fixture(scope="module")
def enc_dec(tokenizers):
    return trace_text(_ckpt(tokenizers["encoder-decoder"], "encoder-decoder"), TEXT, "a b c")


@pytest.fixture(scope="module")
def lm_ckpt(tokenizers):
    return _ckpt(tokenizers["decoder"], "decoder", seed=1)


@pytest.fixture(scope="module")
def lm(lm_ckpt):
    return trace_text(lm_ckpt, TEXT)


def _heatmap(fig: go.Figure) -> dict:
    """The first trace of the figure as the browser receives it (JSON, base64 arrays decoded)."""
    return jsonfig.parse(fig.to_json())["data"][0]


@pytest.mark.parametrize("kind", ["encoder self", "decoder self", "cross"])
def test_attention_heatmap_is_the_traces_weights(enc_dec, kind):
    for layer in range(2):
        for head in range(3):
            data = _heatmap(figures.attention_figure(enc_dec, kind, layer, head))
            expected = enc_dec.attention(kind, layer).weights[0, head].numpy()
            assert data["z"].dtype == np.float32
            np.testing.assert_array_equal(data["z"], expected)  # exactly: the very trace the figure was drawn from


def test_axes_are_the_tokens_in_order(enc_dec):
    fig = figures.attention_figure(enc_dec, "cross", 1, 2)
    layout = jsonfig.parse(fig.to_json())["layout"]
    data = _heatmap(fig)
    q_tokens, k_tokens = enc_dec.target.tokens, enc_dec.source.tokens
    assert layout["yaxis"]["ticktext"] == [plotly_text(t) for t in q_tokens]
    assert layout["xaxis"]["ticktext"] == [plotly_text(t) for t in k_tokens]
    # Category values are unique per position, so the repeated "the" and "dog" do not merge.
    assert data["x"] == [plotly_text(x) for x in unique_labels(k_tokens)]
    assert len(set(data["x"])) == len(k_tokens)
    assert k_tokens.count("the") >= 2
    assert layout["yaxis"]["autorange"] == "reversed"  # first query token at the top
    assert layout["yaxis"]["tickvals"] == data["y"]


def test_hover_names_query_key_and_value(enc_dec):
    data = _heatmap(figures.attention_figure(enc_dec, "encoder self", 0, 0))
    template = data["hovertemplate"]
    assert "query: %{y}" in template and "key: %{x}" in template and "%{z:.6f}" in template


def test_perceptually_uniform_colour_scales(enc_dec):
    viridis = go.Heatmap(colorscale="Viridis").colorscale
    cividis = go.Heatmap(colorscale="Cividis").colorscale
    fig = figures.attention_figure(enc_dec, "encoder self", 0, 0)
    assert fig.data[0].colorscale == viridis
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0.0, 1.0)
    stretched = figures.attention_figure(enc_dec, "encoder self", 0, 0, stretch=True)
    assert stretched.data[0].zmin is None and stretched.data[0].zmax is None
    for name, f in figures.head_figures(enc_dec, "decoder self", 1, 1).items():
        assert f.data[0].colorscale in (viridis, cividis), name


def _validated(fig: go.Figure) -> dict:
    """The figure's JSON after Plotly validates every property of it (raises on anything invalid)."""
    return json.loads(go.Figure(fig.to_plotly_json()).to_json())


@pytest.mark.parametrize("presentation", [False, True])
def test_unchecked_figures_are_what_plotly_validation_makes(enc_dec, lm, presentation):
    """The hot path's heatmaps skip Plotly's validation (`figures.unchecked`): validating them changes nothing."""
    built = [
        figures.attention_figure(enc_dec, "cross", 1, 2, presentation),
        figures.attention_figure(lm, "decoder self", 0, 1, presentation, stretch=True, label="<b>step 3</b>"),
        figures.fit_to_screen(figures.mean_heads_figure(enc_dec, "encoder self", 1, presentation)),
        figures.scale_without_first_column(figures.mean_heads_figure(lm, "decoder self", 1, presentation)),
        figures.highlight_row(figures.add_cell_picker(figures.attention_figure(lm, "decoder self", 1, 0, presentation)), 2),
        *figures.head_figures(enc_dec, "decoder self", 1, 1, presentation).values(),
        grid.pooled_grid(*_layer(lm, 1), selected=(1, 2), presentation=presentation, skip_first=True),
        grid.pooled_grid(*_layer(lm, 0), presentation=presentation, scale="sqrt", group_size=3),
        grid.head_grid(api.pool_trace(enc_dec), "cross", selected=(0, 1), presentation=presentation, scale="stretch"),
    ]
    for fig in built:
        assert json.loads(fig.to_json()) == _validated(fig), fig.layout.title.text


def _layer(trace, layer: int):
    pooled, block = grid.layer_maps(trace, "decoder self", layer)
    return pooled, [layer], "decoder self", block


def test_presentation_enlarges_fonts(enc_dec):
    small = figures.attention_figure(enc_dec, "encoder self", 0, 0)
    big = figures.attention_figure(enc_dec, "encoder self", 0, 0, presentation=True)
    assert big.layout.font.size > small.layout.font.size
    assert big.layout.yaxis.tickfont.size > small.layout.yaxis.tickfont.size


def test_margins_fit_the_token_labels_without_automargin():
    """Margins are computed from the labels (Plotly's automargin would draw every heatmap twice)."""
    short = figures.token_heatmap(np.eye(3), ["a", "b", "c"], ["a", "b", "c"], title="t")
    long = figures.token_heatmap(np.eye(3), ["a", "b", "unbelievably"], ["a", "b", "中文字符"], title="t")
    for fig in (short, long):
        assert fig.layout.xaxis.automargin is False and fig.layout.yaxis.automargin is False
    size = short.layout.font.size
    assert long.layout.margin.l - short.layout.margin.l >= 0.6 * size * (len("unbelievably") - 1) * 0.9
    assert long.layout.margin.b - short.layout.margin.b >= 0.87 * 1.1 * size * 4 - 0.87 * 0.6 * size * 1 - 1
    bigger = figures.token_heatmap(np.eye(3), ["a", "b", "unbelievably"], None, title="t", presentation=True)
    assert bigger.layout.margin.l > long.layout.margin.l  # larger fonts, larger margins


def test_html_in_tokens_is_escaped_for_plotly():
    fig = figures.token_heatmap(np.eye(3), ["<b>", "&", "x"], ["<b>", "&", "x"], title="t")
    layout = fig.layout
    assert list(layout.yaxis.ticktext) == ["&lt;b&gt;", "&amp;", "x"]
    assert "<b>" not in "".join(fig.data[0].y)


def test_mean_over_heads(enc_dec):
    data = _heatmap(figures.mean_heads_figure(enc_dec, "decoder self", 1))
    w = enc_dec.attention("decoder self", 1).weights[0].numpy()
    assert_close(data["z"], w.mean(0), terms=w.shape[0], why="mean of the heads' weights, by torch and by numpy")


@pytest.mark.parametrize("n_tokens, every", [(14, 1), (15, 2), (33, 3), (64, 5)])
def test_the_half_width_mean_chart_labels_every_kth_key(n_tokens, every):
    """The mean over heads is drawn in half the page's width: at most HALF_WIDTH_TICKS key labels, each its own column's
    token, the first column's always (33 labels there overlapped); the rows and the full-width head keep every token."""
    trace = synthetic_trace(1, 2, n_tokens)
    mean = figures.mean_heads_figure(trace, "decoder self", 0)
    x = mean.layout.xaxis
    assert len(x.tickvals) <= figures.HALF_WIDTH_TICKS
    assert list(x.tickvals) == list(mean.data[0].x[::every])
    assert list(x.ticktext) == [f"t{i}" for i in range(0, n_tokens, every)]
    assert list(mean.layout.yaxis.ticktext) == [f"t{i}" for i in range(n_tokens)]
    head = figures.attention_figure(trace, "decoder self", 0, 1)
    assert list(head.layout.xaxis.ticktext) == [f"t{i}" for i in range(n_tokens)]


def test_head_figures_show_the_trace_in_computation_order(enc_dec):
    figs = figures.head_figures(enc_dec, "cross", 1, 2)
    assert list(figs) == ["q", "k", "v", "scores", "mask", "weights", "output"]
    head = enc_dec.head("cross", 1, 2)
    for name, fig in figs.items():
        np.testing.assert_array_equal(_heatmap(fig)["z"], head[name].float().numpy(), err_msg=name)
    d = head["q"].shape[-1]
    assert f"({len(enc_dec.target.tokens)} × {d})" in figs["q"].layout.title.text
    assert "Q Kᵀ / √" in figs["scores"].layout.title.text


def test_cell_picker_hover_matches_heatmap(lm):
    fig = figures.add_cell_picker(figures.attention_figure(lm, "decoder self", 0, 0))
    picker = fig.data[1]
    w = lm.attention("decoder self", 0).weights[0, 0].numpy()
    np.testing.assert_array_equal(np.asarray(picker.marker.color), w.reshape(-1))
    n = len(lm.source.tokens)
    assert list(picker.y[:n]) == [fig.data[0].y[0]] * n and list(picker.x[:n]) == list(fig.data[0].x)


# ---------------------------------------------------------------------------------------------
# The worked row of the Q, K, V page.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["encoder self", "decoder self", "cross"])
def test_worked_row_reproduces_the_trace(enc_dec, kind):
    for query in range(len(enc_dec.query_tokens(kind))):
        row = worked.worked_row(enc_dec, kind, 1, 1, query)
        head = enc_dec.head(kind, 1, 1)
        np.testing.assert_array_equal(row.q, head["q"][query].numpy())
        np.testing.assert_array_equal(row.weights, head["weights"][query].numpy())
        np.testing.assert_array_equal(row.trace_output, head["output"][query].numpy())
        # q·k / √d_head recomputed from q and k equals the model's scores; softmax and Σ weight·v equal its outputs.
        d_head, n_keys = len(row.q), len(row.weights)
        qk = float((np.abs(row.k) @ np.abs(row.q)).max()) / row.scale  # Σ|q_i k_i| behind a score
        assert_close(row.scaled, head["scores"][query], terms=d_head, depth=2, magnitude=qk,
                     why="q·k / √d_head by numpy against the model's matmul: a d_head-term dot product, then the division")  # fmt: skip
        assert_close(row.softmax_check, row.weights, terms=n_keys, depth=2,
                     why="softmax of the trace's own scores in float64 here against the model's float32 softmax")  # fmt: skip
        assert row.output_matches, (row.max_abs_diff, row.tolerance)  # within worked.py's own rounding bound (tested below)
        assert math.isclose(row.scale, math.sqrt(head["q"].shape[-1]))


def test_worked_row_respects_the_causal_mask(lm):
    row = worked.worked_row(lm, "decoder self", 0, 2, 3)
    assert row.allowed.tolist() == [True] * 4 + [False] * (len(row.allowed) - 4)
    assert (row.weights[~row.allowed] == 0).all()
    assert_close(row.weights.sum(), 1.0, terms=len(row.weights), depth=2, why="a softmax row: its own sum, then this one")
    table = row.steps_table()
    assert list(table.index) == unique_labels(lm.source.tokens)
    np.testing.assert_array_equal(table["softmax weight"].to_numpy(), row.weights)
    sums = row.sum_table()
    terms_sum = float((np.abs(row.weights)[:, None] * np.abs(row.v)).sum(0).max())  # Σ_j |w_j v_j|: the terms behind
    assert_close(sums.iloc[:-2].sum().to_numpy(), row.output, terms=len(row.weights), magnitude=terms_sum,
                 why="the table's weighted value rows summed by pandas against numpy's weights @ v")  # fmt: skip


def test_worked_row_rejects_out_of_range(lm):
    with pytest.raises(IndexError):
        worked.worked_row(lm, "decoder self", 0, 0, 999)


# ---------------------------------------------------------------------------------------------
# Model view: pooled thumbnails in one compact heatmap.
# ---------------------------------------------------------------------------------------------


def synthetic_trace(n_layers: int, n_heads: int, n_tokens: int, seed: int = 0) -> Trace:
    """A decoder-only trace with random (row-normalised) weights; other tensors are tiny stand-ins."""
    g = torch.Generator().manual_seed(seed)
    tiny = torch.zeros(1, n_heads, 1, 1)
    layers = []
    for _ in range(n_layers):
        w = torch.rand(1, n_heads, n_tokens, n_tokens, generator=g)
        w = w / w.sum(-1, keepdim=True)
        att = AttentionTrace(
            q=tiny, k=tiny, v=tiny, scores=w, mask=torch.ones(1, 1, 1, 1, dtype=torch.bool), weights=w, output=tiny
        )
        layers.append(LayerTrace(self_attn=att, resid_attn=torch.zeros(1), resid_ff=torch.zeros(1)))
    stack = StackTrace(embed=torch.zeros(1), layers=tuple(layers), final=torch.zeros(1))
    tokens = tuple(f"t{i}" for i in range(n_tokens))
    source = Stream(text=" ".join(tokens), ids=tuple(range(n_tokens)), tokens=tokens, offsets=((0, 0),) * n_tokens)
    return Trace(encoder=None, decoder=stack, logits=torch.zeros(1), probs=torch.zeros(1), source=source)


def test_model_view_payload_at_128_tokens():
    trace = synthetic_trace(6, 12, 128)
    fig = grid.head_grid(api.pool_trace(trace, grid.MAX_CELLS), "decoder self")
    size = len(fig.to_json())
    assert size <= 2_000_000, size
    data = _heatmap(fig)
    assert data["z"].dtype == np.float32 and data["z"].shape == (6 * 64, 12 * 64)
    # Thumbnail of layer 2, head 5 is the exact 2×2 block max of that head's weights.
    w = trace.attention("decoder self", 2).weights[0, 5].numpy()
    np.testing.assert_array_equal(data["z"][2 * 64 : 3 * 64, 5 * 64 : 6 * 64], w.reshape(64, 2, 64, 2).max(axis=(1, 3)))
    # The colour bar spans weights 0..1; hovering a cell names its layer and head and shows the weight.
    assert (data["zmin"], data["zmax"]) == (0, 1)
    bar = data["colorbar"]
    assert bar["title"]["text"] == "weight" and bar["ticktext"] == ["0", "0.25", "0.5", "0.75", "1"]
    assert data["hovertemplate"].startswith("%{y}%{x}<br>weight %{z:.9~g} (largest of 2 × 2 weights)")
    # Every cell's x and y name its thumbnail's head and layer and the tokens it pools (what the hover text shows).
    heads = [int(x.split("<br>")[0].removeprefix("head ")) for x in data["x"]]
    layers = [int(y.split("<br>layer ")[1].removesuffix(" · ")) for y in data["y"]]
    np.testing.assert_array_equal(heads, np.repeat(np.arange(12), 64))
    np.testing.assert_array_equal(layers, np.repeat(np.arange(6), 64))
    assert data["x"][5 * 64 + 1] == "head 5<br>keys 2·t2 … 3·t3" and data["y"][2 * 64] == "queries 0·t0 … 1·t1<br>layer 2 · "


def test_model_view_csv_names_the_positions_each_cell_covers():
    from server import widgets

    trace = synthetic_trace(2, 3, 5)
    maps = api.pool_trace(trace, max_cells=2)  # 5 tokens in blocks of 3: positions 0-2 and 3-4
    table = widgets.pooled_frame(maps.maps["decoder self"], [0, 1], 5, 5, (3, 3))
    assert len(table) == 2 * 3 * 2 * 2
    row = table[(table["layer"] == 1) & (table["head"] == 2) & (table["query_from"] == 3) & (table["key_from"] == 0)].iloc[0]
    assert (row.query_to, row.key_to) == (4, 2)
    w = trace.attention("decoder self", 1).weights[0, 2].numpy()
    assert row.weight == w[3:5, 0:3].max()


def test_model_view_sqrt_colours_keep_the_values():
    trace = synthetic_trace(2, 3, 10)
    maps = api.pool_trace(trace)
    linear, sqrt, stretch = (_heatmap(grid.head_grid(maps, "decoder self", scale=s)) for s in grid.SCALES)
    np.testing.assert_array_equal(linear["z"], sqrt["z"])  # only the colours move
    np.testing.assert_array_equal(linear["z"], stretch["z"])
    # Stretched: colours span 0 to the 99th percentile of the cells, labelled in weights ("≥" at the top).
    z = np.asarray(linear["z"])
    top = float(np.quantile(z, 0.99))
    assert stretch["zmax"] == pytest.approx(top) and 0 < top < z.max()
    assert stretch["colorbar"]["ticktext"][-1] == f"≥ {top:.3g}"
    stops = sqrt["colorscale"]
    assert stops[0][0] == 0 and stops[-1][0] == 1
    # colour(w) = viridis(√w): the stop placed at weight 0.25 has the colour linear viridis gives 0.5.
    from plotly.colors import get_colorscale, sample_colorscale

    at_quarter = next(c for p, c in stops if abs(p - 0.25) < 1e-9)
    assert at_quarter == sample_colorscale(get_colorscale("Viridis"), [0.5])[0]


def test_model_view_keeps_diffuse_attention_at_2048_tokens():
    """A near-uniform head over 2048 keys (weights ~1/2048) keeps its exact small values in the thumbnail."""
    n = 2048
    g = torch.Generator().manual_seed(0)
    w = 1.0 + 0.01 * torch.rand(1, 1, n, n, generator=g)
    w = w / w.sum(-1, keepdim=True)  # every weight within 1% of 1/2048
    trace = synthetic_trace(1, 1, 4)
    att = trace.attention("decoder self", 0)
    trace = dataclasses.replace(
        trace,
        decoder=dataclasses.replace(
            trace.decoder, layers=(dataclasses.replace(trace.decoder.layers[0], self_attn=dataclasses.replace(att, weights=w)),)
        ),
    )
    image = grid.grid_image(api.pool_trace(trace).maps["decoder self"])
    assert image.shape == (64, 64)
    np.testing.assert_array_equal(image, w[0, 0].numpy().reshape(64, 32, 64, 32).max(axis=(1, 3)))
    assert image.min() >= 0.99 / n


@pytest.mark.slow
def test_model_view_at_2048_tokens():
    trace = synthetic_trace(6, 12, 2048)
    start = time.perf_counter()
    fig = grid.head_grid(api.pool_trace(trace), "decoder self")
    payload = fig.to_json()
    elapsed = time.perf_counter() - start
    assert len(payload) <= 2_000_000
    assert _heatmap(fig)["z"].shape == (6 * 64, 12 * 64)
    assert elapsed < 30, elapsed


# ---------------------------------------------------------------------------------------------
# Metrics and URL parsing.
# ---------------------------------------------------------------------------------------------


def test_head_projections_reproduce_the_traced_q(lm, lm_ckpt):
    model = lm_ckpt.model
    layer0 = model.decoder.layers[0]
    with torch.no_grad():
        x = layer0.attn_block.norm(lm.decoder.embed[0])  # pre-LN: attention reads the normalised embeddings
    d = model.cfg.d_head
    for head in range(model.cfg.n_heads):
        w = metrics.head_projections(model, "decoder self", 0, head)
        bias = layer0.self_attn.q_proj.bias.detach()[head * d : (head + 1) * d]
        q = x @ torch.from_numpy(w["W_Q"]) + bias
        assert_close(q, lm.head("decoder self", 0, head)["q"], terms=model.cfg.d_model, depth=2,
                     why="the norm (d_model terms) and W_Q recomputed here against the model's projection")  # fmt: skip
        assert w["W_O"].shape == (d, model.cfg.d_model)


def test_parameter_table_counts_everything(lm_ckpt):
    table = metrics.parameter_table(lm_ckpt.model)
    total = sum(p.numel() for p in lm_ckpt.model.parameters())
    assert table.loc["total", "parameters"] == total
    assert table.drop("total")["parameters"].sum() == total
    assert metrics.stack_totals(lm_ckpt.model)["parameters"].sum() == total


def test_attention_entropy(lm):
    ent = metrics.attention_entropy(lm, "decoder self")
    w = lm.attention("decoder self", 1).weights[0, 2].double().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        rows = -np.nansum(np.where(w > 0, w * np.log2(w), 0.0), axis=-1)
    assert ent.shape == (2, 3)
    # Both sums run in float64 (torch's and numpy's, ~1e-16 apart); the float32 result rounds once more.
    assert_close(ent[1, 2], rows.mean(), terms=1, why="entropy in float64 by torch and by numpy, stored as float32")
    assert (ent >= 0).all()


def test_top_k_table(lm, lm_ckpt):
    table = metrics.top_k_table(lm, lm_ckpt.tokenizer.id_to_token, k=3)
    assert list(table.index) == unique_labels(lm.source.tokens)
    p, idx = lm.probs[0, 2].topk(1)
    assert table.iloc[2]["#1"] == f"{lm_ckpt.tokenizer.id_to_token(int(idx))}  ({float(p):.3f})"


def test_url_parsing_validates_everything():
    view = urlstate.parse(
        {"checkpoint": "nope", "layer": "x", "head": "3", "kind": "cross", "text": "a" * 30_000, "q": "-1", "page": "qkv"},
        ("translator", "lm"),
        ("attention", "qkv"),
    )
    assert view.checkpoint is None and view.layer is None and view.head == 3 and view.kind == "cross"
    assert view.query is None and view.page == "qkv"
    assert len(view.text) == urlstate.MAX_TEXT_CHARS
    assert len(view.warnings) == 4  # checkpoint, layer, text length, q
    assert urlstate.parse({"kind": "<script>"}, ("lm",)).kind is None
    warnings: list[str] = []
    assert urlstate.clamp(7, 3, "layer", warnings) == 2 and "out of range" in warnings[0]
    assert urlstate.clamp(1, 3, "layer", warnings) == 1 and len(warnings) == 1


def test_csv_of_the_matrix_shown_round_trips(enc_dec):
    import io

    import pandas as pd

    from server.widgets import matrix_frame

    w = enc_dec.attention("cross", 0).weights[0, 1].numpy()
    frame = matrix_frame(w, enc_dec.target.tokens, enc_dec.source.tokens)
    back = pd.read_csv(io.StringIO(frame.to_csv()), index_col=0)
    assert list(back.index) == unique_labels(enc_dec.target.tokens)
    assert list(back.columns) == unique_labels(enc_dec.source.tokens)
    np.testing.assert_array_equal(back.to_numpy().astype(np.float32), w)


# ---------------------------------------------------------------------------------------------
# The trace cache: bounded by bytes, least recently used dropped first, the latest always kept.
# ---------------------------------------------------------------------------------------------


def test_byte_lru_evicts_least_recently_used_by_bytes():
    from server.lru import ByteLRU

    cache = ByteLRU(budget=100, size=len)
    cache.put("a", "x" * 40)
    cache.put("b", "y" * 40)
    assert cache.get("a") == "x" * 40  # "a" is now the most recent, so "b" goes first
    cache.put("c", "z" * 40)  # 120 bytes > 100: drop the least recently used
    assert cache.keys() == ["a", "c"] and cache.nbytes == 80
    cache.put("a", "x" * 10)  # replacing an entry re-counts its size
    assert cache.nbytes == 50 and cache.keys() == ["c", "a"]
    cache.put("huge", "h" * 500)  # over budget on its own: kept (it is what the user is looking at), all else dropped
    assert cache.keys() == ["huge"] and cache.nbytes == 500
    assert cache.get("c") is None
    made = []
    assert cache.get_or_create("d", lambda: made.append(1) or "d" * 30) == "d" * 30
    assert cache.get_or_create("d", lambda: made.append(1) or "other") == "d" * 30
    assert made == [1] and cache.keys() == ["d"]  # "huge" (500) + "d" (30) > 100: "huge" dropped
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_trace_cache_counts_trace_bytes():
    """The app's cache sizes traces by `Trace.nbytes()`: two 2048-token 6 × 12 traces never fit its budget together."""
    from server.lru import ByteLRU
    from server.shared import TRACE_CACHE_BYTES

    small = synthetic_trace(1, 2, 8)
    cache = ByteLRU(budget=small.nbytes() * 2, size=Trace.nbytes)
    for i in range(3):
        cache.put(i, synthetic_trace(1, 2, 8, seed=i))
    assert cache.keys() == [1, 2] and cache.nbytes == 2 * small.nbytes()
    per_2048 = 6 * 12 * 2048 * 2048 * 4 * 2  # weights + scores alone, float32
    assert TRACE_CACHE_BYTES < 2 * per_2048


# ---------------------------------------------------------------------------------------------
# User text stays text in figures; the worked row's tolerance; the pooled-map note.
# ---------------------------------------------------------------------------------------------

HOSTILE_TOKENS = ["<a href='http://evil.example'>a</a>", "%{x}", "$x^2$", "&amp;", "<br>"]


def test_plotly_text_escapes_markup_templates_and_maths():
    assert plotly_text("<b>&</b>") == "&lt;b&gt;&amp;&lt;/b&gt;"
    assert plotly_text("%{x} $y$") == "&#37;{x} &#36;y&#36;"  # Plotly shows the characters, but fills in no template
    assert plotly_text(3) == "3"


def test_token_text_never_lands_in_a_hover_template():
    fig = figures.token_heatmap(np.eye(5), HOSTILE_TOKENS, HOSTILE_TOKENS, title="t")
    spec = jsonfig.parse(fig.to_json())
    data = spec["data"][0]
    assert data["hovertemplate"] == "query: %{y}<br>key: %{x}<br>weight: %{z:.6f}<extra></extra>"
    assert data["x"] == data["y"] == [plotly_text(t) for t in unique_labels(HOSTILE_TOKENS)]
    for values in (data["x"], spec["layout"]["xaxis"]["ticktext"], spec["layout"]["yaxis"]["ticktext"]):
        text = "".join(values)
        assert "<" not in text and "%{" not in text and "$" not in text
    picker = figures.add_cell_picker(fig).data[1]
    assert picker.hovertemplate == "query: %{y}<br>key: %{x}<br>weight: %{marker.color:.6f}<extra></extra>"


def test_class_names_from_a_checkpoint_reach_plotly_escaped():
    names = ["<img src=http://evil.example/y>", "%{x}", "<img src=http://evil.example/y>", "n" * 100]
    fig = figures.class_probabilities_figure(np.array([0.1, 0.2, 0.3, 0.4]), names)
    spec = jsonfig.parse(fig.to_json())
    bars = spec["data"][0]
    shown = [plotly_text(n) for n in names[:3]] + [plotly_text("n" * figures.MAX_CLASS_CHARS + "…")]
    assert spec["layout"]["yaxis"]["ticktext"] == shown and list(bars["customdata"]) == shown
    assert list(bars["y"]) == [0, 1, 2, 3]  # two classes with the same name stay two bars
    assert bars["hovertemplate"] == "%{customdata}: %{x:.6f}<extra></extra>"
    np.testing.assert_array_equal(np.asarray(bars["x"]), np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32))


def test_training_strip_labels_stay_out_of_the_template_syntax(lm):
    fig = figures.training_strip([lm], ["step %{z} <b>"], "decoder self", 0, 0)
    template = fig.data[0].hovertemplate
    assert "%{z}" not in template.replace("%{z:.6f}", "") and "<b>" not in template
    assert fig.layout.annotations[0].text == plotly_text("step %{z} <b>")  # the panel's title


def test_model_view_hover_shows_every_float32_digit():
    trace = synthetic_trace(1, 2, 6)
    data = _heatmap(grid.head_grid(api.pool_trace(trace), "decoder self"))
    assert "%{z:" + grid.EXACT + "}" in data["hovertemplate"]
    # 9 significant digits tell any two float32 values apart.
    for w in np.random.default_rng(0).random(1000, dtype=np.float32):
        assert np.float32(f"{w:.9g}") == w


def test_pooled_note_says_when_and_how_a_map_is_pooled():
    assert grid.pooled_note(64, 64) == ""
    assert grid.pooled_note(130, 20) == (
        "Pooled to 44 × 20 cells: each cell is the largest weight of its block of 3 query × 1 key tokens."
    )
    trace = synthetic_trace(1, 2, 100)
    pooled, block = grid.layer_maps(trace, "decoder self", 0)
    assert block == (2, 2) and grid.pooled_note(100, 100) == grid.pooled_note(100, 100, block)
    assert "Pooled to 50 × 50 cells" in grid.pooled_note(100, 100)


def test_worked_row_tolerance_is_relative_to_the_magnitudes(lm):
    """Large values (GPT-2, MiniLM) pass on float32 rounding alone; a real error of the size of one term does not."""
    row = worked.worked_row(lm, "decoder self", 1, 1, 5)
    assert row.output_matches and row.max_abs_diff <= row.tolerance
    assert row.tolerance == pytest.approx(
        len(row.weights) * np.finfo(np.float32).eps * float((np.abs(row.weights)[:, None] * np.abs(row.v)).sum(0).max())
    )
    # The same sum with values 10 000 times larger, added by torch (the model's way) and by numpy: the
    # rounding differences alone exceed the old absolute 1e-5, and stay within the relative tolerance.
    rng = np.random.default_rng(0)
    n, d = 512, 64
    weights = rng.dirichlet(np.ones(n)).astype(np.float32)
    v = (rng.standard_normal((n, d)) * 1e4).astype(np.float32)
    model_out = (torch.from_numpy(weights)[None] @ torch.from_numpy(v))[0].numpy()
    big = dataclasses.replace(row, weights=weights, v=v, output=(weights[None] @ v)[0], trace_output=model_out)
    assert big.max_abs_diff > 1e-5 and big.output_matches
    assert dataclasses.replace(big, v=v * 2).tolerance == pytest.approx(2 * big.tolerance)  # it scales with the values
    wrong = v.copy()
    wrong[7] = v[8]  # a real mistake: one key's value row taken from its neighbour
    broken = dataclasses.replace(big, trace_output=(torch.from_numpy(weights)[None] @ torch.from_numpy(wrong))[0].numpy())
    assert not broken.output_matches


def test_worked_row_reports_how_far_the_recomputed_scores_are(enc_dec):
    row = worked.worked_row(enc_dec, "cross", 0, 1, 2)
    head = enc_dec.head("cross", 0, 1)
    assert row.score_diff == float(np.abs(row.scaled - head["scores"][2].numpy()).max())  # the same numpy expression
    qk = float((np.abs(row.k) @ np.abs(row.q)).max()) / row.scale  # Σ|q_i k_i| behind a score
    assert row.score_diff <= rounding_atol(qk, len(row.q), depth=2), "q·k / √d_head: a d_head-term dot product, then ÷"
    table = row.steps_table()
    np.testing.assert_array_equal(table.iloc[:, 0].to_numpy(), row.dots)  # q·k: recomputed
    np.testing.assert_array_equal(table.iloc[:, 1].to_numpy(), head["scores"][2].numpy())  # the score: the model's
    assert "recomputed" in table.columns[0] and "model" in table.columns[1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_snapshots_report_the_dtype_they_are_stored_in(tmp_path, lm_ckpt, dtype):
    from transformer.checkpoints.snapshots import load_snapshots, save_snapshots, stored_dtypes

    state = {k: v.clone() for k, v in lm_ckpt.model.state_dict().items()}
    path = save_snapshots(tmp_path / "s.safetensors", [(0, state)], lm_ckpt.model.cfg, lm_ckpt.tokenizer, dtype=dtype)
    assert stored_dtypes(path) == (str(dtype).removeprefix("torch."),)
    assert next(load_snapshots(path, device="cpu")[0][1].model.parameters()).dtype == torch.float32  # cast on load


def test_a_short_grid_keeps_only_its_colour_bars_ends_so_the_numbers_never_overlap():
    pooled = torch.rand(1, 4, 5, 5)
    one_layer = grid.pooled_grid(pooled, [1], "cross", presentation=True).data[0].colorbar
    assert list(one_layer.tickvals) == [0.0, 1.0], "one layer on a projector: 0 and the top of the scale only"
    four = grid.pooled_grid(torch.rand(4, 4, 5, 5), [0, 1, 2, 3], "cross", presentation=True).data[0].colorbar
    assert len(four.tickvals) == 5, "four layers: room for every tick"
