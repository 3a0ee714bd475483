"""A classroom without browsers: N sessions speak Streamlit's own websocket protocol; how long until each has its run.

Run: `.venv/bin/python -m benchmarks.ws_load` (a printed table, not a test; progress on stderr). The default,
N = 30, 100, 300 on the `lm` checkpoint and the floor, 3 rounds each, takes several minutes on a 2-core machine.
`--quick` (N = 2, one round, then a class of 3 followers) checks that it all runs, in under a minute.
`--find-5s` grows N (30, 60, 120, ...) until the app's slowest session passes 5 s; `--replicas 2` does each
measurement again on two app processes (sessions dealt round robin, no proxy) and prints the ratio of the N at 5 s.
`--page-floor` also measures `benchmarks/floor_page_app.py`, the Attention page's elements without the app (what
Streamlit charges for a page of its shape), and prints the app against it.
`--follow --sessions 30,60,100` times a class following its teacher instead; with `--replicas 2`, on two app processes
sharing the class through a private redis-server (the teacher on the first, followers dealt round robin). `--server-env
NAME=VALUE` sets a variable for every server, e.g. STREAMLIT_RUNNER_POST_SCRIPT_GC=true (Streamlit's default, a full
`gc.collect(2)` after every script run, which .streamlit/config.toml turns off: with 30 followers polling twice a
second it alone saturated this 2-core server).

Why without browsers: `benchmarks/classroom.py` drives one headless Chromium tab per session, and at 30 sessions the
tabs need ~7 GB and share the two cores with the server. Here each session is one websocket (the `websockets` package) that sends
and reads Streamlit's protobufs as its frontend does, so N can reach the hundreds and what is timed is the server:

- Connect to `ws://HOST:PORT/_stcore/stream` offering the subprotocol "streamlit" (no XSRF token and no cookie:
  Streamlit 1.67's websocket handler accepts a connection without one, the token only unlocks the auth cookie, which
  this app does not use; XSRF protection stays on, the servers run with their defaults). Then send a `rerun_script`
  BackMsg whose `ClientState` carries the link's query string, the page by name (`page_name`, "attention") until the
  server names its `page_script_hash` (in `new_session`; with `st.navigation`, as this app has, in the `navigation`
  message that follows it: new_session names the main script), and `context_info` (time zone, locale, the page's URL).
- Read `ForwardMsg`s as the frontend does: `page_info_changed` replaces the query string sent with the next rerun;
  `delta`s carry elements, a widget's `id` ending in its key (`$$ID-<hash>-w_text`) and the `fragment_id` it was drawn
  in; `script_finished` ends a run (FINISHED_EARLY_FOR_RERUN when the script reran itself, or, under load, when
  another request already waits: the server goes on; a run that drew the heatmap counts as done at any status).
  Messages marked cacheable are kept and their hashes sent with every rerun (`cached_message_hashes`), so the server
  sends a `ref_hash` instead of a figure this session already has, as to a browser (kept for the whole session: the
  browser drops them after a few runs).
- Typing is a rerun with the text area's widget state (`string_value`); a click, `trigger_value` for one rerun; a
  widget drawn in a fragment is rerun with that `fragment_id`, as the frontend's widget manager does. A session sends
  only the widget states it changed (a browser sends every widget's; the server keeps the others as they were).
- `st.fragment(run_every=...)` is driven by the client: an `auto_rerun` message (interval, fragment id) starts a
  timer that sends a fragment rerun (`is_auto_rerun`) every interval; a full run's `new_session` clears them all and
  `stop_auto_rerun` the ones it names, as the frontend does.

Load (the default; mirrors `benchmarks/classroom.py`): the app (`streamlit run app.py`) and the floor
(`benchmarks/floor_app.py`: one text area and one heatmap, no model, the same widget keys) each run in a subprocess
(`tests.browser.serve`). For each N, N sessions open the Attention page (`/attention?checkpoint=lm`; the floor's
only page) and wait for a finished run with the heatmap (`attn_heatmap`) drawn. Then come the rounds: every session
gets its own Toy English text (new each round, 6 to 40 tokens, the same texts for the floor), and all send their
rerun at once. A session's time: from sending its rerun to the `script_finished` that follows a heatmap whose axes
are its own text's tokens (labelled as the app labels them); a heatmap with anything else is cross-talk. Server
CPU: utime + stime of the server process(es) from /proc over the round, per request. Sessions stay open from one N
to the next (N grows by opening more).

Follow (`--follow`): a teacher session opens the Attention page and clicks "Teach this class"; the class code comes
from the `page_info_changed` that puts `teach=CODE&key=...` in its link. N followers open `/?follow=CODE`; each
follower's poll is an `st.fragment(run_every=classroom.POLL_SECONDS)` driven by the client as above, which the server
also runs by itself when the class moves (`server/push.py`). Idle cost: the server's CPU over
IDLE_S with the teacher alone, and with the N followers only waiting: per follower, % of one core. Then the teacher
clicks "next head" (`attn_next_head`, inside the page's fragment: sent with that fragment's id, as the browser does)
every 2 s. A step's view is the title of the teacher's own new heatmap ("layer L · head H"); a follower's time is
from the teacher's request to the `script_finished` after its heatmap shows that title.

All on one machine: the client (this process) shares the cores with the server(s); its CPU is printed beside the
server's ("harness"). Times are taken in this process when a message arrives (perf_counter): a busy harness adds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from benchmarks.browser import pct, toy_texts
from benchmarks.classroom import TICK, crosstalk, expected_labels, lengths, memory_mb, note, tokens_of
from benchmarks.core import machine
from benchmarks.follow import STEP_S, TEXT
from server.classroom import POLL_SECONDS
from tests.browser import free_port, serve
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint

SESSIONS = "30,100,300"
FOLLOWERS = "30,60,100"
CHECKPOINT = "lm"
REPEATS = 3
STEPS = 10
IDLE_S = 20.0  # each idle CPU window of --follow
TIMEOUT_S = 180.0  # per round, from the requests: a session without its heatmap by then counts as "not drawn"
OPEN_TIMEOUT_S = 300.0  # one session's first run
OPEN_AT_ONCE = 8  # sessions connecting together while a class sits down (not timed)
SETTLE_S = 8.0  # after the teacher's last step, how long followers may still take
CHART = "attn_heatmap"  # the app's heatmap key; the floor uses the same one
FIVE_S = 5.0
FIND_START, FIND_MAX = 30, 1920
# The end of a run (not of a script that failed to compile). FINISHED_EARLY_FOR_RERUN counts: under load Streamlit ends
# a run that has sent its page with it when another request waits, and what was sent stays on the browser's screen.
DONE = (
    ForwardMsg.FINISHED_SUCCESSFULLY,
    ForwardMsg.FINISHED_EARLY_FOR_RERUN,
    ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY,
)


# ---------------------------------------------------------------------------------------------
# One session: Streamlit's frontend protocol, without the page.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A heatmap a session received: when, and what it shows."""

    at: float  # perf_counter when its message arrived
    title: str  # the layout's title, <b> removed (Streamlit's theme adds one at every render)
    y: tuple[str, ...]  # the first trace's axes
    x: tuple[str, ...]


