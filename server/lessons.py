"""Lessons: a teacher's short sequence of views with explanations, read from a TOML or JSON file (no Streamlit here).

A lesson file names a title and 1..MAX_STEPS steps. Each step is a view, as a link describes one
(`urlstate.parse` checks it), plus a title, an explanation and maybe a question to answer before the
view is revealed. A step inherits every view field it leaves out from the step before, so a step that
only turns to another head keeps the text, model and page. The parser returns plain strings only:
whatever the file says is shown literally by the app. Its error messages are Markdown, and quote the
file only through `literal.md`.

    title = "What attention computes"
    [[steps]]
    title = "One head, as a heatmap"
    checkpoint = "lm"
    text = "the boys near the tall queen are shy ."
    page = "attention"
    kind = "decoder self"
    layer = 0
    head = 2
    query = 7                            # the query token (the link's "q")
    options = { skip_first = true }      # page options, by their link names
    explain = "Each row is one query token…"
    [steps.question]                     # optional
    type = "attend"                      # or "next"
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from server import urlstate
from server.literal import md

LESSONS_DIR = Path(__file__).resolve().parents[1] / "assets" / "lessons"  # the shipped lessons
MAX_BYTES = 64 * 1024  # a lesson file: checked before it is decoded
MAX_STEPS = 40
MAX_TITLE_CHARS = 120
MAX_SUMMARY_CHARS = 400
MAX_EXPLAIN_CHARS = 2000
MAX_PROMPT_CHARS = 200
MAX_PROBLEMS = 20  # a LessonError lists at most this many
MAX_FILES = 50  # lesson files `find` returns
QUESTION_TYPES = ("attend", "next")  # "attend": which key token will this head look at; "next": which word comes next
SUFFIXES = (".toml", ".json")
FOLDER_SUFFIXES = (".lesson.toml", ".lesson.json")  # lesson files in a models folder

LESSON_KEYS = ("title", "summary", "steps")
# A step's view fields: file key -> link parameter (in the order a link lists them).
VIEW_FIELDS = {
    "checkpoint": "checkpoint",
    "text": "text",
    "target": "target",
    "src_lang": "src_lang",
    "tgt_lang": "tgt_lang",
    "page": "page",
    "kind": "kind",
    "layer": "layer",
    "head": "head",
    "query": "q",
}
INDEX_FIELDS = ("layer", "head", "query")
STEP_KEYS = ("title", "explain", *VIEW_FIELDS, "options", "question")
QUESTION_KEYS = ("type", "prompt")
# Page options by their link names, and the TOML type each takes: bool (written "1"/"0"), int (≥ 0) or str.
OPTIONS = {
    "stretch": bool,
    "skip_first": bool,
    "scale": str,
    "group": bool,
    "flow": bool,
    "method": str,
    "ig_steps": int,
    "dec_pos": int,
    "sublayers": bool,
    "window": int,
    "heads": str,
    "ablation": str,
    "metric": str,
    "copies": bool,
    "cmp": str,
    "text2": str,
    "checkpoint2": str,
    "snap1": int,
    "snap2": int,
}
TYPE_WORDS = {bool: "true or false", int: "a whole number ≥ 0", str: "text in quotes"}


class LessonError(ValueError):
    """A lesson file that cannot be used; `problems` lists every mistake found (Markdown, file content quoted literally)."""

    def __init__(self, problems: Sequence[str]):
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Question:
    """What a step asks before it reveals its view."""

    type: str  # one of QUESTION_TYPES
    prompt: str | None  # the teacher's wording; None: the app words it


@dataclass(frozen=True)
class Step:
    """One view of a lesson, with what to read beside it."""

    title: str
    explain: str  # plain text ("" when the step has none)
    page: str
    params: tuple[tuple[str, str], ...]  # the full link parameters of the view, inherited ones included
    question: Question | None

    def link_params(self) -> dict[str, str]:
        """The view as a link's query parameters (what `urlstate.parse` reads)."""
        return dict(self.params)


