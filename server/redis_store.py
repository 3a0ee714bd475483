"""The classes in Redis: the same rules as `MemoryStore`, shared by every app process (replica) that reaches the store.

Keys, under a prefix ("attnviz:" by default), for a class with code CODE:
- `class:CODE`: a hash: the teacher token's sha256 (hex), when the teacher last called in, the counters (version,
  asked, questions asked so far), the view (JSON), page, lesson note (JSON), the question (JSON, without its counts)
  and `open`: "NUMBER CHOICES" while the question takes answers, "" otherwise (what an answer checks, without JSON);
- `class:CODE:answers`: a hash, browser id -> choice, for the current question only (a new question starts it anew):
  one answer per browser is one field per browser, and the counts are tallied from it;
- `class:CODE:followers`: a sorted set, browser id -> its last poll;
- `classes`: a sorted set, code -> when its teacher last called in: the classes held (MAX_CLASSES) and the idle ones.

Atomicity: a teacher's call and a new class are optimistic transactions (WATCH the class's keys, read, apply the
rules of `class_store` in Python, MULTI…EXEC the fields that changed; another replica's write in between makes EXEC
fail and the call runs again on what it wrote). A student's calls, many at once, are one Lua script each (an answer:
check, limit and write as one step; a poll: count the follower and read the version). Every key expires a minute
after the class would end idle, so that nothing is left behind by a replica that stopped.

Time is the caller's clock (`now`, or `clock()`), never Redis's, so that the rules are tested with a fake clock as
the memory store's are; Redis's own expiry only sweeps what every replica already counts as ended.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import asdict

from server import class_store
from server.class_store import (
    CODE_ALPHABET,
    CODE_LENGTH,
    ENDED,
    NOT_A_CHOICE,
    ClassError,
    ClassState,
    ClassStore,
    Note,
    Question,
    StoreUnavailable,
    _as_teacher,
    _ask,
    _away,
    _checked_note,
    _checked_question,
    _checked_view,
    _Class,
    _close,
    _followers,
    _hand_over,
    _idle,
    _new_class,
    _question_full,
    _reveal,
    _server_full,
    _state,
    _steer,
    normal_code,
)

CONNECT_SECONDS = 0.5  # a store that does not answer makes a page wait at most about this plus OP_SECONDS
OP_SECONDS = 1.0
KEEP_SECONDS = 60.0  # keys outlive a class's idle end by this much: every replica has counted it as ended by then

# A student's answer: the question must still be the one answered and open, the browser new to it, the choice one
# of its choices, and the question not full. Returns 1 (counted), 0 (refused: answered already, closed or gone),
# 2 (not a choice) or 3 (full): the same checks in the same order as MemoryStore.answer.
ANSWER = """
local room = redis.call('HMGET', KEYS[1], 'touched', 'open')
if not room[1] or tonumber(ARGV[1]) - tonumber(room[1]) > tonumber(ARGV[2]) then return 0 end
local number, choices = string.match(room[2] or '', '^(%d+) (%d+)$')
if number == nil or number ~= ARGV[3] or redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return 0 end
local choice = tonumber(ARGV[5])
if choice < 0 or choice >= tonumber(choices) then return 2 end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[6]) then return 3 end
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""

# A follower's poll: counted (up to MAX_FOLLOWERS, forgetting those long gone once full, as MemoryStore.poll does),
# then the class's version, asked and the teacher's last call; nil when the class is gone or idle.
POLL = """
local touched = redis.call('HGET', KEYS[1], 'touched')
if not touched or tonumber(ARGV[1]) - tonumber(touched) > tonumber(ARGV[2]) then return false end
if ARGV[5] then
  if redis.call('ZSCORE', KEYS[2], ARGV[5]) or redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[5])
    if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
      redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
    end
    local ttl = redis.call('PTTL', KEYS[1])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
  end
end
return redis.call('HMGET', KEYS[1], 'version', 'asked', 'touched')
"""


def _held(code: str) -> bool:
    """Whether `code` (normalised) can name a class at all: only such a code is made into a key."""
    return len(code) == CODE_LENGTH and set(code) <= set(CODE_ALPHABET)


def _fields(room: _Class) -> dict[str, str]:
    """A class as its hash's fields (its answers and followers live in keys of their own)."""
    q = room.question
    stored = None if q is None else {k: v for k, v in asdict(q).items() if k != "counts"}
    return {
        "token": room.token_hash.hex(),
        "touched": repr(room.touched),
        "version": str(room.version),
        "asked": str(room.asked),
        "questions": str(room.questions),
        "params": json.dumps(room.params),
        "page": room.page,
        "note": "" if room.note is None else json.dumps(asdict(room.note)),
        "question": "" if stored is None else json.dumps(stored),
        "open": "" if q is None or q.revealed else f"{q.number} {len(q.options)}",
    }


