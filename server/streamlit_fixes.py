"""A fix for a race in Streamlit 1.67.0 (the version pinned) that made a following student's screen stop following.

Each session's script runs in a `ScriptRunner` thread that ends when it has nothing left to run; its messages reach
the browser through the server's event loop, which handles them a little later. A rerun request that arrives in
between (a `run_every` fragment's timer: a follower's poll, two a second) finds the runner finished, and
`AppSession` starts a new one at once; from then on it ignores every message of the finished runner that it has not
handled yet (`AppSession._handle_scriptrunner_event_on_event_loop`: "Ignoring event from non-current
ScriptRunner"). Streamlit knows the race (its comment on issue #9921 in `AppSession.request_rerun`) and only avoids
it for a fragment that no longer exists.

What it did here: with the server busy (60 followers on two replicas, `benchmarks/ws_load.py --follow`), a
follower's full run (the class's new view) lost its last messages: the heatmap, the `script_finished`, and the
`auto_rerun` that starts the poll's timer again after a full run cleared it. That follower missed the view and,
its timer gone, never polled again: 20–31 of 60 followers missed steps, a few nearly all of them.

The fix: such a request waits on the event loop until the finished runner's messages (already queued there: every
event of a runner is queued before it stops) have been handled, and only then starts the new runner.
"""

from __future__ import annotations

from streamlit.runtime.app_session import AppSession

MAX_WAITS = 1000  # turns of the event loop a request waits for the finished runner (its SHUTDOWN: a few turns)
_PATCHED = "_attnviz_waits_for_finished_runner"


def install() -> None:
    """Make `AppSession` start a new script runner only once the finished one's messages are out (idempotent)."""
    if getattr(AppSession._create_scriptrunner, _PATCHED, False):
        return
    create = AppSession._create_scriptrunner

    def _create_scriptrunner(self, initial_rerun_data):
        start_after_finished_runner(self, initial_rerun_data, create)

    setattr(_create_scriptrunner, _PATCHED, True)
    AppSession._create_scriptrunner = _create_scriptrunner


def start_after_finished_runner(session, rerun_data, create, waits: int = 0) -> None:
    """`create(session, rerun_data)` (a new ScriptRunner) once `session` no longer holds a finished runner.

    `AppSession.request_rerun` calls this when its runner refused the request (a finished runner, which it clears
    on that runner's SHUTDOWN event) or when it has none (a new session, or `runner.fastReruns` stopped the old one
    on purpose: its messages are superseded). A finished runner: try again after the events queued on the loop.
    """
    finished = session._scriptrunner
    if finished is None or waits >= MAX_WAITS:
        create(session, rerun_data)
        return
    try:
        # thread-safe: a file watcher's rerun (`make dev`) comes from its own thread
        session._event_loop.call_soon_threadsafe(_again, session, rerun_data, create, waits + 1)
    except RuntimeError:  # the loop is closed: the server is stopping
        create(session, rerun_data)


def _again(session, rerun_data, create, waits: int) -> None:
    runner = session._scriptrunner
    if runner is not None and runner.request_rerun(rerun_data):  # a runner started meanwhile took the request
        return
    start_after_finished_runner(session, rerun_data, create, waits)
