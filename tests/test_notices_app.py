"""The out-of-vocabulary notice and the Output page's titles, driven through the whole app (AppTest).

The notice appears, on every page, for everyday English on the Toy English checkpoints, names the words it
found as typed, says what the model knows and points to all-MiniLM-L6-v2; it never appears for a
checkpoint's own examples. The Output page names its output by the model's task.
"""

from __future__ import annotations

import json
import re

import pytest
from test_app import frame, no_errors, start, write_tiny
from test_literal import MARKDOWN_ELEMENTS, outside_code_spans

from server.notices import HEADLINE
from transformer.checkpoints import catalog

GRANDMOTHER = "My grandmother bakes bread every Sunday."
MARKUP = "It doesn't rain <b>*much*</b> [here](http://x.example) :rocket:"
SHIPPED = catalog.available()
PAGES = (
    "pages/qkv.py",
    "pages/model_view.py",
    "pages/checkpoint.py",
    "pages/output.py",
    "pages/training.py",
    "pages/ablation.py",
    "pages/attribution.py",
    "pages/lens.py",
    "pages/compare.py",
)
MINILM_HINT = "pick all-MiniLM-L6-v2 for any English sentence"


def need(*names: str) -> None:
    missing = [n for n in names if n not in SHIPPED]
    if missing:
        pytest.skip(f"shipped checkpoints not present: {missing}")


def notice(at) -> list[str]:
    """The notice's headline(s) on this page (the warning that opens it)."""
    return [w.value for w in at.warning if w.value.startswith(HEADLINE)]


def texts(at) -> list[str]:
    return [t.value for t in at.text]


def captions(at) -> str:
    return "\n".join(c.value for c in at.caption)


@pytest.mark.parametrize("name", ["translator", "lm", "classifier"])
def test_everyday_english_gets_the_notice(name):
    need(name)
    at = start({"checkpoint": name, "text": GRANDMOTHER})
    no_errors(at)
    (headline,) = notice(at)
    assert "broken into single letters" in headline
    broken = next(t for t in texts(at) if t.startswith("Broken into single letters: "))
    expected = {"translator": ["grandmother"], "lm": ["bread", "Sunday"], "classifier": ["bread", "Sunday"]}[name]
    assert broken.removeprefix("Broken into single letters: ").split() == expected
    if name == "lm":  # and its predictions are flat
        assert "flat next-token predictions" in headline
        assert any(t.startswith("Its top next-token probability is only") for t in texts(at))
    # What the model knows: its description and its examples.
    described = catalog.description(name, {"task": {"translator": "translation", "classifier": "agreement"}.get(name, name)})
    assert described in captions(at)
    examples = [c.value for c in at.code if "the" in c.value]
    assert examples, "the notice quotes the model's example sentences"
    if catalog.MINILM in SHIPPED:
        assert MINILM_HINT in captions(at)


def test_the_notice_is_on_every_page():
    need("lm")
    at = start({"checkpoint": "lm", "text": GRANDMOTHER})
    assert notice(at)
    for page in PAGES:
        at.switch_page(page).run()
        no_errors(at)
        assert len(notice(at)) == 1, page


@pytest.mark.parametrize("name", list(SHIPPED))
def test_no_notice_for_the_models_own_examples(name):
    at = start({"checkpoint": name})
    no_errors(at)
    assert not notice(at)
    examples = json.loads(catalog.EXAMPLES_FILE.read_text())[name]
    assert at.sidebar.selectbox(key="example").options == [ex["label"] for ex in examples]
    for example in examples:
        at.sidebar.selectbox(key="example").set_value(example["label"]).run()
        no_errors(at)
        assert at.session_state["sel_text"] == example["text"]
        assert not notice(at), example


def test_minilm_reads_everyday_english():
    need(catalog.MINILM)
    at = start({"checkpoint": catalog.MINILM, "text": GRANDMOTHER})
    no_errors(at)
    assert not notice(at)


@pytest.mark.parametrize(
    ("name", "text", "chars"),
    [
        ("translator", MARKUP, ("'", "<", ">", "*", "/", "[", "]", "(", ")", ":")),
        ("reverse", "a <b> *c* [d](e)", ("<", ">", "*", "[", "]", "(", ")")),  # it reads 24 tokens: a short one
    ],
)
def test_the_words_are_shown_literally(name, text, chars):
    need(name)
    at = start({"checkpoint": name, "text": text})
    no_errors(at)
    assert notice(at)
    unknown = next(t for t in texts(at) if t.startswith("Unknown to its tokenizer: "))
    assert unknown.removeprefix("Unknown to its tokenizer: ").split() == list(dict.fromkeys(c for c in text if c in chars))
    # Nothing of the text reaches an element rendered as Markdown, except inside code spans.
    for kind in MARKDOWN_ELEMENTS:
        for el in at.get(kind):
            shown = outside_code_spans(str(getattr(el, "value", "") or getattr(el, "body", "")))
            for bit in ("<b>", "*much*", "*c*", "](", ":rocket:"):
                assert bit not in shown, (kind, shown)


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("translator", "Greedy translation"),
        ("reverse", "Greedy output (the model reverses its input)"),
        ("lm", "Next-token predictions at each position"),
        ("classifier", "Class probabilities"),
    ],
)
def test_output_is_named_by_the_task(name, title):
    need(name)
    params = {"checkpoint": name, "page": "output"}
    if name == "lm":  # a text whose fourth token is not the example's
        params["text"] = GRANDMOTHER
    at = start(params)
    no_errors(at)
    assert title in [s.value for s in at.subheader]
    if name == "lm":  # the caption names a row of this text's own table
        caption = next(c.value for c in at.caption if c.value.startswith("Row "))
        row = re.match(r"Row (`+) (.*?) \1 shows", caption).group(2)
        table = frame(at, column="#1")
        assert row in table.index and row == table.index[3] and row.endswith("·gr"), (row, list(table.index))
    if name == "classifier":
        shown = "\n".join(texts(at))
        assert "violated: one verb disagrees in number with its subject" in shown
        assert "agrees: every verb agrees in number with its subject" in shown
        assert re.search(r"Prediction: (agrees|violated) \(\d\.\d{3}\): ", shown)


def test_another_checkpoint_is_described_and_titled_by_its_training_task(monkeypatch, tmp_path):
    """A checkpoint the catalogue does not describe (here one trained to sort) gets both from its training facts."""
    write_tiny(tmp_path / "reverse.safetensors", "sort", kind="encoder-decoder")
    monkeypatch.setenv(catalog.ASSETS_ENV, str(tmp_path))
    monkeypatch.setenv(catalog.NO_MINILM_ENV, "1")
    at = start({"checkpoint": "reverse", "text": "9 3 zebra 1", "page": "output"})
    no_errors(at)
    assert "Greedy output (the model sorts its input)" in [s.value for s in at.subheader]
    assert notice(at) and catalog.TASK_DESCRIPTIONS["sort"] in captions(at)
    assert MINILM_HINT not in captions(at)  # not offered where this server has no MiniLM


def test_a_long_list_of_unknown_characters_is_cut():
    need("translator")
    text = "".join(chr(0x410 + i) for i in range(45))  # 45 distinct Cyrillic letters: 45 unknown tokens (it reads 48)
    at = start({"checkpoint": "translator", "text": text})
    no_errors(at)
    unknown = next(t for t in texts(at) if t.startswith("Unknown to its tokenizer: "))
    assert unknown.split()[4:44] == list(text[:40]) and unknown.endswith("… and 5 more")
    assert "45 tokens its tokenizer does not know" in notice(at)[0]