def read_figure(spec: str, at: float) -> Figure:
    fig = json.loads(spec)
    trace = (fig.get("data") or [{}])[0]
    title = (fig.get("layout") or {}).get("title") or ""
    title = title.get("text", "") if isinstance(title, dict) else str(title)
    axis = lambda v: tuple(v) if isinstance(v, list) else ()
    return Figure(at, re.sub(r"</?b>", "", title), axis(trace.get("y")), axis(trace.get("x")))


def text_state(widget_id: str, text: str) -> WidgetState:
    state = WidgetState(id=widget_id)
    state.string_value = text
    return state


def bool_state(widget_id: str, value: bool) -> WidgetState:
    state = WidgetState(id=widget_id)
    state.bool_value = value
    return state


def int_state(widget_id: str, value: int) -> WidgetState:
    """A radio's or a select box's choice (its option's index)."""
    state = WidgetState(id=widget_id)
    state.int_value = value
    return state


def trigger_state(widget_id: str) -> WidgetState:
    state = WidgetState(id=widget_id)
    state.trigger_value = True
    return state


class Session:
    """One browser tab's conversation with the server: its link, the widgets and heatmaps it was sent, its runs."""

    def __init__(self, base: str, page: str, query: str):
        self.base, self.page, self.query = base, page, query
        self.page_hash = ""  # the page's script hash, once a new_session (or, with st.navigation, a navigation) names it
        self.widgets: dict[str, tuple[str, str]] = {}  # key → (element id, fragment id or "") as last drawn
        self.drawn: dict[str, object] = {}  # key → the widget's element as last drawn (its options, value...)
        self.drawn_at: dict[str, float] = {}  # key → when it was last drawn (perf_counter)
        self.figures: list[Figure] = []  # every heatmap (CHART) received
        self.finished: list[tuple[float, int]] = []  # (perf_counter, status) of every script_finished
        self.problems: list[str] = []  # exceptions the app drew, references to messages this session lacks
        self.closed = False
        self.polls = True  # False: no `run_every` timer fires (a browser whose polls never arrive)
        self.refs = 0  # messages the server sent as a reference to one this session holds
        self.elements: collections.Counter = collections.Counter()  # elements and blocks drawn so far, by type
        self._cache: dict[str, ForwardMsg] = {}  # hash → cacheable message received (the browser's message cache)
        self._timers: dict[str, asyncio.Task] = {}  # fragment id → its run_every timer
        self.timed: dict[str, float] = {}  # fragment id → run_every seconds, as the server last set them (polls or not)
        self._changed = asyncio.Condition()  # notified at every script_finished, and when the socket closes
        self._ws = None
        self._reader: asyncio.Task | None = None

    async def open(self) -> None:
        """Connect and request the first run, as a page load does."""
        url = self.base.replace("http://", "ws://", 1) + "/_stcore/stream"
        # No pings (a browser sends none); no size limit (a figure can be megabytes). permessage-deflate is offered, as
        # browsers do; Streamlit 1.67's server (uvicorn) declines it, so frames go uncompressed, as to a browser.
        self._ws = await connect(
            url, subprotocols=[Subprotocol("streamlit")], max_size=None, ping_interval=None, open_timeout=120
        )
        self._reader = asyncio.create_task(self._read())
        await self.rerun()

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await self._reader

    async def rerun(self, widgets: list[WidgetState] = (), fragment_id: str = "", auto: bool = False) -> float:
        """Send a `rerun_script` as the frontend's `sendRerunBackMsg` does; returns when it was sent (perf_counter)."""
        state = ClientState(
            query_string=self.query,
            page_script_hash=self.page_hash,
            page_name="" if self.page_hash else self.page,
            fragment_id=fragment_id,
            is_auto_rerun=auto,
            cached_message_hashes=list(self._cache),
        )
        state.widget_states.widgets.extend(widgets)
        info = state.context_info
        info.timezone, info.timezone_offset, info.locale = "UTC", 0, "en-US"
        info.url = f"{self.base}/{self.page}" + (f"?{self.query}" if self.query else "")
        info.is_embedded, info.color_scheme = False, "light"
        msg = BackMsg()
        msg.rerun_script.CopyFrom(state)
        data = msg.SerializeToString()
        sent = time.perf_counter()
        await self._ws.send(data)
        return sent

    async def type_text(self, text: str) -> float:
        """The text area's new text, as Ctrl+Enter sends it."""
        widget_id, fragment = self.widgets["w_text"]
        return await self.rerun([text_state(widget_id, text)], fragment)

    async def click(self, key: str) -> float:
        """A button press (its fragment's rerun when it was drawn in one)."""
        widget_id, fragment = self.widgets[key]
        return await self.rerun([trigger_state(widget_id)], fragment)

    def done_since(self, since: float, shows=None) -> float | None:
        """When the first run that ended after `since` with a heatmap drawn after `since` (one that `shows(fig)`) finished."""
        fig = next((f for f in self.figures if f.at >= since and (shows is None or shows(f))), None)
        return None if fig is None else self.finished_since(fig.at)

    def finished_since(self, since: float) -> float | None:
        """When the first run that ended after `since` finished (any status but an early stop for a rerun)."""
        return next((t for t, status in self.finished if t >= since and status in DONE), None)

    def last_figure(self, since: float = 0.0) -> Figure | None:
        return next((f for f in reversed(self.figures) if f.at >= since), None)

    async def wait(self, test, timeout: float) -> bool:
        """Wait until `test()` holds, checked at every script_finished (False at the timeout or if the socket closed)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: test() or self.closed), max(0.01, timeout))
            except TimeoutError:
                return False
        return bool(test())

    async def _read(self) -> None:
        try:
            async for data in self._ws:
                at = time.perf_counter()
                if self._handle(ForwardMsg.FromString(data), at):
                    async with self._changed:
                        self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            for timer in self._timers.values():
                timer.cancel()
            async with self._changed:
                self._changed.notify_all()

    def _handle(self, msg: ForwardMsg, at: float) -> bool:
        """Take one message in, as the frontend would; True for a script_finished."""
        kind = msg.WhichOneof("type")
        if kind == "ref_hash":  # a message this session already holds: the cached one, placed where the reference says
            cached = self._cache.get(msg.ref_hash)
            if cached is None:
                self.problems.append(f"a reference to message {msg.ref_hash} this session never received")
                return False
            full = ForwardMsg()
            full.CopyFrom(cached)
            full.metadata.CopyFrom(msg.metadata)
            msg, kind = full, cached.WhichOneof("type")
            self.refs += 1
        elif msg.metadata.cacheable and msg.hash:
            self._cache[msg.hash] = msg
        if kind == "new_session":
            self.page_hash = msg.new_session.page_script_hash
            if not msg.metadata.run.fragment_ids:  # a full run: the page's fragments will announce their timers again
                for timer in self._timers.values():
                    timer.cancel()
                self._timers.clear()
                self.timed.clear()
        elif kind == "navigation":  # a multipage app's page: new_session named the main script's hash
            nav = msg.navigation
            self.page_hash = nav.page_script_hash
            self.page = next((p.url_pathname for p in nav.app_pages if p.page_script_hash == nav.page_script_hash), self.page)
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif kind == "auto_rerun":
            fragment = msg.auto_rerun.fragment_id
            self.timed[fragment] = msg.auto_rerun.interval
            if not self.polls:
                return False
            if fragment in self._timers:
                self._timers[fragment].cancel()
            self._timers[fragment] = asyncio.create_task(self._every(fragment, msg.auto_rerun.interval))
        elif kind == "stop_auto_rerun":
            for fragment in msg.stop_auto_rerun.fragment_ids:
                self.timed.pop(fragment, None)
                timer = self._timers.pop(fragment, None)
                if timer is not None:
                    timer.cancel()
        elif kind == "delta" and msg.delta.WhichOneof("type") == "add_block":
            self.elements["block"] += 1
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            element = msg.delta.new_element
            which = element.WhichOneof("type")
            self.elements[which] += 1
            body = getattr(element, which)
            if which == "exception":
                self.problems.append(f"the app shows an exception: {body.type}: {body.message[:300]}")
            element_id = getattr(body, "id", "") if "id" in body.DESCRIPTOR.fields_by_name else ""
            if element_id.startswith("$$ID-"):
                key = element_id.split("-", 2)[-1]
                self.widgets[key] = (element_id, msg.delta.fragment_id)
                self.drawn[key], self.drawn_at[key] = body, at
                if which == "plotly_chart" and key == CHART:
                    self.figures.append(read_figure(body.spec, at))
        elif kind == "script_finished":
            self.finished.append((at, msg.script_finished))
            return True
        return False

    async def _every(self, fragment: str, interval: float) -> None:
        """A browser's setInterval for a `run_every` fragment: a fragment rerun every `interval` seconds."""
        loop = asyncio.get_running_loop()
        due = loop.time() + interval
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                due = max(due + interval, loop.time())  # no burst to catch up after a stall
                await self.rerun(fragment_id=fragment, auto=True)


