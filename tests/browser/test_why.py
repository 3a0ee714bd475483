"""The "Ask why" pages in Chromium: a sweep cell opens its head, Compare draws B − A, the lens hover, flow's limit."""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import pytest
from numerics import app_threads, assert_same_bits

from tests.browser import address, exceptions, figure, wait_idle, wait_plot
from transformer.api import trace_text
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def shipped(served):
    if not served.shipped:
        pytest.skip("these tests read the shipped checkpoints")
    return catalog.available()


def open_page(page, path: str, params: dict, chart: str) -> None:
    page.goto(page.base_url + path + "?" + urlencode(params))
    wait_plot(page, chart)
    wait_idle(page)
    assert not exceptions(page), exceptions(page)


def point(page, key: str, x: float, y: float) -> tuple[float, float]:
    """Page pixels of data point (x, y) in the chart under .st-key-<key>, from Plotly's own axes."""
    return tuple(
        page.evaluate(
            """([sel, x, y]) => { const g = document.querySelector(sel);
              const xa = g._fullLayout.xaxis, ya = g._fullLayout.yaxis, r = g.getBoundingClientRect();
              return [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya.l2p(y)]; }""",
            [f".st-key-{key} .js-plotly-plot", x, y],
        )
    )


def hover_text(page, key: str) -> str:
    return page.evaluate(
        "(sel) => [...document.querySelectorAll(sel)].map(t => t.textContent).join(' ')", f".st-key-{key} .hoverlayer text"
    )


def test_clicking_a_sweep_cell_opens_that_head_on_the_attention_page(page, shipped):
    open_page(
        page,
        "/ablation",
        {"checkpoint": "lm", "text": "the dog sees the cats . the dog sees the cats ."},
        "abl_sweep_decoder_self",
    )
    grid = figure(page, "abl_sweep_decoder_self")
    assert np.asarray(grid["data"][0]["z"]).shape == (2, 4)
    page.mouse.move(*point(page, "abl_sweep_decoder_self", 3, 1))
    page.wait_for_function(
        "() => [...document.querySelectorAll('.st-key-abl_sweep_decoder_self .hoverlayer text')].some(t => t.textContent.includes('click to open'))"
    )
    assert "layer 1 · head 3" in hover_text(page, "abl_sweep_decoder_self")
    page.mouse.click(*point(page, "abl_sweep_decoder_self", 3, 1))
    page.wait_for_url("**/attention?**")
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    assert "layer=1" in address(page) and "head=3" in address(page)
    assert "layer 1 · head 3" in figure(page, "attn_heatmap")["layout"]["title"]["text"]


def test_compare_two_texts_draws_their_difference(page, shipped):
    a, b = "the dog sees the cats .", "the dogs see the cat ."
    open_page(page, "/compare", {"checkpoint": "lm", "text": a, "cmp": "texts", "layer": "1", "head": "1"}, "cmp_heatmap_b")
    area = page.locator(".st-key-cmp_text2 textarea")
    area.fill(b)
    area.press("Control+Enter")
    wait_plot(page, "cmp_diff")
    wait_idle(page)
    ckpt = load_checkpoint(shipped["lm"].path, device="cpu")
    with app_threads():  # the traces as the app makes them: the same computation, so the same bits
        wa, wb = (trace_text(ckpt, t).attention("decoder self", 1).weights[0, 1].numpy() for t in (a, b))
    shown = np.asarray(figure(page, "cmp_diff")["data"][0]["z"], dtype=np.float32)
    assert_same_bits(shown, wb - wa, why="B − A on the page against the difference of the two traces")
    assert "text2=" in address(page)


def test_logit_lens_hover_lists_the_top_five(page, shipped):
    text = "the cats near the dog see the bird ."
    open_page(page, "/lens", {"checkpoint": "lm", "text": text}, "lens_grid")
    fig = figure(page, "lens_grid")
    n_rows, n_pos = np.asarray(fig["data"][0]["z"]).shape
    assert n_rows == 5  # embed, then self-attention and feed-forward of both layers
    page.mouse.move(*point(page, "lens_grid", 2, n_rows - 1))
    page.wait_for_function("() => document.querySelector('.st-key-lens_grid .hoverlayer text') !== null")
    hover = hover_text(page, "lens_grid")
    with app_threads():  # as the app runs it: the same probabilities to the last bit, so the same rounded digits
        ref = trace_text(load_checkpoint(shipped["lm"].path, device="cpu"), text)
    top = ref.probs[0, 2].topk(5)
    assert f"{float(top.values[0]):.4f}" in hover and f"{float(top.values[4]):.4f}" in hover, hover


def test_attention_flow_says_when_the_input_is_too_long(page, shipped):
    # Cross-attention flow runs on the joint graph of source and target through 2 + 2 × 2 steps: past its limit here.
    text = "the big dog near the old tables sees the cats ."
    open_page(page, "/attribution", {"checkpoint": "translator", "text": text, "kind": "cross", "layer": "1"}, "attr_rollout")
    page.locator(".st-key-attr_flow_on label").click()
    page.get_by_text("No attention flow for this input").wait_for()
    assert "use rollout" in page.get_by_text("No attention flow for this input").inner_text()
    wait_plot(page, "attr_scores")  # rollout and saliency are still drawn
    # A short input gets its flow, rows summing to 1.
    open_page(page, "/attribution", {"checkpoint": "lm", "text": "the dog sees the cats .", "layer": "1"}, "attr_flow")
    flow = np.asarray(figure(page, "attr_flow")["data"][0]["z"])
    np.testing.assert_allclose(np.nansum(flow, -1), 1.0, atol=1e-5)