def _room(code: str, fields: Mapping[str, str], choices: list[str]) -> _Class:
    """A class from its hash's fields and its current question's answers (the choice of each browser)."""
    question = None
    if fields["question"]:
        q = json.loads(fields["question"])
        tally = Counter(choices)
        counts = tuple(tally[str(i)] for i in range(len(q["options"])))
        question = Question(**{**q, "options": tuple(q["options"]), "model": tuple(q["model"]), "counts": counts})
    return _Class(
        code,
        bytes.fromhex(fields["token"]),
        float(fields["touched"]),
        version=int(fields["version"]),
        asked=int(fields["asked"]),
        questions=int(fields["questions"]),
        params=json.loads(fields["params"]),
        page=fields["page"],
        note=Note(**json.loads(fields["note"])) if fields["note"] else None,
        question=question,
    )


def connect(url: str):
    """A client of the store at `url` (strings in, strings out), and the errors that mean it cannot be reached."""
    import redis  # only a deployment that configures a store needs the package
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # One retry, at once, and only for a broken connection: a pooled connection to a store that restarted fails
    # once and is made anew; a store that is down fails fast (connection refused) or within the timeouts.
    client = redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=CONNECT_SECONDS,
        socket_timeout=OP_SECONDS,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
    )
    return client, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ResponseError)


# Error replies by which a Redis that answers will not serve this app: protected mode (no password set, and a client
# that is not on its loopback: DENIED), snapshots failing (MISCONF), no master (MASTERDOWN), a read-only replica, no
# permission, out of memory. redis-py raises the last four as classes of their own, the rest as a plain ResponseError.
REFUSALS = ("DENIED", "MISCONF", "MASTERDOWN")


def unusable(e: Exception) -> bool:
    """Whether `e` (one of `connect`'s errors) means the store cannot be used just now: it does not answer, or it
    refuses to serve. Any other error reply is a fault of ours: raised, not hidden as an unavailable store."""
    import redis.exceptions as x

    lost = (x.ConnectionError, x.TimeoutError, x.ReadOnlyError, x.NoPermissionError, x.OutOfMemoryError, x.MasterDownError)
    return isinstance(e, lost) or (isinstance(e, x.ResponseError) and str(e).split(" ", 1)[0] in REFUSALS)


