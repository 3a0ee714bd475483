"""The rules of a class, on the store's interface: who steers, one answer per browser, limits, time.

Written against `ClassStore` through the `store` fixture, so that every implementation (the in-process one here;
a shared store for a deployment of several processes) passes the same tests.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from server import class_store
from server.class_store import ClassError, MemoryStore, Note, Question, StoreUnavailable
from server.redis_store import RedisStore

VIEW = {"checkpoint": "translator", "text": "the cat sees the dog", "kind": "cross", "layer": "1", "head": "1", "q": "0"}


class RedisServer:
    """A private `redis-server` for the tests (nothing saved to disk), stopped and started again on the same address."""

    def __init__(self, folder, port: int = 0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; `make browser` does it)")
        self.port, self.socket = port, str(folder / "redis.sock")
        self.url = f"redis://127.0.0.1:{port}" if port else f"unix://{self.socket}"
        listen = ["--port", str(port), "--bind", "127.0.0.1"] if port else ["--port", "0", "--unixsocket", self.socket]
        self.command = [binary, *listen, "--save", "", "--appendonly", "no", "--dir", str(folder)]
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        for _ in range(100):
            try:
                client.ping()
                return self
            except redis.exceptions.ConnectionError:
                assert self.process.poll() is None, f"redis-server exited: {self.command}"
                time.sleep(0.05)
        raise AssertionError("redis-server did not answer within 5 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """The private server's address, its classes gone."""
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url


@pytest.fixture(params=["memory", "redis"])
def make_store(request):
    """make_store(clock) -> a store of each implementation, with no classes (the Redis ones: all on one server)."""
    if request.param == "memory":
        return lambda clock: MemoryStore(clock=clock)
    url = request.getfixturevalue("redis_url")
    return lambda clock: RedisStore(url, clock=clock)


@pytest.fixture
def store(make_store):
    return make_store(lambda: 1000.0)


@pytest.fixture
def replicas(make_store):
    """Two app processes' stores: two RedisStore on one server; in memory, one process's one store."""
    first = make_store(lambda: 1000.0)
    return (first, first) if isinstance(first, MemoryStore) else (first, make_store(lambda: 1000.0))


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


def test_an_idle_class_ends_by_itself(make_store):
    now = [0.0]
    store = make_store(lambda: now[0])
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


def test_followers_are_told_when_the_teachers_screen_has_gone(make_store):
    now = [0.0]
    store = make_store(lambda: now[0])
    code, token = store.start(VIEW, "attention")
    now[0] = class_store.TEACHER_AWAY_SECONDS + 1
    assert store.poll(code)[2] and store.state(code).teacher_away
    assert store.is_teacher(code, token)  # the teacher's page calls in
    assert not store.poll(code)[2] and not store.state(code).teacher_away


def test_followers_are_counted_while_they_poll(make_store):
    now = [0.0]
    store = make_store(lambda: now[0])
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


def test_two_replicas_share_classes_views_and_answers(redis_url, monkeypatch):
    a, b = RedisStore(redis_url, clock=lambda: 1000.0), RedisStore(redis_url, clock=lambda: 1000.0)
    code, token = a.start(VIEW, "attention")
    assert b.is_teacher(code, token) and b.state(code).params == VIEW
    assert b.steer(code, token, {**VIEW, "head": "2"}, "qkv") == 2
    assert a.state(code).page == "qkv" and a.poll(code)[0] == 2
    a.ask(code, token, question(2))
    assert b.answer(code, 1, "browser-a", 1) and not a.answer(code, 1, "browser-a", 0)  # one answer, whichever replica
    a.poll(code, "browser-a")
    b.poll(code, "browser-b")
    assert b.state(code).question.counts == (0, 1) and a.state(code).followers == 2
    assert b.reveal(code, token).counts == (0, 1) and not a.answer(code, 1, "browser-b", 0)
    new = a.hand_over(code, token)
    assert b.is_teacher(code, new) and not b.is_teacher(code, token)
    monkeypatch.setattr(class_store, "MAX_CLASSES", 2)
    b.start(VIEW, "attention")
    with pytest.raises(ClassError, match="already holds 2 classes"):  # the limit is the replicas' together
        a.start(VIEW, "attention")
    b.end(code, new)
    assert a.state(code) is None and a.poll(code) is None
    a.start(VIEW, "attention")  # the ended class's place is free again


