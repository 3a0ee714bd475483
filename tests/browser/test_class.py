"""Teaching a class in real Chromium: a teacher's browser steers and three students' browsers (each its own context,
so its own cookies: one answer per browser) follow it, step away and come back, answer a question, follow a
lesson; a reload keeps the teacher's steering, a forged key steers nothing, and the end of the class leaves every
student a working app.

The tests share one class (a module fixture holds the four browsers) and run in file order: each leaves the class
following the teacher again, and the last one ends it.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlencode, urlparse

import numpy as np
import pytest

from tests.browser import VIEWPORT, address, click_and_wait, exceptions, figure, type_text, wait_idle, wait_plot
from tests.browser.conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TEXT = "the big dog near the old tables sees the cats ."
TEXT_2 = "two small cats that the teacher sees sleep ."
FOLLOW_MS = 15_000  # a follower polls every 0.5 s: this is for a noisy CI machine, not a speed target
PRIVATE = {"teach", "key", "present", "follow", "owner"}  # a browser's own parameters, never the class's
N_STUDENTS = 3


def new_page(browser, url: str, dialogs: list[str]):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(url)
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    return page


def link(page) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(address(page)).query).items()}


def view(page) -> tuple[str, dict[str, str]]:
    """What a link shows, without this browser's own parameters: (page path, parameters)."""
    return urlparse(address(page)).path, {k: v for k, v in link(page).items() if k not in PRIVATE}


def wait_same(teacher, students, timeout_s: float = FOLLOW_MS / 1000) -> tuple[str, dict[str, str]]:
    """Wait until every student's link shows the teacher's view (its path and parameters); returns that view."""
    wait_idle(teacher)
    want = view(teacher)
    deadline = time.monotonic() + timeout_s
    while True:
        seen = [view(s) for s in students]
        if all(v == want for v in seen):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"the students show {seen}, the teacher {want}")
        time.sleep(0.1)
    for s in students:
        wait_idle(s)
        assert view(s) == want, (view(s), want)
        assert not exceptions(s), exceptions(s)
    return want


def heatmap_title(page) -> str:
    wait_plot(page, "attn_heatmap")
    return figure(page, "attn_heatmap")["layout"]["title"]["text"]


def click(page, key: str) -> None:
    click_and_wait(page, page.locator(f".st-key-{key} button:visible").first)


def sidebar_text(page) -> str:
    return page.locator("[data-testid=stSidebar]").inner_text()


@pytest.fixture(scope="module")
def room(browser, app_url):
    """A class: the teacher's page (it started the class on the translator's cross-attention) and three students'."""
    dialogs: list[str] = []
    start = {"text": TEXT, "kind": "cross", "layer": "1", "head": "1"}
    teacher = new_page(browser, f"{app_url}/attention?{urlencode(start)}", dialogs)
    click(teacher, "class_teach")
    teacher.wait_for_function("() => new URLSearchParams(location.search).has('teach')")
    wait_idle(teacher)
    code = link(teacher)["teach"]
    students = [new_page(browser, f"{app_url}/?follow={code}", dialogs) for _ in range(N_STUDENTS)]
    yield dict(teacher=teacher, students=students, code=code, url=app_url, dialogs=dialogs, browser=browser)
    for name, page in zip(["teacher", *(f"student{i + 1}" for i in range(N_STUDENTS))], [teacher, *students]):
        try:
            page.screenshot(path=str(ARTIFACTS / f"class-{name}.png"), full_page=True)
        finally:
            page.context.close()


@pytest.fixture(autouse=True)
def everyone_follows_again(request):
    """After each test, a student it left exploring on its own follows the class again: one test's failure is not
    the next ones'."""
    yield
    if "room" in request.fixturenames:
        for s in request.getfixturevalue("room")["students"]:
            if not s.is_closed() and s.locator(".st-key-class_back button:visible").count():
                click(s, "class_back")


