"""The rules of a class, on the store's interface: who steers, one answer per browser, limits, time.

Written against `ClassStore` through the `store` fixture, so that every implementation (the in-process one here;
a shared store for a deployment of several processes) passes the same tests.
"""

from __future__ import annotations

import re

import pytest

from server import class_store
from server.class_store import ClassError, MemoryStore, Note, Question

VIEW = {"checkpoint": "translator", "text": "the cat sees the dog", "kind": "cross", "layer": "1", "head": "1", "q": "0"}


@pytest.fixture(params=["memory"])
def store(request):
    return MemoryStore(clock=lambda: 1000.0)


def question(n: int = 3) -> Question:
    return Question(0, "attend", "Where?", tuple(f"t{i}" for i in range(n)), tuple(1 / n for _ in range(n)), ())


def test_a_class_starts_with_a_readable_code_and_the_teachers_view(store):
    code, token = store.start(VIEW, "attention")
    assert re.fullmatch(f"[{class_store.CODE_ALPHABET}]{{5}}", code)
    assert not set(code) & set("0O1IL25SZ8B")  # nothing to misread from the back of a room
    state = store.state(code)
    assert dict(state.params) == VIEW and state.page == "attention" and state.question is None
    assert store.is_teacher(code, token)
    # a code typed in lower case, with a space or a dash, is the same class
    assert store.state(f"{code[:2].lower()}-{code[2:]} ").code == code


def test_only_the_teachers_token_steers(store):
    code, token = store.start(VIEW, "attention")
    v = store.poll(code)[0]
    assert store.steer(code, token, {**VIEW, "head": "2"}, "attention") == v + 1
    assert store.steer(code, token, {**VIEW, "head": "2"}, "attention") == v + 1  # nothing changed: same version
    for forged in ("", "x", token[:-1], token + "x", token.upper()):
        assert not store.is_teacher(code, forged)
        with pytest.raises(ClassError, match="does not steer"):
            store.steer(code, forged, {**VIEW, "head": "3"}, "qkv")
        with pytest.raises(ClassError):
            store.ask(code, forged, question())
        with pytest.raises(ClassError):
            store.end(code, forged)
    assert store.state(code).params["head"] == "2"
    other, other_token = store.start(VIEW, "attention")
    with pytest.raises(ClassError):  # one class's token steers no other class
        store.steer(other, token, VIEW, "qkv")


def test_hand_over_gives_a_new_token_and_the_old_one_stops(store):
    code, token = store.start(VIEW, "attention")
    new = store.hand_over(code, token)
    assert new != token and store.is_teacher(code, new) and not store.is_teacher(code, token)
    with pytest.raises(ClassError):
        store.steer(code, token, VIEW, "qkv")
    store.steer(code, new, VIEW, "qkv")
    assert store.state(code).page == "qkv"


def test_ending_a_class_leaves_nothing(store):
    code, token = store.start(VIEW, "attention")
    store.end(code, token)
    assert store.state(code) is None and store.poll(code) is None and not store.is_teacher(code, token)
    with pytest.raises(ClassError, match="ended"):
        store.steer(code, token, VIEW, "attention")


def test_one_answer_per_browser_counted_and_revealed(store):
    code, token = store.start(VIEW, "attention")
    asked = store.ask(code, token, question(3))
    assert asked.number == 1 and asked.counts == (0, 0, 0) and not asked.revealed
    v, asked, _ = store.poll(code)
    assert store.answer(code, 1, "browser-a", 2)
    assert not store.answer(code, 1, "browser-a", 0)  # the same browser again: refused, its first answer kept
    assert store.answer(code, 1, "browser-b", 2) and store.answer(code, 1, "browser-c", 0)
    assert store.state(code).question.counts == (1, 0, 2)
    assert store.poll(code) == (v, asked, False)  # answers do not make every follower redraw
    with pytest.raises(ClassError, match="not one of the choices"):
        store.answer(code, 1, "browser-d", 3)
    assert not store.answer(code, 2, "browser-d", 0)  # a question that is not the current one
    shown = store.reveal(code, token)
    assert shown.revealed and shown.counts == (1, 0, 2) and store.poll(code)[:2] == (v + 1, asked + 1)
    assert not store.answer(code, 1, "browser-d", 1)  # after the reveal: closed
    again = store.ask(code, token, question(2))  # a new question: new number, nobody has answered it
    assert again.number == 2 and again.counts == (0, 0)
    assert store.answer(code, 2, "browser-a", 1)
    store.close_question(code, token)
    assert store.state(code).question is None
    # numbers never repeat in a class: a browser's answer to question 2 is not taken for a later question's
    assert store.ask(code, token, question(2)).number == 3
    assert store.answer(code, 3, "browser-a", 0)


def test_answers_are_bounded(store, monkeypatch):
    monkeypatch.setattr(class_store, "MAX_ANSWERS", 3)
    code, token = store.start(VIEW, "attention")
    store.ask(code, token, question(2))
    for b in "abc":
        assert store.answer(code, 1, b, 0)
    with pytest.raises(ClassError, match="most answers"):
        store.answer(code, 1, "d", 0)