@dataclass(frozen=True)
class Lesson:
    """A parsed, validated lesson."""

    id: str  # stable: "shipped:<file stem>", else "sha256:<first 16 hex digits of the file's sha256>"
    title: str
    summary: str
    steps: tuple[Step, ...]
    source: str  # "shipped", "uploaded", or the file's path


class _Problems(list):
    """The mistakes found so far, each "where: what"; past MAX_PROBLEMS only counted."""

    more = 0

    def add(self, where: str, what: str) -> None:
        if len(self) < MAX_PROBLEMS:
            self.append(f"{where}: {what}" if where else what)
        else:
            self.more += 1

    def error(self) -> LessonError:
        return LessonError([*self, *([f"… and {self.more} more problem(s) not listed."] if self.more else [])])


def _got(value: object) -> str:
    """The value the file gave, for a message: quoted literally, its TOML type named when it is not text."""
    if isinstance(value, bool):
        return md(str(value).lower())
    if isinstance(value, dict | list):
        return "a table" if isinstance(value, dict) else "a list"
    return md(value, 40)


def _unknown_keys(table: dict, allowed: Sequence[str], where: str, problems: _Problems) -> None:
    for key in table:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {near[0]}?)" if near else f"; expected one of {', '.join(allowed)}"
            problems.add(where, f"unknown key {md(key, 40)}{hint}")


def _text(table: dict, key: str, limit: int, where: str, problems: _Problems, required: bool = False) -> str | None:
    """A plain-text field: a string of at most `limit` characters (None when absent or unusable)."""
    value = table.get(key)
    at = f"{where}, {key}" if where else key
    if value is None:
        if required:
            problems.add(at, "required, and missing")
        return None
    if not isinstance(value, str):
        problems.add(at, f"expected {TYPE_WORDS[str]}, got {_got(value)}")
        return None
    if required and not value.strip():
        problems.add(at, "required, and empty")
    if len(value) > limit:
        problems.add(at, f"{len(value):,} characters; at most {limit:,}")
        return None
    return value


def _index(value: object) -> bool:
    return type(value) is int and 0 <= value <= urlstate.MAX_INDEX  # bool is an int subclass: excluded here


def _not_index(value: object) -> str:
    """Why `value` is not a layer, head, query or other index."""
    if type(value) is int and value > urlstate.MAX_INDEX:
        return f"at most {urlstate.MAX_INDEX:,}, got {_got(value)}"
    return f"expected {TYPE_WORDS[int]}, got {_got(value)}"


def _options(raw: object, where: str, problems: _Problems) -> dict[str, str]:
    """Page options as link parameters: bools become "1"/"0", whole numbers their digits."""
    at = f"{where}, options"
    if not isinstance(raw, dict):
        problems.add(at, f"expected a table such as {{ stretch = true }}, got {_got(raw)}")
        return {}
    _unknown_keys(raw, tuple(OPTIONS), at, problems)
    out = {}
    for name, want in OPTIONS.items():
        if name not in raw:
            continue
        value = raw[name]
        ok = _index(value) if want is int else type(value) is want
        if want is str and ok and len(value) > urlstate.MAX_TEXT_CHARS:
            problems.add(f"{at}.{name}", f"{len(value):,} characters; at most {urlstate.MAX_TEXT_CHARS:,}")
        elif not ok:
            problems.add(f"{at}.{name}", _not_index(value) if want is int else f"expected {TYPE_WORDS[want]}, got {_got(value)}")
        elif want is bool:
            out[name] = urlstate.switch(value)
        else:
            out[name] = str(value)
    return out


def _question(raw: object, where: str, view: dict[str, str], problems: _Problems) -> Question | None:
    at = f"{where}, question"
    if not isinstance(raw, dict):
        problems.add(at, f'expected a table such as {{ type = "attend" }}, got {_got(raw)}')
        return None
    _unknown_keys(raw, QUESTION_KEYS, at, problems)
    kind = raw.get("type")
    if kind not in QUESTION_TYPES:
        got = "nothing" if kind is None else _got(kind)
        problems.add(f"{at}.type", f"expected {' or '.join(QUESTION_TYPES)}, got {got}")
        return None
    prompt = _text(raw, "prompt", MAX_PROMPT_CHARS, at, problems)
    missing = [f for f in ("kind", "layer", "head", "query") if VIEW_FIELDS[f] not in view]
    if kind == "attend" and missing:
        problems.add(at, f"an attend question is about one head and query token: the step must name {', '.join(missing)}")
    return Question(type=kind, prompt=prompt or None)


