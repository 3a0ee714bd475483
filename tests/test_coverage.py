"""What a model can read: unknown tokens, words broken into letters and flat predictions (`transformer/coverage.py`).

Hand-made streams pin the rules; the shipped checkpoints pin the purpose: each one's own example sentences
pass, everyday English does not (except on all-MiniLM-L6-v2, which reads any English).
"""

from __future__ import annotations

import json

import pytest
import torch

from transformer import api, coverage
from transformer.checkpoints import catalog
from transformer.checkpoints.importers import load_any
from transformer.checkpoints.tokenizer import UNK, train_tokenizer
from transformer.model.trace import Stream

EVERYDAY = ("My grandmother bakes bread every Sunday.", "It doesn't rain <b>*much*</b> here.")
SHIPPED = catalog.available()


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(["the dog runs .", "the cats run ."], "decoder", vocab_size=60, min_frequency=1)


def stream(text: str, pieces: list[tuple[str, int, int]], ids: list[int] | None = None) -> Stream:
    """A stream of (token, start, end) pieces over `text` (ids 7, 8, … unless given)."""
    ids = ids or [7 + i for i in range(len(pieces))]
    return Stream(text, tuple(ids), tuple(p[0] for p in pieces), tuple((s, e) for _, s, e in pieces))


def test_unknown_id_is_the_tokenizers(tok):
    assert coverage.unk_id(tok) == tok.token_id(UNK) is not None


def test_words_broken_into_letters(tok):
    # "bread" as b ##re ##a ##d: 3 of 4 pieces are one letter; "sunday" as sun ##day: whole pieces.
    text = "bread sunday ."
    s = stream(text, [("b", 0, 1), ("##re", 1, 3), ("##a", 3, 4), ("##d", 4, 5), ("sun", 6, 9), ("##day", 9, 12), (".", 13, 14)])
    found = coverage.judge(tok, s)
    assert found.broken == ("bread",) and found.n_words == 2 and not found.unknown and not found.ok


def test_half_single_letters_is_not_broken(tok):
    # "grandmother" as gr ##an ##d ##m ##o ##th ##er: 3 of 7 one-letter pieces (not more than half).
    cuts = [0, 2, 4, 5, 6, 7, 9, 11]
    s = stream("grandmother", [("x", a, b) for a, b in zip(cuts, cuts[1:], strict=False)])
    assert coverage.judge(tok, s).ok


def test_short_words_and_specials_are_not_judged(tok):
    # "my" as m ##y (2 letters), a special token with an empty span, and "runs" in one piece.
    s = stream("my runs", [("[BOS]", 0, 0), ("m", 0, 1), ("##y", 1, 2), ("runs", 3, 7)])
    found = coverage.judge(tok, s)
    assert found.ok and found.n_words == 1 and found.broken == ()


def test_unknown_tokens_are_their_text(tok):
    unk = tok.token_id(UNK)
    s = stream(
        "it doesn't <b>",
        [("it", 0, 2), ("doesn", 3, 8), (UNK, 8, 9), ("t", 9, 10), (UNK, 11, 12), ("b", 12, 13), (UNK, 13, 14)],
        [7, 8, unk, 9, unk, 10, unk],
    )
    found = coverage.judge(tok, s)
    assert found.unknown == ("'", "<", ">") and found.n_unknown == 3 and not found.ok


def test_flat_prediction(tok):
    s = stream("the dog", [("the", 0, 3), ("dog", 4, 7)])
    vocab = 100
    uniform = torch.full((2, vocab), 1 / vocab)
    found = coverage.judge(tok, s, uniform)
    assert found.flat and found.peak == pytest.approx(1.0) and not found.ok
    peaked = torch.full((2, vocab), 0.5 / (vocab - 1))
    peaked[:, 3] = 0.5  # 50 × uniform
    found = coverage.judge(tok, s, peaked)
    assert not found.flat and found.peak == pytest.approx(50.0) and found.ok
    assert coverage.judge(tok, s).peak is None  # no probabilities: flatness not judged


def _judge_shipped(ckpt, text: str) -> coverage.Coverage:
    trace = api.trace_text(ckpt, text)
    probs = trace.probs[0] if ckpt.config.kind == "decoder" else None
    return coverage.judge(ckpt.tokenizer, trace.source, probs)


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_examples_pass_and_everyday_english_does_not(name):
    ckpt = load_any(SHIPPED[name].path)
    for example in json.loads(catalog.EXAMPLES_FILE.read_text())[name]:
        found = _judge_shipped(ckpt, example["text"])
        assert found.ok, (example["text"], found)
    for text in EVERYDAY:
        found = _judge_shipped(ckpt, text)
        assert found.ok == (name == catalog.MINILM), (text, found)
    if name == "lm":  # its everyday predictions are flat too (≈ 3 × uniform)
        assert _judge_shipped(ckpt, EVERYDAY[0]).flat
    if name == "translator":
        assert _judge_shipped(ckpt, EVERYDAY[0]).broken == ("grandmother",)


@pytest.mark.parametrize("name", list(SHIPPED))
def test_every_shipped_checkpoint_is_described(name):
    ckpt = load_any(SHIPPED[name].path)
    text = catalog.description(name, ckpt.training)
    assert text and text.startswith(("Trained to", "A BERT-style"))
    meanings = catalog.CLASS_MEANINGS.get(catalog.task_of(ckpt.training), {})
    assert set(meanings) == set(ckpt.config.class_names)  # every class of a classifier has its meaning
    for cls in ckpt.config.class_names:
        assert f'"{cls}"' in text


def test_description_from_training_facts():
    assert catalog.description("Trained here #1", {"task": "sort"}) == catalog.TASK_DESCRIPTIONS["sort"]
    assert catalog.description("x", {"task": "classifier"}) == catalog.TASK_DESCRIPTIONS["agreement"]
    assert catalog.description("x", {}) is None and catalog.description("x", {"task": ["odd"]}) is None
