"""Tests for the synthetic corpora: determinism, exact gold annotations, and the translation rules."""

import random
from collections import Counter

import pytest

from transformer.data import (
    TASKS,
    VOCABULARY,
    addition_examples,
    agreement_examples,
    agreement_probes,
    copy_examples,
    flip_verb,
    generate_corpus,
    generate_pairs,
    generate_sentence,
    induction_sequences,
    lm_documents,
    noun_number,
    reverse_examples,
    sort_examples,
    split_seed,
    translate,
    verb_number,
    with_flipped_verb,
)
from transformer.data import toy_english as te
from transformer.data.toy_english import NounPhrase, RelClause, Sentence


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(3000, seed=123)


@pytest.fixture(scope="module")
def pairs():
    return generate_pairs(1000, seed=7)


# --- Toy English ---------------------------------------------------------------------------


def test_lexicon_is_large_and_categories_are_disjoint():
    assert len(VOCABULARY) >= 300
    nouns = set(te.NOUN_NUMBER)
    verbs = {w for pair in te.INTRANSITIVE_VERBS + te.TRANSITIVE_VERBS + (te.COPULA,) for w in pair}
    adjs = set(te.ADJECTIVES)
    dets = set(te.SINGULAR_DETERMINERS + te.PLURAL_DETERMINERS) | {"an"}
    preps = set(te.PREPOSITIONS)
    groups = [nouns, verbs, adjs, dets, preps, {"that"}, {"."}]
    assert sum(map(len, groups)) == len(set().union(*groups)) == len(VOCABULARY)
    assert all(w == w.lower() and " " not in w for w in VOCABULARY)
    # Every noun has distinct singular and plural forms, so number is readable off the word.
    assert all(sg != pl for sg, pl in te.NOUNS)


def test_corpus_is_deterministic_per_seed():
    assert generate_corpus(50, seed=1) == generate_corpus(50, seed=1)
    assert generate_corpus(50, seed=1) != generate_corpus(50, seed=2)


def test_sentence_format(corpus):
    for s in corpus:
        assert s.text.split(" ") == list(s.words)
        assert s.words[-1] == "." and "." not in s.words[:-1]
        assert all(w in VOCABULARY for w in s.words)


def test_gold_agreement_facts_are_exact(corpus):
    for s in corpus:
        # Every verb in the sentence has exactly one fact, facts are in word order, one main verb.
        verb_positions = [i for i, w in enumerate(s.words) if verb_number(w)]
        assert [v.verb_pos for v in s.verbs] == verb_positions
        assert sum(not v.in_relative_clause for v in s.verbs) == 1
        for v in s.verbs:
            assert v.subject_pos < v.verb_pos
            assert noun_number(s.words[v.subject_pos]) == v.number
            assert verb_number(s.words[v.verb_pos]) == v.number
            between = s.words[v.subject_pos + 1 : v.verb_pos]
            assert v.n_attractors == sum(noun_number(w) not in (None, v.number) for w in between)


def test_grammar_covers_long_range_structures(corpus):
    def rc_depth(np: NounPhrase | None) -> int:
        if np is None or np.rc is None:
            return 0
        return 1 + max(rc_depth(np.rc.subject), rc_depth(np.rc.vp.obj))

    assert max(rc_depth(s.tree.subject) for s in corpus) >= 2
    rcs = [np.rc for s in corpus for np in (s.tree.subject, s.tree.vp.obj) if np is not None and np.rc]
    assert any(rc.subject is None for rc in rcs)  # subject-relatives
    assert any(rc.subject is not None for rc in rcs)  # object-relatives
    main = [s.verbs[s.main_verb_index] for s in corpus]
    assert sum(v.n_attractors > 0 for v in main) / len(main) > 0.15
    assert max(v.verb_pos - v.subject_pos for v in main) >= 8


def test_object_relative_subject_is_inner_noun():
    s = next(s for s in generate_corpus(500, seed=5) if s.tree.subject.rc is not None and s.tree.subject.rc.subject is not None)
    rc: RelClause = s.tree.subject.rc
    fact = next(v for v in s.verbs if v.verb_pos == rc.vp.verb)
    assert fact.subject_pos == rc.subject.noun != s.tree.subject.noun
    assert fact.in_relative_clause


def test_verb_helpers():
    assert verb_number("runs") == "sg" and verb_number("run") == "pl"
    assert verb_number("is") == "sg" and verb_number("are") == "pl"
    assert verb_number("dog") is None
    assert flip_verb("sees") == "see" and flip_verb("are") == "is"
    assert all(flip_verb(flip_verb(w)) == w for w in VOCABULARY if verb_number(w))


def test_with_flipped_verb(corpus):
    s = corpus[0]
    for i, v in enumerate(s.verbs):
        bad = with_flipped_verb(s, i)
        diff = [k for k, (a, b) in enumerate(zip(s.words, bad.words)) if a != b]
        assert diff == [v.verb_pos]
        assert verb_number(bad.words[v.verb_pos]) != bad.verbs[i].number == v.number


def test_agreement_examples_balanced_and_labelled_correctly():
    examples = agreement_examples(1000, seed=3)
    assert Counter(e.label for e in examples) == {0: 500, 1: 500}
    for e in examples:
        wrong = [i for i, v in enumerate(e.sentence.verbs) if verb_number(e.sentence.words[v.verb_pos]) != v.number]
        assert wrong == ([] if e.label else [e.verb_index])
    hard = sum(e.sentence.verbs[e.verb_index].n_attractors > 0 for e in examples)
    assert hard / len(examples) >= 0.4
    assert agreement_examples(100, seed=3) == agreement_examples(100, seed=3)