def _step(
    raw: object, n: int, before: dict[str, str], checkpoints: Sequence[str], pages: Sequence[str], problems: _Problems
) -> tuple[Step | None, dict[str, str]]:
    """Step n (from 1) and its view's link parameters, given the step before's."""
    where = f"step {n}"
    if not isinstance(raw, dict):
        problems.add(where, f"expected a table ([[steps]]), got {_got(raw)}")
        return None, before
    _unknown_keys(raw, STEP_KEYS, where, problems)
    title = _text(raw, "title", MAX_TITLE_CHARS, where, problems, required=True)
    explain = _text(raw, "explain", MAX_EXPLAIN_CHARS, where, problems) or ""
    view = dict(before)
    for field, param in VIEW_FIELDS.items():
        if field not in raw:
            continue
        value = raw[field]
        if field in INDEX_FIELDS:
            if _index(value):
                view[param] = str(value)
            else:
                problems.add(f"{where}, {field}", _not_index(value))
            continue
        value = _text(raw, field, urlstate.MAX_TEXT_CHARS, where, problems)
        known = {"checkpoint": checkpoints, "page": pages, "kind": urlstate.KINDS}.get(field)
        if value is not None and known is not None and value not in known:
            names = map(md, known) if field == "checkpoint" else known  # a server's own models are named on its disk
            problems.add(f"{where}, {field}", f"unknown {field} {md(value, 40)}; expected one of {', '.join(names)}")
        elif value is not None:
            view[param] = value
    if "options" in raw:
        view.update(_options(raw["options"], where, problems))
    for field in ("checkpoint", "page"):
        if n == 1 and field not in raw:  # nothing to inherit from
            problems.add(f"{where}, {field}", "required in the first step (there is no step before to take it from)")
    for warning in urlstate.parse(view, checkpoints, pages).warnings:  # what a link with these values would lose
        problems.add(where, _from_link(warning))
    question = _question(raw["question"], where, view, problems) if "question" in raw else None
    if title is None or "page" not in view:
        return None, view
    return Step(title=title, explain=explain, page=view["page"], params=_ordered(view), question=question), view


def _from_link(warning: str) -> str:
    """A `urlstate` warning about a link's value, reworded for a lesson file (the quoted value stays as it was)."""
    for link_words, ours in (("Ignored the link's ", "Cannot use "), ("Ignored ", "Cannot use "), (" in the link", "")):
        warning = warning.replace(link_words, ours)
    return warning


