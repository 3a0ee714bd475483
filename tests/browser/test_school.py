"""A class through a real school (deploy/school.py: two replicas behind nginx, one private Redis) in real Chromium,
while parts of the school fail under it.

- A replica killed mid-class: its students' browsers reconnect by themselves, nginx sends them to the other
  replica, whose new sessions start from the pages' links (`follow=CODE`), so they follow again; the browsers on
  the other replica (the teacher's among them) keep their sessions and never notice.
- The store stopped: every page keeps working for its own user and says that classes are unavailable. Started
  again, it is a fresh Redis (nothing saved), so the class has ended: each student is told so and keeps a working
  app.

The tests share one school and one class (module fixtures) and run in file order: the first kills a replica, the
store test runs on the one left.
"""

from __future__ import annotations

import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from requests.structures import CaseInsensitiveDict

from deploy.school import ROUTE_COOKIE, School, redis_answers, wait_until
from server.classroom import UNAVAILABLE
from tests.browser import VIEWPORT, wait_idle, wait_plot
from tests.browser.conftest import ARTIFACTS
from tests.browser.test_class import FOLLOW_MS, TEXT, click, heatmap_title, link, sidebar_text, view, wait_same
from tests.test_school import get, new_route, replica, settings

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("nginx", path="/usr/sbin:/usr/bin") and shutil.which("redis-server", path="/usr/sbin:/usr/bin")),
        reason="nginx or redis-server is not installed (Debian: apt-get install -y nginx redis-server; `make browser` does it)",
    ),
]

RECONNECT_S = 60  # a killed replica's browsers: Streamlit's reconnect, a new session on the other replica, one rerun
ERRORS = "[data-testid=stException], [data-testid=stAlertContentError]"
ENDED = "The class has ended (its teacher ended it, or it was idle too long). The app stays open: it is yours now."


@pytest.fixture(scope="module")
def school(chromium, served):
    """Two replicas of the app (the browser tests' checkpoints, no file watcher) behind nginx, with their Redis."""
    env = {**served.env, "ATTNVIZ_DEVICE": "cpu", "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"}
    # Not pytest's tmp_path: its folders are the user's alone, and nginx's workers (run as root, they are `nobody`)
    # must write the larger answers they pass on (Plotly's script) into the run folder's nginx-tmp.
    run_dir = Path(tempfile.mkdtemp(prefix="attnviz-school-"))
    run_dir.chmod(0o755)
    try:
        with pytest.MonkeyPatch.context() as mp:  # the replicas' environment is read once, here
            for name, value in env.items():
                mp.setenv(name, value)
            school = School(settings(run_dir), say=lambda line: None)
        with school:
            yield school
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def route_to(school: School, address: str) -> str:
    """A route cookie that nginx sends to the replica at `address` (new browsers are spread by their route's hash)."""
    for _ in range(100):
        response = get(school)
        if replica(response.headers) == address:
            return new_route(response)
    raise AssertionError(f"no route to {address} in 100 new browsers")


def open_on(browser, school: School, address: str, path: str, dialogs: list[str]):
    """A new browser (its own context: its own cookies) whose route cookie sends it to the replica at `address`,
    with `path` open, drawn and idle; its websockets and the replicas that answered its health checks are noted."""
    base = school.settings.local_url
    context = browser.new_context(viewport=VIEWPORT)
    context.add_cookies([{"name": ROUTE_COOKIE, "value": route_to(school, address), "url": base}])
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.sockets, page.answered = [], []  # type: ignore[attr-defined]
    page.on("websocket", lambda ws: page.sockets.append(ws))
    page.on(
        "response",
        lambda r: page.answered.append(replica(CaseInsensitiveDict(r.headers))) if r.url.endswith("/_stcore/health") else None,
    )
    page.goto(base + path)
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    assert page.answered and set(page.answered) == {address}, (page.answered, address)
    return page


def errors(page) -> list[str]:
    return page.locator(ERRORS).all_inner_texts()


def unavailable(page) -> int:
    """How many elements on the page say that classes are unavailable."""
    return page.get_by_text(UNAVAILABLE).count()


@pytest.fixture(scope="module")
def room(browser, school):
    """A class: the teacher's browser on replica 2 (the one that lives), and a student on each replica."""
    dialogs: list[str] = []
    doomed, lives = (f"127.0.0.1:{p}" for p in school.settings.replica_ports)
    teacher = open_on(browser, school, lives, f"/attention?text={TEXT}&kind=cross&layer=1&head=1", dialogs)
    click(teacher, "class_teach")
    teacher.wait_for_function("() => new URLSearchParams(location.search).has('teach')")
    wait_idle(teacher)
    code = link(teacher)["teach"]
    moved = open_on(browser, school, doomed, f"/?follow={code}", dialogs)
    stays = open_on(browser, school, lives, f"/?follow={code}", dialogs)
    yield dict(teacher=teacher, moved=moved, stays=stays, code=code, dialogs=dialogs, lives=lives)
    for name, page in (("teacher", teacher), ("moved", moved), ("stays", stays)):
        try:
            page.screenshot(path=str(ARTIFACTS / f"school-{name}.png"), full_page=True)
        finally:
            page.context.close()