def test_students_follow_the_teachers_head_page_and_text(room):
    teacher, students, code = room["teacher"], room["students"], room["code"]
    assert re.fullmatch(r"[A-Z0-9]{5}", code) and link(teacher)["key"]
    assert f"{room['url']}/?follow={code}" in sidebar_text(teacher)  # the students' link, beside its QR code
    for s in students:
        assert f"Following class {code}: your screen shows the teacher's." in sidebar_text(s)
        assert "key" not in link(s) and "teach" not in link(s) and link(s)["follow"] == code
    path, params = wait_same(teacher, students)
    assert (
        path == "/attention"
        and params["text"] == TEXT
        and (params["kind"], params["layer"], params["head"]) == ("cross", "1", "1")
    )
    teacher.locator(".st-key-class_teach").wait_for(state="detached")

    click(teacher, "attn_next_head")
    assert wait_same(teacher, students)[1]["head"] == "2"
    for s in students:
        assert "cross · layer 1 · head 2" in heatmap_title(s)

    type_text(teacher, TEXT_2)
    teacher.wait_for_function("(t) => new URLSearchParams(location.search).get('text') === t", arg=TEXT_2)
    path, params = wait_same(teacher, students)
    assert path == "/attention" and params["text"] == TEXT_2
    for s in students:
        assert s.locator(".st-key-w_text textarea").input_value() == TEXT_2
        assert (
            figure(s, "attn_heatmap")["layout"]["xaxis"]["ticktext"]
            == figure(teacher, "attn_heatmap")["layout"]["xaxis"]["ticktext"]
        )


def test_students_follow_the_teacher_to_another_page_and_back(room):
    """A page switch made by the server, several times: every student's new page is drawn, and they still follow.

    (Rerun requests a student's browser sent for the page it was leaving once emptied the new page: see
    `session.fragment`.)
    """
    teacher, students = room["teacher"], room["students"]
    wait_same(teacher, students)
    for _ in range(3):
        click_and_wait(teacher, teacher.get_by_role("link", name="Q, K, V", exact=True))
        wait_plot(teacher, "qkv_weights")
        assert wait_same(teacher, students)[0] == "/qkv"  # the link follows at once (the server's side)
        for s in students:
            wait_plot(s, "qkv_weights", timeout_ms=FOLLOW_MS)
            z = figure(s, "qkv_weights")["data"][0]["z"]
            np.testing.assert_array_equal(z, figure(teacher, "qkv_weights")["data"][0]["z"])
        click_and_wait(teacher, teacher.get_by_role("link", name="Attention", exact=True))
        wait_plot(teacher, "attn_heatmap")
        assert wait_same(teacher, students)[0] == "/attention"
        for s in students:
            wait_plot(s, "attn_heatmap", timeout_ms=FOLLOW_MS)
            assert "follow=" in address(s) and not s.get_by_text("You are exploring on your own").count()


def test_a_student_who_steps_away_keeps_their_view_and_comes_back(room):
    teacher, students, code = room["teacher"], room["students"], room["code"]
    one, two, three = students
    before = wait_same(teacher, students)[1]
    click(two, "attn_next_head")  # a change inside the page's fragment: the whole app says so at once
    # The run click_and_wait saw start may be the student's poll, not the click's: wait for the head.
    two.wait_for_function("(h) => new URLSearchParams(location.search).get('head') !== h", arg=before["head"])
    wait_idle(two)
    mine = link(two)
    away = two.get_by_text(f"You are exploring on your own; class {code} goes on without you.")
    away.wait_for()
    assert f"Class {code}: you are exploring on your own." in sidebar_text(two)

    click(teacher, "attn_next_layer")
    params = wait_same(teacher, [one, three])[1]
    assert params["layer"] != before["layer"] and params["head"] == before["head"], (
        "the student's change never reaches the teacher"
    )
    time.sleep(1.5)  # three polls: the class's new version reached student 2's browser too
    wait_idle(two)
    assert link(two) == mine and away.is_visible(), "student 2 keeps the view it chose"
    assert link(two)["follow"] == code

    click(two, "class_back")
    wait_same(teacher, students)
    away.wait_for(state="detached")
    assert f"Following class {code}: your screen shows the teacher's." in sidebar_text(two)
    assert heatmap_title(two) == heatmap_title(teacher)


def open_ask(teacher) -> None:
    teacher.locator("[data-testid=stSidebar] [data-testid=stPopover] button", has_text="Ask the class").click()
    teacher.locator(".st-key-ask_go button").wait_for()


def ask(teacher, prompt: str | None = None) -> int:
    """Ask the class "where will this head look?" from the query token the form offers; returns the question's number."""
    open_ask(teacher)
    assert teacher.locator(".st-key-ask_type input[type=radio]").first.is_checked()  # "Where will this head look?"
    if prompt is not None:
        box = teacher.locator(".st-key-ask_prompt input")
        box.fill(prompt)
        box.press("Enter")
        wait_idle(teacher)
        open_ask(teacher) if not teacher.locator(".st-key-ask_go button").is_visible() else None
    click_and_wait(teacher, teacher.locator(".st-key-ask_go button"))
    teacher.keyboard.press("Escape")
    caption = teacher.get_by_text(re.compile(r"^Question \d+ to the class$"))
    caption.wait_for()
    return int(re.search(r"\d+", caption.inner_text())[0])