async def open_sessions(bases: list[str], page: str, query: str, n: int, first: int = 0) -> list[Session]:
    """n sessions, the i-th on bases[(first + i) % len(bases)], each once its first run has drawn the heatmap."""
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def one(i: int) -> Session:
        async with gate:
            s = Session(bases[(first + i) % len(bases)], page, query)
            await s.open()
            if not await s.wait(lambda: s.done_since(0.0) is not None, OPEN_TIMEOUT_S):
                raise RuntimeError(f"a session on {s.base}/{page}?{query} drew no heatmap in its first run: {s.problems[:2]}")
            if s.problems:
                raise RuntimeError(f"{s.base}/{page}?{query}: {s.problems[0]}")
            return s

    return list(await asyncio.gather(*(one(i) for i in range(n))))


# ---------------------------------------------------------------------------------------------
# CPU and memory from /proc.
# ---------------------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes so far."""
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


# ---------------------------------------------------------------------------------------------
# Load: N sessions send a new text at once.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    """One round: every session sent one new text."""

    seconds: list[float | None]  # per session, request → its run finished with its own heatmap; None: not in time
    spread: float  # first to last request, seconds
    server_cpu: float  # the server process(es), from just before the requests until every session was done
    harness_cpu: float  # this process, the same window
    runs: int  # script_finished messages received in that window
    problems: list[str]


