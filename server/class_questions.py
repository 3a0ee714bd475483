"""A question to the class on the current view: made from the model's own numbers, answered, revealed.

Two kinds: "attend" (from a query token, which key will this head look at? the answer is the head's weight row)
and "next" (which token comes next? the answer is the model's next-token distribution). A question carries its
choices and the model's numbers for them, so a student's screen draws it without running the model. In a class
the store counts the answers (`class_store`); a learner alone with a lesson answers a question of their own, in
this session, and sees the reveal at once.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache, partial

import streamlit as st

from server import class_store, classroom, session, widgets
from server.class_store import ClassError, Question
from server.literal import md, text_block
from server.session import Context
from viz import class_figures
from viz.labels import shown_tokens

NEXT_CHOICES = 6  # a "next" question offers the model's likeliest tokens, in alphabetical order (no hint in the order)
SOLO = "_solo_question"  # a lesson's question to a learner alone: (question, their answer or None)
ANSWERED = "_class_answered"  # a student's answers: {(code, question number): choice}


def can_ask(ctx: Context, kind: str) -> str | None:
    """Why a question of `kind` cannot be asked on this view (None: it can)."""
    if ctx is None or ctx.tokens is None:
        return "There is no text to ask about."
    if kind == "next" and ctx.ckpt.config.kind == "encoder":
        return "This model predicts no next token (an encoder): ask where a head looks instead."
    if kind == "attend" and len(ctx.trace.key_tokens(ctx.kind)) > class_store.MAX_OPTIONS:
        return f"This text has more than {class_store.MAX_OPTIONS} tokens: too many to answer on a phone. Shorten it."
    return None


def _token(tokens, i: int) -> str:
    return shown_tokens(tokens)[i]


def attend(ctx: Context, query: int, prompt: str | None = None) -> Question:
    """From query token `query` of the selected head, which key? The model's answer: that head's weight row."""
    trace = ctx.trace
    queries, keys = trace.query_tokens(ctx.kind), trace.key_tokens(ctx.kind)
    row = trace.head(ctx.kind, ctx.layer, ctx.head)["weights"][query].float().tolist()  # (n_keys,)
    word = _token(queries, query)
    where = f"{ctx.kind} · layer {ctx.layer} · head {ctx.head} · from {query}·{word}"
    default = f"From “{word}”, which word will {ctx.kind} layer {ctx.layer}, head {ctx.head} look at most?"
    return Question(0, "attend", (prompt or default).strip(), tuple(keys), tuple(row), (), where=where)


def next_positions(ctx: Context) -> tuple[str, ...]:
    """The tokens a "next" question may follow: the decoder's (or a decoder-only model's) tokens."""
    trace = ctx.trace
    return trace.target.tokens if trace.target is not None else trace.source.tokens


def next_token(ctx: Context, position: int, prompt: str | None = None) -> Question:
    """Which token comes after position `position`? Choices: the model's likeliest, alphabetically; its answer: their
    probabilities."""
    probs = ctx.trace.probs[0][position].float()  # (vocab,)
    p, ids = probs.topk(min(NEXT_CHOICES, probs.shape[-1]))
    tok = ctx.ckpt.tokenizer
    pairs = sorted(((tok.id_to_token(int(i)) or f"#{int(i)}", float(v)) for i, v in zip(ids, p)), key=lambda t: t[0])
    word = _token(next_positions(ctx), position)
    where = f"next token after {position}·{word}"
    default = f"Which token comes next, after “{word}”?"
    return Question(
        0, "next", (prompt or default).strip(), tuple(t for t, _ in pairs), tuple(v for _, v in pairs), (), where=where
    )


def model_name(question: Question) -> str:
    return "attention weight" if question.type == "attend" else "probability"


def ask_solo(question: Question) -> None:
    st.session_state[SOLO] = (question, None)


@classroom.needs_store
def _answer(number: int, choice: int) -> None:
    """A student's click: one answer per browser per question (the store refuses a second)."""
    state = st.session_state
    if classroom.role() == "student":
        try:
            classroom.store().answer(classroom.code(), number, classroom.browser(), choice)
        except ClassError as e:
            state[classroom.NOTICE] = str(e)
            return
        state.setdefault(ANSWERED, {}).setdefault((classroom.code(), number), choice)
    elif state.get(SOLO) is not None and state[SOLO][1] is None:
        question, _ = state[SOLO]
        counts = [0] * len(question.options)
        counts[choice] = 1
        state[SOLO] = (replace(question, counts=tuple(counts), revealed=True), choice)


