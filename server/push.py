"""A class's move reaches this process's followers at once, instead of at their browser's next poll.

A follower's browser asks every `classroom.POLL_SECONDS` whether its class has moved (`class_screens.poll`). On its
own that puts up to a whole poll period between the teacher's click and each follower's rerun. Here one thread per
app process watches the classes its followers follow. When one moves (a new view, a question, a reveal, the teacher
gone or back, the class ended), the watcher asks the server to run each such follower's poll fragment right away,
as if the browser's timer had fired. The poll's body then decides, as it always does, whether the app reruns.

The watcher reads the class store, so a teacher on another replica moves followers here too (`make school`). The
browser's own timer still fires every POLL_SECONDS; it is what a follower falls back on if a push is lost or the
watcher cannot reach the store.

A pushed run is what Streamlit's own rerun on a changed source file is (`AppSession._on_source_file_changed`): a
rerun request the server makes for a session, on the session's event loop. It carries no widget values (the
browser's last ones stay, and a person's click waiting in the same runner is merged as it is, not overwritten), and
no cached-message hashes (the server sends each message in full rather than trust a cache the browser may have
emptied since).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from streamlit.runtime import Runtime
from streamlit.runtime.app_session import AppSessionState
from streamlit.runtime.scriptrunner_utils.script_requests import RerunData

from server.class_store import ClassStore, StoreUnavailable

_LOG = logging.getLogger(__name__)
WATCH_SECONDS = 0.05  # how often the watcher reads the classes of this process's followers


@dataclass
class _Follower:
    store: ClassStore
    code: str
    fragment: str  # the id of the session's poll fragment
    seen: object  # what the store said of the class when the session last looked (`ClassStore.poll`)


_lock = threading.Lock()
_followers: dict[str, _Follower] = {}  # Streamlit session id -> its class
_thread: threading.Thread | None = None


def follow(session_id: str, store: ClassStore, code: str, fragment: str, seen: object) -> None:
    """Session `session_id` follows class `code` and has just seen `seen` (its poll's answer); start the watcher."""
    global _thread
    with _lock:
        _followers[session_id] = _Follower(store, code, fragment, seen)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_watch, name="attnviz-class-push", daemon=True)
            _thread.start()


def leave(session_id: str) -> None:
    """Session `session_id` follows no class (stepped away, left, or became the teacher)."""
    with _lock:
        _followers.pop(session_id, None)


def _watch() -> None:
    logged = float("-inf")
    while True:
        time.sleep(WATCH_SECONDS)
        try:
            _push_moved()
        except Exception:  # the watcher outlives any one bad turn (the browsers still poll); said once a minute
            if time.monotonic() - logged > 60:
                logged = time.monotonic()
                _LOG.exception("pushing class moves to followers failed (their browsers' polls still follow)")


def _push_moved() -> None:
    with _lock:
        followers = list(_followers.items())
    now: dict[tuple[int, str], object] = {}
    for session_id, follower in followers:
        key = (id(follower.store), follower.code)
        if key not in now:
            try:
                now[key] = follower.store.poll(follower.code)
            except StoreUnavailable:
                now[key] = follower.seen  # nothing to tell: the browser's poll says the store is gone
        if now[key] != follower.seen:
            follower.seen = now[key]  # pushed once; the session's run reports what it saw
            if not _rerun_fragment(session_id, follower.fragment):
                leave(session_id)


def _rerun_fragment(session_id: str, fragment: str) -> bool:
    """Ask the server to run fragment `fragment` of session `session_id` now; False if there is no such session."""
    runtime = Runtime.instance() if Runtime.exists() else None
    info = runtime._session_mgr.get_active_session_info(session_id) if runtime is not None else None
    if info is None:
        return False
    app_session = info.session
    try:
        app_session._event_loop.call_soon_threadsafe(_request, app_session, fragment)
    except RuntimeError:  # the loop is closed: the server is stopping
        return False
    return True


def _request(app_session, fragment: str) -> None:
    """On the session's event loop: what `AppSession.request_rerun` does for a fragment timer's request, with the
    session's last query string and page, and no widget values."""
    if app_session._state == AppSessionState.SHUTDOWN_REQUESTED:
        return
    if not app_session.has_fragment(fragment):  # a full run since dropped it: that run polled anyway
        return
    client = app_session._client_state
    rerun = RerunData(
        query_string=client.query_string,
        page_script_hash=client.page_script_hash,
        page_name=client.page_name,
        fragment_id=fragment,
        is_auto_rerun=True,
        context_info=client.context_info if client.HasField("context_info") else None,
    )
    runner = app_session._scriptrunner
    if runner is not None and runner.request_rerun(rerun):
        return
    app_session._create_scriptrunner(rerun)  # a finished runner: `streamlit_fixes` starts this after its messages
