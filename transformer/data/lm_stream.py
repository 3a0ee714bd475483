"""Language-modelling data: Toy English documents with repeated spans, and induction probes.

Repeated spans are what lets induction heads form ("... A B ... A -> predict B"), so a share
of documents contains one span twice; `induction_sequences` gives the clean random-repeat
sequences used to score induction heads afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from transformer.data.toy_english import VOCABULARY, generate_sentence


def lm_documents(
    n: int,
    seed: int,
    p_repeat: float = 0.5,
    min_sentences: int = 2,
    max_sentences: int = 5,
    span_len: tuple[int, int] = (4, 10),
    **kw,
) -> list[str]:
    """n documents of min..max_sentences Toy English sentences each, deterministic for a seed.

    With probability p_repeat a document also contains a repeated span: half the time one of
    its sentences (of at least span_len[0] words) is repeated later in the document, otherwise a random word sequence of
    span_len words (drawn from the Toy English vocabulary, so it looks unlike grammar) is
    inserted at two sentence boundaries. kw goes to generate_sentence.
    """
    rng = random.Random(seed)
    words = [w for w in VOCABULARY if w != "."]
    docs = []
    for _ in range(n):
        sentences = [generate_sentence(rng, **kw).text for _ in range(rng.randint(min_sentences, max_sentences))]
        if rng.random() < p_repeat:
            # Only sentences of span_len[0]+ words are worth repeating ("he runs ." is too short).
            long_ones = [i for i, sent in enumerate(sentences) if sent.count(" ") + 1 >= span_len[0]]
            if long_ones and rng.random() < 0.5:
                # Re-insert an existing sentence somewhere after its first occurrence.
                i = rng.choice(long_ones)
                sentences.insert(rng.randint(i + 1, len(sentences)), sentences[i])
            else:
                span = " ".join(rng.choices(words, k=rng.randint(*span_len)))
                first = rng.randint(0, len(sentences))
                sentences.insert(first, span)
                sentences.insert(rng.randint(first + 1, len(sentences)), span)
        docs.append(" ".join(sentences))
    return docs


def induction_sequences(n: int, seed: int, vocab_words: Sequence[str], length: int) -> list[tuple[str, ...]]:
    """n sequences of 2 * length words: a random half of `length` words, then the same half again.

    Words are drawn without replacement when the vocabulary allows, so each token in the second
    half has exactly one earlier occurrence to copy from (an unambiguous induction target).
    """
    rng = random.Random(seed)
    vocab = list(vocab_words)
    out = []
    for _ in range(n):
        half = rng.sample(vocab, length) if length <= len(vocab) else rng.choices(vocab, k=length)
        out.append(tuple(half) * 2)
    return out
