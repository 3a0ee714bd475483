"""A teacher on a projector (real browser): presentation mode fits the main figure on the screen, with the sidebar
folded away and no label cut; autoplay steps by itself and pauses when the teacher takes over; a row of the head-job
table opens its head."""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import pytest

from tests.browser import address, exceptions, wait_idle, wait_plot

pytestmark = pytest.mark.browser

SCREENS = [(1280, 720), (1920, 1080)]


def open_page(browser, url: str, width: int, height: int):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    return context, page


def link_value(page, name: str) -> str | None:
    m = re.search(rf"[?&]{name}=([^&]*)", address(page))
    return m[1] if m else None


LONG = "My grandmother bakes bread every Sunday, and my brother eats it."  # everyday English: the notice shows too
CASES = [(w, h, text) for w, h in SCREENS for text in (None, LONG)]


@pytest.mark.parametrize("width,height,text", CASES, ids=[f"{w}x{h}-{'long' if t else 'example'}" for w, h, t in CASES])
def test_presentation_mode_fits_the_main_figure_on_the_screen(browser, app_url, width, height, text):
    query = "present=1" + (f"&text={quote(text)}" if text else "")
    context, page = open_page(browser, app_url + f"/attention?{query}", width, height)
    try:
        assert not exceptions(page), exceptions(page)
        if text:
            assert page.locator(".st-key-coverage_notice").count() == 1, "the notice is there, folded"
        box = page.locator(".st-key-attn_heatmap .js-plotly-plot").bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, f"the figure spans {box} on a {width}×{height} screen"
        assert box["x"] >= 0 and box["x"] + box["width"] <= width
        # The figure's own parts (title, both axes' labels, colour bar) lie inside its box: it drew itself that tall.
        assert page.evaluate("() => document.querySelector('.st-key-attn_heatmap .js-plotly-plot')._fullLayout.height") <= (
            box["height"] + 1
        )
        # The sidebar is folded away (its arrow still opens it).
        sidebar = page.locator("[data-testid=stSidebar]").bounding_box()
        assert sidebar is None or sidebar["x"] + sidebar["width"] <= 1, sidebar
        # No label above the figure is cut short (a label whose text is wider than its box shows an ellipsis).
        cut = page.evaluate(
            """() => [...document.querySelectorAll('[data-testid=stMainBlockContainer] [data-testid=stWidgetLabel] p,'
                + '[data-testid=stMainBlockContainer] [role=radiogroup] p')]
                .filter(e => e.getBoundingClientRect().bottom < window.innerHeight && e.scrollWidth > e.clientWidth + 1)
                .map(e => e.textContent)"""
        )
        assert not cut, f"labels cut at {width}×{height}: {cut}"
        # The row labels never run into each other (a line of letters apart at least): a long text gets every k-th
        # row labelled (hover names each row).
        rows, font_px = page.evaluate(
            """() => { const t = [...document.querySelectorAll('.st-key-attn_heatmap .yaxislayer-above .ytick text')];
                return [t.map(e => e.getBoundingClientRect().top).sort((a, b) => a - b),
                        parseFloat(getComputedStyle(t[0]).fontSize)]; }"""
        )
        assert len(rows) >= 2 and font_px >= 18, "large letters on a projector"
        crowded = [(a, b) for a, b in zip(rows, rows[1:]) if b - a < font_px]
        assert not crowded, f"{len(crowded)} row labels closer than a line of {font_px} px at {width}×{height}"
    finally:
        context.close()


def test_leaving_presentation_mode_unfolds_the_sidebar(browser, app_url):
    context, page = open_page(browser, app_url + "/attention?present=1", 1280, 720)
    try:
        page.locator("[data-testid=stExpandSidebarButton], [data-testid=stSidebarCollapsedControl] button").first.click()
        page.locator(".st-key-w_presentation label").click()
        wait_idle(page)
        page.wait_for_function(
            "() => { const s = document.querySelector('[data-testid=stSidebar]'); "
            "return s && s.getBoundingClientRect().width > 100 && s.getBoundingClientRect().x >= 0; }"
        )
        assert link_value(page, "present") is None
    finally:
        context.close()


def test_autoplay_steps_by_itself_and_pauses_when_the_teacher_takes_over(page, served):
    page.goto(page.base_url + "/attention")
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    page.locator(".st-key-autoplay label").click()
    start = (link_value(page, "kind"), link_value(page, "layer"), link_value(page, "head"))
    page.wait_for_function(
        "(start) => { const p = new URLSearchParams(location.search); "
        "return [p.get('kind'), p.get('layer'), p.get('head')].join('|') !== start; }",
        arg="|".join(v.replace("+", " ") if v else "" for v in start),
        timeout=15_000,
    )
    # The teacher presses "Next head": autoplay switches itself off, and the head stays where the teacher put it.
    page.locator(".st-key-attn_next_head button").click()
    page.wait_for_function("() => !document.querySelector('.st-key-autoplay input').checked", timeout=15_000)
    wait_idle(page)
    held = address(page)
    time.sleep(3.5)  # more than two autoplay steps
    assert address(page) == held, "autoplay stayed paused"
    assert not exceptions(page), exceptions(page)


def test_a_head_job_row_opens_its_head(page, served):
    if not served.shipped:
        pytest.skip("the head-job table needs a trained checkpoint")
    page.goto(page.base_url + "/attention")
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    table = page.locator(".st-key-attn_jobs")
    table.scroll_into_view_if_needed()
    wait_idle(page)
    box = page.locator(".st-key-attn_jobs [data-testid=stDataFrameResizable]").bounding_box()
    row_px = 35  # the data grid's row height (its header row too)
    layer, head = link_value(page, "layer"), link_value(page, "head")
    target = 2 if head != "2" else 3
    page.mouse.click(box["x"] + 12, box["y"] + row_px * (1 + target) + row_px / 2)  # the row's selection box
    page.wait_for_function("(h) => new URLSearchParams(location.search).get('head') === h", arg=str(target), timeout=15_000)
    wait_idle(page)
    assert link_value(page, "layer") == layer
    title = page.evaluate("() => document.querySelector('.st-key-attn_heatmap .js-plotly-plot').layout.title.text")
    assert f"head {target}" in title
