"""A rerun that finds the session's script runner finished waits until that runner's messages are out
(`server.streamlit_fixes`: a follower's full run lost its heatmap and its poll's timer without it)."""

from __future__ import annotations

import asyncio
import threading

from streamlit.runtime.app_session import AppSession

from server import streamlit_fixes


def turn(loop) -> None:
    """Run `loop` for a moment, in a thread of its own (another test may have left a loop running in this one)."""
    thread = threading.Thread(target=loop.run_until_complete, args=(asyncio.sleep(0.01),))
    thread.start()
    thread.join()


class FinishedRunner:
    """A ScriptRunner whose run is over: it refuses reruns (AppSession then starts a new one)."""

    def request_rerun(self, rerun_data) -> bool:
        return False


class RunningRunner:
    def __init__(self) -> None:
        self.taken: list = []

    def request_rerun(self, rerun_data) -> bool:
        self.taken.append(rerun_data)
        return True


class Session:
    """The two attributes of AppSession that the fix reads."""

    def __init__(self, loop, runner) -> None:
        self._event_loop, self._scriptrunner = loop, runner


def test_a_new_runner_starts_only_after_the_finished_ones_messages():
    loop = asyncio.new_event_loop()
    try:
        handled: list[str] = []
        session = Session(loop, FinishedRunner())

        def runner_event(what: str):  # as AppSession handles a runner's events: queued on the loop by the runner
            def handle():
                handled.append(what)
                if what == "SHUTDOWN":
                    session._scriptrunner = None

            return handle

        for what in ("delta: the heatmap", "auto_rerun: the poll's timer", "script_finished", "SHUTDOWN"):
            loop.call_soon_threadsafe(runner_event(what))
        created: list = []
        streamlit_fixes.start_after_finished_runner(
            session, "a poll's rerun", lambda s, data: created.append((data, list(handled)))
        )
        assert created == []  # not yet: the finished runner's messages are still queued
        turn(loop)
        assert created == [
            ("a poll's rerun", ["delta: the heatmap", "auto_rerun: the poll's timer", "script_finished", "SHUTDOWN"])
        ]
    finally:
        loop.close()


def test_a_runner_started_meanwhile_takes_the_request():
    loop = asyncio.new_event_loop()
    try:
        session, started = Session(loop, FinishedRunner()), RunningRunner()

        def full_rerun():  # a click's full rerun (runner.fastReruns) replaced the finished runner meanwhile
            session._scriptrunner = started

        loop.call_soon_threadsafe(full_rerun)
        created: list = []
        streamlit_fixes.start_after_finished_runner(session, "a poll's rerun", lambda s, data: created.append(data))
        turn(loop)
        assert created == [] and started.taken == ["a poll's rerun"]
    finally:
        loop.close()


def test_no_runner_or_a_closed_loop_starts_at_once():
    loop = asyncio.new_event_loop()
    created: list = []
    streamlit_fixes.start_after_finished_runner(Session(loop, None), "first run", lambda s, data: created.append(data))
    loop.close()
    streamlit_fixes.start_after_finished_runner(Session(loop, FinishedRunner()), "stopping", lambda s, data: created.append(data))
    assert created == ["first run", "stopping"]


def test_installed_once_on_streamlits_app_session():
    streamlit_fixes.install()
    patched = AppSession._create_scriptrunner
    streamlit_fixes.install()
    assert AppSession._create_scriptrunner is patched
    assert getattr(patched, streamlit_fixes._PATCHED)
