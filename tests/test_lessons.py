"""Lesson files (server/lessons.py): every malformed file is refused with a clear problem; the shipped lessons fit their models.

Only `test_shipped_lessons_fit_their_models` loads shipped checkpoints; the rest parse small byte strings.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib

import pytest

from server import lessons, urlstate
from server.literal import md

CHECKPOINTS = ("translator", "lm", "classifier", "reverse", "minilm")
PAGES = ("attention", "qkv", "model_view", "checkpoint", "output", "training", "ablation", "attribution", "lens", "compare")
GOOD = """
title = "A lesson"
summary = "Two steps."

[[steps]]
title = "First"
checkpoint = "translator"
text = "the cat sees the dog ."
page = "attention"
kind = "encoder self"
layer = 0
head = 1
query = 2
options = { stretch = true, skip_first = false }
explain = "Look at the row of 'sees'."

[steps.question]
type = "attend"
prompt = "From 'sees', where does the head look?"

[[steps]]
title = "Second"
head = 3
"""


def parse(text: str | bytes, name: str = "lesson.toml", **kw) -> lessons.Lesson:
    data = text.encode() if isinstance(text, str) else text
    return lessons.parse(data, name, CHECKPOINTS, PAGES, **kw)


def problems(text: str | bytes, name: str = "lesson.toml") -> tuple[str, ...]:
    with pytest.raises(lessons.LessonError) as e:
        parse(text, name)
    assert str(e.value) == "\n".join(e.value.problems)
    return e.value.problems


def step(body: str, title: str = "A lesson") -> str:
    """A one-step lesson whose first step names a checkpoint and page, plus `body`."""
    return f'title = "{title}"\n[[steps]]\ntitle = "S"\ncheckpoint = "lm"\npage = "attention"\n{body}\n'


def test_good_lesson():
    lesson = parse(GOOD)
    first, second = lesson.steps
    assert (lesson.title, lesson.summary, lesson.source) == ("A lesson", "Two steps.", "uploaded")
    assert first.page == "attention" and first.explain == "Look at the row of 'sees'."
    assert first.question == lessons.Question("attend", "From 'sees', where does the head look?")
    assert first.link_params() == {
        "checkpoint": "translator",
        "text": "the cat sees the dog .",
        "page": "attention",
        "kind": "encoder self",
        "layer": "0",
        "head": "1",
        "q": "2",
        "stretch": "1",
        "skip_first": "0",
    }
    view = urlstate.parse(first.link_params(), CHECKPOINTS, PAGES)
    assert (view.checkpoint, view.kind, view.query, view.stretch, view.skip_first, view.warnings) == (
        "translator",
        "encoder self",
        2,
        True,
        False,
        (),
    )


def test_a_step_inherits_what_it_leaves_out():
    first, second = parse(GOOD).steps
    assert second.link_params() == {**first.link_params(), "head": "3"}  # text, checkpoint, page, options kept
    assert (second.title, second.explain, second.page, second.question) == ("Second", "", "attention", None)


def test_json_and_toml_give_the_same_steps():
    as_json = json.dumps(tomllib.loads(GOOD)).encode()
    assert parse(as_json, "lesson.json").steps == parse(GOOD).steps


def test_ids_are_stable():
    data = GOOD.encode()
    assert parse(data).id == parse(data).id == f"sha256:{hashlib.sha256(data).hexdigest()[:16]}"
    assert parse(data + b"\n").id != parse(data).id
    assert parse(data, "intro.toml", source="shipped").id == "shipped:intro"


def test_options_become_link_strings_and_urlstate_judges_them():
    lesson = parse(step('options = { window = 4, heads = "c1.1,e0.0", copies = true, scale = "sqrt" }'))
    assert lesson.steps[0].link_params() == {
        "checkpoint": "lm",
        "page": "attention",
        "scale": "sqrt",
        "window": "4",
        "heads": "c1.1,e0.0",
        "copies": "1",
    }
    (problem,) = problems(step('options = { scale = "huge" }'))
    assert problem == f"step 1: Cannot use scale {md('huge', 30)}: expected one of linear, sqrt, stretch."
    (problem,) = problems(step('options = { heads = "c1.1,x9" }'))
    assert problem.startswith(f"step 1: Cannot use 1 head(s), e.g. {md('x9', 20)}")


# -- malformed files: each problem says where, and what -----------------------------------------------------


def test_empty_file():
    assert problems(b"") == ("the file is empty",)
    assert problems(b"  \n\n") == ("the file is empty",)


def test_not_utf8():
    (problem,) = problems(b'title = "caf\xe9"\n')
    assert problem == "the file is not UTF-8 text (its byte at offset 12 is not); save it as UTF-8"


def test_toml_syntax_error_gives_line_and_column():
    (problem,) = problems('title = "x"\n[[steps]\ntitle = "y"\n')
    assert problem.startswith("not valid TOML: ") and "line 2" in problem and "column" in problem


def test_json_syntax_error_gives_line_and_column():
    (problem,) = problems('{"title": "x",\n "steps": [}', "lesson.json")
    assert problem.startswith("not valid JSON: ") and "line 2 column" in problem
    (problem,) = problems('["a list"]', "lesson.json")
    assert problem == "expected an object with a title and steps at the top of the file, got a list"


def test_wrong_suffix():
    (problem,) = problems(GOOD, "lesson.yaml")
    assert problem == f"{md('lesson.yaml', 80)} is not a lesson file: its name must end in .toml or .json"
    assert problems(GOOD, "lesson")[0].endswith("its name must end in .toml or .json")


def test_too_big_is_refused_before_decoding():
    data = b"\xff" * (lessons.MAX_BYTES + 1)  # not UTF-8 and not TOML either: neither is looked at
    assert problems(data) == ("the file is 65,537 bytes; a lesson file may be at most 65,536 bytes (64 KiB)",)
    assert problems(b"\xff" * lessons.MAX_BYTES)[0].startswith("the file is not UTF-8")


def test_no_steps():
    assert problems('title = "x"') == ("steps: none: a lesson needs 1 to 40 steps ([[steps]] tables)",)
    assert problems('title = "x"\nsteps = []') == ("steps: none: a lesson needs 1 to 40 steps ([[steps]] tables)",)
    assert problems('title = "x"\nsteps = "many"') == (f"steps: expected a list of [[steps]] tables, got {md('many')}",)


def test_too_many_steps():
    text = step("") + '[[steps]]\ntitle = "more"\n' * lessons.MAX_STEPS
    assert problems(text) == ("steps: 41 steps; a lesson may have at most 40",)
    assert len(parse(step("") + '[[steps]]\ntitle = "more"\n' * (lessons.MAX_STEPS - 1)).steps) == 40


def test_first_step_must_name_checkpoint_and_page():
    assert problems('title = "x"\n[[steps]]\ntitle = "S"\ntext = "the cat ."') == (
        "step 1, checkpoint: required in the first step (there is no step before to take it from)",
        "step 1, page: required in the first step (there is no step before to take it from)",
    )


def test_title_is_required():
    assert problems('[[steps]]\ntitle = "S"\ncheckpoint = "lm"\npage = "qkv"') == ("title: required, and missing",)
    assert problems('title = " "\n[[steps]]\ncheckpoint = "lm"\npage = "qkv"') == (
        "title: required, and empty",
        "step 1, title: required, and missing",
    )


def test_unknown_keys_are_named_with_a_suggestion():
    text = (
        'titel = "typo"\ntitle = "x"\n[[steps]]\ntitle = "S"\ncheckpoint = "lm"\npage = "attention"\nlayre = 1\n'
        'options = { strech = true }\n[steps.question]\ntype = "attend"\npromt = "?"\nkind = "decoder self"\n'
    )
    found = problems(text)
    assert f"unknown key {md('titel', 40)} (did you mean title?)" in found
    assert f"step 1: unknown key {md('layre', 40)} (did you mean layer?)" in found
    assert f"step 1, options: unknown key {md('strech', 40)} (did you mean stretch?)" in found
    assert f"step 1, question: unknown key {md('promt', 40)} (did you mean prompt?)" in found
    assert any(p.startswith(f"step 1, question: unknown key {md('kind', 40)}") for p in found)


def test_unknown_key_without_a_near_name_lists_the_allowed_ones():
    (problem,) = problems(step('[steps.question]\ntype = "next"\nzzz = 1'))
    assert problem == f"step 1, question: unknown key {md('zzz', 40)}; expected one of type, prompt"


@pytest.mark.parametrize(
    ("value", "got"),
    [('"two"', md("two", 40)), ("-1", md(-1, 40)), ("true", md("true")), ("1.5", md(1.5, 40)), ("[1]", "a list")],
)
def test_layer_must_be_a_whole_number(value, got):
    assert problems(step(f"layer = {value}")) == (f"step 1, layer: expected a whole number ≥ 0, got {got}",)


def test_indices_have_a_ceiling():
    assert problems(step("head = 100001")) == (f"step 1, head: at most 100,000, got {md(100001, 40)}",)


def test_wrong_types_elsewhere():
    assert problems(step("text = 3\noptions = { stretch = 1, window = -2, heads = 4 }")) == (
        f"step 1, text: expected text in quotes, got {md(3, 40)}",
        f"step 1, options.stretch: expected true or false, got {md(1, 40)}",
        f"step 1, options.window: expected a whole number ≥ 0, got {md(-2, 40)}",
        f"step 1, options.heads: expected text in quotes, got {md(4, 40)}",
    )
    assert problems(step('options = "stretch"')) == (
        f"step 1, options: expected a table such as {{ stretch = true }}, got {md('stretch', 40)}",
    )


def test_unknown_checkpoint_page_and_kind():
    text = 'title = "x"\n[[steps]]\ntitle = "S"\ncheckpoint = "gpt5"\npage = "home"\nkind = "sideways"'
    known = ", ".join(map(md, CHECKPOINTS))
    assert problems(text) == (
        f"step 1, checkpoint: unknown checkpoint {md('gpt5', 40)}; expected one of {known}",
        f"step 1, page: unknown page {md('home', 40)}; expected one of {', '.join(PAGES)}",
        f"step 1, kind: unknown kind {md('sideways', 40)}; expected one of encoder self, decoder self, cross",
    )


def test_questions():
    assert problems(step('[steps.question]\ntype = "quiz"')) == (
        f"step 1, question.type: expected attend or next, got {md('quiz', 40)}",
    )
    assert problems(step("[steps.question]\nprompt = 'Which?'")) == (
        "step 1, question.type: expected attend or next, got nothing",
    )
    assert problems(step('[steps.question]\ntype = "attend"\n')) == (
        "step 1, question: an attend question is about one head and query token: the step must name kind, layer, head, query",
    )
    lesson = parse(step('[steps.question]\ntype = "next"\nprompt = ""'))
    assert lesson.steps[0].question == lessons.Question("next", None)  # an empty prompt: the app words it


@pytest.mark.parametrize(
    ("body", "where", "limit"),
    [
        ('title = "{}"\n[[steps]]\ntitle = "S"\ncheckpoint = "lm"\npage = "qkv"', "title", lessons.MAX_TITLE_CHARS),
        (
            step('summary = "x"').replace('title = "A lesson"', 'title = "A"\nsummary = "{}"'),
            "summary",
            lessons.MAX_SUMMARY_CHARS,
        ),
        (step('explain = "{}"'), "step 1, explain", lessons.MAX_EXPLAIN_CHARS),
        (step('title = "{}"').replace('title = "S"\n', ""), "step 1, title", lessons.MAX_TITLE_CHARS),
        (step('[steps.question]\ntype = "next"\nprompt = "{}"'), "step 1, question, prompt", lessons.MAX_PROMPT_CHARS),
    ],
)
def test_over_long_text(body, where, limit):
    body = body.replace('summary = "x"\n', "")
    assert parse(body.replace("{}", "a" * limit))
    found = problems(body.replace("{}", "a" * (limit + 1)))
    assert f"{where}: {limit + 1:,} characters; at most {limit:,}" in found


def test_markup_in_the_file_stays_literal():
    title = "<b>Bold</b> **not** :red[red] $x$ `code`"
    lesson = parse(step("").replace('"A lesson"', json.dumps(title)))
    assert lesson.title == title  # a plain string: the app shows it literally
    bad = "<script>x</script> :rocket: `a`"
    (problem,) = problems(step(f"checkpoint = {json.dumps(bad)}").replace('checkpoint = "lm"\n', "", 1))
    assert f"unknown checkpoint {md(bad, 40)};" in problem
    assert problem.count("<script>") == 1 and "``" in problem  # only inside the code span, whose fence outgrows the backtick


def test_every_problem_is_collected_up_to_the_limit():
    text = step("") + '[[steps]]\nlayer = "x"\n' * 30  # each of those steps: no title, a bad layer
    found = problems(text)
    assert len(found) == lessons.MAX_PROBLEMS + 1
    assert found[:2] == ("step 2, title: required, and missing", f"step 2, layer: expected a whole number ≥ 0, got {md('x', 40)}")
    assert found[-1] == "… and 40 more problem(s) not listed."


# -- the shipped lessons ---------------------------------------------------------------------------------------


def test_shipped_lessons_parse():
    found = lessons.shipped(CHECKPOINTS, PAGES)
    assert [lesson.id for lesson in found] == ["shipped:attention_computes", "shipped:heads_with_jobs"]
    for lesson in found:
        assert lesson.source == "shipped" and 5 <= len(lesson.steps) <= 8
        assert all(s.explain and s.title for s in lesson.steps)
        assert any(s.question and s.question.type == "attend" for s in lesson.steps)
        for s in lesson.steps:
            assert urlstate.parse(s.link_params(), CHECKPOINTS, PAGES).warnings == ()
    # a lesson on a model this server lacks is left out
    assert [lesson.id for lesson in lessons.shipped(("translator", "lm"), PAGES)] == ["shipped:attention_computes"]
    assert lessons.shipped(("lm",), PAGES) == []


def test_shipped_lessons_fit_their_models():
    """Every step's kind, layer, head, query token and knocked-out heads exist in its shipped checkpoint; a "next"
    question is on a model with a decoder; and each attend question's explanation names the key token the head
    looks at most."""
    from transformer import api
    from transformer.checkpoints import catalog
    from transformer.checkpoints.format import load_checkpoint
    from transformer.model.trace import query_tokens

    available = catalog.available()
    loaded = {}
    for lesson in lessons.shipped(CHECKPOINTS, PAGES):
        for n, s in enumerate(lesson.steps, start=1):
            where = f"{lesson.id} step {n}"
            view = urlstate.parse(s.link_params(), CHECKPOINTS, PAGES)
            if view.checkpoint not in available:
                pytest.skip(f"the shipped checkpoint {view.checkpoint} is not installed")
            if view.checkpoint not in loaded:
                loaded[view.checkpoint] = load_checkpoint(available[view.checkpoint].path, device="cpu")
            ckpt = loaded[view.checkpoint]
            cfg = ckpt.config
            assert view.kind in cfg.attention_kinds, where
            assert view.layer < cfg.layers_of(view.kind) and view.head < cfg.n_heads, where
            tokens = api.streams(ckpt, view.text, view.target)
            queries = query_tokens(view.kind, *tokens, cfg.has_encoder)
            assert view.query < len(queries), where
            for kind, layer, head in view.heads or ():
                assert kind in cfg.attention_kinds and layer < cfg.layers_of(kind) and head < cfg.n_heads, where
            if s.question and s.question.type == "next":
                assert cfg.kind in ("decoder", "encoder-decoder"), where
            if s.question and s.question.type == "attend":
                trace = api.trace_text(ckpt, view.text, view.target, tokens=tokens)
                weights = trace.attention(view.kind, view.layer).weights[0, view.head, view.query]
                top = trace.key_tokens(view.kind)[int(weights.argmax())]
                assert f"'{top}'" in s.explain, (where, top)


# -- lesson files in a models folder ---------------------------------------------------------------------------


def test_find(tmp_path):
    models, outside = tmp_path / "models", tmp_path / "outside"
    (models / "gpt" / "deeper").mkdir(parents=True)
    outside.mkdir()
    for path in (
        models / "intro.lesson.toml",
        models / "gpt" / "heads.lesson.json",
        models / "gpt" / "deeper" / "too_deep.lesson.toml",  # two folders down: not looked at
        models / "notes.toml",  # not *.lesson.*
        outside / "secret.lesson.toml",
    ):
        path.write_text(json.dumps(tomllib.loads(GOOD)) if path.suffix == ".json" else GOOD)
    (models / "gpt" / "dir.lesson.toml").mkdir()  # a folder, not a file
    (models / "leak.lesson.toml").symlink_to(outside / "secret.lesson.toml")  # leads out of the folder: skipped
    (models / "linked").symlink_to(outside, target_is_directory=True)  # so does a linked folder
    (models / "again.lesson.toml").symlink_to(models / "intro.lesson.toml")  # inside, but the same file twice
    (models / "broken.lesson.toml").symlink_to(tmp_path / "missing")
    found = lessons.find([models, tmp_path / "no such folder"])
    assert found == [models / "again.lesson.toml", models / "gpt" / "heads.lesson.json"]
    assert all(parse(p.read_bytes(), p.name) for p in found)


def test_find_returns_at_most_max_files(tmp_path):
    for i in range(lessons.MAX_FILES + 5):
        (tmp_path / f"{i:03}.lesson.toml").write_text(GOOD)
    found = lessons.find([tmp_path, tmp_path])
    assert len(found) == lessons.MAX_FILES and found[0].name == "000.lesson.toml"
    assert os.path.commonpath(found) == str(tmp_path)