class RedisStore(ClassStore):
    """Classes in a Redis server, shared by every app process that is given the same `url` and `prefix`.

    `clock` is wall time by default, not `time.monotonic` as for MemoryStore: every replica compares times that
    another one wrote (when the teacher last called in, a follower's last poll), and a monotonic clock counts from
    an arbitrary point of each process (its machine's boot), so two processes' readings do not compare. Replicas'
    clocks need to agree to within a few seconds (NTP does far better)."""

    def __init__(self, url: str, clock: Callable[[], float] = time.time, prefix: str = "attnviz:") -> None:
        self._redis, self._lost = connect(url)
        self._clock = clock
        self._prefix = prefix
        self._registry = f"{prefix}classes"
        self._answer = self._redis.register_script(ANSWER)
        self._poll = self._redis.register_script(POLL)

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def _keys(self, code: str) -> tuple[str, str, str]:
        """The class's hash, its current question's answers, its followers."""
        key = f"{self._prefix}class:{code}"
        return key, f"{key}:answers", f"{key}:followers"

    @contextmanager
    def _reached(self):
        """A store that does not answer or refuses to serve, as StoreUnavailable (the app says classes are unavailable,
        and tries again later)."""
        try:
            yield
        except self._lost as e:
            if not unusable(e):
                raise
            raise StoreUnavailable("Classes are unavailable just now (the class store does not answer).") from e

    def _ttl(self) -> int:
        return math.ceil(class_store.IDLE_SECONDS + KEEP_SECONDS)

    def _read(self, pipe, code: str, now: float) -> _Class | None:
        """The class, read on a watched connection (None when there is none, or it is idle)."""
        key, answers, _ = self._keys(code)
        fields = pipe.hgetall(key)
        if not fields or _idle(float(fields["touched"]), now):
            return None
        return _room(code, fields, pipe.hvals(answers) if fields["question"] else [])

    def _teach(self, code: str, token: str, now: float, act: Callable[[_Class], object], end: bool = False):
        """`act` on class `code` as its teacher, in one transaction: the class's fields it changed are saved (with the
        teacher's call, even when `act` refuses with a ClassError after it), or the class is deleted when `end`."""
        code = normal_code(code)
        if not _held(code):
            raise ClassError(ENDED)
        keys = self._keys(code)

        def attempt(pipe):
            room = self._read(pipe, code, now)
            before = {} if room is None else _fields(room)
            _as_teacher(room, token, now)  # a ClassError here writes nothing
            number = room.question.number if room.question else 0
            try:
                outcome = act(room), None
            except ClassError as e:
                outcome = None, e
            pipe.multi()
            if end:
                pipe.delete(*keys)
                pipe.zrem(self._registry, code)
                return outcome
            changed = {k: v for k, v in _fields(room).items() if before[k] != v}
            if changed:
                pipe.hset(keys[0], mapping=changed)
            if (room.question.number if room.question else 0) != number:
                pipe.delete(keys[1])  # a new question (or none): nobody has answered it
            pipe.zadd(self._registry, {code: room.touched}, xx=True)
            for key in (*keys, self._registry):
                pipe.expire(key, self._ttl())
            return outcome

        # Not its followers: they change at every poll of every student, and no rule of the teacher's reads them.
        with self._reached():
            result, error = self._redis.transaction(attempt, keys[0], keys[1], value_from_callable=True)
        if error is not None:
            raise error
        return result

    def start(self, params: Mapping[str, str], page: str, now: float | None = None) -> tuple[str, str]:
        now = self._now(now)
        view = _checked_view(params, page)

        def attempt(pipe):
            held = pipe.zrange(self._registry, 0, -1, withscores=True)
            # An idle class ends here, as MemoryStore's tidying ends it; so does one whose keys expired or were lost.
            gone = [c for c, touched in held if _idle(touched, now) or not pipe.exists(self._keys(c)[0])]
            live = {c for c, _ in held} - set(gone)
            if len(live) >= class_store.MAX_CLASSES:
                raise _server_full()
            room, token = _new_class(view, page, now, live)
            keys = self._keys(room.code)
            pipe.multi()
            for code in gone:
                pipe.delete(*self._keys(code))
            if gone:
                pipe.zrem(self._registry, *gone)
            pipe.delete(*keys)  # whatever an ended class of the same code left
            pipe.hset(keys[0], mapping=_fields(room))
            pipe.zadd(self._registry, {room.code: now})
            for key in (keys[0], self._registry):
                pipe.expire(key, self._ttl())
            return room.code, token

        with self._reached():
            return self._redis.transaction(attempt, self._registry, value_from_callable=True)

    def state(self, code: str, now: float | None = None) -> ClassState | None:
        now = self._now(now)
        code = normal_code(code)
        if not _held(code):
            return None
        key, answers, followers = self._keys(code)
        with self._reached(), self._redis.pipeline() as pipe:  # MULTI…EXEC: the three keys as of one moment
            fields, choices, seen = pipe.hgetall(key).hvals(answers).zrange(followers, 0, -1, withscores=True).execute()
        if not fields or _idle(float(fields["touched"]), now):
            return None
        return _state(_room(code, fields, choices), _followers((t for _, t in seen), now), now)

    def poll(self, code: str, browser: str | None = None, now: float | None = None) -> tuple[int, int, bool] | None:
        now = self._now(now)
        code = normal_code(code)
        if not _held(code):
            return None
        key, _, followers = self._keys(code)
        args = [repr(now), repr(class_store.IDLE_SECONDS), class_store.MAX_FOLLOWERS]
        args.append(f"({now - class_store.FOLLOWER_SECONDS!r}")  # polls older than this are forgotten once full
        if browser is not None:
            args.append(str(browser))
        with self._reached():
            found = self._poll(keys=[key, followers], args=args)
        if found is None:
            return None
        version, asked, touched = found
        return int(version), int(asked), _away(float(touched), now)

    def is_teacher(self, code: str, token: str, now: float | None = None) -> bool:
        try:
            self._teach(code, token, self._now(now), lambda room: None)
            return True
        except ClassError:
            return False

    def steer(
        self, code: str, token: str, params: Mapping[str, str], page: str, note: Note | None = None, now: float | None = None
    ) -> int:
        view = _checked_view(params, page)
        _checked_note(note)
        return self._teach(code, token, self._now(now), lambda room: _steer(room, view, page, note))

    def ask(self, code: str, token: str, question: Question, now: float | None = None) -> Question:
        _checked_question(question)
        return self._teach(code, token, self._now(now), lambda room: _ask(room, question))

    def answer(self, code: str, number: int, browser: str, choice: int, now: float | None = None) -> bool:
        now = self._now(now)
        code = normal_code(code)
        if not _held(code):
            return False
        key, answers, _ = self._keys(code)
        wanted = str(int(number)) if isinstance(number, int) else ""
        choice = int(choice) if isinstance(choice, int) else -1
        args = [repr(now), repr(class_store.IDLE_SECONDS), wanted, str(browser), choice, class_store.MAX_ANSWERS]
        with self._reached():
            outcome = self._answer(keys=[key, answers], args=args)
        if outcome == 2:
            raise ClassError(NOT_A_CHOICE)
        if outcome == 3:
            raise _question_full()
        return outcome == 1

    def reveal(self, code: str, token: str, now: float | None = None) -> Question:
        return self._teach(code, token, self._now(now), _reveal)

    def close_question(self, code: str, token: str, now: float | None = None) -> None:
        self._teach(code, token, self._now(now), _close)

    def hand_over(self, code: str, token: str, now: float | None = None) -> str:
        return self._teach(code, token, self._now(now), _hand_over)

    def end(self, code: str, token: str) -> None:
        self._teach(code, token, self._clock(), lambda room: None, end=True)

    def __len__(self) -> int:
        """The classes held now (those not idle)."""
        now = self._clock()
        with self._reached():
            held = self._redis.zrange(self._registry, 0, -1, withscores=True)
        return sum(1 for _, touched in held if not _idle(touched, now))
