"""The classes this server holds (a teacher's view, its followers, a question and its answers): one small interface.

No Streamlit here. `ClassStore` is what the app asks; `MemoryStore` keeps everything in this process (one server,
no extra service). A deployment of several app processes puts the same interface over a shared store
(`redis_store.RedisStore`), so nothing above this module knows where a class lives. Every method takes `now`
(seconds, `time.monotonic()` by default) so that the rules about time can be tested without waiting.

Who may do what:
- a class has a short code (students type it, or scan it) and a secret teacher token (only in the teacher's link);
- only the token steers the view, asks and reveals, ends the class or hands it to another browser (a new token);
- a student answers once per question per browser (a hashed browser id); answers are kept as counts only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field, replace

# Letters and digits that cannot be mistaken for each other from the back of a room (no 0/O, 1/I/L, 2/Z, 5/S, 8/B).
CODE_ALPHABET = "ACDEFHJKMNPRTUVWXY34679"
CODE_LENGTH = 5  # 23**5 ≈ 6.4 million codes
MAX_CLASSES = 40  # classes one server holds at once
IDLE_SECONDS = 20 * 60.0  # a class whose teacher's screen has not been seen for this long ends by itself
TEACHER_AWAY_SECONDS = 60.0  # its followers are told the teacher's screen has gone after this long (the teacher's
# page calls in every few seconds while it is open, so a teacher who only talks is not "away")
FOLLOWER_SECONDS = 10.0  # a follower not seen for this long is no longer counted
MAX_FOLLOWERS = 500  # followers counted per class (more still follow; the count stops there)
MAX_ANSWERS = 500  # answers one question takes
MAX_OPTIONS = 64  # the choices of one question (a text's tokens, or the likeliest next tokens)
MAX_PROMPT_CHARS = 200
MAX_NOTE_CHARS = 2_400  # a lesson step's title and explanation, together
MAX_PARAM_CHARS = 21_000  # one view parameter (a text is at most urlstate.MAX_TEXT_CHARS)
MAX_PARAMS = 40
QUESTION_TYPES = ("attend", "next")


class ClassError(Exception):
    """A plain message for the person who tried (a wrong code, a stale token, a full server)."""


class StoreUnavailable(Exception):
    """The shared store cannot be reached just now (stopped, restarting, a network fault): classes are unavailable.

    Not a ClassError: that one is a refusal that stands (the class ended, the key was handed over), and the app answers
    it by leaving the class, which would cost a teacher the class's key over a store that is back a minute later."""