def test_a_question_needs_choices_with_the_models_numbers(store):
    code, token = store.start(VIEW, "attention")
    with pytest.raises(ClassError):
        store.ask(code, token, Question(0, "attend", "?", ("a",), (1.0,), ()))
    with pytest.raises(ClassError):
        store.ask(code, token, Question(0, "attend", "?", ("a", "b"), (1.0,), ()))
    with pytest.raises(ClassError):
        store.ask(code, token, Question(0, "guess", "?", ("a", "b"), (0.5, 0.5), ()))
    long = store.ask(code, token, Question(0, "next", "x" * 1000, ("<b>a</b>", "b"), (0.5, 0.5), ()))
    assert len(long.prompt) == class_store.MAX_PROMPT_CHARS and long.options[0] == "<b>a</b>"  # kept as typed


def test_a_server_holds_a_bounded_number_of_classes(store, monkeypatch):
    monkeypatch.setattr(class_store, "MAX_CLASSES", 3)
    for _ in range(3):
        store.start(VIEW, "attention")
    with pytest.raises(ClassError, match="already holds 3 classes"):
        store.start(VIEW, "attention")


def test_an_idle_class_ends_by_itself():
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    code, token = store.start(VIEW, "attention")
    now[0] = class_store.IDLE_SECONDS - 1
    store.steer(code, token, VIEW, "qkv")  # the teacher's call keeps it alive
    now[0] += class_store.IDLE_SECONDS - 1
    assert store.state(code) is not None
    now[0] += 2
    assert store.state(code) is None and store.poll(code) is None


def test_a_view_change_is_not_a_question_change(store):
    code, token = store.start(VIEW, "attention")
    v, asked, _ = store.poll(code)
    store.steer(code, token, {**VIEW, "head": "3"}, "attention")
    assert store.poll(code)[:2] == (v + 1, asked)  # a student who stepped away need not redraw
    store.ask(code, token, question())
    store.close_question(code, token)
    assert store.poll(code)[:2] == (v + 3, asked + 2)


def test_followers_are_told_when_the_teachers_screen_has_gone():
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    code, token = store.start(VIEW, "attention")
    now[0] = class_store.TEACHER_AWAY_SECONDS + 1
    assert store.poll(code)[2] and store.state(code).teacher_away
    assert store.is_teacher(code, token)  # the teacher's page calls in
    assert not store.poll(code)[2] and not store.state(code).teacher_away


def test_followers_are_counted_while_they_poll():
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    code, _ = store.start(VIEW, "attention")
    for b in ("a", "b", "c", "a"):
        store.poll(code, b)
    assert store.state(code).followers == 3
    now[0] += class_store.FOLLOWER_SECONDS + 1
    store.poll(code, "a")
    assert store.state(code).followers == 1


def test_a_view_too_large_is_refused(store):
    code, token = store.start(VIEW, "attention")
    with pytest.raises(ClassError, match="too large"):
        store.steer(code, token, {**VIEW, "text": "x" * (class_store.MAX_PARAM_CHARS + 1)}, "attention")
    with pytest.raises(ClassError, match="too large"):
        store.steer(code, token, {f"p{i}": "1" for i in range(class_store.MAX_PARAMS + 1)}, "attention")
    with pytest.raises(ClassError, match="too long"):
        store.steer(code, token, VIEW, "attention", Note("L", 0, 1, "t", "x" * class_store.MAX_NOTE_CHARS))


def test_the_lesson_note_travels_with_the_view(store):
    code, token = store.start(VIEW, "attention")
    note = Note("Heads with jobs", 2, 6, "An alignment head", "Each word of the translation looks at …")
    v = store.steer(code, token, VIEW, "attention", note)
    assert store.state(code).note == note and store.steer(code, token, VIEW, "attention", note) == v


def test_browser_ids_hash_the_cookie():
    a = class_store.browser_id("2|abc|def|123", "s1")
    assert a == class_store.browser_id("2|abc|def|123", "s2") and "abc" not in a  # one browser, any tab
    # Streamlit re-masks its XSRF cookie on every page load (a new tab): the same token, another text
    token = bytes(range(16))
    masks = (b"\x01\x02\x03\x04", b"\xff\x00\xaa\x55")
    cookies = [f"2|{m.hex()}|{bytes(b ^ m[i % 4] for i, b in enumerate(token)).hex()}|1700000000" for m in masks]
    assert cookies[0] != cookies[1]
    assert class_store.browser_id(cookies[0], "s1") == class_store.browser_id(cookies[1], "s2")
    other = f"2|{masks[0].hex()}|{bytes(16).hex()}|1700000000"
    assert class_store.browser_id(other, "s1") != class_store.browser_id(cookies[0], "s1")
    assert class_store.browser_id(None, "s1") != class_store.browser_id(None, "s2")  # no cookie: each session its own