async def one_round(sessions: list[Session], texts: list[str], expected: list[list[str]], pids: list[int]) -> Round:
    mine = [lambda f, e=e: list(f.y) == e and list(f.x) == e for e in expected]
    runs, cpu, harness = sum(len(s.finished) for s in sessions), cpu_seconds(pids), time.process_time()
    sent = [await s.type_text(t) for s, t in zip(sessions, texts)]  # back to back: a few µs apart
    deadline = time.monotonic() + TIMEOUT_S
    await asyncio.gather(
        *(
            s.wait(lambda s=s, t=t, m=m: s.done_since(t, m) is not None, deadline - time.monotonic())
            for s, t, m in zip(sessions, sent, mine)
        )
    )
    server_cpu, harness_cpu = cpu_seconds(pids) - cpu, time.process_time() - harness
    done = [s.done_since(t, m) for s, t, m in zip(sessions, sent, mine)]
    last = [s.last_figure(t) for s, t in zip(sessions, sent)]
    # cross-talk: a heatmap not of the session's own text (one that got none in time counts as not done, not here)
    missing = [f"session {i} " for i, f in enumerate(last) if f is None]
    problems = [
        p for p in crosstalk([None if f is None else (f.y, f.x) for f in last], expected) if not p.startswith(tuple(missing))
    ]
    problems += [f"session {i}: {p}" for i, s in enumerate(sessions) for p in s.problems]
    problems += [f"session {i}: its connection closed" for i, s in enumerate(sessions) if s.closed]
    for s in sessions:
        s.problems.clear()
    return Round(
        [None if d is None else d - t for d, t in zip(done, sent)],
        sent[-1] - sent[0],
        server_cpu,
        harness_cpu,
        sum(len(s.finished) for s in sessions) - runs,
        problems,
    )


@dataclass
class Result:
    """All rounds of one server set at one N."""

    n: int
    rounds: list[Round] = field(default_factory=list)
    rss_mb: float = 0.0  # the server(s)' resident memory after the rounds, summed

    @property
    def times(self) -> list[float]:
        return [t for r in self.rounds for t in r.seconds if t is not None]

    @property
    def not_drawn(self) -> int:
        return sum(t is None for r in self.rounds for t in r.seconds)

    @property
    def slowest(self) -> float:
        return float("inf") if self.not_drawn or not self.times else max(self.times)

    @property
    def problems(self) -> list[str]:
        return [f"round {i + 1}: {p}" for i, r in enumerate(self.rounds) for p in r.problems]


@dataclass
class Target:
    """A set of servers the sessions are dealt over, with its open sessions (kept from one N to the next)."""

    label: str
    bases: list[str]
    pids: list[int]
    page: str
    query: str
    tokenize: object  # text → the tokens its heatmap shows
    sessions: list[Session] = field(default_factory=list)

    async def grow(self, n: int) -> None:
        if n > len(self.sessions):
            self.sessions += await open_sessions(self.bases, self.page, self.query, n - len(self.sessions), len(self.sessions))

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.sessions), return_exceptions=True)
        self.sessions = []


async def measure(target: Target, n: int, rounds: list[list[str]]) -> Result:
    """N sessions of `target` (opening more if needed), one round per entry of `rounds`."""
    note(f"{target.label}, N={n}: opening sessions ({len(target.sessions)} open)")
    t0 = time.monotonic()
    await target.grow(n)
    note(f"{target.label}, N={n}: {n} open ({time.monotonic() - t0:.0f} s)")
    sessions, out = target.sessions[:n], Result(n)
    for i, texts in enumerate(rounds):
        r = await one_round(sessions, texts, expected_labels(texts, target.tokenize), target.pids)
        out.rounds.append(r)
        drawn = [t for t in r.seconds if t is not None]
        note(
            f"{target.label}, N={n}, round {i + 1}/{len(rounds)}: {len(drawn)}/{n} done, slowest {max(drawn, default=float('nan')):.2f} s"
            + (f"; {len(r.problems)} problem(s): {r.problems[0]}" if r.problems else "")
        )
    with contextlib.suppress(OSError):
        out.rss_mb = sum(memory_mb(pid)[0] for pid in target.pids)
    return out


def texts_for(tokenizer, sizes: list[int], repeats: int, seed: int) -> dict[int, list[list[str]]]:
    """Per N, `repeats` rounds of N texts; every text of the run different (the targets get the same ones)."""
    flat = toy_texts(tokenizer, [k for n in sizes for r in range(repeats) for k in lengths(n, r)], seed=seed)
    out, at = {}, 0
    for n in sizes:
        out[n] = [flat[at + r * n : at + (r + 1) * n] for r in range(repeats)]
        at += n * repeats
    return out


HEADER = (
    f"{'':<12} {'N':>4} {'done':>10} {'p50 s':>6} {'p90 s':>6} {'max s':>6} {'spread':>7} {'CPU/req':>8} {'runs':>5}"
    f" {'harness':>8} {'RSS MB':>7}"
)
LEGEND = """\
done: sessions whose run finished with their own heatmap / sessions × rounds. p50, p90, max: seconds from sending
a session's rerun (its new text) to the script_finished after its own heatmap. spread: first to last request of a
round, s. CPU/req: the server process(es)' CPU seconds per request (utime + stime, /proc); runs: script runs counted
(script_finished messages; one per request when nothing reruns). harness: this process's CPU seconds per request
(the websocket clients). RSS: the server process(es)' resident memory after the rounds, MB."""


