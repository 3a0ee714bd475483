"""The Compare page: two texts, two checkpoints or two snapshots; panels and B − A equal to traces made here.

The traces here are made on the app's torch threads (`app_threads`): the same computation as the app's, so the
panels equal them bit for bit, and so does B − A (one float32 subtraction a cell, correctly rounded wherever it runs).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import TINY_TEXTS
from numerics import app_threads, assert_same_bits
from test_app import SAME_TRACE, charts, no_errors, start

from server import urlstate
from server.literal import md
from transformer.api import trace_text
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint
from transformer.checkpoints.snapshots import load_snapshots
from viz import compare, word_swap
from viz.labels import plotly_text

pytestmark = pytest.mark.numerics


def one_word_apart(a: str, b: str) -> tuple[str, str] | None:
    """(word of a, word of b) when b is a with exactly one word changed and every other character kept; else None."""
    pa, pb = (re.findall(r"\w+|\W", t) for t in (a, b))
    differ = [(x, y) for x, y in zip(pa, pb) if x != y]
    if len(pa) != len(pb) or len(differ) != 1 or not re.fullmatch(r"\w+", differ[0][0] + differ[0][1]):
        return None
    return differ[0]


def shipped_examples(name: str) -> list[str]:
    return [ex["text"] for ex in json.loads(catalog.EXAMPLES_FILE.read_text())[name]]


def test_one_word_changed_swaps_one_content_word_for_a_known_one(make_checkpoint):
    tok = make_checkpoint("decoder").tokenizer
    text = "the cat sat on the mat"
    b, old, new = word_swap.one_word_changed(text, tok, TINY_TEXTS)
    assert one_word_apart(text, b) == (old, new)
    assert old.casefold() not in word_swap.FUNCTION_WORDS and new.casefold() not in word_swap.FUNCTION_WORDS
    assert len(tok.encode(new, add_special_tokens=False).ids) == 1, "the new word is one whole token of the model"
    assert any(new in sentence.split() for sentence in TINY_TEXTS), "taken from the sentences given"
    assert len(tok.encode(b).ids) == len(tok.encode(text).ids), "B lines up with A position by position"
    # The same input, the same B (no randomness), whoever asks.
    again = make_checkpoint("decoder", seed=1).tokenizer
    assert word_swap.one_word_changed(text, again, list(TINY_TEXTS)) == (b, old, new)
    # Nothing to change: no word, or no word the model reads whole to change it to.
    for nothing in ("", "   ", ".", "🙂", "?!"):
        assert word_swap.one_word_changed(nothing, tok, TINY_TEXTS) is None, nothing
    assert word_swap.one_word_changed(text, tok, []) is None
    assert word_swap.one_word_changed(text, tok, ["xylophone quizzically zebras"]) is None
    # A word the tokenizer splits is no stand-in. (Which words it splits depends on the trained tokenizer: take one.)
    split = next(w for t in TINY_TEXTS for w in t.split() if len(tok.encode(w, add_special_tokens=False).ids) > 1)
    assert word_swap.one_word_changed("the mats sat", tok, [split]) is None, f"{split!r}, a word of two tokens, is no stand-in"


def test_one_word_changed_keeps_other_scripts_and_emoji_as_they_are(make_checkpoint):
    tok = make_checkpoint("encoder").tokenizer
    for text in ("🙂 the cat sat — on the mat 猫!", "Ünïcode  the\tDOGS\nsleep ✨", "猫が好き 🙂"):
        change = word_swap.one_word_changed(text, tok, TINY_TEXTS)
        assert change is not None or text == "猫が好き 🙂", text  # a word this tokenizer splits may have no stand-in
        if change is not None:
            b, old, new = change
            assert one_word_apart(text, b) == (old, new), text
            assert len(tok.encode(b).ids) == len(tok.encode(text).ids)
    b, old, new = word_swap.one_word_changed("The Cat sat", tok, TINY_TEXTS)
    assert new[:1].isupper() == old[:1].isupper(), "a capital stays a capital"


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


def test_texts_open_on_a_with_one_word_changed(shipped):
    text = "the dogs that the cat sees run ."
    at = start({"checkpoint": "lm", "page": "compare", "cmp": "texts", "text": text, "layer": "1", "head": "1"})
    no_errors(at)
    tok = load_checkpoint(shipped["lm"].path, device="cpu").tokenizer
    b, old, new = word_swap.one_word_changed(text, tok, [*shipped_examples("lm"), text])
    assert at.session_state["sel_text2"] == b != text and at.text_area(key="cmp_text2").value == b
    assert any(c.value.startswith(f"B is A with {md(old, 40)} changed to {md(new, 40)}") for c in at.caption)
    diff = charts(at)["cmp_diff"]["data"][0]
    z = np.asarray(diff["z"], dtype=np.float64)
    assert np.abs(z).max() > 0, "B − A shows something"
    assert diff["zmax"] == -diff["zmin"] == np.abs(z).max()
    # The page's own B stays out of the link: whoever opens it gets the same B from the same text A.
    assert "text2" not in at.query_params
    opened = start({**at.query_params, "page": "compare"})
    assert opened.session_state["sel_text2"] == b
    # A new text A: the page's own B follows it.
    text = "the boys near the tall queen are shy ."
    at.text_area(key="w_text").input(text).run()
    no_errors(at)
    b = word_swap.one_word_changed(text, tok, [*shipped_examples("lm"), text])[0]
    assert at.session_state["sel_text2"] == b and at.text_area(key="cmp_text2").value == b
    # A B the user typed is theirs: another text A leaves it as it is.
    at.text_area(key="cmp_text2").input("the dog runs .").run()
    at.text_area(key="w_text").input("the cat sees the dog .").run()
    no_errors(at)
    assert at.session_state["sel_text2"] == "the dog runs ." == at.text_area(key="cmp_text2").value
    assert not any(c.value.startswith("B is A with") for c in at.caption)
    assert at.query_params["text2"] == "the dog runs ."


def test_a_linked_text_b_wins_and_identical_texts_say_so(shipped):
    text = "the dog runs ."
    at = start({"checkpoint": "lm", "page": "compare", "cmp": "texts", "text": text, "text2": text})
    no_errors(at)
    assert at.session_state["sel_text2"] == text
    diff = charts(at)["cmp_diff"]["data"][0]
    assert not np.asarray(diff["z"]).any()
    assert (diff["zmin"], diff["zmax"]) == (-1.0, 1.0), "all white on the widest range, not a scale of millionths"
    assert any(c.value == compare.SAME_TEXT for c in at.caption)
    # No word that could be swapped: B starts as A, and the page says to type another.
    at = start({"checkpoint": "lm", "page": "compare", "cmp": "texts", "text": "🙂 ."})
    no_errors(at)
    assert at.session_state["sel_text2"] == "🙂 ."
    assert any("type a different sentence in B" in c.value for c in at.caption)


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
    # A model without the kind or layer asked for says so instead of drawing: what each computes, and what to do.
    at = start({"checkpoint": "translator", "page": "compare", "cmp": "checkpoints", "checkpoint2": "lm", "kind": "cross"})
    no_errors(at)
    assert at.session_state["sel_checkpoint2"] == "lm", "the link's B wins"
    (message,) = [i.value for i in at.info if "has no cross attention" in i.value]
    assert "A computes encoder self, decoder self and cross attention; B computes decoder self" in message
    assert "Pick as B a checkpoint that computes what A does" in message and "Two texts" in message
    at = start({"checkpoint": "classifier", "page": "compare", "cmp": "checkpoints", "checkpoint2": "lm"})
    no_errors(at)
    (message,) = [i.value for i in at.info if "has no encoder self attention" in i.value]
    assert "No other checkpoint here computes what A does" in message


def test_checkpoint_b_starts_as_one_of_the_same_kind(shipped):
    # The Translator's B is the other encoder-decoder (Reverse), not the first in the list (the language model).
    assert list(shipped)[:2] == ["translator", "lm"] and "reverse" in shipped
    at = start({"checkpoint": "translator", "page": "compare", "cmp": "checkpoints", "kind": "cross"})
    no_errors(at)
    assert at.session_state["sel_checkpoint2"] == "reverse" and at.query_params["checkpoint2"] == "reverse"
    assert at.selectbox(key="cmp_checkpoint2").options[0] == "Reverse a sequence"
    assert "cmp_diff" in charts(at) or any("do not line up" in i.value for i in at.info)
    assert not any("has no" in i.value for i in at.info)
    # A checkpoint B the user picks stays picked.
    at.selectbox(key="cmp_checkpoint2").set_value("lm").run()
    assert at.session_state["sel_checkpoint2"] == "lm"


def test_order_partners_puts_the_same_kinds_first():
    ed, dec, enc = ("encoder self", "decoder self", "cross"), ("decoder self",), ("encoder self",)
    kinds = {"lm": dec, "classifier": enc, "bert": None, "reverse": ed}
    assert compare.order_partners(ed, kinds, "cross") == ["reverse", "bert", "lm", "classifier"]
    assert compare.order_partners(dec, kinds, "decoder self") == ["lm", "reverse", "bert", "classifier"]
    assert compare.order_partners(enc, {"lm": dec, "reverse": ed}, "encoder self") == ["reverse", "lm"]


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
