"""A class in the app (AppTest): who steers, who follows, stepping away, one answer per browser, literal text.

Two AppTests in one process share the server's store (`classroom.store()` is cached for the process), as two
browsers on one server do. Chromium tests of the same rules with a teacher and three students:
tests/browser/test_class.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from server import class_store, classroom, session

pytestmark = pytest.mark.timeout(600)
APP = str(Path(__file__).resolve().parent.parent / "app.py")


def run(params: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for k, v in (params or {}).items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def view(at: AppTest) -> dict[str, str]:
    """What a link shows (the class's part of it)."""
    return {k: v for k, v in at.query_params.items() if k not in classroom.PRIVATE}


def texts(at: AppTest) -> str:
    parts = [m.value for kind in (at.markdown, at.caption, at.info, at.warning, at.success) for m in kind]
    return "\n".join(parts + [h.value for h in at.get("html")])


@pytest.fixture
def teacher() -> AppTest:
    at = run()
    at.button(key="class_teach").click().run()
    assert "teach" in at.query_params and "key" in at.query_params
    code, key = at.query_params["teach"], at.query_params["key"]
    yield at
    if classroom.store().is_teacher(code, key):  # no class left behind for the next test
        classroom.store().end(code, key)


def follow(code: str) -> AppTest:
    at = run({"follow": code})
    assert at.query_params["follow"] == code and "teach" not in at.query_params
    return at


def test_a_student_follows_the_teachers_view(teacher):
    code = teacher.query_params["teach"]
    student = follow(code)
    assert view(student) == view(teacher)
    assert "Following class" in texts(student) and code in texts(student)
    teacher.button(key="attn_next_head").click().run()
    student.run()
    assert view(student)["head"] == view(teacher)["head"] and view(student) == view(teacher)
    # the text too: the teacher types, the student reads it
    teacher.text_area(key="w_text").set_value("the cat sees the dog .").run()
    student.run()
    assert view(student)["text"] == "the cat sees the dog ."
    # the teacher's key never reaches a student's link
    assert teacher.query_params["key"] not in str(dict(student.query_params))


def test_a_students_change_steps_away_and_back(teacher):
    code = teacher.query_params["teach"]
    student, other = follow(code), follow(code)
    before = view(teacher)
    student.button(key="attn_next_head").click().run()
    assert view(student)["head"] != before["head"]
    assert view(teacher) == before  # a student's change never reaches the teacher
    teacher.button(key="attn_prev_layer").click().run()
    student.run()
    other.run()
    assert view(other) == view(teacher)  # the others follow
    assert view(student)["layer"] == before["layer"]  # the student who stepped away keeps their own view
    assert "exploring on your own" in texts(student)
    student.button(key="class_back").click().run()
    student.run()
    assert view(student) == view(teacher)
    teacher.button(key="attn_next_head").click().run()
    student.run()
    assert view(student) == view(teacher)  # and follows again


def test_a_forged_or_cut_teacher_key_is_refused(teacher):
    code, key = teacher.query_params["teach"], teacher.query_params["key"]
    for forged in ("wrong", key[:-1], ""):
        at = run({"teach": code, "key": forged})
        assert "does not steer" in texts(at)
        assert at.query_params.get("follow") == code and "teach" not in at.query_params  # it follows, as a student
        at.button(key="attn_next_head").click().run()  # its change reaches nobody
        assert classroom.store().state(code).params["head"] == view(teacher)["head"]
    stale = run({"teach": "AAAAA", "key": key})
    assert "has ended" in texts(stale) and "follow" not in stale.query_params and "teach" not in stale.query_params


def test_a_reloaded_teacher_keeps_the_class(teacher):
    code, key = teacher.query_params["teach"], teacher.query_params["key"]
    again = run(dict(teacher.query_params))  # the same link, in a new session
    assert again.query_params["teach"] == code and again.query_params["key"] == key
    student = follow(code)
    again.button(key="attn_next_head").click().run()
    student.run()
    assert view(student)["head"] == view(again)["head"]


def test_a_wrong_code_gets_a_plain_message_and_a_working_app():
    at = run({"follow": "<b>NOPE</b>"})
    assert "There is no class" in texts(at) and "<b>NOPE</b>" in texts(at)  # quoted as typed, in a code span
    assert "follow" not in at.query_params
    assert at.get("plotly_chart")  # the app works


def test_one_answer_per_browser_and_the_reveal(teacher):
    code = teacher.query_params["teach"]
    students = [follow(code) for _ in range(3)]
    teacher.radio(key="ask_type").set_value("attend").run()
    teacher.text_input(key="ask_prompt").set_value("<img src=x onerror=alert(1)> **bold** :red[x]").run()
    teacher.button(key="ask_go").click().run()
    asked = classroom.store().state(code).question
    assert asked is not None and asked.type == "attend"
    for at, choice in zip(students, (1, 1, 2)):
        at.run()
        prompt = [h.value for h in at.get("html") if "onerror" in h.value]
        assert prompt and "&lt;img" in prompt[0] and "<img" not in prompt[0]  # literal text, never markup
        at.button_group(key=f"q_{asked.number}_pick").set_value(choice).run()
        assert "You answered" in texts(at) or at.success
    # the same browser (session) again: refused, its first answer kept
    again = students[0]
    classroom.store().answer(code, asked.number, again.session_state["_class_browser"], 0)
    assert classroom.store().state(code).question.counts[1:3] == (2, 1)
    assert classroom.store().state(code).question.answered == 3
    teacher.button(key="q_reveal").click().run()
    for at in (teacher, *students):
        at.run()
        fig = [c for c in at.get("plotly_chart") if f"q_reveal_{asked.number}" in str(c.proto.id)]
        assert fig, "the reveal chart"
    shown = classroom.store().state(code).question
    assert shown.revealed and list(shown.model) == pytest.approx(list(asked.model))
    assert sum(shown.model) == pytest.approx(1.0, abs=1e-4)  # an attention row: the model's own weights


def test_ending_the_class_leaves_students_a_working_app(teacher):
    code = teacher.query_params["teach"]
    student = follow(code)
    teacher.button(key="class_end").click().run()
    assert "teach" not in teacher.query_params and classroom.store().state(code) is None
    student.run()
    assert "has ended" in texts(student) and "follow" not in student.query_params
    head = view(student)["head"]
    student.button(key="attn_next_head").click().run()
    assert view(student)["head"] != head


def test_hand_over_moves_the_steering(teacher):
    code, old = teacher.query_params["teach"], teacher.query_params["key"]
    teacher.button(key="class_hand_over").click().run()
    assert teacher.query_params.get("follow") == code and not classroom.store().is_teacher(code, old)
    link = teacher.session_state["_class_handed"]
    new = run({"teach": code, "key": link})
    assert classroom.store().is_teacher(code, new.query_params["key"])
    classroom.store().end(code, new.query_params["key"])


def test_a_lesson_drives_the_class(teacher):
    code = teacher.query_params["teach"]
    student = follow(code)
    assert len(teacher.selectbox(key="lesson_pick").options) >= 2
    teacher.selectbox(key="lesson_pick").set_value("Heads with jobs: alignment, agreement, induction, and knocking one out")
    teacher.button(key="lesson_start").click().run()
    teacher.button(key="lesson_next").click().run()
    student.run()
    assert view(student) == view(teacher) and view(student)["checkpoint"] == "classifier"
    assert "step 2 of" in texts(student) and "Agreement" in texts(student)
    note = classroom.store().state(code).note
    assert note.step == 1 and note.asks  # its explanation waits for the question's reveal


def test_a_server_full_of_classes_says_so(monkeypatch):
    monkeypatch.setattr(class_store, "MAX_CLASSES", len(classroom.store()))
    at = run()
    at.button(key="class_teach").click().run()
    assert "teach" not in at.query_params and "already holds" in texts(at)


def test_a_learner_alone_steps_through_a_lesson_and_answers_its_question():
    at = run()
    at.selectbox(key="lesson_pick").set_value("Heads with jobs: alignment, agreement, induction, and knocking one out").run()
    at.button(key="lesson_start").click().run()
    assert view(at)["checkpoint"] == "translator" and (view(at)["kind"], view(at)["layer"], view(at)["head"]) == (
        "cross",
        "1",
        "1",
    )
    assert "step 1 of" in texts(at)
    assert at.expander and any("open it after the reveal" in e.label for e in at.expander)  # the answer waits
    at.button(key="lesson_ask").click().run()
    question = at.session_state["_solo_question"][0]
    best = max(range(len(question.options)), key=lambda i: question.model[i])
    at.button_group(key=f"q_{question.number}_pick").set_value(best).run()
    assert any("q_reveal" in str(c.proto.id) for c in at.get("plotly_chart"))  # alone: the reveal at once
    assert not any("open it after the reveal" in e.label for e in at.expander)  # and the explanation shows
    at.button(key="lesson_next").click().run()
    assert view(at)["checkpoint"] == "classifier" and "step 2 of" in texts(at)
    at.button(key="lesson_end").click().run()
    assert "step 2 of" not in texts(at)


def test_lessons_in_a_models_folder_are_offered_and_a_broken_one_is_explained(tmp_path, monkeypatch):
    good = tmp_path / "mine.lesson.toml"
    good.write_text(
        'title = "My <b>own</b> lesson"\n[[steps]]\ntitle = "One"\ncheckpoint = "lm"\npage = "attention"\n'
        'text = "the dog runs ."\nexplain = "Look."\n'
    )
    (tmp_path / "broken.lesson.json").write_text('{"title": "x", "steps": [{"title": "a", "layre": 1}]}')
    monkeypatch.setenv("ATTNVIZ_MODELS", str(tmp_path))
    at = run()
    options = at.selectbox(key="lesson_pick").options
    assert "My <b>own</b> lesson (mine.lesson.toml)" in options  # a title as typed
    warning = "\n".join(w.value for w in at.warning)
    assert "broken.lesson.json" in warning and "layre" in warning
    at.selectbox(key="lesson_pick").set_value("My <b>own</b> lesson (mine.lesson.toml)").run()
    at.button(key="lesson_start").click().run()
    assert view(at)["checkpoint"] == "lm" and view(at)["text"] == "the dog runs ."
    assert any("My &lt;b&gt;own&lt;/b&gt; lesson" in h.value for h in at.get("html"))


class Flaky:
    """A class store that can be taken away and brought back (as a shared store stopped and started again)."""

    def __init__(self) -> None:
        self.inner, self.down = class_store.MemoryStore(), False

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def call(*args, **kwargs):
            if self.down:
                raise class_store.StoreUnavailable("the store does not answer")
            return method(*args, **kwargs)

        return call


def test_a_store_that_cannot_be_reached_leaves_a_working_app_and_the_class_resumes(monkeypatch):
    flaky = Flaky()
    monkeypatch.setattr(classroom, "store", lambda: flaky)
    teacher = run()
    teacher.button(key="class_teach").click().run()
    code, key = teacher.query_params["teach"], teacher.query_params["key"]
    student = follow(code)

    flaky.down = True
    late = run({"follow": code})  # a student who opens the link while the store is away
    for at in (teacher, student, late):
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        said = [w.value for w in at.warning if w.value == classroom.UNAVAILABLE]
        assert len(said) == 1, "said once, whoever asked the store in this run"
        assert at.get("plotly_chart"), "the page itself is drawn"
    teacher.button(key="attn_next_head").click().run()  # the teacher's own view changes; the class cannot hear it now
    assert not teacher.exception and teacher.query_params["teach"] == code and teacher.query_params["key"] == key
    assert student.query_params["follow"] == code

    flaky.down = False  # back: the class goes on where the teacher is, for every follower, the late one too
    teacher.button(key="attn_next_head").click().run()
    for at in (student, late):
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert classroom.UNAVAILABLE not in texts(at)
        assert view(at) == view(teacher) and at.query_params["follow"] == code


def test_a_teacher_whose_class_ended_elsewhere_is_told_so(teacher):
    """Ended from outside this session (idle, another tab with the key, a store that lost it): the teacher's page says
    so once and leaves the class (it once reran itself without end: its panel's check rerun the app, which drew the
    panel, which checked again)."""
    code, key = teacher.query_params["teach"], teacher.query_params["key"]
    classroom.store().end(code, key)
    teacher.run()
    assert not teacher.exception, [e.value for e in teacher.exception]
    assert classroom.ENDED in texts(teacher)
    assert "teach" not in teacher.query_params and "key" not in teacher.query_params
    assert teacher.button(key="class_teach")  # the app is the teacher's own again: a new class can start


def test_a_timers_older_values_merged_into_the_servers_rerun_do_not_undo_a_step(teacher):
    """A student's "next head" steps them away, and that run asks for a run of the whole app (`session.rerun_app`).
    A follower's poll sent before the new head reached the browser carries the old head; Streamlit merges it into
    that rerun. The rerun keeps the server's head (seen once in a clean-clone run: the head went back)."""
    code = teacher.query_params["teach"]
    student = follow(code)
    old = int(view(student)["head"])
    student.button(key="attn_next_head").click().run()
    new = int(view(student)["head"])
    assert new != old and "exploring on your own" in texts(student)
    assert session.SERVER_RERUN not in student.session_state  # that rerun has run, and dropped the mark

    # The merged run, as the server gets it: the mark set, and the browser's slider still at the old head.
    student.session_state[session.SERVER_RERUN] = True
    student.slider(key="attn_head").set_value(old).run()
    assert int(view(student)["head"]) == new and student.slider(key="attn_head").value == new
    assert session.SERVER_RERUN not in student.session_state
    # Without the mark, the slider is the student's own move, and it is taken.
    student.slider(key="attn_head").set_value(old).run()
    assert int(view(student)["head"]) == old