@dataclass(frozen=True)
class Question:
    """A question to the class on the view it was asked on, and what the model computed for it."""

    number: int  # 1, 2, … within the class: a new question is a new number
    type: str  # "attend": which key will this head look at from the query; "next": which token comes next
    prompt: str  # shown as literal text
    options: tuple[str, ...]  # the choices (key tokens, or candidate next tokens), as the model's tokens read
    model: tuple[float, ...]  # the model's own numbers for each choice: the attention row, or next-token probabilities
    counts: tuple[int, ...]  # how many browsers chose each option
    revealed: bool = False
    where: str = ""  # the view it was asked on, in words ("cross · layer 1 · head 1 · from 'sees'")

    @property
    def answered(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class Note:
    """What a lesson says beside the current step (plain text, shown literally)."""

    lesson: str  # the lesson's title
    step: int  # 0-based
    steps: int
    title: str
    explain: str
    asks: bool = False  # the step has a question: its explanation (which answers it) waits for the reveal


@dataclass(frozen=True)
class ClassState:
    """What a follower needs to know of its class at one moment."""

    code: str
    version: int  # grows with every change a follower must draw (view, note, question, reveal)
    asked: int  # grows with every change of the question alone (asked, revealed, closed): what a student who
    # stepped away still follows
    params: Mapping[str, str]  # the teacher's view: the link's query parameters (validated again by each follower)
    page: str
    note: Note | None
    question: Question | None
    followers: int  # seen in the last FOLLOWER_SECONDS
    teacher_away: bool = False  # the teacher's screen has not called in for TEACHER_AWAY_SECONDS


@dataclass
class _Class:
    code: str
    token_hash: bytes
    touched: float  # the teacher's last call
    version: int = 0
    asked: int = 0
    questions: int = 0  # questions asked so far: a new one is numbered after every one before it, closed or not
    params: dict[str, str] = field(default_factory=dict)
    page: str = "attention"
    note: Note | None = None
    question: Question | None = None
    answered: set[str] = field(default_factory=set)  # browser ids that answered the current question
    seen: dict[str, float] = field(default_factory=dict)  # browser id -> last poll


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def normal_code(raw: str) -> str:
    """A code as typed ("k7p-2q ", "K7P2Q") in the form the store keeps: upper case, no spaces or dashes."""
    return "".join(ch for ch in str(raw)[:40].upper() if ch not in " -_")


# The rules every store applies to one class (`_Class`), whichever way it keeps classes: the caller holds the class
# (a lock, or a store's transaction) and saves what they change.

ENDED = "This class has ended (or its code is wrong)."
NOT_TEACHER = "This browser's teacher key does not steer this class (it was handed over, or the link was cut)."
NOT_A_CHOICE = "That answer is not one of the choices."


def _idle(touched: float, now: float) -> bool:
    """Whether a class whose teacher last called in at `touched` has ended by itself."""
    return now - touched > IDLE_SECONDS


def _away(touched: float, now: float) -> bool:
    return now - touched > TEACHER_AWAY_SECONDS


def _followers(seen: Iterable[float], now: float) -> int:
    """How many of these last polls count as a follower now."""
    return sum(1 for t in seen if now - t <= FOLLOWER_SECONDS)


def _server_full() -> ClassError:
    return ClassError(f"This server already holds {MAX_CLASSES} classes, its most: end one (or wait until an idle one ends).")


def _question_full() -> ClassError:
    return ClassError(f"This question has taken its most answers ({MAX_ANSWERS}).")


def _checked_view(params: Mapping[str, str], page: str) -> dict[str, str]:
    if len(params) > MAX_PARAMS or any(len(str(k)) > 40 or len(str(v)) > MAX_PARAM_CHARS for k, v in params.items()):
        raise ClassError("This view is too large to share with the class.")
    if len(page) > 40:
        raise ClassError("Unknown page.")
    return {str(k): str(v) for k, v in params.items()}


def _checked_note(note: Note | None) -> None:
    if note is not None and len(note.title) + len(note.explain) + len(note.lesson) > MAX_NOTE_CHARS:
        raise ClassError("This lesson step's text is too long to share.")


def _checked_question(question: Question) -> None:
    if question.type not in QUESTION_TYPES:
        raise ClassError(f"Unknown question type {question.type!r}.")
    if not 2 <= len(question.options) <= MAX_OPTIONS or len(question.model) != len(question.options):
        raise ClassError(f"A question needs 2 to {MAX_OPTIONS} choices, each with the model's number.")


def _new_class(view: dict[str, str], page: str, now: float, taken: Container[str]) -> tuple[_Class, str]:
    """A new class (a code not in `taken`) showing this view, and its teacher token (the class keeps only its hash)."""
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    while code in taken:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    token = secrets.token_urlsafe(18)
    return _Class(code, _hash(token), now, version=1, params=view, page=page), token


def _as_teacher(room: _Class | None, token: str, now: float) -> _Class:
    """The class, when `token` steers it (its teacher's screen calling in: the class is not idle); ClassError if not."""
    if room is None:
        raise ClassError(ENDED)
    if not isinstance(token, str) or not hmac.compare_digest(room.token_hash, _hash(token)):
        raise ClassError(NOT_TEACHER)
    room.touched = now
    return room


def _steer(room: _Class, view: dict[str, str], page: str, note: Note | None) -> int:
    if (view, page, note) != (room.params, room.page, room.note):
        room.params, room.page, room.note = view, page, note
        room.version += 1
    return room.version


def _ask(room: _Class, question: Question) -> Question:
    room.questions += 1
    asked = replace(
        question,
        number=room.questions,
        prompt=str(question.prompt)[:MAX_PROMPT_CHARS],
        options=tuple(str(o)[:40] for o in question.options),
        counts=(0,) * len(question.options),
        revealed=False,
    )
    room.question, room.answered = asked, set()
    room.version += 1
    room.asked += 1
    return asked


def _reveal(room: _Class) -> Question:
    if room.question is None:
        raise ClassError("There is no question to reveal.")
    room.question = replace(room.question, revealed=True)
    room.version += 1
    room.asked += 1
    return room.question


def _close(room: _Class) -> None:
    if room.question is not None:
        room.question, room.answered = None, set()
        room.version += 1
        room.asked += 1


def _hand_over(room: _Class) -> str:
    new = secrets.token_urlsafe(18)
    room.token_hash = _hash(new)
    return new


def _state(room: _Class, followers: int, now: float) -> ClassState:
    return ClassState(
        room.code,
        room.version,
        room.asked,
        dict(room.params),
        room.page,
        room.note,
        room.question,
        followers,
        _away(room.touched, now),
    )


class ClassStore(ABC):
    """Classes, their view, their question and answers: the interface every implementation passes the same tests on."""

    @abstractmethod
    def start(self, params: Mapping[str, str], page: str, now: float | None = None) -> tuple[str, str]:
        """A new class showing this view: (code, teacher token). ClassError when the server holds MAX_CLASSES."""

    @abstractmethod
    def state(self, code: str, now: float | None = None) -> ClassState | None:
        """The class's state now; None when there is no such class (never was, ended, or idle too long)."""

    @abstractmethod
    def poll(self, code: str, browser: str | None = None, now: float | None = None) -> tuple[int, int, bool] | None:
        """(version, asked, teacher_away) of the class (cheap: what a follower asks every POLL_SECONDS), counting
        `browser` as a follower; None when there is no such class."""

    @abstractmethod
    def is_teacher(self, code: str, token: str, now: float | None = None) -> bool:
        """Whether `token` steers class `code` now (False for a forged, cut or stale token, or no class). A true answer
        is the teacher's screen calling in: the class is not idle."""

    @abstractmethod
    def steer(
        self, code: str, token: str, params: Mapping[str, str], page: str, note: Note | None = None, now: float | None = None
    ) -> int:
        """The teacher's view (and lesson note) becomes the class's; returns the version (the same when nothing changed)."""

    @abstractmethod
    def ask(self, code: str, token: str, question: Question, now: float | None = None) -> Question:
        """Put a question to the class (replacing any before it): returns it as stored, numbered, with no answers."""

    @abstractmethod
    def answer(self, code: str, number: int, browser: str, choice: int, now: float | None = None) -> bool:
        """Count one browser's answer to question `number`; False when it had answered already (or the question is
        closed or gone). ClassError for a choice out of range or a full question."""

    @abstractmethod
    def reveal(self, code: str, token: str, now: float | None = None) -> Question:
        """Show the class its answers beside the model's numbers."""

    @abstractmethod
    def close_question(self, code: str, token: str, now: float | None = None) -> None:
        """Take the question off every screen."""

    @abstractmethod
    def hand_over(self, code: str, token: str, now: float | None = None) -> str:
        """A new teacher token for the class (for another browser); the old one stops working."""

    @abstractmethod
    def end(self, code: str, token: str) -> None:
        """End the class: its followers are told, and keep a working app."""


class MemoryStore(ClassStore):
    """Classes in this process's memory, behind one lock (calls are short: no model runs under it)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._classes: dict[str, _Class] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def _tidy(self, now: float) -> None:
        for code in [c for c, k in self._classes.items() if _idle(k.touched, now)]:
            del self._classes[code]

    def _get(self, code: str, now: float) -> _Class | None:
        self._tidy(now)
        return self._classes.get(normal_code(code))

    def _teacher(self, code: str, token: str, now: float) -> _Class:
        return _as_teacher(self._get(code, now), token, now)

    def start(self, params: Mapping[str, str], page: str, now: float | None = None) -> tuple[str, str]:
        now = self._now(now)
        view = _checked_view(params, page)
        with self._lock:
            self._tidy(now)
            if len(self._classes) >= MAX_CLASSES:
                raise _server_full()
            room, token = _new_class(view, page, now, self._classes)
            self._classes[room.code] = room
            return room.code, token

    def state(self, code: str, now: float | None = None) -> ClassState | None:
        now = self._now(now)
        with self._lock:
            room = self._get(code, now)
            return None if room is None else _state(room, _followers(room.seen.values(), now), now)

    def poll(self, code: str, browser: str | None = None, now: float | None = None) -> tuple[int, int, bool] | None:
        now = self._now(now)
        with self._lock:
            room = self._get(code, now)
            if room is None:
                return None
            if browser is not None and (browser in room.seen or len(room.seen) < MAX_FOLLOWERS):
                room.seen[browser] = now
                if len(room.seen) >= MAX_FOLLOWERS:  # forget those long gone, so that the count keeps room
                    room.seen = {b: t for b, t in room.seen.items() if now - t <= FOLLOWER_SECONDS}
            return room.version, room.asked, _away(room.touched, now)

    def is_teacher(self, code: str, token: str, now: float | None = None) -> bool:
        now = self._now(now)
        with self._lock:
            try:
                self._teacher(code, token, now)
                return True
            except ClassError:
                return False

    def steer(
        self, code: str, token: str, params: Mapping[str, str], page: str, note: Note | None = None, now: float | None = None
    ) -> int:
        now = self._now(now)
        view = _checked_view(params, page)
        _checked_note(note)
        with self._lock:
            return _steer(self._teacher(code, token, now), view, page, note)

    def ask(self, code: str, token: str, question: Question, now: float | None = None) -> Question:
        now = self._now(now)
        _checked_question(question)
        with self._lock:
            return _ask(self._teacher(code, token, now), question)

    def answer(self, code: str, number: int, browser: str, choice: int, now: float | None = None) -> bool:
        now = self._now(now)
        with self._lock:
            room = self._get(code, now)
            question = room.question if room is not None else None
            if question is None or question.number != number or question.revealed or browser in room.answered:
                return False
            if not isinstance(choice, int) or not 0 <= choice < len(question.options):
                raise ClassError(NOT_A_CHOICE)
            if len(room.answered) >= MAX_ANSWERS:
                raise _question_full()
            room.answered.add(browser)
            counts = list(question.counts)
            counts[choice] += 1
            room.question = replace(question, counts=tuple(counts))
            # No new version: followers need not redraw for a count (the teacher's screen polls it).
            return True

    def reveal(self, code: str, token: str, now: float | None = None) -> Question:
        now = self._now(now)
        with self._lock:
            return _reveal(self._teacher(code, token, now))

    def close_question(self, code: str, token: str, now: float | None = None) -> None:
        now = self._now(now)
        with self._lock:
            _close(self._teacher(code, token, now))

    def hand_over(self, code: str, token: str, now: float | None = None) -> str:
        now = self._now(now)
        with self._lock:
            return _hand_over(self._teacher(code, token, now))

    def end(self, code: str, token: str) -> None:
        with self._lock:
            room = self._teacher(code, token, self._clock())
            del self._classes[room.code]

    def __len__(self) -> int:
        with self._lock:
            return len(self._classes)


def _xsrf_token(cookie: str) -> str:
    """The token inside Streamlit's XSRF cookie, which stays the same in every tab of a browser while the cookie's
    text does not: it is written "2|mask|masked token|time" with a new random mask on every page load."""
    parts = cookie.strip("\"'").split("|")
    if len(parts) == 4 and parts[0] == "2":
        try:
            mask, masked = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
        except ValueError:
            return cookie
        if mask:
            return bytes(b ^ mask[i % len(mask)] for i, b in enumerate(masked)).hex()
    return cookie


def browser_id(secret_cookie: str | None, fallback: str) -> str:
    """An anonymous id for one browser (one answer per browser): a hash of the token in a cookie the browser keeps
    across its tabs (Streamlit's XSRF cookie), never the token itself; `fallback` (this session's own id) without."""
    raw = f"xsrf:{_xsrf_token(secret_cookie)}" if secret_cookie else f"session:{fallback}"
    return hashlib.sha256(b"attnviz-browser:" + raw.encode("utf-8", "replace")).hexdigest()[:32]
