"""Seeded synthetic corpora with gold annotations: Toy English, its translation, algorithmic and LM data."""

from transformer.data.algorithmic import TASKS, addition_examples, copy_examples, reverse_examples, sort_examples
from transformer.data.lm_stream import induction_sequences, lm_documents
from transformer.data.toy_english import (
    VOCABULARY,
    AgreementExample,
    AgreementProbe,
    Sentence,
    VerbFact,
    agreement_examples,
    agreement_probes,
    flip_verb,
    generate_corpus,
    generate_sentence,
    noun_number,
    split_seed,
    verb_number,
    with_flipped_verb,
)
from transformer.data.translation import Pair, generate_pairs, target_vocabulary, translate

__all__ = [
    "TASKS",
    "VOCABULARY",
    "AgreementExample",
    "AgreementProbe",
    "Pair",
    "Sentence",
    "VerbFact",
    "addition_examples",
    "agreement_examples",
    "agreement_probes",
    "copy_examples",
    "flip_verb",
    "generate_corpus",
    "generate_pairs",
    "generate_sentence",
    "induction_sequences",
    "lm_documents",
    "noun_number",
    "reverse_examples",
    "sort_examples",
    "split_seed",
    "target_vocabulary",
    "translate",
    "verb_number",
    "with_flipped_verb",
]