def _on_pick(key: str, number: int, n: int) -> None:
    value = st.session_state.get(key)
    if key.endswith("_row"):
        choice = class_figures.picked(value.selection.points if value is not None else [], n)
    else:
        choice = value
    if choice is not None:
        _answer(number, int(choice))


@lru_cache(maxsize=64)
def _reveal_figure(options: tuple, model: tuple, counts: tuple, name: str, presentation: bool):
    """One figure per revealed question (and presentation mode), shared by every screen that shows it: after the
    reveal, each follower's run drew it again (~10 ms of Plotly validation each, 30 followers at once). Only drawn,
    never changed (Streamlit serialises a copy)."""
    return class_figures.reveal(options, model, list(counts), name, presentation)


def _reveal_chart(question: Question, presentation: bool, key: str) -> None:
    figure = _reveal_figure(
        tuple(question.options), tuple(question.model), tuple(question.counts), model_name(question), presentation
    )
    widgets.chart(figure, key=key)
    best = max(range(len(question.options)), key=lambda i: question.model[i])
    st.caption(
        f"The model: {md(shown_tokens(question.options)[best])} ({question.model[best]:.3f}) · {md(question.where)}. "
        "These are the numbers the model computed for this view."
    )


def student(question: Question, presentation: bool) -> None:
    """A student's (or a learner's) side: answer once, then wait for the reveal (a learner alone sees it at once)."""
    in_class = classroom.role() == "student"
    mine = (
        st.session_state.get(ANSWERED, {}).get((classroom.code(), question.number))
        if in_class
        else (st.session_state.get(SOLO) or (None, None))[1]
    )
    st.caption(f"Question {question.number}" if in_class else "Question")
    st.html(text_block(question.prompt, class_store.MAX_PROMPT_CHARS, "1.2rem", bold=True))
    if question.revealed:
        if mine is not None:
            st.caption(f"You answered {md(shown_tokens(question.options)[mine])}.")
        _reveal_chart(question, presentation, key=f"q_reveal_{question.number}")
        return
    if mine is not None:
        st.success(f"You answered {md(shown_tokens(question.options)[mine])}. Wait for the teacher to reveal the answers.")
        return
    labels = shown_tokens(question.options)
    if question.type == "attend":
        query = question.where.rsplit("from ", 1)[-1]
        row = f"q_{question.number}_row"
        widgets.chart(
            class_figures.hidden_row(question.options, query, presentation),
            key=row,
            on_select=partial(_on_pick, row, question.number, len(labels)),
            selection_mode="points",
        )
    pick = f"q_{question.number}_pick"
    st.pills(
        "Click a word above, or pick it here:" if question.type == "attend" else "Pick the token you expect next:",
        range(len(labels)),
        format_func=lambda i: labels[i],
        key=pick,
        on_change=_on_pick,
        args=(pick, question.number, len(labels)),
    )


@classroom.needs_store
def _reveal() -> None:
    try:
        classroom.store().reveal(classroom.code(), st.session_state[classroom.TOKEN])
    except ClassError as e:
        st.session_state[classroom.NOTICE] = str(e)


@classroom.needs_store
def _close() -> None:
    try:
        classroom.store().close_question(classroom.code(), st.session_state[classroom.TOKEN])
    except ClassError as e:
        st.session_state[classroom.NOTICE] = str(e)


def teacher(question: Question, presentation: bool) -> None:
    """The teacher's side: the question, how many have answered (live), the reveal."""
    st.caption(f"Question {question.number} to the class")
    st.html(text_block(question.prompt, class_store.MAX_PROMPT_CHARS, "1.2rem", bold=True))
    if question.revealed:
        _reveal_chart(question, presentation, key=f"q_reveal_{question.number}")
        st.button("Close the question", key="q_close", on_click=_close)
        return

    def count() -> None:
        try:
            now = classroom.store().state(classroom.code())
        except class_store.StoreUnavailable:
            st.caption(classroom.UNAVAILABLE)
            return
        if now is None or now.question is None or now.question.number != question.number:
            return
        st.markdown(f"**{now.question.answered}** answered · {now.followers} following")

    left, right = st.columns([3, 2], vertical_alignment="center")
    with left:
        session.fragment(count, run_every=classroom.TEACHER_POLL_SECONDS / 2, widgets=False)()
    with right:
        a, b = st.columns(2)
        a.button("Reveal", key="q_reveal", type="primary", on_click=_reveal)
        b.button("Cancel", key="q_cancel", on_click=_close)


@classroom.needs_store
def ask(code: str, token: str, question: Question) -> None:
    try:
        classroom.store().ask(code, token, question)
    except ClassError as e:
        st.session_state[classroom.NOTICE] = str(e)
