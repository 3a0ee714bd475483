"""Text B for the Compare page when nobody has typed one: text A with one word changed (no Streamlit here).

Two identical texts give a blank B − A, so the page opens on A with one word swapped for another that the
model reads as one whole token, taken from sentences it knows (its own examples). The swap keeps the number
of tokens, so the two texts line up position by position and their difference can be drawn. The choice is a
fixed rule, without randomness: the same text, tokenizer and sentences always give the same B.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

WORD = re.compile(r"\w+")
PIECE = re.compile(r"\w+|[^\w\s]")  # words and single symbols: what a word's neighbours are
# Words that carry grammar rather than content: swapped only for one another, and only when no content word can be.
FUNCTION_WORDS = frozenset(
    "a an the this that these those each every some any no all both two three "
    "and or but if then than so as because while when where which who whom whose what "
    "of to in on at by for from with without near above below under over into onto across after before "
    "is are was were be been being am do does did has have had will would can could shall should may might must "
    "i you he she it we they me him her us them my your his its our their not".split()
)
MAX_WORDS = 64  # words of a long text considered (the first swap that lines up is enough)
MAX_CANDIDATES = 256  # distinct replacement words taken from the sentences
MAX_CONTEXTS = 16  # neighbours remembered per replacement word
MAX_TRIES = 64  # whole texts tokenized in search of one with as many tokens as A


class Stream(Protocol):
    ids: Sequence[int]


class Tokenizer(Protocol):
    """What is used of `transformer.checkpoints.tokenizer.Tokenizer`."""

    def encode(self, text: str, add_special_tokens: bool = True) -> Stream: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def one_word_changed(text: str, tokenizer: Tokenizer, sentences: Sequence[str]) -> tuple[str, str, str] | None:
    """(B, old word, new word): `text` with one word replaced by a word of `sentences` the model keeps whole; or None.

    B always has as many tokens as `text` (a B that does not line up has no difference to draw). Preferred, in
    this order: a word that is itself one token; a content word replaced by a content word (not "the" by "a",
    and never a symbol); a replacement seen in `sentences` between neighbours like this word's (the same words,
    or words of the same sort); the earliest word; the replacement seen first. The rest of `text` (any script,
    emoji, spacing) is kept character for character.
    """
    pieces = list(PIECE.finditer(text))
    places = [i for i, m in enumerate(pieces) if WORD.fullmatch(m.group())][:MAX_WORDS]
    if not places:
        return None
    texts = [m.group() for m in pieces]
    known = _known_words(tokenizer, sentences)
    choices = []
    for position, i in enumerate(places):
        old = texts[i]
        split = not _whole_token(tokenizer, old)  # several tokens: no one-token word can take its place
        prev, nxt = _neighbours(texts, i)
        for order, (new, seen_between) in enumerate(known.values()):
            if new.casefold() == old.casefold():
                continue
            sort = 0 if _is_content(old) and _is_content(new) else 1 if _is_content(old) == _is_content(new) else 2
            fit = max(_fit(prev, nxt, p, n) for p, n in seen_between)
            choices.append(((split, sort, -fit, position, order), pieces[i], new))
    choices.sort(key=lambda c: c[0])
    before = list(tokenizer.encode(text).ids)
    for _, match, new in choices[:MAX_TRIES]:
        replacement = _cased_like(new, match.group())
        changed = text[: match.start()] + replacement + text[match.end() :]
        after = list(tokenizer.encode(changed).ids)
        if len(after) == len(before) and after != before:
            return changed, match.group(), replacement
    return None


def _known_words(tokenizer: Tokenizer, sentences: Sequence[str]) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """The words of `sentences` the tokenizer reads as one known token, by lower-case form in order of first
    appearance: (the word as first seen, the (previous, next) pieces it was seen between)."""
    out: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    rejected: set[str] = set()
    for sentence in sentences:
        pieces = PIECE.findall(sentence)
        for i, piece in enumerate(pieces):
            key = piece.casefold()
            if key in rejected or not WORD.fullmatch(piece):
                continue
            if key not in out:
                if len(out) >= MAX_CANDIDATES or not _whole_token(tokenizer, piece):
                    rejected.add(key)
                    continue
                out[key] = (piece, [])
            if len(out[key][1]) < MAX_CONTEXTS:
                out[key][1].append(_neighbours(pieces, i))
    return out


def _whole_token(tokenizer: Tokenizer, word: str) -> bool:
    """Whether the model reads `word` as one token that decodes back to it (not an unknown-token placeholder)."""
    ids = tokenizer.encode(word, add_special_tokens=False).ids
    return len(ids) == 1 and tokenizer.decode(ids).strip().casefold() == word.casefold()


def _neighbours(pieces: Sequence[str], i: int) -> tuple[str, str]:
    """The pieces either side of piece i, lower-cased ("" past either end)."""
    prev = pieces[i - 1].casefold() if i > 0 else ""
    nxt = pieces[i + 1].casefold() if i + 1 < len(pieces) else ""
    return prev, nxt


def _is_content(word: str) -> bool:
    return word.isalpha() and word.casefold() not in FUNCTION_WORDS


def _role(piece: str) -> str:
    """What sort of neighbour a piece is: "" (an end), "symbol", "function" or "content"."""
    if not piece:
        return ""
    if not WORD.fullmatch(piece):
        return "symbol"
    return "content" if _is_content(piece) else "function"


def _fit(prev: str, nxt: str, seen_prev: str, seen_next: str) -> int:
    """How alike two places for a word are, 0-6: the same neighbour either side counts 2, one of the same sort 1."""
    return 2 * ((prev == seen_prev) + (nxt == seen_next)) + (_role(prev) == _role(seen_prev)) + (_role(nxt) == _role(seen_next))


def _cased_like(word: str, like: str) -> str:
    """`word` (when lower-case) with the capitals of `like`: "cat" in place of "Dog" is "Cat"."""
    if not word.islower():
        return word
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word
