"""Does a text lie inside what a model can read? Unknown tokens, words broken into letters, flat predictions.

A model knows a vocabulary and a kind of text. Three signs that a typed sentence falls outside it:

* unknown tokens: the tokenizer had no piece for some characters and gave its unknown id;
* broken words: a word of at least `MIN_WORD` letters split into pieces of which more than half
  cover a single character ("bread" → b ##re ##a ##d on the shipped LM). Pieces are measured by
  their character spans (offsets), so "##" or "Ġ" markers and lower-casing do not count (the toy
  tokenizers split some of their own words into short pieces, "w ##om ##an": a rule on the mean
  piece length would flag their own examples);
* a flat prediction (language models): the median over positions of the largest next-token
  probability is below `FLAT_TIMES` × 1/vocab, i.e. the model barely prefers any token. On the
  shipped LM its own example sentences give 86–171 × 1/vocab, everyday English ≈ 3 × 1/vocab.

Pure functions of a tokenizer, a `Stream` and (optionally) the model's probabilities: no Streamlit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from transformer.checkpoints.tokenizer import Tokenizer
from transformer.model.trace import Stream

MIN_WORD = 4  # shorter words ("my", "an") are often split into letters by design: not judged
FLAT_TIMES = 5.0  # a prediction is flat when its median top probability is below this many times uniform
WORD = re.compile(r"[^\W\d_]+")  # a run of letters (any script); digits and punctuation are not words
UNK_NAMES = ("[UNK]", "<unk>", "<UNK>")  # what tokenizers without a declared unknown token call it


@dataclass(frozen=True)
class Coverage:
    """What `judge` found in one text; empty tuples and `flat=False` when the model can read it."""

    unknown: tuple[str, ...]  # the text under each unknown token, distinct, in text order
    n_unknown: int  # how many tokens are unknown (a repeated character counts each time)
    broken: tuple[str, ...]  # words split mostly into single characters, distinct, in text order
    n_words: int  # words of at least MIN_WORD letters that were judged
    flat: bool  # the next-token prediction is flat (only judged when probabilities were given)
    peak: float | None  # median top next-token probability, in multiples of uniform (1/vocab); None: not judged

    @property
    def ok(self) -> bool:
        return not (self.unknown or self.broken or self.flat)


def unk_id(tokenizer: Tokenizer) -> int | None:
    """The tokenizer's unknown-token id: its model's declared unknown token, else one of the usual names; None if none."""
    declared = getattr(tokenizer.inner.model, "unk_token", None)
    for name in (declared, *UNK_NAMES):
        if name and tokenizer.token_id(name) is not None:
            return tokenizer.token_id(name)
    return None


def _pieces(stream: Stream) -> list[tuple[int, int, int]]:
    """(start, end, id) of every token that covers text (special tokens have empty spans)."""
    return [(s, e, i) for i, (s, e) in zip(stream.ids, stream.offsets, strict=True) if e > s]


def broken_words(stream: Stream) -> tuple[list[str], int]:
    """Words of ≥ MIN_WORD letters split into more than one piece, more than half of which cover one character.

    Returns (the broken words as typed, how many words were judged).
    """
    pieces, broken, judged = _pieces(stream), [], 0
    for m in WORD.finditer(stream.text):
        if len(m.group()) < MIN_WORD:
            continue
        judged += 1
        # Each piece's share of the word: its span clipped to the word's (a piece may also hold punctuation).
        sizes = [min(e, m.end()) - max(s, m.start()) for s, e, _ in pieces if s < m.end() and e > m.start()]
        singles = sum(1 for n in sizes if n == 1)
        if len(sizes) > 1 and singles * 2 > len(sizes):
            broken.append(m.group())
    return broken, judged


def flat_peak(probs: torch.Tensor) -> float:
    """Median over positions of the top next-token probability, in multiples of uniform. probs: (T, vocab)."""
    top = probs.float().max(dim=-1).values  # (T,)
    return float(top.median()) * probs.shape[-1]


def judge(tokenizer: Tokenizer, stream: Stream, probs: torch.Tensor | None = None) -> Coverage:
    """Judge one source stream; `probs` (T, vocab): a language model's next-token probabilities, if there are any."""
    unk = unk_id(tokenizer)
    unknown = [stream.text[s:e] for s, e, i in _pieces(stream) if i == unk]
    broken, judged = broken_words(stream)
    peak = None if probs is None or probs.shape[0] == 0 else flat_peak(probs)
    return Coverage(
        unknown=tuple(dict.fromkeys(unknown)),
        n_unknown=len(unknown),
        broken=tuple(dict.fromkeys(broken)),
        n_words=judged,
        flat=peak is not None and peak < FLAT_TIMES,
        peak=peak,
    )