def step(teacher, students: list, timeout_s: float = FOLLOW_MS / 1000) -> str:
    """The teacher shows the next head; every student's link and heatmap follow. Returns the heatmap's title."""
    before = link(teacher)["head"]
    click(teacher, "attn_next_head")
    assert link(teacher)["head"] != before
    wait_same(teacher, students, timeout_s)
    title = heatmap_title(teacher)
    for s in students:
        wait_title(s, title, timeout_s)
    return title


def wait_title(page, title: str, timeout_s: float) -> None:
    """Wait until the page's heatmap has been drawn with this title (its kind, layer and head)."""
    page.wait_for_function(
        "(t) => { const g = document.querySelector('.st-key-attn_heatmap .js-plotly-plot');"
        " return g && g.layout && g.layout.title && g.layout.title.text === t; }",
        arg=title,
        timeout=timeout_s * 1000,
    )


def test_a_replica_killed_mid_class_sends_its_students_to_the_other_and_they_follow_again(room, school):
    teacher, moved, stays, code = room["teacher"], room["moved"], room["stays"], room["code"]
    step(teacher, [moved, stays])

    school.replicas[0].send(signal.SIGKILL)
    school.replicas[0].process.wait(10)
    title = step(teacher, [stays])  # the other replica's browsers follow on, as if nothing happened
    for page in (teacher, stays):
        assert len(page.sockets) == 1 and not page.sockets[0].is_closed(), "the same websocket: the same session"

    # The killed replica's student: a new websocket (through nginx, to the other replica), a new session from the
    # page's link (still `follow=CODE`), and the teacher's view of now, drawn.
    wait_same(teacher, [moved], RECONNECT_S)
    wait_title(moved, title, RECONNECT_S)
    moved.locator("[data-testid=stConnectionStatus]").wait_for(state="detached")
    assert len(moved.sockets) >= 2 and moved.sockets[0].is_closed(), "its first websocket died with its replica"
    assert moved.answered[-1] == room["lives"], moved.answered
    assert link(moved)["follow"] == code and f"Following class {code}" in sidebar_text(moved)

    step(teacher, [moved, stays])  # and it follows the teacher's next step too
    for page in (teacher, moved, stays):
        assert not errors(page), errors(page)
    assert link(teacher)["teach"] == code and "key" in link(teacher) and len(teacher.sockets) == 1
    assert len(stays.sockets) == 1 and room["dialogs"] == []


def test_the_store_stopped_then_started_afresh_ends_the_class_and_every_page_works(room, school):
    teacher, moved, stays, code = room["teacher"], room["moved"], room["stays"], room["code"]
    students = [moved, stays]
    step(teacher, students)

    school.redis.stop()
    assert not redis_answers(school.settings.redis_port)
    # The teacher's own step: drawn on its page (the class cannot hear it); the students' views stay where they were.
    shown = view(stays)
    title = heatmap_title(teacher)
    click(teacher, "attn_next_head")
    wait_plot(teacher, "attn_heatmap")
    assert heatmap_title(teacher) != title and link(teacher)["teach"] == code
    teacher.get_by_text(UNAVAILABLE).first.wait_for(timeout=FOLLOW_MS)  # its class panel's count, every 2 s
    # A student's own step: it explores on its own (a full run), and that run says the store is away.
    head = link(moved)["head"]
    click(moved, "attn_next_head")
    moved.wait_for_function("(h) => new URLSearchParams(location.search).get('head') !== h", arg=head)
    moved.get_by_text(UNAVAILABLE).first.wait_for(timeout=FOLLOW_MS)
    wait_idle(moved)
    assert heatmap_title(moved) != heatmap_title(stays)
    time.sleep(2.5)  # the teacher's panel and the students' polls have run a few times while the store is away
    assert view(stays) == shown, "a follower's view stays where the class left it"
    seen = {"teacher": unavailable(teacher), "moved": unavailable(moved), "stays": unavailable(stays)}
    # Said once on every page: the teacher's class panel (a caption), the student's full run, and the follower's (its
    # poll, finding the store away, reruns the app once to say so; its screen keeps the class's last view).
    assert seen == {"teacher": 1, "moved": 1, "stays": 1}, seen
    for page in (teacher, moved, stays):
        assert not errors(page), errors(page)

    school.redis.start()  # the same port and arguments (`redis_command`): a fresh Redis, the class is not in it
    wait_until(lambda: redis_answers(school.settings.redis_port), [school.redis], 10.0)
    for s in students:
        s.get_by_text(ENDED).wait_for(timeout=FOLLOW_MS)
        wait_idle(s)
        assert "follow" not in link(s) and unavailable(s) == 0 and not errors(s)
        head, title = link(s)["head"], heatmap_title(s)
        click(s, "attn_next_head")  # the app is theirs now
        s.wait_for_function("(h) => new URLSearchParams(location.search).get('head') !== h", arg=head)
        wait_idle(s)
        assert heatmap_title(s) != title and not errors(s)
        assert s.locator(".st-key-class_teach").count() == 1  # they could start a class of their own
    assert room["dialogs"] == []


def test_the_teacher_is_told_the_class_has_ended_when_the_store_lost_it(room):
    """Last: runs after the store came back empty (the test above)."""
    teacher = room["teacher"]
    teacher.get_by_text(re.compile("class has ended")).first.wait_for(timeout=10_000)
    wait_idle(teacher, timeout_ms=FOLLOW_MS)
    assert "teach" not in link(teacher) and not errors(teacher)
