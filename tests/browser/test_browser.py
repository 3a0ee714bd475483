"""The app in a real browser (Playwright driving Debian's Chromium): what a user sees is the model's trace.

Each test opens its own browser session on one `streamlit run app.py` server, acts like a user
(types, clicks, uploads, follows a link) and reads the figures back from the page's Plotly data,
comparing them with `trace_text` run in this process on the same checkpoint file.
"""

from __future__ import annotations

import pickle
from urllib.parse import parse_qs, urlencode, urlparse

import numpy as np
import pytest
from numerics import assert_same_bits

from server.session import short_label
from tests.browser import address, exceptions, figure, signature, type_text, wait_changed, wait_idle, wait_plot
from tests.browser.conftest import ARTIFACTS, write_tiny
from transformer.api import trace_text
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint

pytestmark = pytest.mark.browser

SENTENCE = "the quiet teacher near the old dogs reads two books ."


def assert_shown(shown, expected, what: str) -> None:
    """What the page holds is the reference trace's, bit for bit: the same run as the app's (`Served.reference`)."""
    assert_same_bits(np.asarray(shown, dtype=np.float32), expected, why=f"{what}: the page against the trace it shows")


def open_app(page, path: str = "/", params: dict | None = None, chart: str = "attn_heatmap") -> None:
    page.goto(page.base_url + path + (f"?{urlencode(params)}" if params else ""))
    wait_plot(page, chart)
    wait_idle(page)
    assert not exceptions(page), exceptions(page)


def url_params(page) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(address(page)).query).items()}


def shown_head(page) -> tuple[str, int, int]:
    """The (kind, layer, head) the page shows, as its link says (a first view opens on the model's most telling head)."""
    params = url_params(page)
    return params["kind"], int(params["layer"]), int(params["head"])


def plotly_ticks(tokens) -> list[str]:
    """Tick labels as the app writes them (a byte-level tokenizer's "Ġ" as "␣"; HTML-escaped so Plotly shows them literally)."""
    from viz.labels import plotly_text, shown_tokens

    return [plotly_text(t) for t in shown_tokens(tokens)]


def shown_text(page) -> str:
    return page.locator(".st-key-w_text textarea").input_value()


def slider_value(page, key: str) -> int:
    return int(page.locator(f".st-key-{key} input[type=range]").input_value())


