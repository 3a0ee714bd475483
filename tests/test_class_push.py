"""A class's move reaches a follower through the server's push (`server/push.py`), not only through its browser's poll.

The follower here is a websocket client (`benchmarks/ws_load.Session`) whose `run_every` timers never fire: every
run it gets after its first is one the server started for it. It must still take each of the teacher's views, see
the question, and see the reveal, on one process and on two replicas that share a Redis store.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
from urllib.parse import urlencode

import pytest

from benchmarks.ws_load import Session, private_redis, teach
from server import push
from server.class_store import MemoryStore
from tests.browser import run_async, serve

pytestmark = pytest.mark.timeout(240)

WAIT_S = 30  # a generous bound for a busy CI machine; a follower that only polled would never get there


async def never_polls(base: str, code: str) -> Session:
    follower = Session(base, "", urlencode({"follow": code}))
    follower.polls = False
    await follower.open()
    assert await follower.wait(lambda: follower.done_since(0.0) is not None, 120), follower.problems[:2]
    return follower


async def a_class(teacher_base: str, follower_base: str) -> None:
    teacher, code = await teach(teacher_base)
    follower = await never_polls(follower_base, code)
    try:
        assert not follower._timers  # nothing of its own will ever ask the server again
        for _ in range(3):
            sent = await teacher.click("attn_next_head")
            assert await teacher.wait(lambda sent=sent: teacher.done_since(sent) is not None, WAIT_S)
            title = teacher.last_figure(sent).title
            shown = await follower.wait(
                lambda sent=sent, title=title: follower.done_since(sent, lambda f: f.title == title), WAIT_S
            )
            assert shown, f"the follower never drew {title!r}: {[f.title for f in follower.figures[-3:]]}"

        asked = await teacher.click("ask_go")
        picks = re.compile(r"q_(\d+)_pick$")

        def question() -> str | None:
            return next((k for k in follower.widgets if picks.match(k) and follower.drawn_at[k] >= asked), None)

        assert await follower.wait(lambda: question() is not None, WAIT_S), "the question never reached the follower"
        number = picks.match(question()).group(1)
        assert await teacher.wait(lambda: teacher.drawn_at.get("q_reveal", 0.0) >= asked, WAIT_S), "no Reveal button"
        revealed = await teacher.click("q_reveal")
        key = f"q_reveal_{number}"
        assert await follower.wait(lambda: follower.drawn_at.get(key, 0.0) >= revealed, WAIT_S), "no reveal drawn"
        assert not follower.problems and not teacher.problems, (follower.problems, teacher.problems)
    finally:
        await asyncio.gather(teacher.close(), follower.close(), return_exceptions=True)


def test_a_follower_that_never_polls_still_follows():
    with serve("app.py") as (base, _):
        run_async(a_class(base, base))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs Debian's redis-server (make school's store)")
def test_a_follower_on_another_replica_is_pushed_through_the_store(tmp_path):
    with private_redis(tmp_path) as url:
        env = {"ATTNVIZ_REDIS_URL": url}
        with serve("app.py", env) as (one, _), serve("app.py", env) as (two, _):
            run_async(a_class(one, two))


class CountingStore(MemoryStore):
    """A store that counts the watcher's reads."""

    def __init__(self):
        super().__init__()
        self.polls = 0

    def poll(self, code, browser=None, now=None):
        self.polls += 1
        return super().poll(code, browser, now)


def test_the_watcher_pushes_each_move_once_reads_each_class_once_and_forgets_gone_sessions(monkeypatch):
    store, pushed, gone = CountingStore(), [], {"s3"}
    code, token = store.start({"checkpoint": "lm", "text": "a b"}, "attention")
    other, _ = store.start({"checkpoint": "lm", "text": "c d"}, "attention")
    monkeypatch.setattr(push, "_followers", {})
    monkeypatch.setattr(push, "_thread", threading.current_thread())  # alive: `follow` starts no watcher here
    monkeypatch.setattr(push, "_rerun_fragment", lambda sid, fragment: pushed.append((sid, fragment)) or sid not in gone)
    for sid in ("s1", "s2", "s3"):
        push.follow(sid, store, code, f"poll-{sid}", store.poll(code))
    push.follow("s4", store, other, "poll-s4", store.poll(other))

    store.polls = 0
    push._push_moved()
    assert pushed == [] and store.polls == 2  # nothing moved; one read per class, not per follower

    store.steer(code, token, {"checkpoint": "lm", "text": "a b c"}, "attention")
    push._push_moved()
    assert sorted(pushed) == [("s1", "poll-s1"), ("s2", "poll-s2"), ("s3", "poll-s3")]  # not s4: its class stayed
    assert set(push._followers) == {"s1", "s2", "s4"}  # s3's session is gone: forgotten

    pushed.clear()
    push._push_moved()
    assert pushed == []  # each move is pushed once
    store.end(code, token)
    push._push_moved()
    assert sorted(pushed) == [("s1", "poll-s1"), ("s2", "poll-s2")]  # the class ended: they are told
