"""benchmarks/ws_load.py's client against the floor app: two sessions over Streamlit's own websocket protocol, no
browser; each sends its own text at the same moment and must get back a heatmap of its own words, and no other's."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.classroom import expected_labels
from benchmarks.ws_load import CHART, one_round, open_sessions
from tests.browser import run_async, serve

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
