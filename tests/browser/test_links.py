"""A shared link reproduces the options it names in Chromium, and a download is named by checkpoint, view and text."""

from __future__ import annotations

import pytest

from server import widgets
from tests.browser import figure, wait_idle
from tests.browser.test_browser import open_app, url_params
from viz.labels import unique_labels

pytestmark = pytest.mark.browser

TEXT = "the big dog near the old tables sees the cats ."


def checked(page, key: str) -> bool:
    return page.locator(f".st-key-{key} input[type=checkbox]").is_checked()


def test_a_link_with_the_options_reproduces_them(page, served):
    open_app(page, "/attention", {"text": TEXT, "kind": "cross", "layer": "1", "head": "1", "stretch": "1"})
    assert checked(page, "attn_stretch") and not checked(page, "attn_skip_first")
    heat = figure(page, "attn_heatmap")["data"][0]
    assert heat.get("zmax") is None and heat.get("zmin") is None  # stretched: Plotly spans this head's own range
    assert url_params(page)["stretch"] == "1"
    with page.expect_download() as info:  # the CSV is named by checkpoint, view and text
        page.locator(".st-key-csv_attn_heatmap button").click()
    assert info.value.suggested_filename == f"{served.default}_weights_cross_L1_H1_{widgets.text_hash(TEXT, None)}.csv"

    open_app(page, "/model_view", {"text": TEXT, "kind": "cross", "scale": "sqrt", "skip_first": "1"}, chart="mv_grid")
    assert page.locator(".st-key-mv_scale input[type=radio]").nth(1).is_checked()  # "√ weight"
    assert checked(page, "mv_skip_first")
    bar = figure(page, "mv_grid")["data"][0]["colorbar"]
    assert bar["title"]["text"].startswith("weight (√ colours)")
    params = url_params(page)
    assert (params["scale"], params["skip_first"]) == ("sqrt", "1")

    # Changing an option on the page changes the link.
    page.locator(".st-key-mv_scale label").filter(has_text="stretched").click()
    wait_idle(page)
    page.wait_for_function("() => new URL(location.href).searchParams.get('scale') === 'stretch'")


def test_a_link_with_the_why_pages_options_reproduces_them(page, served):
    link = {"flow": "0", "method": "integrated-gradients", "ig_steps": "128", "dec_pos": "2"}
    open_app(page, "/attribution", {"text": TEXT, "kind": "encoder self", "layer": "0", **link}, chart="attr_scores")
    assert not checked(page, "attr_flow_on")  # off, though flow is cheap at layer 0
    assert page.locator(".st-key-attr_method input[type=radio]").nth(1).is_checked()  # integrated gradients
    assert page.locator(".st-key-attr_steps [data-testid=stSliderThumbValue]").inner_text() == "128"
    label = unique_labels(served.reference(TEXT).query_tokens("cross"))[2]
    assert page.locator(".st-key-attr_dec_position input").input_value() == label
    assert {name: url_params(page)[name] for name in link} == link

    # Back to the default method: it and its steps leave the link.
    page.locator(".st-key-attr_method label").filter(has_text="gradient × input").click()
    wait_idle(page)
    page.wait_for_function("() => !new URL(location.href).searchParams.has('method')")
    params = url_params(page)
    assert "ig_steps" not in params and (params["flow"], params["dec_pos"]) == ("0", "2")

    open_app(page, "/lens", {"text": TEXT, "sublayers": "0"}, chart="lens_grid")
    assert not checked(page, "lens_sublayers") and url_params(page)["sublayers"] == "0"
    rows = figure(page, "lens_grid")["data"][0]["y"]
    assert not any("attention" in str(row) for row in rows), rows  # one row per layer
    page.locator(".st-key-lens_sublayers label").click()
    wait_idle(page)
    page.wait_for_function("() => !new URL(location.href).searchParams.has('sublayers')")


def test_a_link_made_on_an_uploaded_model_says_so_literally(page, served):
    name = "<b>mine</b> :red[x].safetensors"
    open_app(page, "/attention", {"uploaded": name, "text": TEXT})
    warning = page.locator("[data-testid=stAlertContentWarning]").filter(has_text="uploaded model").inner_text()
    assert name in warning and "which this server no longer holds" in warning
    assert url_params(page)["checkpoint"] == served.default and url_params(page)["text"] == TEXT