def row(label: str, r: Result) -> str:
    n, rounds = r.n, r.rounds
    requests = n * len(rounds) or float("nan")
    server = sum(x.server_cpu for x in rounds) / requests
    harness = sum(x.harness_cpu for x in rounds) / requests
    t = r.times or [float("nan")]
    spread = max((x.spread for x in rounds), default=float("nan"))
    return (
        f"{label:<12} {n:>4} {len(r.times):>5}/{n * len(rounds):<4} {statistics.median(t):6.2f} {pct(t, 0.9):6.2f} {max(t):6.2f}"
        f" {spread:7.3f} {server:8.3f} {sum(x.runs for x in rounds):>5} {harness:8.3f} {r.rss_mb:7.0f}"
    )


def at_five(points: list[tuple[int, float]]) -> float | None:
    """The N at which the slowest session reaches FIVE_S, interpolated between the last N under and the first over."""
    under = [(n, s) for n, s in points if s <= FIVE_S]
    over = [(n, s) for n, s in points if s > FIVE_S]
    if not over:
        return None
    if not under:
        return float(over[0][0])
    (n0, s0), (n1, s1) = under[-1], over[0]
    if s1 == float("inf"):
        return float(n0)
    return n0 + (n1 - n0) * (FIVE_S - s0) / (s1 - s0)


# ---------------------------------------------------------------------------------------------
# Follow: a class; the teacher steps through heads.
# ---------------------------------------------------------------------------------------------


@dataclass
class Follow:
    """One N of --follow."""

    n: int
    latencies: list[float] = field(default_factory=list)  # s, teacher's request → a follower's run with that view done
    missed: int = 0  # follower × step without that step's view (skipped to a later one, or none in time)
    missed_by: dict[int, int] = field(default_factory=dict)  # follower index → its missed steps (those with any)
    teacher: list[float] = field(default_factory=list)  # s, the teacher's own run
    teacher_late: int = 0  # steps the teacher's own session ran together with the next one (not timed)
    idle_server_s: float = float("nan")  # server CPU seconds over the idle window with N followers
    idle_harness_s: float = float("nan")
    idle_runs: int = 0  # script runs the followers had over the idle window (their polls)
    steps_server_s: float = float("nan")
    counted_s: float = float("nan")  # the answers sent at once → the last answering run finished (the store counted it)
    reveal: list[float] = field(default_factory=list)  # s, the teacher's Reveal request → a follower's reveal chart's run done
    reveal_missing: int = 0  # followers whose reveal chart never came
    problems: list[str] = field(default_factory=list)


