"""What the server changed stays changed when a browser's request sent before it heard of the change arrives.

A touch pauses autoplay, and a timer request the browser sent before it heard of the pause does not undo it; autoplay
moves on to the next kind, and a click sent before the browser heard of the new kind does not take the old one back.

Autoplay reruns the Attention page's fragment on a timer the browser keeps (`st.fragment(run_every=…)`), and every
rerun request a browser sends carries all its widgets' values. A click on "next head" pauses autoplay on the server;
a timer request sent before the paused switch reached the browser still says "on". The client here is a websocket
client speaking Streamlit's own protocol (`benchmarks/ws_load.Session`) whose timers never fire by themselves, so
the late request is sent exactly when the race would send it.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import pytest

from benchmarks.ws_load import Session, bool_state, int_state, open_sessions, trigger_state
from server import session
from tests.browser import run_async, serve

pytestmark = pytest.mark.timeout(180)

WAIT_S = 30


@pytest.fixture(scope="module")
def base():
    with serve("app.py") as (url, _):
        yield url


async def in_tab(base: str, query: dict, scenario) -> None:
    """`scenario(tab)` in a new session on the Attention page at `query`, once its first run has drawn the heatmap."""
    tab: Session = (await open_sessions([base], "attention", urlencode(query), 1))[0]
    try:
        await scenario(tab)
        assert not tab.problems, tab.problems[:2]
    finally:
        await tab.close()


async def late_timer(tab: Session) -> None:
    tab.polls = False  # its timers fire only when this test says so
    switch, outside = tab.widgets[session.AUTOPLAY]
    page = tab.widgets["attn_next_head"][1]  # the page's fragment, which autoplay reruns
    assert outside == "" and page, "the switch sits outside the fragment, the head buttons inside it"

    sent = await tab.rerun([bool_state(switch, True)])
    assert await tab.wait(lambda: tab.finished_since(sent) is not None and page in tab.timed, WAIT_S), "autoplay never started"

    sent = await tab.click("attn_next_head")  # a touch: autoplay pauses (the page reruns whole, without its timer)
    assert await tab.wait(lambda: tab.finished_since(sent) is not None and page not in tab.timed, WAIT_S), "no pause"
    await asyncio.sleep(0.5)  # the pause's own rerun of the whole app has finished too
    head = tab.last_figure().title

    # The browser's timer, sent before the paused switch reached it: the fragment's rerun, with the switch still on.
    sent = await tab.rerun([bool_state(switch, True)], fragment_id=page, auto=True)
    assert await tab.wait(lambda: tab.finished_since(sent) is not None, WAIT_S)
    # Any later run of the whole page (here: one without a change) draws the switch as the server holds it.
    sent = await tab.rerun()
    assert await tab.wait(lambda: tab.finished_since(sent) is not None, WAIT_S)
    await asyncio.sleep(0.5)
    assert page not in tab.timed, "autoplay resumed: the late timer's 'on' undid the pause"
    assert tab.last_figure().title == head


def test_a_late_autoplay_timer_does_not_undo_a_pause(base):
    run_async(in_tab(base, {"checkpoint": "lm"}, late_timer))


async def late_click(tab: Session) -> None:
    switch, kinds = tab.widgets[session.AUTOPLAY][0], tab.widgets["attn_kind"]
    assert kinds[1] == "", "the kind picker sits outside the page's fragment"
    assert list(tab.drawn["attn_kind"].options)[:2] == ["encoder self", "decoder self"]
    sent = await tab.rerun([bool_state(switch, True)])  # autoplay on: its first step is the next kind's first head
    moved = lambda: tab.done_since(sent, lambda f: f.title.startswith("decoder self"))  # noqa: E731
    assert await tab.wait(lambda: moved() is not None, WAIT_S), [f.title for f in tab.figures[-3:]]
    sent = await tab.rerun([bool_state(switch, False)])  # paused, so that nothing moves on by itself
    assert await tab.wait(lambda: tab.finished_since(sent) is not None, WAIT_S)
    head = tab.last_figure().title

    # A click on "next head" in the page's fragment, sent with the kind the browser showed before autoplay moved on.
    button, page = tab.widgets["attn_next_head"]
    sent = await tab.rerun([trigger_state(button), int_state(kinds[0], 0)], fragment_id=page)
    assert await tab.wait(lambda: tab.finished_since(sent) is not None, WAIT_S)
    sent = await tab.rerun()  # a run of the whole page draws the kind as the server holds it
    assert await tab.wait(lambda: tab.done_since(sent) is not None, WAIT_S)
    title = tab.last_figure(sent).title
    assert title.startswith("decoder self"), f"the click took the old kind back: {title!r} (before it: {head!r})"
    assert title != head, "the click itself was taken"


def test_a_late_click_does_not_take_back_the_kind_autoplay_moved_to(base):
    # its last stop of encoder self: autoplay's first step is the next kind's first head
    run_async(in_tab(base, {"checkpoint": "translator", "kind": "encoder self", "layer": 1, "head": 3}, late_click))