def choose(page, key: str, option: str) -> None:
    """Pick `option` in the selectbox under `.st-key-<key>`."""
    page.locator(f".st-key-{key} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def table_rows(page, header: str) -> dict[str, list[str]]:
    """Rows of the st.dataframe whose header has `header`, as {first cell: other cells} (rows drawn on screen)."""
    rows = page.evaluate(
        """(header) => {
          const table = Array.from(document.querySelectorAll('[data-testid=stDataFrame] table'))
            .find(t => Array.from(t.querySelectorAll('th')).some(th => th.innerText.trim() === header));
          if (!table) return null;
          return Array.from(table.querySelectorAll('tbody tr')).map(r => Array.from(r.querySelectorAll('td')).map(c => c.innerText));
        }""",
        header,
    )
    assert rows is not None, f"no table with a column {header!r}"
    return {r[0]: r[1:] for r in rows if r}


# ---------------------------------------------------------------------------------------------


def test_first_screen_is_the_default_checkpoints_heatmap(page, served):
    open_app(page)
    assert urlparse(address(page)).path == "/attention"
    assert url_params(page)["checkpoint"] == served.default
    ref = served.reference(shown_text(page))
    kind, layer, head = shown_head(page)
    fig = figure(page, "attn_heatmap")
    assert_shown(fig["data"][0]["z"], ref.attention(kind, layer).weights[0, head].numpy(), "heatmap")
    assert fig["layout"]["yaxis"]["ticktext"] == plotly_ticks(ref.query_tokens(kind))
    assert fig["layout"]["xaxis"]["ticktext"] == plotly_ticks(ref.key_tokens(kind))
    assert f"{kind} · layer {layer} · head {head}" in fig["layout"]["title"]["text"]
    if served.shipped:  # the translator opens on its showcase: a cross-attention head that aligns words
        assert kind == "cross" and page.get_by_text("What this head does").count() == 1


def test_typing_a_sentence_redraws_the_heatmap_with_its_tokens(page, served):
    open_app(page)
    before = signature(page, "attn_heatmap")
    old_ticks = figure(page, "attn_heatmap")["layout"]["xaxis"]["ticktext"]
    type_text(page, SENTENCE)
    wait_changed(page, "attn_heatmap", before)
    wait_idle(page)
    ref = served.reference(SENTENCE)
    kind, layer, head = shown_head(page)
    fig = figure(page, "attn_heatmap")
    assert fig["layout"]["xaxis"]["ticktext"] == plotly_ticks(ref.key_tokens(kind)) != old_ticks
    assert fig["layout"]["yaxis"]["ticktext"] == plotly_ticks(ref.query_tokens(kind))
    assert_shown(fig["data"][0]["z"], ref.attention(kind, layer).weights[0, head].numpy(), "heatmap of the typed text")
    assert url_params(page)["text"] == SENTENCE


def test_next_head_and_next_layer_redraw_and_go_into_the_url(page, served):
    open_app(page, params={"layer": 0, "head": 0})  # a link that names a head opens on it
    ref = served.reference(shown_text(page))
    kind = ref.kinds[0]
    z0 = figure(page, "attn_heatmap")["data"][0]["z"]

    before = signature(page, "attn_heatmap")
    page.locator(".st-key-attn_next_head button").click()
    wait_changed(page, "attn_heatmap", before)
    wait_idle(page)
    fig = figure(page, "attn_heatmap")
    assert not np.array_equal(fig["data"][0]["z"], z0)
    assert_shown(fig["data"][0]["z"], ref.attention(kind, 0).weights[0, 1].numpy(), "next head")
    assert "layer 0 · head 1" in fig["layout"]["title"]["text"]
    assert url_params(page)["head"] == "1"
    assert slider_value(page, "attn_head") == 1

    before = signature(page, "attn_heatmap")
    page.locator(".st-key-attn_next_layer button").click()
    wait_changed(page, "attn_heatmap", before)
    wait_idle(page)
    fig = figure(page, "attn_heatmap")
    assert_shown(fig["data"][0]["z"], ref.attention(kind, 1).weights[0, 1].numpy(), "next layer")
    assert (url_params(page)["layer"], url_params(page)["head"]) == ("1", "1")


def test_qkv_page_works_a_row_with_the_traces_numbers(page, served):
    open_app(page, params={"layer": 0, "head": 0})
    text = shown_text(page)
    page.get_by_role("link", name="Q, K, V").click()
    wait_plot(page, "qkv_weights")
    wait_idle(page)
    assert urlparse(address(page)).path == "/qkv"
    query = 2
    ref = served.reference(text)
    kind = ref.kinds[0]
    h = {name: t.numpy() for name, t in ref.head(kind, 0, 0).items()}
    label = f"{query}·{ref.query_tokens(kind)[query]}"
    before = signature(page, "qkv_output")
    before_shapes = figure(page, "qkv_output")["layout"].get("shapes")
    choose(page, "w_query", label)
    page.wait_for_function(
        "(sel) => { const g = document.querySelector(sel); return g && g.layout.shapes && g.layout.shapes[0].y0 === 1.5; }",
        arg=".st-key-qkv_output .js-plotly-plot",
    )
    wait_idle(page)
    assert before == signature(page, "qkv_output") and before_shapes[0]["y0"] == -0.5  # same matrix, another row framed
    assert url_params(page)["q"] == str(query)

    # Every matrix on the page is the trace's matrix for this head.
    for part in ("q", "k", "v", "scores", "weights", "output"):
        assert_shown(figure(page, f"qkv_{part}")["data"][0]["z"], h[part], part)
    np.testing.assert_array_equal(figure(page, "qkv_mask")["data"][0]["z"], h["mask"].astype(np.float32))

    # The worked row: q·k, the scaled score and the weight per key, as the table shows them.
    rows = table_rows(page, "softmax weight")
    assert len(rows) >= 5, rows
    keys = [f"{j}·{t}" for j, t in enumerate(ref.key_tokens(kind))]
    for name, (dot, score, allowed, weight) in rows.items():  # as the grid prints them: rounded to a few digits
        j = keys.index(name)
        assert float(dot) == pytest.approx(float(h["k"][j] @ h["q"][query]), rel=1e-4, abs=1e-6)
        assert float(score) == pytest.approx(float(h["scores"][query, j]), rel=1e-5, abs=1e-7)
        assert allowed == str(bool(h["mask"][query, j])).lower()
        assert float(weight) == pytest.approx(float(h["weights"][query, j]), rel=1e-5, abs=1e-7)
    success = page.locator("[data-testid=stAlertContentSuccess]").inner_text()
    assert f"equals the head output's row {query}" in success
    assert page.get_by_text(f"query token: {label}", exact=True).count() == 1


def test_uploading_a_good_checkpoint_draws_it(page, tmp_path):
    path = write_tiny(tmp_path / "my encoder.safetensors", "encoder", n_classes=2, n_layers=3, n_heads=2, seed=7)
    open_app(page)
    before = signature(page, "attn_heatmap")
    choose(page, "w_checkpoint", "Upload…")
    page.locator(".st-key-upload [data-testid=stFileUploaderDropzoneInput]").set_input_files(str(path))
    wait_changed(page, "attn_heatmap", before)
    wait_idle(page)
    assert not exceptions(page)
    ref = trace_text(load_checkpoint(path, device="cpu"), shown_text(page))
    fig = figure(page, "attn_heatmap")
    kind, layer, head = shown_head(page)
    assert kind == "encoder self" and f"encoder self · layer {layer} · head {head}" in fig["layout"]["title"]["text"]
    assert fig["layout"]["xaxis"]["ticktext"][0] == "[CLS]"
    assert_shown(fig["data"][0]["z"], ref.attention(kind, layer).weights[0, head].numpy(), "uploaded checkpoint's heatmap")
    assert "checkpoint" not in url_params(page)  # an upload cannot be shared by link
    assert "encoder · 3 layers × 2 heads" in page.locator("[data-testid=stSidebar]").inner_text()


class _Hostile:
    """Unpickling this creates a marker file: proof that the app never unpickles an upload."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("bad", ["random-bytes", "renamed-pickle"])
def test_uploading_a_bad_file_shows_a_message_not_a_traceback(page, served, tmp_path, bad):
    marker = tmp_path / "unpickled.marker"
    path = tmp_path / "weights.safetensors"
    if bad == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        path.write_bytes(pickle.dumps({"state_dict": _Hostile(str(marker))}))
    open_app(page)
    choose(page, "w_checkpoint", "Upload…")
    page.locator(".st-key-upload [data-testid=stFileUploaderDropzoneInput]").set_input_files(str(path))
    error = page.locator("[data-testid=stSidebar] [data-testid=stAlertContentError]")
    error.wait_for()
    wait_idle(page)
    assert "Could not load the uploaded file" in error.inner_text()
    assert not exceptions(page)
    assert page.locator("[data-testid=stMain] [data-testid=stAlertContentError]").count() == 0  # said once, in the sidebar
    assert "the message is in the sidebar" in page.locator("[data-testid=stMain] [data-testid=stAlertContentInfo]").inner_text()
    assert page.locator(".st-key-attn_heatmap").count() == 0
    assert not marker.exists(), "the uploaded pickle was executed"
    page.screenshot(path=str(ARTIFACTS / f"upload-{bad}.png"))
    # The app keeps working: back to a shipped checkpoint.
    choose(page, "w_checkpoint", short_label(catalog.SHIPPED[served.default][0])[0])
    wait_plot(page, "attn_heatmap")


def test_a_shared_link_opens_exactly_that_view(page, served):
    cfg = load_checkpoint(served.path, device="cpu").config
    layer, head, query = min(1, cfg.n_layers - 1), min(2, cfg.n_heads - 1), 1
    kind = cfg.attention_kinds[-1]  # cross attention for a translator
    params = dict(checkpoint=served.default, text=SENTENCE, kind=kind, layer=layer, head=head, q=query)
    open_app(page, "/qkv", params, chart="qkv_weights")
    assert urlparse(address(page)).path == "/qkv"
    assert shown_text(page) == SENTENCE
    assert (slider_value(page, "qkv_layer"), slider_value(page, "qkv_head")) == (layer, head)
    if len(cfg.attention_kinds) > 1:
        assert page.locator(".st-key-qkv_kind").get_by_role("radio", name=kind, exact=True).is_checked()
    fig = figure(page, "qkv_q")
    assert f"{kind} · layer {layer} · head {head}" in fig["layout"]["title"]["text"]
    ref = served.reference(SENTENCE)
    assert_shown(figure(page, "qkv_weights")["data"][0]["z"], ref.head(kind, layer, head)["weights"].numpy(), "linked view")
    label = f"{query}·{ref.query_tokens(kind)[query]}"
    assert page.locator(".st-key-w_query input").input_value() == label
    got = url_params(page)
    assert {k: got[k] for k in ("checkpoint", "text", "kind", "layer", "head", "q")} == {k: str(v) for k, v in params.items()}
    warnings = page.locator("[data-testid=stAlertContentWarning]")
    assert not warnings.count(), warnings.all_inner_texts()


def test_html_in_the_text_is_shown_literally(page, served, dialogs):
    """Markup in the text is drawn as characters: no element is created and no script runs.

    On MiniLM (whose vocabulary has "<" and ">") the tick labels show the brackets themselves.
    """
    hostile = "<img src=x onerror=alert(1)><b>bold</b> <script>alert(2)</script>"
    name = "minilm" if served.minilm else served.default
    open_app(page, "/", {"checkpoint": name})
    before = signature(page, "attn_heatmap")
    type_text(page, hostile)
    wait_changed(page, "attn_heatmap", before)
    wait_idle(page)
    assert shown_text(page) == hostile
    assert url_params(page)["text"] == hostile
    created = page.evaluate(
        "() => ({b: Array.from(document.querySelectorAll('b')).filter(e => e.textContent.includes('bold')).length,"
        " img: document.querySelectorAll('img[src=x]').length, script: Array.from(document.querySelectorAll('script'))"
        ".filter(e => e.textContent.includes('alert')).length})"
    )
    assert created == {"b": 0, "img": 0, "script": 0}
    ticks = page.locator(".st-key-attn_heatmap .xtick text").all_text_contents()
    tokens = served.reference(hostile, name).source.tokens
    assert ticks == list(tokens), (ticks, tokens)  # the exact tokens, as characters on screen
    if name == "minilm":
        assert {"<", ">", "/"} <= set(ticks), ticks
    assert dialogs == []


def test_empty_text_shows_a_hint_and_the_app_keeps_working(page):
    open_app(page)
    type_text(page, "")
    page.get_by_text("The text is empty").wait_for()
    wait_idle(page)
    assert page.locator(".st-key-attn_heatmap").count() == 0
    assert not exceptions(page)
    type_text(page, SENTENCE)
    wait_plot(page, "attn_heatmap")


PAGES = {
    "attention": ("Attention", "attn_heatmap"),
    "qkv": ("Q, K, V", "qkv_weights"),
    "model_view": ("Model view", "mv_grid"),
    "checkpoint": ("Checkpoint", "ck_W_Q"),
    "training": ("Training", "tr_strip"),  # snapshots ship with the real translator only; else a note
    "output": ("Output", None),
}


def test_every_page_draws_and_model_view_opens_a_head(page, served):
    """Visit each page through the navigation bar (one session), save its screenshot, then open a head from the model view."""
    open_app(page)
    for name, (title, chart) in PAGES.items():
        page.get_by_role("link", name=title, exact=True).click()
        page.wait_for_url(f"**/{name}?**")
        if chart is not None and (name != "training" or served.shipped):
            wait_plot(page, chart)
        wait_idle(page)
        assert not exceptions(page), (name, exceptions(page))
        page.screenshot(path=str(ARTIFACTS / f"page-{name}.png"), full_page=True)
    if served.default == "translator":  # Output: the greedy translation and the next-token table
        assert page.get_by_text("Greedy translation").count() == 1

    page.get_by_role("link", name="Model view", exact=True).click()
    wait_plot(page, "mv_grid")
    wait_idle(page)
    grid = figure(page, "mv_grid")
    cfg = load_checkpoint(served.path, device="cpu").config
    assert list(grid["layout"]["xaxis"]["tickvals"]) == list(range(cfg.n_heads))
    choose(page, "mv_pick", "layer 1 · head 1")
    wait_idle(page)
    page.locator(".st-key-mv_open button").click()
    page.wait_for_url("**/attention?**")
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    assert "layer 1 · head 1" in figure(page, "attn_heatmap")["layout"]["title"]["text"]
    assert (url_params(page)["layer"], url_params(page)["head"]) == ("1", "1")


def test_model_view_hover_shows_the_weight_and_a_click_opens_the_head(page, served):
    """Hovering a thumbnail cell names its layer and head and shows the weight; clicking a thumbnail's centre opens it."""
    text = "the big dog near the old tables sees the cats ."
    open_app(page, "/model_view", {"text": text, "kind": "cross"}, chart="mv_grid")
    ref = served.reference(text)
    grid = figure(page, "mv_grid")
    n_q, n_k = len(ref.query_tokens("cross")), len(ref.key_tokens("cross"))
    z = np.asarray(grid["data"][0]["z"])
    # No pooling at this length: the thumbnail is the head's weights themselves.
    assert_shown(z[n_q : 2 * n_q, 2 * n_k : 3 * n_k], ref.attention("cross", 1).weights[0, 2].numpy(), "model view")

    def at(x: float, y: float) -> tuple[float, float]:
        """Page pixels of data point (x = head, y = layer) in the grid, from Plotly's own axes."""
        return tuple(
            page.evaluate(
                """([x, y]) => { const g = document.querySelector('.st-key-mv_grid .js-plotly-plot');
                  const xa = g._fullLayout.xaxis, ya = g._fullLayout.yaxis, r = g.getBoundingClientRect();
                  return [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya.l2p(y)]; }""",
                [x, y],
            )
        )

    # The first query row and key column of layer 1, head 2: one weight, not pooled at this length.
    page.mouse.move(*at(2 - 0.5 + 0.5 / n_k, 1 - 0.5 + 0.5 / n_q))
    page.wait_for_function("() => document.querySelector('.st-key-mv_grid .hoverlayer text') !== null")
    hover = page.evaluate(
        "() => [...document.querySelectorAll('.st-key-mv_grid .hoverlayer text')].map(t => t.textContent).join(' ')"
    )
    weight = float(ref.attention("cross", 1).weights[0, 2, 0, 0])
    assert "layer 1 · head 2" in hover and f"weight {weight:.9g}" in hover, hover  # 9 digits: this float32 exactly

    # As a person would: move to the thumbnail's centre, where the hover offers to open it, then click.
    page.mouse.move(*at(2, 1))
    page.wait_for_function(
        "() => [...document.querySelectorAll('.st-key-mv_grid .hoverlayer text')].some(t => t.textContent.includes('click to open'))"
    )
    page.mouse.click(*at(2, 1))
    page.wait_for_url("**/attention?**")
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    assert (url_params(page)["kind"], url_params(page)["layer"], url_params(page)["head"]) == ("cross", "1", "2")
    assert_shown(figure(page, "attn_heatmap")["data"][0]["z"], ref.attention("cross", 1).weights[0, 2].numpy(), "opened head")


def download_csv(page, key: str):
    """Click the Download CSV button under `.st-key-<key>` and read the file the browser saved."""
    import pandas as pd

    with page.expect_download() as info:
        page.locator(f".st-key-{key} button").click()
    return pd.read_csv(info.value.path())


def test_csv_downloads_hold_the_numbers_shown(page, served):
    """The heatmap's CSV is the trace's matrix; the model view's CSV names each cell's positions and weight."""
    text = "the big dog near the old tables sees the cats ."
    open_app(page, "/attention", {"text": text, "kind": "cross", "layer": "1", "head": "1"})
    ref = served.reference(text)
    table = download_csv(page, "csv_attn_heatmap").set_index("query")
    weights = ref.attention("cross", 1).weights[0, 1].numpy()
    assert_shown(table.to_numpy(dtype=np.float32), weights, "heatmap CSV")  # float32 written in full, read back exactly
    assert list(table.index)[:2] == [f"0·{ref.target.tokens[0]}", f"1·{ref.target.tokens[1]}"]

    open_app(page, "/model_view", {"text": text, "kind": "cross"}, chart="mv_grid")
    cells = download_csv(page, "csv_mv_grid")
    n_layers, n_heads = ref.n_layers("cross"), ref.attention("cross", 0).weights.shape[1]
    assert len(cells) == n_layers * n_heads * weights.size  # no pooling at this length: one row per weight
    mine = cells[(cells["layer"] == 1) & (cells["head"] == 1)].sort_values(["query_from", "key_from"])
    assert_shown(mine["weight"].to_numpy(dtype=np.float32).reshape(weights.shape), weights, "model view CSV")