def answered(teacher) -> tuple[int, int]:
    """The teacher's live count: (answered, following)."""
    text = teacher.locator("[data-testid=stMain]").inner_text()
    m = re.search(r"(\d+) answered · (\d+) following", text)
    assert m, text[:2000]
    return int(m[1]), int(m[2])


def wait_answered(teacher, n: int) -> None:
    deadline = time.monotonic() + FOLLOW_MS / 1000
    while answered(teacher)[0] != n:
        assert time.monotonic() < deadline, f"the teacher's count says {answered(teacher)}, not {n} answered"
        time.sleep(0.2)


def test_a_question_is_answered_once_per_browser_and_revealed_beside_the_models_weights(room, served):
    teacher, students = room["teacher"], room["students"]
    params = wait_same(teacher, students)[1]
    n = ask(teacher)
    picks = [1, 1, 2]  # two students choose the same token
    for s, choice in zip(students, picks):
        pills = s.locator(f".st-key-q_{n}_pick button")
        pills.first.wait_for(timeout=FOLLOW_MS)
        wait_plot(s, f"q_{n}_row")
        assert figure(s, f"q_{n}_row")["data"][0]["colorscale"][0][1] == figure(s, f"q_{n}_row")["data"][0]["colorscale"][-1][1]
        word = pills.nth(choice).inner_text()
        click_and_wait(s, pills.nth(choice))
        s.get_by_text(re.compile(r"^You answered .*Wait for the teacher to reveal the answers\.$")).wait_for()
        assert word in s.get_by_text(re.compile(r"^You answered")).inner_text()
    wait_answered(teacher, 3)
    assert answered(teacher) == (3, 3)

    # The same browser (student 1's cookies) in a second tab: its click is not counted again.
    tab = students[0].context.new_page()
    tab.goto(f"{room['url']}/?follow={room['code']}")
    wait_plot(tab, "attn_heatmap")
    wait_idle(tab)
    pills = tab.locator(f".st-key-q_{n}_pick button")
    if pills.count():
        click_and_wait(tab, pills.nth(3))
    time.sleep(2.5)  # the teacher's count refreshes every second
    assert answered(teacher) == (3, 3)
    tab.close()

    click(teacher, "q_reveal")
    wait_plot(teacher, f"q_reveal_{n}")
    shown = figure(teacher, f"q_reveal_{n}")
    counts, model = shown["data"][0]["y"], np.asarray(shown["data"][1]["y"], dtype=float)
    assert sum(counts) == 3 and counts[1] == 2 and counts[2] == 1, counts
    caption = teacher.get_by_text(re.compile(r"^The model: ")).inner_text()
    query = int(re.search(r"from (\d+)·", caption)[1])
    assert f"{params['kind']} · layer {params['layer']} · head {params['head']} · from {query}·" in caption
    row = served.reference(params["text"]).head(params["kind"], int(params["layer"]), int(params["head"]))["weights"][query]
    np.testing.assert_allclose(model, row.float().numpy(), rtol=0, atol=1e-6)
    assert abs(model.sum() - 1) < 1e-4
    for s in students:
        wait_plot(s, f"q_reveal_{n}")
        theirs = figure(s, f"q_reveal_{n}")
        assert list(theirs["data"][0]["y"]) == list(counts) and theirs["data"][0]["x"] == shown["data"][0]["x"]
        np.testing.assert_array_equal(np.asarray(theirs["data"][1]["y"], dtype=float), model)

    click(teacher, "q_close")
    for s in students:
        s.locator(f".st-key-q_reveal_{n}").wait_for(state="detached", timeout=FOLLOW_MS)


LESSON = "What attention computes, from Q and K to the weighted sum"