def test_agreement_probes():
    probes = agreement_probes(500, seed=4)
    assert len(probes) == 500
    for p in probes:
        assert flip_verb(p.correct) == p.wrong
        assert verb_number(p.correct) == p.number == noun_number(p.prefix[p.subject_pos])
        between = p.prefix[p.subject_pos + 1 :]
        assert p.n_attractors == sum(noun_number(w) not in (None, p.number) for w in between)
    hard = sum(p.n_attractors > 0 or "that" in p.prefix[p.subject_pos :] for p in probes)
    assert hard / len(probes) > 0.8
    assert agreement_probes(50, seed=4) == agreement_probes(50, seed=4)


def test_split_seed_is_stable_and_distinct():
    assert split_seed(0, "train") == split_seed(0, "train")
    assert len({split_seed(0, "train"), split_seed(0, "test"), split_seed(1, "train")}) == 3


def test_generate_sentence_accepts_rng_and_kwargs():
    s = generate_sentence(random.Random(0), max_depth=0, p_pp=0.0)
    assert "that" not in s.words and len(s.verbs) == 1


# --- Translation ---------------------------------------------------------------------------


def test_alignment_is_a_bijection(pairs):
    for p in pairs:
        assert [t for t, _ in p.alignment] == list(range(len(p.target)))
        assert sorted(s for _, s in p.alignment) == list(range(len(p.source.words)))
        assert all(w.isascii() and (w.isalpha() and w.islower() or w == ".") for w in p.target)
        assert p.target_text.split(" ") == list(p.target)


def test_translation_reorders(pairs):
    def monotonic(p):
        src = [s for _, s in p.alignment]
        return src == sorted(src)

    assert sum(not monotonic(p) for p in pairs) / len(pairs) > 0.4


def test_translation_rules(pairs):
    for p in pairs:
        t_of = {s: t for t, s in p.alignment}

        def check_np(np: NounPhrase | None) -> None:
            if np is None:
                return
            assert all(t_of[np.noun] < t_of[a] for a in np.adjs)  # adjectives follow the noun
            if np.pp is not None:
                assert t_of[np.pp.prep] > t_of[np.pp.np.noun]  # postpositions
            if np.rc is not None:
                rc = np.rc
                inner = [rc.that] + ([rc.subject.noun] if rc.subject else [])
                inner += [rc.vp.obj.noun] if rc.vp.obj else [rc.vp.adj] if rc.vp.adj is not None else []
                assert all(t_of[rc.vp.verb] > t_of[k] for k in inner)  # verb-final relative clause
                check_np(rc.subject)
                check_np(rc.vp.obj)

        check_np(p.source.tree.subject)
        check_np(p.source.tree.vp.obj)


def test_translation_is_deterministic_and_stable():
    assert generate_pairs(30, seed=0) == generate_pairs(30, seed=0)
    # Pinned example: guards the lexicon and the rules against accidental change.
    p = generate_pairs(40, seed=0)[32]
    assert p.source_text == "two angry sailors that draw three students around the fox rest ."
    assert p.target_text == "lon gumun zedin miki zulun zuderan ki zu tifi rudan topin ."


def test_translation_lexicon_is_injective(pairs):
    # The same target word must always come from the same English lexeme ("a" and "an" are one).
    seen: dict[str, set[str]] = {}
    for p in pairs:
        for t, s in p.alignment:
            word = p.source.words[s]
            seen.setdefault(p.target[t], set()).add("a" if word == "an" else word)
    assert all(len(src) == 1 for src in seen.values())


def test_translate_needs_tree():
    with pytest.raises(ValueError):
        translate(Sentence(("he", "runs", "."), ()))


# --- Algorithmic and LM data ------------------------------------------------------------------


def test_algorithmic_tasks():
    for src, tgt in copy_examples(50, 0):
        assert src == tgt
    for src, tgt in reverse_examples(50, 0, min_len=2, max_len=4):
        assert tgt.split() == src.split()[::-1] and 2 <= len(src.split()) <= 4
    for src, tgt in sort_examples(50, 0):
        assert tgt.split() == sorted(src.split())
    for src, tgt in addition_examples(200, 0, min_len=1, max_len=4):
        a, b = src.split(" + ")
        assert int(a.replace(" ", "")) + int(b.replace(" ", "")) == int(tgt.replace(" ", ""))
        assert all(len(tok) == 1 for tok in (src + " " + tgt).split() if tok != "+")
    for name, task in TASKS.items():
        assert task(20, 9) == task(20, 9), name
        assert task(20, 9) != task(20, 10), name


def test_lm_documents():
    docs = lm_documents(200, seed=0, p_repeat=1.0)
    assert docs == lm_documents(200, seed=0, p_repeat=1.0)
    for doc in docs:
        words = doc.split(" ")
        grams = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
        assert max(grams.values()) >= 2  # some span of >= 4 words occurs twice


def test_induction_sequences():
    vocab = [f"w{i}" for i in range(50)]
    seqs = induction_sequences(20, seed=0, vocab_words=vocab, length=10)
    assert seqs == induction_sequences(20, seed=0, vocab_words=vocab, length=10)
    for seq in seqs:
        assert len(seq) == 20 and seq[:10] == seq[10:]
        assert len(set(seq[:10])) == 10 and set(seq) <= set(vocab)
