"""The Compare page: two texts, two checkpoints or two snapshots; panels and B − A equal to traces made here.

The traces here are made on the app's torch threads (`app_threads`): the same computation as the app's, so the
panels equal them bit for bit, and so does B − A (one float32 subtraction a cell, correctly rounded wherever it runs).
"""

from __future__ import annotations

import numpy as np
import pytest
from numerics import app_threads, assert_same_bits
from test_app import SAME_TRACE, charts, no_errors, start

from server import urlstate
from transformer.api import trace_text
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint
from transformer.checkpoints.snapshots import load_snapshots
from viz import compare
from viz.labels import plotly_text

pytestmark = pytest.mark.numerics


def test_mismatch_and_aligned_tokens(make_checkpoint):
    ckpt = make_checkpoint("decoder")
    a = trace_text(ckpt, "the cat sat on the mat")
    b = trace_text(ckpt, "the dog sat on the mat")
    c = trace_text(ckpt, "the cat sat")
    assert compare.mismatch(a, a, "decoder self") is None
    assert "cannot be subtracted" in compare.mismatch(a, c, "decoder self")
    labels, differ = compare.aligned_tokens(("the", "cat"), ("the", "dog"))
    assert labels == ["the", "cat→dog"] and differ == [1]
    if len(a.query_tokens("decoder self")) == len(b.query_tokens("decoder self")):
        diff = compare.difference(a, b, "decoder self", 1, 1)
        np.testing.assert_array_equal(  # the same float32 subtraction of the same weights: the same bits
            diff, b.attention("decoder self", 1).weights[0, 1].numpy() - a.attention("decoder self", 1).weights[0, 1].numpy()
        )
    assert compare.has_head(a, "cross", 0, 0) == "has no cross attention"
    assert "no layer 5" in compare.has_head(a, "decoder self", 5, 0)


def test_two_texts_panels_and_difference_equal_independent_traces(shipped):
    entry = shipped["lm"]
    text_a, text_b = "the dog sees the cats .", "the dogs see the cat ."
    at = start(
        {"checkpoint": "lm", "page": "compare", "cmp": "texts", "text": text_a, "text2": text_b, "layer": "1", "head": "2"}
    )
    no_errors(at)
    with app_threads():
        ckpt = load_checkpoint(entry.path, device="cpu")
        a, b = trace_text(ckpt, text_a), trace_text(ckpt, text_b)
    wa, wb = (t.attention("decoder self", 1).weights[0, 2].numpy() for t in (a, b))
    figs = charts(at)
    assert_same_bits(figs["cmp_heatmap_a"]["data"][0]["z"], wa, why=SAME_TRACE)
    assert_same_bits(figs["cmp_heatmap_b"]["data"][0]["z"], wb, why=SAME_TRACE)
    assert wa.shape == wb.shape  # one word for another: the positions line up
    assert_same_bits(figs["cmp_diff"]["data"][0]["z"], wb - wa, why="B − A of the same traces' weights")
    # Where the tokens differ the axis says a→b, and a caption lists the positions.
    ticks = figs["cmp_diff"]["layout"]["xaxis"]["ticktext"]
    assert plotly_text("dog→dogs") in ticks
    assert any("differ at position" in c.value for c in at.caption)
    # The link keeps the comparison.
    assert at.query_params["cmp"] == "texts" and at.query_params["text2"] == text_b


def test_texts_that_do_not_line_up_get_a_plain_statement(shipped):
    at = start(
        {
            "checkpoint": "lm",
            "page": "compare",
            "cmp": "texts",
            "text": "the dog runs .",
            "text2": "the big dog near the cats runs .",
        }
    )
    no_errors(at)
    assert set(charts(at)) == {"cmp_heatmap_a", "cmp_heatmap_b"}
    assert any("do not line up" in i.value for i in at.info)


def test_empty_text_b_says_so(shipped):
    at = start({"checkpoint": "lm", "page": "compare", "cmp": "texts", "text2": "   "})
    no_errors(at)
    assert any("Text B is empty" in i.value for i in at.info)


def test_one_text_on_two_checkpoints(shipped):
    at = start({"checkpoint": "translator", "page": "compare", "cmp": "checkpoints", "checkpoint2": "reverse", "kind": "cross"})
    no_errors(at)
    text = at.session_state["sel_text"]
    with app_threads():  # the greedy translation too, as the app decodes it
        b = trace_text(load_checkpoint(shipped["reverse"].path, device="cpu"), text)
    assert_same_bits(charts(at)["cmp_heatmap_b"]["data"][0]["z"], b.attention("cross", 0).weights[0, 0].numpy(), why=SAME_TRACE)
    # A model without the kind or layer asked for says so instead of drawing.
    at = start({"checkpoint": "translator", "page": "compare", "cmp": "checkpoints", "checkpoint2": "lm", "kind": "cross"})
    no_errors(at)
    assert any("has no cross attention" in i.value for i in at.info)


def test_two_snapshots_and_their_difference(shipped):
    at = start(
        {
            "checkpoint": "translator",
            "page": "compare",
            "cmp": "snapshots",
            "snap1": "1",
            "snap2": "8",
            "kind": "cross",
            "layer": "1",
        }
    )
    no_errors(at)
    snaps = load_snapshots(catalog.snapshots_path(shipped["translator"]), device="cpu")
    with app_threads():
        final = trace_text(load_checkpoint(shipped["translator"].path, device="cpu"), at.session_state["sel_text"])
        tokens = (final.source, final.target)
        a, b = (trace_text(snaps[i][1], final.source.text, tokens=tokens) for i in (1, 8))
    wa, wb = (t.attention("cross", 1).weights[0, 0].numpy() for t in (a, b))
    figs = charts(at)
    assert_same_bits(figs["cmp_diff"]["data"][0]["z"], wb - wa, why="B − A of the same traces' weights")
    assert figs["cmp_heatmap_a"]["layout"]["title"]["text"].startswith(f"A: step {snaps[1][0]}")
    assert at.query_params["snap1"] == "1" and at.query_params["snap2"] == "8"
    # A checkpoint without snapshots says so.
    at = start({"checkpoint": "classifier", "page": "compare", "cmp": "snapshots"})
    no_errors(at)
    assert any("no training snapshots" in i.value for i in at.info)


def test_compare_link_values_are_validated():
    view = urlstate.parse({"cmp": "<b>x</b>", "checkpoint2": "nope", "snap2": "-1", "heads": "e0.1,x9,c1.2"}, ["lm"])
    assert view.compare is None and view.checkpoint2 is None and view.snapshot2 is None
    assert view.heads == (("encoder self", 0, 1), ("cross", 1, 2))
    assert len(view.warnings) == 4 and all("<b>" not in w or "`" in w for w in view.warnings)
    assert urlstate.format_heads(view.heads) == "e0.1,c1.2"
