"""Toy English -> an invented target language, by deterministic rules with gold word alignments.

The target language differs from English in ways that make cross-attention interesting:

* adjectives follow their noun ("the big dog" -> "<the> <dog> <big>");
* prepositions become postpositions ("near the tables" -> "<the> <tables> <near>");
* in relative clauses the verb moves to the end of the clause
  ("the dog that sees the cats" -> "<the> <dog> <that> <the> <cats> <sees>");
* determiners and adjectives agree in number with their noun (plural: suffix "n"),
  predicate adjectives with the subject.

Translation is word-for-word, so every target word is aligned to exactly one source word and
vice versa; only the order changes.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from transformer.data.toy_english import (
    ADJECTIVES,
    COPULA,
    INTRANSITIVE_VERBS,
    NOUNS,
    OBJECT_PRONOUNS,
    PERIOD,
    PLURAL_DETERMINERS,
    PREPOSITIONS,
    RELATIVIZER,
    SINGULAR_DETERMINERS,
    SUBJECT_PRONOUNS,
    TRANSITIVE_VERBS,
    Clause,
    NounPhrase,
    RelClause,
    Sentence,
    VerbPhrase,
    generate_sentence,
)

PLURAL_SUFFIX = "n"
_CONSONANTS = "bdfgklmprstvz"
_VOWELS = "aeiou"


def _make_stems() -> dict[str, str]:
    """One invented stem per English lexeme, stable across runs and Python versions.

    Each stem comes from a Random seeded with a hash of the lexeme, so adding a word to the
    lexicon does not change the other words' translations (except on a rare collision).
    Stems are CV syllables, so they end in a vowel and "stem + n" never equals another stem.
    """
    lexemes = sorted(
        {
            *(sg for sg, _ in NOUNS),
            *(pl for _, pl in INTRANSITIVE_VERBS + TRANSITIVE_VERBS + (COPULA,)),
            *ADJECTIVES,
            *SINGULAR_DETERMINERS,
            *PLURAL_DETERMINERS,
            *PREPOSITIONS,
            *SUBJECT_PRONOUNS,
            *OBJECT_PRONOUNS,
            RELATIVIZER,
        }
    )
    stems: dict[str, str] = {}
    used: set[str] = set()
    for lexeme in lexemes:
        rng = random.Random(int.from_bytes(hashlib.sha256(lexeme.encode()).digest()[:8], "big"))
        n_syllables = 1 if len(lexeme) <= 3 else 2 if len(lexeme) <= 6 else 3
        while True:
            stem = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(n_syllables))
            if stem not in used:
                break
            n_syllables += rng.random() < 0.3  # grow now and then so collisions cannot loop long
        stems[lexeme] = stem
        used.add(stem)
    return stems


_STEMS = _make_stems()
# Fixed-form words: nouns and verbs carry their own number, the rest have none.
_FIXED: dict[str, str] = {PERIOD: PERIOD}
for _sg, _pl in NOUNS:
    _FIXED[_sg], _FIXED[_pl] = _STEMS[_sg], _STEMS[_sg] + PLURAL_SUFFIX
for _sg, _pl in INTRANSITIVE_VERBS + TRANSITIVE_VERBS + (COPULA,):
    _FIXED[_sg], _FIXED[_pl] = _STEMS[_pl], _STEMS[_pl] + PLURAL_SUFFIX
for _w in (*PREPOSITIONS, *SUBJECT_PRONOUNS, *OBJECT_PRONOUNS, RELATIVIZER):
    _FIXED[_w] = _STEMS[_w]
_STEMS["an"] = _STEMS["a"]  # "an" is only a spelling variant of "a"


def target_vocabulary() -> tuple[str, ...]:
    """Every word the target language can produce, sorted."""
    agreeing = {_STEMS[w] + s for w in (*ADJECTIVES, *SINGULAR_DETERMINERS, *PLURAL_DETERMINERS) for s in ("", PLURAL_SUFFIX)}
    return tuple(sorted(set(_FIXED.values()) | agreeing))


def _agree(word: str, number: str) -> str:
    """Determiner or adjective form agreeing with `number`."""
    return _STEMS[word] + (PLURAL_SUFFIX if number == "pl" else "")


@dataclass(frozen=True)
class Pair:
    """A source sentence, its translation, and the gold word alignment."""

    source: Sentence
    target: tuple[str, ...]
    alignment: tuple[tuple[int, int], ...]  # (target_word_index, source_word_index), sorted by target index

    @property
    def source_text(self) -> str:
        return self.source.text

    @property
    def target_text(self) -> str:
        return " ".join(self.target)


class _Linearizer:
    """Emits (target_word, source_position) in target order."""

    def __init__(self, words: tuple[str, ...]) -> None:
        self.words = words
        self.out: list[tuple[str, int]] = []

    def fixed(self, pos: int) -> None:
        self.out.append((_FIXED[self.words[pos]], pos))

    def agreeing(self, pos: int, number: str) -> None:
        self.out.append((_agree(self.words[pos], number), pos))

    def noun_phrase(self, np: NounPhrase) -> None:
        if np.det is not None:
            self.agreeing(np.det, np.number)
        self.fixed(np.noun)
        for adj in np.adjs:  # adjectives after the noun, in their English order
            self.agreeing(adj, np.number)
        if np.pp is not None:  # postposition
            self.noun_phrase(np.pp.np)
            self.fixed(np.pp.prep)
        if np.rc is not None:
            self.rel_clause(np.rc, np.number)

    def complement(self, vp: VerbPhrase, subject_number: str) -> None:
        if vp.obj is not None:
            self.noun_phrase(vp.obj)
        if vp.adj is not None:
            self.agreeing(vp.adj, subject_number)

    def rel_clause(self, rc: RelClause, head_number: str) -> None:
        self.fixed(rc.that)
        subject_number = head_number
        if rc.subject is not None:
            self.noun_phrase(rc.subject)
            subject_number = rc.subject.number
        self.complement(rc.vp, subject_number)
        self.fixed(rc.vp.verb)  # verb-final in subordinate clauses

    def clause(self, clause: Clause) -> None:
        self.noun_phrase(clause.subject)
        self.fixed(clause.vp.verb)
        self.complement(clause.vp, clause.subject.number)
        self.fixed(clause.period)


def translate(sentence: Sentence) -> Pair:
    """Translate a generated sentence (it must carry its parse tree)."""
    if sentence.tree is None:
        raise ValueError("translate() needs a Sentence from generate_sentence (with its tree)")
    lin = _Linearizer(sentence.words)
    lin.clause(sentence.tree)
    target = tuple(word for word, _ in lin.out)
    alignment = tuple((t, s) for t, (_, s) in enumerate(lin.out))
    return Pair(sentence, target, alignment)


def generate_pairs(n: int, seed: int, **kw) -> list[Pair]:
    """n translation pairs, deterministic for a seed; kw goes to generate_sentence."""
    rng = random.Random(seed)
    return [translate(generate_sentence(rng, **kw)) for _ in range(n)]
