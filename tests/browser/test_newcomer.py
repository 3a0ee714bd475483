"""A newcomer types an everyday sentence (real browser): the page says, at its top, that the model cannot read it.

The notice names the words it found as typed, what the model knows and where to go instead, sits above the
heatmap, and goes away again for one of the model's own examples.
"""

from __future__ import annotations

import json

import pytest

from tests.browser import exceptions, signature, type_text, wait_changed, wait_idle, wait_plot
from transformer.checkpoints import catalog

pytestmark = pytest.mark.browser

GRANDMOTHER = "My grandmother bakes bread every Sunday."
NOTICE = ".st-key-coverage_notice"


def test_everyday_sentence_gets_the_notice_on_the_attention_page(page, served):
    page.goto(page.base_url + "/attention")
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    assert page.locator(NOTICE).count() == 0, "no notice for the model's own example"

    before = signature(page, "attn_heatmap")
    type_text(page, GRANDMOTHER)
    wait_changed(page, "attn_heatmap", before)
    wait_idle(page)
    assert not exceptions(page), exceptions(page)

    notice = page.locator(NOTICE)
    notice.wait_for()
    shown = notice.inner_text()
    assert "This text is outside what this model has learnt to read" in shown
    assert "Broken into single letters:" in shown and "grandmother" in shown
    assert "What it knows:" in shown
    if served.minilm:
        assert "pick all-MiniLM-L6-v2 for any English sentence" in shown
    if served.shipped:
        assert catalog.TASK_DESCRIPTIONS["translation"] in shown
    # At the top of the page: above the figure a newcomer is looking at.
    heatmap = page.locator(".st-key-attn_heatmap").bounding_box()
    assert notice.bounding_box()["y"] < heatmap["y"]

    if served.shipped:  # one of the translator's own examples: the notice goes
        example = json.loads(catalog.EXAMPLES_FILE.read_text())["translator"][1]["text"]
        before = signature(page, "attn_heatmap")
        type_text(page, example)
        wait_changed(page, "attn_heatmap", before)
        wait_idle(page)
        assert page.locator(NOTICE).count() == 0