def _ordered(view: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The view's parameters in one order (view fields as a link lists them, then options), whatever the file's order."""
    order = [*VIEW_FIELDS.values(), *OPTIONS]
    return tuple((name, view[name]) for name in order if name in view)


def _load(data: bytes, name: str, problems: _Problems) -> dict | None:
    """The file's table, or None with the reason among the problems."""
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        problems.add("", f"{md(name, 80)} is not a lesson file: its name must end in .toml or .json")
        return None
    if len(data) > MAX_BYTES:  # before decoding: a large upload costs nothing more
        problems.add("", f"the file is {len(data):,} bytes; a lesson file may be at most {MAX_BYTES:,} bytes (64 KiB)")
        return None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        problems.add("", f"the file is not UTF-8 text (its byte at offset {e.start} is not); save it as UTF-8")
        return None
    if not text.strip():
        problems.add("", "the file is empty")
        return None
    try:
        table = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except tomllib.TOMLDecodeError as e:
        problems.add("", f"not valid TOML: {md(e, 160)}")
        return None
    except json.JSONDecodeError as e:
        problems.add("", f"not valid JSON: {md(e, 160)}")
        return None
    if not isinstance(table, dict):
        problems.add("", f"expected an object with a title and steps at the top of the file, got {_got(table)}")
        return None
    return table


def lesson_id(data: bytes, name: str, source: str) -> str:
    """A lesson's stable id: its file's stem when shipped, else a digest of its bytes (the same file, the same id)."""
    if source == "shipped":
        return f"shipped:{Path(name).stem}"
    return f"sha256:{hashlib.sha256(data).hexdigest()[:16]}"


def parse(data: bytes, name: str, checkpoints: Sequence[str], pages: Sequence[str], source: str = "uploaded") -> Lesson:
    """A lesson from a file's bytes; `name` (the file's name) decides TOML or JSON by its suffix.

    Raises LessonError listing every problem found (up to MAX_PROBLEMS): the file's size, encoding,
    syntax, unknown keys, types, lengths, and each step's view as `urlstate.parse` judges it.
    """
    problems = _Problems()
    table = _load(data, name, problems)
    if table is None:
        raise problems.error()
    _unknown_keys(table, LESSON_KEYS, "", problems)
    title = _text(table, "title", MAX_TITLE_CHARS, "", problems, required=True)
    summary = _text(table, "summary", MAX_SUMMARY_CHARS, "", problems) or ""
    raw_steps = table.get("steps", [])
    if not isinstance(raw_steps, list):
        problems.add("steps", f"expected a list of [[steps]] tables, got {_got(raw_steps)}")
        raw_steps = []
    elif not raw_steps:
        problems.add("steps", f"none: a lesson needs 1 to {MAX_STEPS} steps ([[steps]] tables)")
    elif len(raw_steps) > MAX_STEPS:
        problems.add("steps", f"{len(raw_steps)} steps; a lesson may have at most {MAX_STEPS}")
    steps, view = [], {}
    for n, raw in enumerate(raw_steps[:MAX_STEPS], start=1):
        step, view = _step(raw, n, view, checkpoints, pages, problems)
        steps.append(step)
    if problems or title is None:
        raise problems.error()
    return Lesson(id=lesson_id(data, name, source), title=title, summary=summary, steps=tuple(steps), source=source)


def _named_checkpoints(data: bytes) -> set[str]:
    """The checkpoint names a shipped lesson's steps give (to leave out a lesson on a model this server lacks)."""
    steps = tomllib.loads(data.decode("utf-8")).get("steps", [])
    return {s["checkpoint"] for s in steps if isinstance(s, dict) and isinstance(s.get("checkpoint"), str)}


def shipped(checkpoints: Sequence[str], pages: Sequence[str]) -> list[Lesson]:
    """The shipped lessons (assets/lessons/*.toml), sorted by file name; a lesson on a model this server lacks is left out.

    Any other problem in a shipped lesson raises LessonError: it is a bug in our assets (a test parses them all).
    """
    out = []
    for path in sorted(LESSONS_DIR.glob("*.toml")):
        data = path.read_bytes()
        if _named_checkpoints(data) <= set(checkpoints):
            out.append(parse(data, path.name, checkpoints, pages, source="shipped"))
    return out


def find(folders: Sequence[Path]) -> list[Path]:
    """The lesson files models folders hold: *.lesson.toml and *.lesson.json at a folder's top or one folder down.

    At most MAX_FILES, in a stable order; a symlink that leads out of its folder is skipped, as is a folder
    that cannot be read.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for folder in folders:
        try:
            root = folder.resolve(strict=True)
            candidates = sorted(p for pattern in ("*", "*/*") for p in folder.glob(pattern) if p.name.endswith(FOLDER_SUFFIXES))
        except OSError:
            continue
        for path in candidates:
            try:
                real = path.resolve(strict=True)
                usable = real.is_file() and real.is_relative_to(root)
            except OSError:  # a broken link, a loop, no permission
                continue
            if usable and real not in seen:
                seen.add(real)
                found.append(path)
                if len(found) >= MAX_FILES:
                    return found
    return found
