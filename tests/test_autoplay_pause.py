"""A touch pauses autoplay, and a timer request the browser sent before it heard of the pause does not undo it.

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

from benchmarks.ws_load import Session, bool_state, open_sessions
from server import session
from tests.browser import run_async, serve

pytestmark = pytest.mark.timeout(180)

WAIT_S = 30


async def late_timer(base: str) -> None:
    tab: Session = (await open_sessions([base], "attention", urlencode({"checkpoint": "lm"}), 1))[0]
    tab.polls = False  # its timers fire only when this test says so
    try:
        switch, outside = tab.widgets[session.AUTOPLAY]
        page = tab.widgets["attn_next_head"][1]  # the page's fragment, which autoplay reruns
        assert outside == "" and page, "the switch sits outside the fragment, the head buttons inside it"

        sent = await tab.rerun([bool_state(switch, True)])
        assert await tab.wait(lambda: tab.finished_since(sent) is not None and page in tab.timed, WAIT_S), (
            "autoplay never started"
        )

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
        assert not tab.problems, tab.problems[:2]
    finally:
        await tab.close()


def test_a_late_autoplay_timer_does_not_undo_a_pause():
    with serve("app.py") as (base, _):
        run_async(late_timer(base))
