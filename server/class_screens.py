"""What a class and a lesson put on screen: the sidebar's "Class and lessons", the banner above a page, the polls.

The rules live in `classroom` (who steers, who follows) and `class_store` (the server's classes); a lesson's file
is read by `lessons`. Everything a teacher or a file wrote (a prompt, a lesson's words) is shown as literal text.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st
from streamlit.runtime.scriptrunner_utils.script_run_context import ThreadState, get_script_run_ctx

from server import class_questions, class_store, classroom, lessons, push, session, urlstate, widgets
from server.class_store import Note
from server.literal import md, text_block
from server.session import Context
from transformer.checkpoints import sources

LOCAL_NOTE = (
    "This address opens on this computer only. For students' devices, open the app at this machine's network "
    f"address, or start it with {classroom.PUBLIC_URL_ENV}=http://<address>:8501."
)
BANNER_PX = 40  # the one line a class adds above the page in presentation mode
LESSON, STEP = "_lesson", "_lesson_step"  # this session's lesson (a lessons.Lesson) and its step (0-based)


# ---------------------------------------------------------------------------------------------
# Lessons: a sequence of views; the step a teacher is on is every follower's.
# ---------------------------------------------------------------------------------------------


def _pages() -> tuple[str, ...]:
    return tuple(st.session_state.get("_pages", ()))


@st.cache_data(ttl=30, show_spinner=False)
def _shipped(checkpoints: tuple[str, ...], pages: tuple[str, ...]) -> list:
    return lessons.shipped(checkpoints, pages)


@st.cache_data(ttl=30, show_spinner=False, max_entries=16)
def _found(folders: tuple[str, ...], checkpoints: tuple[str, ...], pages: tuple[str, ...]) -> list:
    """Lessons in the models folders, each parsed (or its problems): [(path, lesson or None, problems)]."""
    from pathlib import Path

    out = []
    for path in lessons.find([Path(f) for f in folders]):
        try:
            out.append(
                (
                    str(path),
                    lessons.parse(path.read_bytes()[: lessons.MAX_BYTES + 1], path.name, checkpoints, pages, str(path)),
                    (),
                )
            )
        except lessons.LessonError as e:
            out.append((str(path), None, e.problems))
        except OSError as e:
            out.append((str(path), None, (f"Could not read it: {md(e)}",)))
    return out


def go_to_step(i: int) -> None:
    """Button callback: the lesson's step `i` becomes this session's view (and, for a teacher, the class's)."""
    state = st.session_state
    lesson = state.get(LESSON)
    if lesson is None:
        return
    i = max(0, min(i, len(lesson.steps) - 1))
    step = lesson.steps[i]
    entries = session.entries()
    view = urlstate.parse(step.link_params(), tuple(entries), _pages())
    session.seed(view, entries, presentation=bool(state.get("sel_presentation")))
    state["_goto"] = step.page
    state[STEP] = i
    state[classroom.NOTE] = Note(lesson.title, i, len(lesson.steps), step.title, step.explain, step.question is not None)
    state.pop(class_questions.SOLO, None)
    if classroom.role() == "student":  # a learner in a class who opens a lesson explores on their own
        state[classroom.FOLLOWING] = False


def start_lesson(lesson) -> None:
    st.session_state[LESSON] = lesson
    go_to_step(0)


def end_lesson() -> None:
    for key in (LESSON, STEP, classroom.NOTE, class_questions.SOLO):
        st.session_state.pop(key, None)


def _lesson_picker(sb) -> None:
    checkpoints, pages = tuple(session.entries()), _pages()
    choices: dict[str, object] = {}
    for lesson in _shipped(checkpoints, pages):
        choices[lesson.title] = lesson
    folders = tuple(str(f) for f in sources.models_folders())
    for path, lesson, problems in _found(folders, checkpoints, pages) if folders else ():
        if lesson is not None:
            choices[f"{lesson.title} ({path.rsplit('/', 1)[-1]})"] = lesson
        else:
            sb.warning(f"The lesson file {md(path)} has mistakes: " + " · ".join(problems[:5]))
    uploaded = sb.file_uploader(
        "Your own lesson (.toml or .json)",
        type=["toml", "json"],
        key="lesson_file",
        help="A lesson is a few steps, each a view (checkpoint, text, page, kind, layer, head, options) with a few "
        "sentences and, if you like, a question. README: Lessons.",
    )
    if uploaded is not None:
        try:
            mine = lessons.parse(uploaded.getvalue()[: lessons.MAX_BYTES + 1], uploaded.name, checkpoints, pages)
            choices = {f"{mine.title} (your file)": mine, **choices}
        except lessons.LessonError as e:
            sb.error(f"The lesson {md(uploaded.name, 80)} cannot be used:\n\n" + "\n\n".join(f"- {p}" for p in e.problems[:20]))
    if not choices:
        return
    sb.selectbox("Lesson", list(choices), key="lesson_pick")  # titles: plain text in a select box
    st.session_state["_lesson_choices"] = choices
    sb.button("Start this lesson", key="lesson_start", on_click=_start_picked)


def _start_picked() -> None:
    """Button callback: the lesson chosen in the box at the moment of the click."""
    choices = st.session_state.get("_lesson_choices") or {}
    lesson = choices.get(st.session_state.get("lesson_pick"))
    if lesson is not None:
        start_lesson(lesson)


def lesson_note(ctx: Context | None) -> None:
    """The current step's words beside the view, with the steps to go (for whoever drives: the teacher, or a learner)."""
    state = st.session_state
    lesson, follower = state.get(LESSON), classroom.role() == "student" and state.get(classroom.FOLLOWING)
    now = classroom.store().state(classroom.code()) if classroom.role() is not None else None
    note = now.note if follower and now is not None else state.get(classroom.NOTE) if lesson is not None else None
    if note is None:
        return
    with st.container(border=True):
        head, nav = st.columns([3, 2], vertical_alignment="center")
        with head:
            st.caption(f"Lesson · step {note.step + 1} of {note.steps}")
            st.html(text_block(f"{note.lesson} — {note.title}", 250, "1.1rem", bold=True))
        if not follower and lesson is not None:
            a, b, c = nav.columns(3)
            a.button("◀ Back", key="lesson_prev", on_click=go_to_step, args=(note.step - 1,), disabled=note.step == 0)
            b.button(
                "Next ▶", key="lesson_next", on_click=go_to_step, args=(note.step + 1,), disabled=note.step + 1 >= note.steps
            )
            c.button("✕ End", key="lesson_end", on_click=end_lesson)
        if note.asks and not _revealed(now):
            with st.expander("Explanation: it answers the question, so open it after the reveal"):
                st.html(text_block(note.explain, class_store.MAX_NOTE_CHARS))
        else:
            st.html(text_block(note.explain, class_store.MAX_NOTE_CHARS))
        step = lesson.steps[note.step] if lesson is not None and not follower else None
        if step is not None and step.question is not None and ctx is not None:
            why = class_questions.can_ask(ctx, step.question.type)
            if why is None:
                label = "Ask the class" if classroom.role() == "teacher" else "Try the question"
                st.button(label, key="lesson_ask", on_click=_ask_step, args=(ctx, step.question), type="primary")


def _revealed(now) -> bool:
    """Whether this step's question has been answered: revealed to the class, or answered by a learner alone."""
    if now is not None:
        return now.question is not None and now.question.revealed
    solo = st.session_state.get(class_questions.SOLO)
    return solo is not None and solo[1] is not None


def _on_screen(ctx: Context) -> Context:
    """`ctx` with the head on screen at the moment of a click: a page's fragment (the Attention page's layer and head)
    moves the selection without redrawing the sidebar or the lesson box that drew the button."""
    state = st.session_state
    return replace(ctx, layer=int(state.get("sel_layer", ctx.layer)), head=int(state.get("sel_head", ctx.head)))


def _ask_step(ctx: Context, spec) -> None:
    ctx = _on_screen(ctx)
    question = _make(ctx, spec.type, ctx.query, spec.prompt)
    if classroom.role() == "teacher":
        class_questions.ask(classroom.code(), st.session_state[classroom.TOKEN], question)
    else:
        class_questions.ask_solo(question)


def _make(ctx: Context, kind: str, position: int, prompt: str | None):
    if kind == "attend":
        n = len(ctx.trace.query_tokens(ctx.kind))
        return class_questions.attend(ctx, min(position, n - 1), prompt)
    n = len(class_questions.next_positions(ctx))
    return class_questions.next_token(ctx, min(position, n - 1) if position else n - 1, prompt)


# ---------------------------------------------------------------------------------------------
# The sidebar: teach, join, ask, hand over, end; lessons.
# ---------------------------------------------------------------------------------------------


def _start() -> None:
    """Button callback: a class starts on the view this session's link shows now (the last run's)."""
    params = {k: v for k, v in st.query_params.to_dict().items() if isinstance(v, str)}
    classroom.start(params, st.session_state.get("_link_page") or "attention")


@classroom.needs_store
def _join() -> None:
    classroom.join(st.session_state.get("class_join_code") or "")


def _leave_class() -> None:
    classroom._leave("You left the class: the app is yours.")


def sidebar(ctx: Context | None) -> None:
    """The sidebar's class (teach one, join one, or this session's part in one) and its lessons."""
    who = classroom.role()
    st.divider()
    st.markdown("**Class**")
    if who is None:
        st.button(
            "Teach this class",
            key="class_teach",
            on_click=_start,
            type="primary",
            help="Start a class: every student who opens its link sees what you see, as you change it.",
        )
        left, right = st.columns([3, 2], vertical_alignment="bottom")
        left.text_input("Join a class: its code", key="class_join_code", max_chars=12, placeholder="e.g. K7P2Q")
        right.button("Join", key="class_join", on_click=_join)
    elif who == "teacher":
        _teacher_panel(ctx)
    else:
        _student_panel()
    with st.expander("Lessons", expanded=st.session_state.get(LESSON) is not None):
        if who == "student":
            st.caption("Your class's teacher leads its lesson. Leave the class to step through a lesson on your own.")
        else:
            _lesson_picker(st)


def _teacher_panel(ctx: Context | None) -> None:
    code = classroom.code()
    link = classroom.students_link(code)
    st.markdown(f"Class code: **:blue[{code}]**")  # our own alphabet: nothing to escape
    st.code(link, language=None)
    st.image(classroom.qr_png(link), width=180)

    def followers() -> None:  # also the teacher's screen calling in: the class is not idle while it is open
        try:
            if not classroom.store().is_teacher(code, st.session_state.get(classroom.TOKEN, "")):
                classroom.steers_no_more()  # ended, or handed over from another browser: the next run says so
                st.rerun(scope="app")
            now = classroom.store().state(code)
        except class_store.StoreUnavailable:
            st.caption(classroom.UNAVAILABLE)
            return
        st.caption(f"{now.followers if now else 0} following · you steer: they see what you see.")

    session.fragment(followers, run_every=classroom.TEACHER_POLL_SECONDS, widgets=False)()
    st.toggle("Show the code on the main screen", key="class_show_code", value=True)
    if ctx is not None and ctx.tokens is not None:
        with st.popover("Ask the class", icon=":material/help:", use_container_width=True):
            _ask_form(ctx)
    a, b = st.columns(2)
    with a.popover("Hand over"):
        st.caption("Open this link in the browser that will steer the class; this one then follows it.")
        st.button("Make the link", key="class_hand_over", on_click=classroom.hand_over)
    b.button("End class", key="class_end", on_click=classroom.end)


def _ask_form(ctx: Context) -> None:
    types = {"attend": "Where will this head look?", "next": "Which token comes next?"}
    kind = st.radio("Question", list(types), format_func=types.get, key="ask_type")
    why = class_questions.can_ask(ctx, kind)
    if why is not None:
        st.info(why)
        return
    if kind == "attend":
        tokens = ctx.trace.query_tokens(ctx.kind)
        label = f"From the query token ({ctx.kind}, the head on screen)"
    else:
        tokens = class_questions.next_positions(ctx)
        label = "After the token"
    shown = class_questions.shown_tokens(tokens)
    # a query picked on the Q, K, V page; else one from the middle of the text (the first is often [BOS] or [CLS])
    default = (ctx.query or len(tokens) // 2) if kind == "attend" else len(tokens) - 1
    default = min(default, len(tokens) - 1)
    position = st.selectbox(label, range(len(tokens)), index=default, format_func=lambda i: f"{i}·{shown[i]}", key="ask_pos")
    st.text_input("Your question (optional)", key="ask_prompt", max_chars=class_store.MAX_PROMPT_CHARS)

    def ask() -> None:
        state = st.session_state  # the choices as they are at the click
        question = _make(
            _on_screen(ctx), state.get("ask_type", kind), int(state.get("ask_pos", position)), state.get("ask_prompt") or None
        )
        class_questions.ask(classroom.code(), st.session_state[classroom.TOKEN], question)

    st.button("Ask", key="ask_go", type="primary", on_click=ask)


def _student_panel() -> None:
    code = classroom.code()
    if st.session_state.get(classroom.FOLLOWING):
        st.markdown(f"Following class **{code}**: your screen shows the teacher's.")
    else:
        st.markdown(f"Class **{code}**: you are exploring on your own.")
        st.button("Back to the class", key="class_back_sb", on_click=classroom.back_to_class, type="primary")
    handed = st.session_state.get("_class_handed")
    if handed:
        st.caption("The link that steers this class now (open it in the other browser):")
        st.code(classroom.teacher_key_link(code, handed), language=None)
    st.button("Leave the class", key="class_leave", on_click=_leave_class)


# ---------------------------------------------------------------------------------------------
# Above the page: notices, the code for the projector, "Back to the class", the lesson's words, the question.
# ---------------------------------------------------------------------------------------------


def _code_box(code: str, link: str) -> None:
    """The students' link, the code in large type and its QR code, above the page (for the projector)."""
    with st.container(border=True):
        left, right = st.columns([4, 1], vertical_alignment="center")
        left.markdown(f"## Join the class: **:blue[{code}]**")
        left.markdown(f"Open **{link}** (or scan the code) to follow this screen.")
        if classroom.is_local(link):
            left.caption(LOCAL_NOTE)
        right.image(classroom.qr_png(link), width=130)


def banner(ctx: Context | None) -> None:
    state = st.session_state
    notice = state.pop(classroom.NOTICE, None)
    if notice:
        st.info(notice)
    who = classroom.role()
    state[widgets.ABOVE_PX] = 0
    if who == "teacher" and state.get("class_show_code", True):
        code = classroom.code()
        link = classroom.students_link(code)
        if state.get("sel_presentation"):  # on a projector: one line, and the figure below keeps the screen
            st.markdown(f"Join the class: **{link}** · code **:blue[{code}]** (the QR code is in the sidebar)")
            state[widgets.ABOVE_PX] = BANNER_PX
            st.html(f"<style>{widgets.presented_css(widgets.PRESENTED_TOP_PX + BANNER_PX)}</style>")
        else:
            _code_box(code, link)
    now = state.get("_class_now") if who == "student" else None
    if now is not None and now.teacher_away:
        st.warning(
            f"The teacher's screen has not been seen for over a minute: class {classroom.code()} may be over. "
            f"It ends by itself after {class_store.IDLE_SECONDS / 60:.0f} minutes; the app keeps working for you."
        )
    if who == "student" and not state.get(classroom.FOLLOWING):
        with st.container(border=True):
            left, right = st.columns([4, 1], vertical_alignment="center")
            left.markdown(f"You are exploring on your own; class **{classroom.code()}** goes on without you.")
            right.button("Back to the class", key="class_back", on_click=classroom.back_to_class, type="primary")
    lesson_note(ctx)
    _question(ctx)


def _question(ctx: Context | None) -> None:
    state, who = st.session_state, classroom.role()
    present = bool(state.get("sel_presentation"))
    if who in ("teacher", "student"):
        now = classroom.store().state(classroom.code())
        if now is None or now.question is None:
            return
        with st.container(border=True):
            (class_questions.teacher if who == "teacher" else class_questions.student)(now.question, present)
    elif state.get(class_questions.SOLO) is not None:
        with st.container(border=True):
            class_questions.student(state[class_questions.SOLO][0], present)


STORE_LOST = "_class_poll_lost"  # a follower's poll found the store unreachable (and the app has said so)


def poll() -> None:
    """A follower's poll: whether the class's view changed, and if so a rerun of the app. The server runs it when the
    class moves (`server/push.py`), and the browser every POLL_SECONDS in case a push is lost.

    Drawn by app.py above every page, so that it polls on every page. When the class moves to another page, the
    polls this browser asked for before it heard of the move are run on the page it left: `session.fragment`
    turns those into a redraw of the new page.
    """
    if classroom.role() != "student":
        if (run := get_script_run_ctx()) is not None:
            push.leave(run.session_id)
        return
    code, state = classroom.code(), st.session_state

    def check() -> None:
        try:
            polled = classroom.store().poll(code, classroom.browser())
        except class_store.StoreUnavailable:  # polled again in POLL_SECONDS: the class goes on when the store is back
            if not state.get(STORE_LOST):  # once: a run of the app says that classes are unavailable
                state[STORE_LOST] = True
                st.rerun(scope="app")
            st.empty()
            return
        if (ctx := get_script_run_ctx()) is not None:  # the watcher runs this poll when the class moves (`push`)
            push.follow(ctx.session_id, classroom.store(), code, ThreadState.get().fragment_id, polled)
        if state.pop(STORE_LOST, None):  # back: a run of the app takes the class's view and drops the message
            st.rerun(scope="app")
        if polled is None:  # the class has ended: the next run says so
            st.rerun(scope="app")
        version, asked, away = polled
        seen = state.get("_class_now")
        if state.get(classroom.FOLLOWING) and version != state.get(classroom.APPLIED):
            st.rerun(scope="app")  # a new view (or question) to take (`classroom.follow`)
        st.empty()  # the fragment owns one (empty) element in its box
        if seen is not None and (asked != seen.asked or away != seen.teacher_away):  # a question; the teacher gone
            st.rerun(scope="app")

    with st.container(key="class_poll", height=1, border=False):  # the poll's own box (see `poll`'s docstring)
        session.fragment(check, run_every=classroom.POLL_SECONDS, widgets=False)()