@contextlib.contextmanager
def private_redis(folder: Path):
    """A redis-server of this run's own (Debian's, as `make school` runs it), yielding its URL."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        import redis

        for _ in range(100):
            try:
                redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait()


async def teach(base: str) -> tuple[Session, str]:
    """A teacher on the Attention page who has clicked "Teach this class": (its session, the class code)."""
    teacher = (await open_sessions([base], "attention", urlencode({"checkpoint": CHECKPOINT, "text": TEXT}), 1))[0]
    sent = await teacher.click("class_teach")
    if not await teacher.wait(lambda: "teach=" in teacher.query and teacher.done_since(sent) is not None, 60):
        raise RuntimeError(f"no class started: the teacher's link is {teacher.query!r}; {teacher.problems[:2]}")
    return teacher, parse_qs(teacher.query)["teach"][0]


async def idle_cpu(pids: list[int], seconds: float) -> tuple[float, float]:
    """(server, harness) CPU seconds over `seconds` of waiting."""
    cpu, harness = cpu_seconds(pids), time.process_time()
    await asyncio.sleep(seconds)
    return cpu_seconds(pids) - cpu, time.process_time() - harness


async def steps(teacher: Session, followers: list[Session], n_steps: int, pids: list[int], r: Follow) -> None:
    cpu = cpu_seconds(pids)
    t0, sent = time.perf_counter(), []
    for k in range(n_steps):
        await asyncio.sleep(max(0.0, t0 + k * STEP_S - time.perf_counter()))
        sent.append(await teacher.click("attn_next_head"))
    await asyncio.sleep(STEP_S)
    await teacher.wait(lambda: teacher.done_since(sent[-1]) is not None, SETTLE_S)  # its last view, on a busy server
    # The view of step k: the title of the teacher's own next heatmap; none when that one is also the next step's
    # (the server took two clicks in one run: Streamlit merges a button's waiting clicks).
    firsts = [next((f for f in teacher.figures if f.at >= t), None) for t in sent]
    views = []
    for k, (t, own) in enumerate(zip(sent, firsts)):
        merged = own is None or (k + 1 < len(sent) and firsts[k + 1] is own)
        views.append(None if merged else own.title)
        r.teacher_late += merged
        done = None if merged else teacher.done_since(t)
        if done is not None:
            r.teacher.append(done - t)
    final = next((v for v in reversed(views) if v), None)
    deadline = time.monotonic() + SETTLE_S
    await asyncio.gather(
        *(
            f.wait(lambda f=f: f.done_since(sent[-1], lambda x: x.title == final) is not None, deadline - time.monotonic())
            for f in followers
        )
    )
    r.steps_server_s = cpu_seconds(pids) - cpu
    for k, (t, view) in enumerate(zip(sent, views)):
        if view is None:
            continue
        # the heads come round again: a view shown only after the teacher went back to it is that later step's
        until = next((sent[j] for j in range(k + 1, len(sent)) if views[j] == view), float("inf"))
        for i, f in enumerate(followers):
            fig = next((x for x in f.figures if t <= x.at < until and x.title == view), None)
            done = None if fig is None else f.finished_since(fig.at)
            if done is None:
                r.missed += 1
                r.missed_by[i] = r.missed_by.get(i, 0) + 1
            else:
                r.latencies.append(done - t)
    r.problems += [p for s in [teacher, *followers] for p in s.problems]
    r.problems += ["a follower's connection closed" for f in followers if f.closed]


FOLLOW_HEADER = (
    f"{'N':>4} {'timed':>11} {'merged':>6} {'p50 s':>6} {'p90 s':>6} {'max s':>6} {'teach s':>7} {'idle %/f':>8} {'idle %':>7}"
    f" {'harn %':>7} {'runs/s/f':>8} {'steps CPU s':>11} {'count s':>7} {'rv p90 s':>8} {'rv max s':>8}"
)
FOLLOW_LEGEND = f"""\
timed: follower × step timed / followers × steps with a view of their own; merged: steps the teacher's session ran
together with the next (Streamlit merges a button's waiting clicks), left out. The rest were skipped (a follower went
straight to a later view) or not shown by the end. p50, p90, max: seconds from the teacher's "next head" request to
a follower's script_finished after its heatmap showed that step's view. teach s: the teacher's own run, median.
idle %/f: the server's CPU per waiting follower, % of one core: (CPU with N − CPU with the teacher alone) /
(N × window). idle %: the server's CPU with the N followers waiting, % of one core; harn %: this process's (the
clients' polls), the same window; runs/s/f: script runs per follower per second meanwhile (its polls: {1 / POLL_SECONDS:g} expected).
steps CPU s: the server's CPU seconds over the steps. Then a question: the teacher asks ("Ask"), every follower
answers at once (its first choice); count s: from the first answer sent to the last answering run finished (the
store has counted them all); rv p90 / max s: from the teacher's "Reveal" request to a follower's run that drew the
reveal chart, finished."""


async def question(teacher: Session, followers: list[Session], r: Follow) -> None:
    """The teacher asks (the default question on its view), every follower answers at once, the teacher reveals."""
    asked = await teacher.click("ask_go")
    picks = re.compile(r"q_(\d+)_pick$")

    def number(f: Session) -> int | None:
        return max((int(m.group(1)) for k in f.widgets if (m := picks.match(k)) and f.drawn_at[k] >= asked), default=None)

    await asyncio.gather(*(f.wait(lambda f=f: number(f) is not None, SETTLE_S) for f in followers))
    n = max((number(f) or 0) for f in followers)
    if not n or any(number(f) != n for f in followers):
        r.problems.append(f"question {n}: shown to {sum(number(f) == n for f in followers)} of {len(followers)} followers")
        return
    pick = f"q_{n}_pick"

    async def answer(f: Session) -> float:
        widget_id, fragment = f.widgets[pick]
        state = WidgetState(id=widget_id)
        state.string_array_value.data.append(f.drawn[pick].options[0].content)  # the first choice, as a click sends it
        return await f.rerun([state], fragment)

    sent = await asyncio.gather(*(answer(f) for f in followers))
    await asyncio.gather(*(f.wait(lambda f=f, t=t: f.finished_since(t) is not None, SETTLE_S) for f, t in zip(followers, sent)))
    done = [f.finished_since(t) for f, t in zip(followers, sent)]
    if all(d is not None for d in done):
        r.counted_s = max(done) - min(sent)
    await asyncio.sleep(STEP_S)  # the teacher's count shows them (it polls every TEACHER_POLL_SECONDS / 2)
    key = f"q_reveal_{n}"
    revealed = await teacher.click("q_reveal")

    def shown(f: Session) -> float | None:
        return f.finished_since(f.drawn_at[key]) if f.drawn_at.get(key, 0.0) >= revealed else None

    await asyncio.gather(*(f.wait(lambda f=f: shown(f) is not None, SETTLE_S) for f in followers))
    for f in followers:
        at = shown(f)
        if at is None:
            r.reveal_missing += 1
            continue
        r.reveal.append(at - revealed)
        bars = [t for t in json.loads(f.drawn[key].spec)["data"] if t.get("name") == "answers"]
        counted = sum(bars[0]["y"]) if bars else None
        if counted != len(followers):
            r.problems.append(f"a follower's reveal shows {counted} answers, not {len(followers)}")
    await teacher.click("q_close")


def fmt(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.2f}"


def follow_row(r: Follow, alone_s: float, idle_s: float) -> str:
    t = r.latencies or [float("nan")]
    per = (r.idle_server_s - alone_s) / (r.n * idle_s) * 100
    return (
        f"{r.n:>4} {len(r.latencies):>5}/{len(r.latencies) + r.missed:<5} {r.teacher_late:>6} {statistics.median(t):6.2f} {pct(t, 0.9):6.2f}"
        f" {max(t):6.2f} {fmt(statistics.median(r.teacher) if r.teacher else None):>7} {per:8.2f}"
        f" {r.idle_server_s / idle_s * 100:7.1f} {r.idle_harness_s / idle_s * 100:7.1f} {r.idle_runs / (r.n * idle_s):8.2f}"
        f" {r.steps_server_s:11.1f} {fmt(r.counted_s):>7} {fmt(pct(r.reveal, 0.9) if r.reveal else None):>8}"
        f" {fmt(max(r.reveal) if r.reveal else None):>8}"
        + (f"  ({r.reveal_missing} without the reveal)" if r.reveal_missing else "")
    )


async def follow_class(bases: list[str], pids: list[int], sizes: list[int], n_steps: int, idle_s: float) -> list[str]:
    """The teacher on the first server; followers dealt round robin over all (several: replicas sharing a store)."""
    note(f"follow: a teacher on {bases[0]}")
    teacher, code = await teach(bases[0])
    followers: list[Session] = []
    lines = [
        f"class {code}: the teacher steps through heads (next head on the Attention page, `{CHECKPOINT}`, {TEXT!r}) "
        f"every {STEP_S:g} s, {n_steps} steps per N; a follower polls every {POLL_SECONDS:g} s; idle windows of {idle_s:g} s",
        "",
        FOLLOW_HEADER,
    ]
    try:
        await asyncio.sleep(2)
        alone, _ = await idle_cpu(pids, idle_s)
        note(f"follow: the teacher alone, {alone / idle_s * 100:.1f} % of a core")
        for n in sizes:
            r = Follow(n)
            note(f"follow, N={n}: opening followers ({len(followers)} open)")
            followers += await open_sessions(bases, "", urlencode({"follow": code}), n - len(followers), len(followers))
            await asyncio.sleep(2)
            runs = sum(len(f.finished) for f in followers)
            r.idle_server_s, r.idle_harness_s = await idle_cpu(pids, idle_s)
            r.idle_runs = sum(len(f.finished) for f in followers) - runs
            note(f"follow, N={n}: {n_steps} steps")
            await steps(teacher, followers[:n], n_steps, pids, r)
            note(f"follow, N={n}: a question")
            await question(teacher, followers[:n], r)
            lines.append(follow_row(r, alone, idle_s))
            if r.missed_by:
                worst = sorted(r.missed_by.items(), key=lambda kv: -kv[1])
                lines.append(
                    f"     missed by {len(r.missed_by)} follower(s): "
                    + ", ".join(f"#{i} {m} step(s)" for i, m in worst[:8])
                    + (" …" if len(worst) > 8 else "")
                )
            if not r.latencies:
                lines.append(f"     nothing timed: the teacher's session drew {n_steps - r.teacher_late} of its {n_steps} steps")
            note(lines[-1] + (f"; {len(r.problems)} problem(s): {r.problems[0]}" if r.problems else ""))
            lines += [f"     {p}" for p in r.problems[:5]]
    finally:
        await asyncio.gather(*(s.close() for s in [teacher, *followers]), return_exceptions=True)
    where = "the server" if len(bases) == 1 else f"the {len(bases)} replicas"
    lines += ["", FOLLOW_LEGEND, f"{where} with the teacher alone: {alone / idle_s * 100:.2f} % of a core"]
    return lines


# ---------------------------------------------------------------------------------------------
# The run and the table.
# ---------------------------------------------------------------------------------------------


async def load(args, stack: contextlib.ExitStack, logs: Path, ckpt) -> list[str]:
    """The load table (or the search for the N at 5 s)."""
    replicas = [1] + ([args.replicas] if args.replicas > 1 else [])
    # A translator opens on its most telling head (cross attention: target rows); its source's own attention shows
    # the typed text's tokens on both axes, as the check for cross-talk reads them. Its run still decodes greedily.
    source_kind = {"kind": "encoder self"} if ckpt.config.kind == "encoder-decoder" else {}
    query = urlencode({"checkpoint": args.checkpoint, **source_kind})
    targets = []
    for r in replicas:
        servers = [stack.enter_context(serve("app.py", args.env, logs / f"app{r}-{i}.log")) for i in range(r)]
        label = "app" if r == 1 else f"app ×{r}"
        targets.append(Target(label, [b for b, _ in servers], [p.pid for _, p in servers], "attention", query, tokens_of(ckpt)))
    if not args.skip_floor and not args.find_5s:
        base, proc = stack.enter_context(serve("benchmarks/floor_app.py", args.env, logs / "floor.log"))
        targets.append(Target("floor", [base], [proc.pid], "", "", str.split))
    if args.page_floor and not args.find_5s:
        base, proc = stack.enter_context(serve("benchmarks/floor_page_app.py", args.env, logs / "page_floor.log"))
        targets.append(Target("page floor", [base], [proc.pid], "", "", str.split))
    lines = []
    try:
        if args.find_5s:
            return await find_five(args, targets, ckpt)
        sizes = sorted(int(n) for n in args.sessions.split(","))
        texts = texts_for(ckpt.tokenizer, sizes, args.repeats, seed=11)
        n_tokens = [len(tokens_of(ckpt)(t)) for rounds in texts.values() for r in rounds for t in r]
        lines += [
            f"{args.repeats} round(s) per N; every session sends its own Toy English text, new each round "
            f"({min(n_tokens)}–{max(n_tokens)} tokens for {args.checkpoint}), all at once",
            "",
            HEADER,
        ]
        results: dict[tuple[str, int], Result] = {}
        for n in sizes:
            for target in targets:
                results[target.label, n] = await measure(target, n, texts[n])
                lines.append(row(target.label, results[target.label, n]))
        lines += ["", LEGEND, ""]
        for n in sizes:
            floor = results.get(("floor", n))
            for target in targets[: len(replicas)]:
                r = results[target.label, n]
                ratio = f"{r.slowest / floor.slowest:.2f}" if floor and floor.slowest else "-"
                lines.append(f"N={n:<4} {target.label}: slowest {r.slowest:.2f} s; slowest(app)/slowest(floor) = {ratio}")
            shaped = results.get(("page floor", n))
            if shaped and shaped.slowest:
                r = results["app", n]
                ratio = f"{shaped.slowest / floor.slowest:.2f}" if floor and floor.slowest else "-"
                lines.append(
                    f"N={n:<4} page floor: slowest {shaped.slowest:.2f} s; slowest(page floor)/slowest(floor) = {ratio}; "
                    f"slowest(app)/slowest(page floor) = {r.slowest / shaped.slowest:.2f}"
                )
        problems = [f"{label} N={n}, {p}" for (label, n), r in results.items() for p in r.problems]
        mixed = [p for p in problems if " shows " in p]
        lines.append(f"every session drew its own tokens: {'yes' if not mixed else f'NO, {len(mixed)} mixed up'}")
        lines += [f"  {p}" for p in problems[:20]]
    finally:
        await asyncio.gather(*(t.close() for t in targets))
    return lines


async def find_five(args, targets: list[Target], ckpt) -> list[str]:
    """Grow N (doubling from FIND_START) on each app target until its slowest session passes FIVE_S."""
    sizes, n = [], args.find_start
    while n <= args.max_sessions:
        sizes.append(n)
        n *= 2
    texts = texts_for(ckpt.tokenizer, sizes, args.repeats, seed=12)
    lines, found = ["growing N until the slowest session passes 5 s", "", HEADER], {}
    for target in targets:
        points = []
        for n in sizes:
            r = await measure(target, n, texts[n])
            lines.append(row(target.label, r))
            points.append((n, r.slowest))
            lines += [f"     {p}" for p in r.problems[:5]]
            if r.slowest > FIVE_S:
                break
        found[target.label] = at_five(points)
        await target.close()
        lines.append(
            f"{target.label}: the slowest passes {FIVE_S:g} s at N ≈ {fmt(found[target.label])}"
            if found[target.label] is not None
            else f"{target.label}: still under {FIVE_S:g} s at N = {points[-1][0]} (the largest tried)"
        )
    lines += ["", LEGEND]
    if len(found) > 1 and all(v is not None for v in found.values()):
        one, more = found[targets[0].label], found[targets[1].label]
        lines.append(f"N at 5 s, {targets[1].label} / app: {more / one:.2f}")
    return lines


async def run(args) -> None:
    entries = catalog.available()
    if args.checkpoint not in entries:
        raise SystemExit(f"no checkpoint {args.checkpoint} here (have: {', '.join(entries)})")
    ckpt = load_checkpoint(entries[args.checkpoint].path, device="cpu")
    lines = [
        f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at start",
        "client: websockets, no browser; servers: Streamlit's defaults" + "".join(f", {k}={v}" for k, v in args.env.items()),
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        logs = Path(args.logs or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        if not args.follow:
            lines += await load(args, stack, logs, ckpt)
        if args.follow or args.quick:
            sizes = [int(n) for n in (args.sessions if args.follow else "3").split(",")]
            env, replicas = args.env, args.replicas if args.follow else 1
            if (
                replicas > 1 and not args.attach
            ):  # replicas share the class through a private redis-server, as under `make school`
                env = {**env, "ATTNVIZ_REDIS_URL": stack.enter_context(private_redis(logs))}
                lines.append(f"{replicas} replicas sharing a private redis-server; followers dealt round robin")
            if args.attach:  # a running deployment's app processes (compose's replicas, by their addresses)
                bases, pids = args.attach, args.attach_pids
                lines.append(f"attached to {', '.join(bases)} (server CPU: processes {pids or 'not given'})")
            else:
                servers = [stack.enter_context(serve("app.py", env, logs / f"follow{i}.log")) for i in range(replicas)]
                bases, pids = [b for b, _ in servers], [p.pid for _, p in servers]
            lines += ([] if args.follow else [""]) + await follow_class(bases, pids, sizes, args.steps, args.idle)
    lines.append(f"load average {os.getloadavg()[0]:.2f} at the end")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sessions", help=f"comma-separated session counts (default {SESSIONS}; with --follow, followers: {FOLLOWERS})"
    )
    parser.add_argument("--checkpoint", default=CHECKPOINT, help=f"catalogue name (default {CHECKPOINT})")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"rounds of simultaneous requests per N (default {REPEATS})")
    parser.add_argument("--skip-floor", action="store_true", help="leave out the bare Streamlit + Plotly floor")
    parser.add_argument(
        "--page-floor",
        action="store_true",
        help="also measure benchmarks/floor_page_app.py: the Attention page's elements without the app (what Streamlit "
        "charges for a page of its shape)",
    )
    parser.add_argument("--find-5s", action="store_true", help="grow N until the app's slowest session passes 5 s")
    parser.add_argument("--find-start", type=int, default=FIND_START, help=f"--find-5s's first N (default {FIND_START})")
    parser.add_argument("--max-sessions", type=int, default=FIND_MAX, help=f"--find-5s's largest N (default {FIND_MAX})")
    parser.add_argument(
        "--replicas", type=int, default=1, help="also measure this many app processes, sessions dealt round robin"
    )
    parser.add_argument("--follow", action="store_true", help="a class following its teacher instead of the load")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"--follow: the teacher's steps per N (default {STEPS})")
    parser.add_argument(
        "--idle", type=float, default=IDLE_S, help=f"--follow: seconds of each idle CPU window (default {IDLE_S:g})"
    )
    parser.add_argument(
        "--attach",
        metavar="URL,URL",
        help="--follow: the app processes of a running deployment sharing a store (e.g. compose's replicas at their "
        "addresses on its network) instead of starting them; the teacher on the first",
    )
    parser.add_argument(
        "--attach-pids",
        metavar="PID,PID",
        default="",
        help="--attach: their processes as this machine sees them (`docker top`), for the server's CPU",
    )
    parser.add_argument("--logs", help="keep the servers' logs in this folder")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for every server (repeatable), e.g. STREAMLIT_RUNNER_POST_SCRIPT_GC=false",
    )
    parser.add_argument("--quick", action="store_true", help="N = 2, one round, then a class of 3 followers: does it run?")
    args = parser.parse_args()
    if args.quick:
        args.sessions = args.sessions or ("3" if args.follow else "2")
        args.repeats, args.steps, args.idle, args.find_start, args.max_sessions = 1, 3, 3.0, 2, 4
    args.sessions = args.sessions or (FOLLOWERS if args.follow else SESSIONS)
    args.env = dict(v.split("=", 1) for v in args.server_env)
    if args.attach and not args.follow:
        parser.error("--attach measures --follow only")
    args.attach = [u.strip().rstrip("/") for u in args.attach.split(",")] if args.attach else None
    args.attach_pids = [int(p) for p in args.attach_pids.split(",") if p.strip()]
    asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
