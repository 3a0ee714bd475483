"""Teaching a class: one browser steers, every student's browser follows (this session's side of it).

The class itself (its view, question and answers) is the server's, in `class_store` (one store for every
session); which class this session teaches or follows, and whether the student has stepped away, are this
session's (`st.session_state`, keys "_class_*"). The view a class shares is exactly what a link carries (the
query parameters `session.sync_url` writes, and the page), so a follower sees what the teacher's link would show,
validated the same way.

- A teacher's link holds `teach=CODE&key=TOKEN`: a reload keeps the class; the token never reaches a student.
- A student's link is `?follow=CODE`. When the class moves, the server runs the student's poll at once
  (`server/push.py`); the student's browser also asks the store every POLL_SECONDS whether the view has changed (a
  cheap call), in case a push is lost. The app reruns only when the class has moved.
- A student who changes anything steps away from the class and explores alone; "Back to the class" returns.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import secrets

import streamlit as st

from server import class_store, session, urlstate
from server.class_store import ClassError, ClassStore, MemoryStore, StoreUnavailable
from server.literal import md

# A follower's browser's own check for a new view, behind the server's push (`server/push.py`): what a follower
# falls back on when a push is lost. (Before the push, this was the follow latency's floor; 0.25 s then made
# Chromium under load sometimes lose a student's own click, most likely the race `session.rerun_app` now closes.)
POLL_SECONDS = 0.5
TEACHER_POLL_SECONDS = 2.0  # the teacher's count of followers and answers
# What a link carries that is this browser's alone, never the class's: a training job's owner token, presentation
# mode (a student's laptop is not a projector), and the class's own parameters.
PRIVATE = ("owner", "present", "follow", "teach", "key")
ROLE, CODE, TOKEN = "_class_role", "_class_code", "_class_token"  # role: "teacher", "student" or None
FOLLOWING = "_class_following"  # a student: True while following, False once stepped away
APPLIED = "_class_applied"  # a student: the class version shown now
BASELINE = "_class_baseline"  # a student: the view as this session drew it after taking the class's
NOTICE = "_class_notice"  # a message for this session about its class (ended, refused), shown once
NOTE = "_class_note"  # the lesson note the teacher's session sends with its view
ENDED = "The class has ended (its teacher ended it, or it was idle too long). The app stays open: it is yours now."


REDIS_ENV = "ATTNVIZ_REDIS_URL"  # a shared store for several app processes (`make school`); none: this process's own
DOWN = "_class_store_down"  # this run has said that the store cannot be reached
UNAVAILABLE = (
    "Classes are unavailable just now: this server cannot reach its class store. Everything else works, and your "
    "class comes back by itself when the store does."
)


@st.cache_resource
def store() -> ClassStore:
    """This server's classes: in the Redis store named by $ATTNVIZ_REDIS_URL (shared by several app processes), else
    in this process (shared by its sessions)."""
    url = os.environ.get(REDIS_ENV, "").strip()
    if url:
        from server.redis_store import RedisStore

        return RedisStore(url)
    return MemoryStore()


@contextlib.contextmanager
def unless_unavailable() -> None:
    """Class business that stops where it is, with a plain message, while the shared store cannot be reached (the
    page around it goes on)."""
    try:
        yield
    except StoreUnavailable:
        if not st.session_state.get(DOWN):  # said once a run
            st.warning(UNAVAILABLE, icon=":material/cloud_off:")
        st.session_state[DOWN] = True


def needs_store(callback):
    """A button's callback that, while the shared store cannot be reached, leaves a message for the next run instead."""

    @functools.wraps(callback)
    def run(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except StoreUnavailable:
            st.session_state[NOTICE] = UNAVAILABLE

    return run


def role() -> str | None:
    return st.session_state.get(ROLE)


def code() -> str | None:
    return st.session_state.get(CODE)


def browser() -> str:
    """This browser's anonymous id (one answer per question): from a cookie its tabs share, or this session's own."""
    state = st.session_state
    if "_class_browser" not in state:
        try:
            cookie = st.context.cookies.get("_streamlit_xsrf")
        except Exception:  # no browser (AppTest)
            cookie = None
        cookie = cookie if isinstance(cookie, str) and cookie else None
        state["_class_browser"] = class_store.browser_id(cookie, secrets.token_hex(8))
    return state["_class_browser"]


def _leave(notice: str | None = None) -> None:
    for key in (ROLE, CODE, TOKEN, FOLLOWING, APPLIED, BASELINE, NOTE):
        st.session_state.pop(key, None)
    if notice:
        st.session_state[NOTICE] = notice


def read_link() -> None:
    """On a session's first run, the link's class: `follow=CODE` (a student) or `teach=CODE&key=TOKEN` (the teacher)."""
    state = st.session_state
    if state.get("_class_link_read"):
        return
    # The link as first opened: read again on the next run while the store cannot be reached (the URL is rewritten).
    params = state.setdefault("_class_link", {k: v for k, v in st.query_params.to_dict().items() if k in PRIVATE})
    teach, key, follow = params.get("teach"), params.get("key"), params.get("follow")
    if teach is not None:
        wanted = class_store.normal_code(teach)
        if store().is_teacher(wanted, str(key or "")[:100]):
            state.update({ROLE: "teacher", CODE: wanted, TOKEN: str(key), "_class_link_read": True})
            return
        if store().state(wanted) is None:
            state[NOTICE] = f"The class {_code_md(wanted)} in this link has ended (or the code is wrong): the app is yours."
            state["_class_link_read"] = True
            return
        state[NOTICE] = (
            f"This link's teacher key does not steer class {_code_md(wanted)} (it was handed over, or the link was cut): "
            "you follow the class as a student."
        )
        follow = wanted
    if follow is not None:
        join(str(follow))
    state["_class_link_read"] = True


def _code_md(raw: str) -> str:
    """A code as typed (from a link or a box): literal, and cut short."""
    return md(raw, 12)


def join(raw: str) -> bool:
    """Follow the class with code `raw` (as typed); False, with a message, when there is none."""
    wanted = class_store.normal_code(raw)
    if not re.fullmatch(f"[{class_store.CODE_ALPHABET}]{{{class_store.CODE_LENGTH}}}", wanted) or (store().state(wanted) is None):
        st.session_state[NOTICE] = (
            f"There is no class {_code_md(raw)} on this server (it ended, or the code is mistyped): check the code on "
            "the teacher's screen."
        )
        return False
    _leave()
    st.session_state.update({ROLE: "student", CODE: wanted, FOLLOWING: True, APPLIED: None})
    return True


def steers_no_more() -> None:
    """The teacher's page found that its key no longer steers its class: it leaves the class, saying why (ended by
    itself, or from elsewhere; or handed over from another tab of the same key)."""
    now = store().state(code())
    _leave(ENDED if now is None else f"{class_store.NOT_TEACHER} You follow it no more; the app is yours.")


def follow(entries: dict, pages: tuple[str, ...]) -> None:
    """A following student takes the class's view when it has changed (before the page is chosen: it may switch)."""
    state = st.session_state
    if role() != "student":
        return
    now = store().state(code())
    if now is None:
        _leave(ENDED)
        return
    state["_class_now"] = now
    if not state.get(FOLLOWING) or state.get(APPLIED) == now.version:
        return
    view = urlstate.parse(now.params, tuple(entries), pages)
    session.seed(view, entries, presentation=bool(state.get("sel_presentation")))
    state[APPLIED], state[BASELINE] = now.version, None
    if now.page in pages and now.page != state.get("_link_page"):
        # Another page: switched to in a run of its own (app.py's `_goto`).
        state["_goto"] = now.page
        st.rerun()


def back_to_class() -> None:
    """Button callback: a student who stepped away follows again (the class's view now)."""
    st.session_state[FOLLOWING] = True
    st.session_state[APPLIED] = None


def shared_view(params: dict[str, str]) -> dict[str, str]:
    """The part of a link that a class shares: all but this browser's own parameters, with the query token."""
    view = {k: v for k, v in params.items() if k not in PRIVATE}
    view["q"] = str(st.session_state.get("sel_query", 0))
    return view


def on_sync(params: dict[str, str], page: str) -> dict[str, str]:
    """`session.sync_url`'s hook: the teacher's view goes to the class; a student's own change steps away.
    Returns the class's parameters for this session's link."""
    state, who = st.session_state, role()
    if who == "teacher":
        try:
            store().steer(code(), state[TOKEN], shared_view(params), page, state.get(NOTE))
        except ClassError as e:
            _leave(str(e))
            return {}
        except StoreUnavailable:  # the class is not lost: the next change reaches it once the store is back
            pass
        return {"teach": code(), "key": state[TOKEN]}
    if who == "student":
        if state.get(FOLLOWING):
            view = shared_view(params)
            if state.get(BASELINE) is None:
                state[BASELINE] = view
            elif view != state[BASELINE]:  # the student changed something: explore alone until "Back to the class"
                state[FOLLOWING] = False
                # The change may come from inside a page's fragment (the Attention page's head): the whole app
                # runs again, so that the sidebar and the box above the page say so and offer the way back.
                session.rerun_app()
        return {"follow": code()}
    return {}


@needs_store
def start(params: dict[str, str], page: str) -> None:
    """Start a class showing this session's view; this session becomes its teacher."""
    try:
        new, token = store().start(shared_view(params), page)
    except ClassError as e:
        st.session_state[NOTICE] = str(e)
        return
    _leave()
    st.session_state.update({ROLE: "teacher", CODE: new, TOKEN: token})


@needs_store
def end() -> None:
    try:
        store().end(code(), st.session_state[TOKEN])
    except ClassError:
        pass
    _leave("The class has ended: its students keep a working app of their own.")


@needs_store
def hand_over() -> None:
    """A new teacher key for another browser; this browser stops steering (and follows, as a student)."""
    try:
        token = store().hand_over(code(), st.session_state[TOKEN])
    except ClassError as e:
        _leave(str(e))
        return
    st.session_state["_class_handed"] = token
    held = code()
    _leave()
    st.session_state.update({ROLE: "student", CODE: held, FOLLOWING: True, APPLIED: None})


PUBLIC_URL_ENV = "ATTNVIZ_PUBLIC_URL"  # the address students reach this server at, when the teacher's is another


def server_address() -> str:
    """This server's address for students: $ATTNVIZ_PUBLIC_URL, else the one the teacher's browser reached it at."""
    public = os.environ.get(PUBLIC_URL_ENV, "").strip().rstrip("/")
    if re.fullmatch(r"https?://[^\s?#]+", public):
        return public
    try:
        url = st.context.url or ""
    except Exception:  # no browser (AppTest)
        url = ""
    base = re.match(r"https?://[^/?#]+", url)
    return base.group(0) if base else "http://localhost:8501"


def students_link(class_code: str) -> str:
    """The link students open: this server's address and the class code."""
    return f"{server_address()}/?follow={class_code}"


def is_local(address: str) -> bool:
    """An address only this machine reaches (a student's laptop cannot open it)."""
    return re.match(r"https?://(localhost|127\.|\[::1\])", address) is not None


@st.cache_data(max_entries=64, show_spinner=False)
def qr_png(link: str) -> bytes:
    """A QR code of the students' link (segno: made here, nothing fetched)."""
    import segno

    out = io.BytesIO()
    segno.make(link, error="m").save(out, kind="png", scale=10, border=2, dark="#111111")
    return out.getvalue()


def teacher_key_link(class_code: str, token: str) -> str:
    return f"{students_link(class_code).split('/?')[0]}/?teach={class_code}&key={token}"