def test_a_teachers_lesson_step_is_every_students_step(room):
    """The first shipped lesson's first two steps: the view, the words, and a step on another page."""
    teacher, students = room["teacher"], room["students"]
    teacher.locator("[data-testid=stSidebar] [data-testid=stExpander] summary", has_text="Lessons").click()
    click(teacher, "lesson_start")
    teacher.get_by_text(re.compile(r"^Lesson · step 1 of \d+$")).wait_for()
    steps = int(re.search(r"of (\d+)", teacher.get_by_text(re.compile(r"^Lesson · step 1 of \d+$")).inner_text())[1])
    path, params = wait_same(teacher, students)
    assert path == "/attention" and params["text"] == "the boys near the tall queen are shy ." and params["checkpoint"] == "lm"
    for s in students:
        s.get_by_text(f"Lesson · step 1 of {steps}", exact=True).wait_for(timeout=FOLLOW_MS)
        assert s.get_by_text(f"{LESSON} — One head, as a heatmap", exact=True).is_visible()
        assert s.locator(".st-key-lesson_next, .st-key-lesson_ask").count() == 0, "a follower does not drive the lesson"
        assert heatmap_title(s) == heatmap_title(teacher) and "decoder self · layer 0 · head 2" in heatmap_title(s)

    click(teacher, "lesson_next")  # step 2 is on the Q, K, V page: the server takes every student there
    wait_plot(teacher, "qkv_weights")
    assert wait_same(teacher, students)[0] == "/qkv"
    for s in students:
        s.get_by_text(f"Lesson · step 2 of {steps}", exact=True).wait_for(timeout=FOLLOW_MS)
        wait_plot(s, "qkv_weights", timeout_ms=FOLLOW_MS)
        np.testing.assert_array_equal(figure(s, "qkv_weights")["data"][0]["z"], figure(teacher, "qkv_weights")["data"][0]["z"])

    click(teacher, "lesson_end")
    for s in students:
        s.get_by_text(re.compile(r"^Lesson · step")).wait_for(state="detached", timeout=FOLLOW_MS)
    click_and_wait(teacher, teacher.get_by_role("link", name="Attention", exact=True))  # where the next tests start
    wait_plot(teacher, "attn_heatmap")
    for s in students:
        wait_plot(s, "attn_heatmap", timeout_ms=FOLLOW_MS)


def test_a_reloaded_teacher_page_still_steers(room):
    teacher, students, code = room["teacher"], room["students"], room["code"]
    before = wait_same(teacher, students)[1]
    teacher.reload()
    wait_plot(teacher, "attn_heatmap")
    wait_idle(teacher)
    assert link(teacher)["teach"] == code and f"Class code: {code}" in sidebar_text(teacher)
    click(teacher, "attn_next_head")
    params = wait_same(teacher, students)[1]
    assert params["head"] != before["head"]


def test_a_forged_teacher_key_follows_and_steers_nothing(room):
    teacher, students, code = room["teacher"], room["students"], room["code"]
    before = wait_same(teacher, students)
    forged = new_page(room["browser"], f"{room['url']}/?teach={code}&key=wrong", room["dialogs"])
    try:
        forged.get_by_text(f"This link's teacher key does not steer class {code}", exact=False).wait_for()
        assert "key" not in link(forged) and "teach" not in link(forged) and link(forged)["follow"] == code
        assert wait_same(teacher, [forged]) == before
        click(forged, "attn_next_head")
        assert link(forged)["head"] != before[1]["head"]
        forged.get_by_text(f"You are exploring on your own; class {code} goes on without you.").wait_for()
        time.sleep(1.5)  # three polls
        assert view(teacher) == before and all(view(s) == before for s in students)
    finally:
        forged.context.close()


PROMPT = "<img src=x onerror=alert(1)> **bold** :red[x] $x$ `code`"


def test_a_teachers_prompt_shows_as_typed(room):
    teacher, students = room["teacher"], room["students"]
    wait_same(teacher, students)
    n = ask(teacher, PROMPT)
    for page in [teacher, *students]:
        block = page.locator("[data-testid=stMain] [data-testid=stHtml]", has_text="onerror")
        block.wait_for(timeout=FOLLOW_MS)
        assert block.inner_text().strip() == PROMPT
        assert block.locator("img, strong, span, code").count() == 0
        assert page.evaluate("() => document.querySelectorAll('img[src=x], img[onerror]').length") == 0
    for s in students:
        s.locator(f".st-key-q_{n}_pick").wait_for()
    click(teacher, "q_cancel")
    for s in students:
        s.locator(f".st-key-q_{n}_pick").wait_for(state="detached", timeout=FOLLOW_MS)
    assert room["dialogs"] == []


def test_ending_the_class_leaves_every_student_a_working_app(room):
    teacher, students, _code = room["teacher"], room["students"], room["code"]
    wait_same(teacher, students)
    click(teacher, "class_end")
    teacher.get_by_text("The class has ended: its students keep a working app of their own.").wait_for()
    assert "teach" not in link(teacher) and "key" not in link(teacher)
    for s in students:
        s.get_by_text(re.compile(r"^The class has ended")).wait_for(timeout=FOLLOW_MS)
        wait_idle(s)
        assert "follow" not in link(s)
        head, title = link(s)["head"], heatmap_title(s)
        click(s, "attn_next_head")
        s.wait_for_function("(h) => new URLSearchParams(location.search).get('head') !== h", arg=head)
        wait_idle(s)
        assert heatmap_title(s) != title and not exceptions(s)
        assert s.locator(".st-key-class_teach").count() == 1  # the app is theirs: they could start a class
    assert room["dialogs"] == []