def test_answers_at_once_are_all_counted_and_bounded(replicas):
    code, token = replicas[0].start(VIEW, "attention")
    replicas[0].ask(code, token, question(4))
    results = []

    def student(i: int) -> None:
        for j in range(30):
            browser = f"b{(i * 30 + j) % 550}"  # 550 browsers, 50 of them answering twice
            try:
                results.append(replicas[i % 2].answer(code, 1, browser, j % 4))
            except ClassError as e:
                results.append(str(e))

    threads = [threading.Thread(target=student, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 600 and results.count(True) == class_store.MAX_ANSWERS == 500
    assert sum(replicas[1].state(code).question.counts) == 500
    assert all(r is True or r is False or "most answers" in r for r in results)


def test_teachers_calls_at_once_lose_no_change(replicas):
    code, token = replicas[0].start(VIEW, "attention")
    numbers = []

    def teacher(i: int) -> None:
        replicas[i % 2].steer(code, token, {**VIEW, "head": f"h{i}"}, "attention")  # each one a new view
        numbers.append(replicas[i % 2].ask(code, token, question()).number)

    threads = [threading.Thread(target=teacher, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(1, 21))  # no number given twice
    assert replicas[1].poll(code)[:2] == (1 + 20 + 20, 20)  # every change counted once


def test_a_stopped_store_fails_fast_and_recovers(tmp_path):
    server = RedisServer(tmp_path, free_port()).start()
    try:
        store = RedisStore(server.url, clock=lambda: 1000.0)
        code, token = store.start(VIEW, "attention")
        store.ask(code, token, question())
        calls = {
            "start": lambda: store.start(VIEW, "attention"),
            "state": lambda: store.state(code),
            "poll": lambda: store.poll(code, "b"),
            "is_teacher": lambda: store.is_teacher(code, token),
            "steer": lambda: store.steer(code, token, VIEW, "qkv"),
            "ask": lambda: store.ask(code, token, question()),
            "answer": lambda: store.answer(code, 1, "b", 0),
            "reveal": lambda: store.reveal(code, token),
            "close_question": lambda: store.close_question(code, token),
            "hand_over": lambda: store.hand_over(code, token),
            "end": lambda: store.end(code, token),
            "len": lambda: len(store),
        }

        def every_call_fails_fast(names=tuple(calls)) -> None:
            for name in names:
                call = calls[name]
                began = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    call()
                assert time.monotonic() - began < 2, name

        os.kill(server.process.pid, signal.SIGSTOP)  # a store that hangs: a call gives up after the timeouts
        every_call_fails_fast(("state", "poll", "steer", "len"))  # one of each way of asking (1 s each)
        os.kill(server.process.pid, signal.SIGCONT)
        assert store.state(code).question is not None  # and is used again once it answers
        server.stop()  # a store that is gone
        every_call_fails_fast()
        server.start()  # the same address, nothing kept
        assert store.state(code) is None
        code, token = store.start(VIEW, "attention")
        assert store.is_teacher(code, token) and store.poll(code, "b") == (1, 0, False)
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def test_redis_answers_a_random_session_as_memory_does(redis_url, monkeypatch):
    """Both stores given the same calls at the same (fake) times, with small limits: the same answers, every one."""
    for name, value in (("MAX_CLASSES", 3), ("MAX_FOLLOWERS", 4), ("MAX_ANSWERS", 5)):
        monkeypatch.setattr(class_store, name, value)
    now = [0.0]
    stores = MemoryStore(clock=lambda: now[0]), RedisStore(redis_url, clock=lambda: now[0])
    classes: list[list[list]] = [[], []]  # per store: [code, token, last question's number] of each class, in order
    rng = random.Random(7)

    def call(store, mine, op, arg):
        code, token, number = mine[-1 - arg % min(len(mine), 3)] if mine else ("NOCLS", "", 0)  # one of the last 3
        if op == "start":
            mine.append([*store.start({**VIEW, "head": str(arg)}, "attention"), 0])
            return "started"
        if op == "steer":
            return store.steer(code, token, {**VIEW, "head": str(arg % 3)}, ("attention", "qkv")[arg % 2])
        if op == "ask":
            asked = store.ask(code, token, question(2 + arg % 3))
            next(room for room in mine if room[0] == code)[2] = asked.number
            return asked
        if op == "answer":
            return store.answer(code, number - (arg % 5 == 0), f"b{rng.randrange(9)}", rng.randrange(4))
        if op == "poll":
            return store.poll(code, f"b{rng.randrange(9)}")
        if op == "state":
            state = store.state(code)
            return state and (*(getattr(state, f) for f in ("version", "asked", "params", "page", "question")), state.followers)
        if op == "hand_over":
            new = store.hand_over(code, token)
            next(room for room in mine if room[0] == code)[1] = new
            return "handed"
        return getattr(store, op)(code, token)

    ops = ("start", "steer", "ask", *["answer"] * 6, *["poll"] * 4, "state", "is_teacher", "reveal", "close_question")
    for step in range(1500):
        now[0] += class_store.IDLE_SECONDS / 2 if rng.random() < 0.01 else rng.choice((0.0, 0.0, 0.5, 3.0, 11.0, 70.0))
        op, arg = rng.choice((*ops, "hand_over", "end") if step % 10 == 9 else ops), rng.randrange(12)
        outcomes = []
        drawn = rng.getstate()  # both stores get the same random browsers and choices
        for store, mine in zip(stores, classes):
            rng.setstate(drawn)
            try:
                outcomes.append(call(store, mine, op, arg))
            except ClassError as e:
                outcomes.append(str(e))
        assert outcomes[0] == outcomes[1], (step, op)


def outside_address() -> str | None:
    """One of this machine's own addresses that is not loopback: a client there is remote to a Redis on this machine."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout.split()
    return next((a for a in out if "." in a and not a.startswith("127.")), None)


def test_a_store_that_refuses_to_serve_is_unavailable_not_an_exception(tmp_path):
    """A Redis that answers but will not serve the app, here a real one in protected mode (no password, and the app
    not on its loopback, as compose's redis refused the replicas in their containers): classes are unavailable, as
    with a store that is down, and the job board lists this replica's own jobs and refuses new ones with a message.
    Before, its DENIED reply was an exception on every page."""
    from server.job_board import UNAVAILABLE, RedisBoard
    from transformer.train.jobs import JobError

    binary, address = shutil.which("redis-server"), outside_address()
    if binary is None or address is None:
        pytest.skip("redis-server is not installed, or this machine has no address but loopback")
    port = free_port()
    command = [binary, "--port", str(port), "--protected-mode", "yes", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"redis://{address}:{port}"
        import redis

        deadline = time.monotonic() + 5
        while True:  # it listens: its refusal comes back (protected mode answers DENIED and hangs up)
            try:
                redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
                raise AssertionError("protected mode served a client from outside its loopback")
            except redis.exceptions.ResponseError as e:
                assert str(e).startswith("DENIED"), e
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, "redis-server did not listen"
                time.sleep(0.05)

        store = RedisStore(url)
        with pytest.raises(StoreUnavailable):
            store.start(VIEW, "attention")
        with pytest.raises(StoreUnavailable):
            len(store)
        board = RedisBoard(url, tmp_path / "jobs", heartbeat_s=60)
        own = tmp_path / "jobs" / "mine"
        board.publish(own)  # its heartbeat is refused: not an exception either
        assert board.folders() == [(own, True)]
        with pytest.raises(JobError, match=re.escape(UNAVAILABLE)):
            board.next_number()
        board.close()
    finally:
        process.kill()
        process.wait()


def test_only_refusals_and_lost_connections_count_as_an_unavailable_store():
    import redis.exceptions as x

    from server.redis_store import unusable

    for refused in (
        x.ResponseError("DENIED Redis is running in protected mode"),
        x.ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist"),
        x.ReadOnlyError("You can't write against a read only replica."),
        x.NoPermissionError("this user has no permissions to run the 'hset' command"),
        x.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        x.AuthenticationError("Authentication required."),
        x.BusyLoadingError("Redis is loading the dataset in memory"),
        x.ConnectionError("Connection refused"),
        x.TimeoutError("Timeout reading from socket"),
    ):
        assert unusable(refused), refused
    for ours in (
        x.ResponseError("ERR unknown command 'HSETX'"),
        x.ResponseError("WRONGTYPE Operation against a key"),
        x.NoScriptError("x"),
    ):
        assert not unusable(ours), ours
