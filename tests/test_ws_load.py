"""benchmarks/ws_load.py's client against the floor app: two sessions over Streamlit's own websocket protocol, no
browser; each sends its own text at the same moment and must get back a heatmap of its own words, and no other's."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.browser import toy_texts
from benchmarks.classroom import expected_labels
from benchmarks.ws_load import CHART, one_round, open_sessions
from tests.browser import run_async, serve
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint

pytestmark = pytest.mark.timeout(90)

TEXTS = ["a bird sings while the cats sleep", "two small dogs run across the green field today"]


async def two_sessions(base: str, pid: int) -> tuple[list, object]:
    sessions = await open_sessions([base], "", "", len(TEXTS))
    try:
        assert all(s.widgets["w_text"][0].endswith("-w_text") and s.figures for s in sessions)
        r = await one_round(sessions, TEXTS, expected_labels(TEXTS, str.split), [pid])
        return [s.last_figure() for s in sessions], r
    finally:
        await asyncio.gather(*(s.close() for s in sessions))


def test_each_session_gets_its_own_heatmap():
    with serve("benchmarks/floor_app.py") as (base, proc):
        figures, r = run_async(two_sessions(base, proc.pid))
    assert r.problems == []
    assert all(t is not None and t > 0 for t in r.seconds), r.seconds
    assert r.runs == len(TEXTS)  # one run per request: nothing reran twice
    for fig, text in zip(figures, TEXTS):
        labels = [f"{i}·{w}" for i, w in enumerate(text.split())]  # the floor's axis labels (`CHART`)
        assert list(fig.y) == labels and list(fig.x) == labels, f"{CHART} of {text!r}: {fig.y}"


async def elements_of_a_typed_run(base: str, page: str, query: str, text: str) -> dict:
    """The elements and blocks one run draws after a typed text, by type."""
    (session,) = await open_sessions([base], page, query, 1)
    try:
        session.elements.clear()
        sent = await session.type_text(text)
        assert await session.wait(lambda: session.done_since(sent) is not None, 60), session.problems
        assert session.problems == []
        return dict(session.elements)
    finally:
        await session.close()


def test_the_page_floor_draws_what_the_attention_page_draws():
    """`benchmarks/floor_page_app.py` stands for the Attention page's shape in `ws_load`, `classroom` and
    `browser_cost`: the same elements of the same types after a typed text. When the page gains or loses an element,
    this fails until the page floor is changed to match, so the floors keep measuring what they claim to. The text is
    Toy English, as the benchmarks type (a text the model does not know adds the coverage notice's elements)."""
    (text,) = toy_texts(load_checkpoint(catalog.available()["lm"].path).tokenizer, [30], seed=11)
    with serve("app.py") as (base, _):
        page = run_async(elements_of_a_typed_run(base, "attention", "checkpoint=lm", text))
    with serve("benchmarks/floor_page_app.py") as (base, _):
        floor = run_async(elements_of_a_typed_run(base, "", "", text))
    assert page["plotly_chart"] == 3 and page["block"] > 20, page  # the page as measured: three charts, ~70 elements
    assert floor == page
