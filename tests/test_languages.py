"""A multilingual translator's languages (`transformer/languages.py`): which tokens name them, the source's language
swapped in the template, the target's where the decoder is forced, and greedy output equal to transformers'
`generate(forced_bos_token_id=…)` on real M2M-100, mBART-50 and NLLB-shaped folders with random weights.

The token sets are the families' own patterns; the references are independent: a tokenizer built afresh with the
other template (the same training, deterministic), and transformers' generate given the language as its users do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from hf_reference import TEXTS
from test_hf_import import byte_level_tokenizer, wordpiece_tokenizer
from test_import_bart_family import BART_SPECIALS, M2M, MBART, build, reference, tokenizer
from test_import_t5 import t5_tokenizer
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, processors

from transformer import languages
from transformer.api import streams
from transformer.checkpoints.importers import load_hf_dir
from transformer.checkpoints.tokenizer import Tokenizer, train_tokenizer
from transformer.data.toy_english import generate_corpus
from transformer.decoding import Decoding

WORDS = ("<s>", "<pad>", "</s>", "<unk>", "a", "dog", "runs")
MBART_LANGS = ("en_XX", "fr_XX", "de_DE")
M2M_LANGS = ("__en__", "__fr__", "__ast__")
NLLB_LANGS = ("eng_Latn", "fra_Latn", "deu_Latn")


def word_tokenizer(template: str | None, specials: tuple[str, ...] = (), plain: tuple[str, ...] = ()) -> Tokenizer:
    """Whole words from WORDS (ids 0…6), then `specials` as special tokens and `plain` as ordinary added ones."""
    tok = HFTokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(specials))
    tok.add_tokens(list(plain))
    if template is not None:
        marks = [t for t in template.split() if t != "$A"]
        tok.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(t, tok.token_to_id(t)) for t in marks]
        )
    return Tokenizer(tok)


# --- which tokens name languages -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "langs", "template", "last"),
    [
        ("mbart", MBART_LANGS, "en_XX $A </s>", False),  # mBART-50
        ("mbart", MBART_LANGS, "$A </s> en_XX", True),  # mBART-cc25: the language after the text
        ("m2m_100", M2M_LANGS, "__en__ $A </s>", False),
        ("nllb", NLLB_LANGS, "eng_Latn $A </s>", False),
    ],
)
def test_finds_each_familys_language_tokens_and_the_templates_source(family, langs, template, last):
    tok = word_tokenizer(template, ("<mask>", *langs))
    found = languages.find(tok)
    assert found == languages.Languages(family, langs, (8, 9, 10), langs[0], last)
    assert [tok.id_to_token(i) for i in found.ids] == list(langs)


def test_a_template_without_a_language_has_no_source():
    found = languages.find(word_tokenizer("$A </s>", NLLB_LANGS))
    assert (found.tokens, found.source) == (NLLB_LANGS, None)
    assert languages.find(word_tokenizer(None, NLLB_LANGS)).source is None


def test_the_family_with_the_most_tokens_wins_and_ordinary_tokens_never_count():
    found = languages.find(word_tokenizer(None, ("en_XX", "__en__", "__de__", "__fr__"), plain=("de_DE", "fr_FR")))
    assert (found.family, found.tokens) == ("m2m_100", ("__en__", "__de__", "__fr__"))


@pytest.mark.parametrize(
    "tok",
    [
        pytest.param(lambda: word_tokenizer("en_XX $A </s>", ("en_XX",)), id="one language"),
        pytest.param(lambda: word_tokenizer(None, (), plain=("en_XX", "de_DE", "eng_Latn", "deu_Latn")), id="not special"),
        pytest.param(lambda: word_tokenizer(None, ("en_xx", "de_de", "_en_", "__english__", "eng_latn", "EN_XX")), id="near"),
        *[
            pytest.param(lambda kind=kind: train_tokenizer([s.text for s in generate_corpus(50, 0)], kind, 150, 1), id=kind)
            for kind in ("encoder", "decoder", "encoder-decoder")
        ],
        pytest.param(lambda: Tokenizer(byte_level_tokenizer()), id="gpt2"),
        pytest.param(lambda: Tokenizer(wordpiece_tokenizer()), id="bert"),
        pytest.param(lambda: Tokenizer(t5_tokenizer()), id="t5"),
    ],
)
def test_no_languages_in_tokenizers_that_name_none(tok):
    assert languages.find(tok()) is None


# --- the source's language: a new tokenizer, the loaded one untouched ------------------------------------------------


@pytest.mark.parametrize(
    ("langs", "template", "other"),
    [
        (NLLB_LANGS, "eng_Latn $A </s>", "deu_Latn $A </s>"),
        (MBART_LANGS, "$A </s> en_XX", "$A </s> de_DE"),
        (M2M_LANGS, "__en__ $A </s>", "__ast__ $A </s>"),
    ],
)
def test_with_source_is_the_tokenizer_built_with_that_language_in_its_template(langs, template, other):
    tok = word_tokenizer(template, langs)
    before = tok.to_json()
    found = languages.find(tok)
    swapped = languages.with_source(tok, found, langs[2])
    reference = word_tokenizer(other, langs)
    for text in ("a dog runs", "dog", ""):
        assert swapped.encode(text).ids == reference.encode(text).ids
        assert swapped.encode(text).tokens == reference.encode(text).tokens
        same = [i if i != found.ids[0] else found.ids[2] for i in tok.encode(text).ids]
        assert list(swapped.encode(text).ids) == same  # only the language token moved
    assert tok.to_json() == before and swapped.to_json() != before
    assert languages.find(swapped).source == langs[2]
    assert languages.with_source(tok, found, langs[0]) is tok


def test_with_source_inside_a_sequence_of_processors():
    tok = word_tokenizer(None, NLLB_LANGS)
    template = processors.TemplateProcessing(single="eng_Latn $A </s>", special_tokens=[("eng_Latn", 7), ("</s>", 2)])
    tok.inner.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), template])
    found = languages.find(tok)
    assert found.source == "eng_Latn"
    assert languages.with_source(tok, found, "fra_Latn").encode("a dog").ids == (8, 4, 5, 2)


def test_unknown_languages_are_refused():
    tok = word_tokenizer("$A </s>", NLLB_LANGS)
    found = languages.find(tok)
    with pytest.raises(ValueError, match="marks no source language"):
        languages.with_source(tok, found, "fra_Latn")
    with pytest.raises(ValueError, match="'xho_Latn' is not one of this tokenizer's languages"):
        languages.with_target(Decoding(start=2, eos=(2,)), found, "xho_Latn")


# --- the target's language: where the decoder is forced ----------------------------------------------------------


def test_the_target_goes_where_the_folder_puts_a_language_else_to_the_forced_first_step():
    nllb = languages.find(word_tokenizer("eng_Latn $A </s>", NLLB_LANGS))  # ids 7, 8, 9
    cc25 = languages.find(word_tokenizer("$A </s> en_XX", MBART_LANGS))
    none = Decoding(start=2, eos=(2,))
    cases = [
        (nllb, none, "fra_Latn", dict(forced_bos=8)),  # as released: nothing forced; forced_bos_token_id per call
        (nllb, dataclasses.replace(none, forced_bos=9), "fra_Latn", dict(forced_bos=8)),  # the folder forces one
        (nllb, dataclasses.replace(none, forced_bos=0), "deu_Latn", dict(forced_bos=9)),  # BART's <s>: not a language
        (cc25, Decoding(start=0, eos=(2,)), "de_DE", dict(start=9)),  # mBART-cc25: the decoder starts with it
        (cc25, Decoding(start=8, eos=(2,)), "en_XX", dict(start=7)),  # mbart-large-en-ro: starts with ro_RO
    ]
    for langs, decoding, target, changed in cases:
        assert languages.with_target(decoding, langs, target) == dataclasses.replace(decoding, **changed)


def test_the_default_target_is_the_folders_own_else_the_first_other_than_the_source():
    nllb = languages.find(word_tokenizer("eng_Latn $A </s>", NLLB_LANGS))
    assert nllb.default_target(Decoding(start=2, eos=(2,), forced_bos=9), "eng_Latn") == "deu_Latn"
    assert nllb.default_target(Decoding(start=2, eos=(2,)), "eng_Latn") == "fra_Latn"
    assert nllb.default_target(Decoding(start=2, eos=(2,)), "fra_Latn") == "eng_Latn"
    cc25 = languages.find(word_tokenizer("$A </s> en_XX", MBART_LANGS))
    assert cc25.default_target(Decoding(start=9, eos=(2,)), "en_XX") == "de_DE"


# --- real folders: greedy output is transformers' generate given the languages --------------------------------------

N = 24  # new tokens: far past the forced one
# name -> (class, languages (the template's first), config fields)
FOLDERS = {
    "m2m": (M2M, M2M_LANGS, {}),
    "mbart50": (MBART, MBART_LANGS, dict(scale_embedding=True, decoder_start_token_id=2)),
    "nllb": (M2M, NLLB_LANGS, {}),  # NLLB-200 is an M2M-100 with its own language codes
}


def folder_tokenizer(langs: tuple[str, ...], source: str) -> HFTokenizer:
    return tokenizer(BART_SPECIALS, f"{source} $A </s>", langs)


def save_released(folder: Path, cls, langs: tuple[str, ...], fields: dict) -> Path:
    """A random-weight `cls` saved into `folder` as such folders are released: its tokenizer marks langs[0] as the
    source, its generation config forces no target language."""
    tok = folder_tokenizer(langs, langs[0])
    model = build(cls, tok, 1, **fields)
    model.generation_config.forced_bos_token_id = None
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Each family's folder as released: no forced_bos_token_id in its generation config (users pass it to generate)."""
    root = tmp_path_factory.mktemp("multilingual")
    return {name: save_released(root / name, *spec) for name, spec in FOLDERS.items()}


def generate(ref, src: list[int], forced: int) -> list[int]:
    """transformers' greedy output as a user asks for a language, without its end token."""
    out = ref.generate(torch.tensor([src]), forced_bos_token_id=forced, num_beams=1, do_sample=False, max_new_tokens=N)
    ids = out[0].tolist()
    return ids[:-1] if ids[-1] == ref.generation_config.eos_token_id else ids


@pytest.mark.parametrize("name", FOLDERS)
def test_choosing_the_target_language_is_generate_forcing_it(folders, name):
    ckpt, ref = load_hf_dir(folders[name], device="cpu"), reference(folders[name])
    langs = languages.find(ckpt.tokenizer)
    assert (langs.tokens, langs.source) == (FOLDERS[name][1], FOLDERS[name][1][0])
    assert ckpt.decoding.forced_bos is None  # the folder forces nothing
    assert langs.default_target(ckpt.decoding, langs.source) == FOLDERS[name][1][1]
    outputs = {}
    for target in FOLDERS[name][1][1:]:
        chosen = languages.translating(ckpt, langs, target=target)
        forced = langs.id_of(target)
        for text in TEXTS:
            source, stream = streams(chosen, text, max_new_tokens=N)
            assert list(stream.ids) == generate(ref, list(source.ids), forced), (target, text)
            assert stream.ids[:2] == (ckpt.decoding.start, forced) and len(stream.ids) >= 8
            outputs[target, text] = stream.ids[2:]
    other = FOLDERS[name][1][2]
    assert any(outputs[FOLDERS[name][1][1], t] != outputs[other, t] for t in TEXTS), "the forced language changes the output"
    assert ckpt.decoding.forced_bos is None and chosen.model is ckpt.model  # the loaded checkpoint is untouched


@pytest.mark.parametrize("name", FOLDERS)
def test_choosing_the_source_language_marks_the_source_with_it(folders, name):
    ckpt, ref = load_hf_dir(folders[name], device="cpu"), reference(folders[name])
    langs = languages.find(ckpt.tokenizer)
    first, second, third = FOLDERS[name][1]
    chosen = languages.translating(ckpt, langs, source=second, target=third)
    expected = folder_tokenizer(FOLDERS[name][1], second)  # built afresh with that template
    for text in TEXTS:
        original = ckpt.tokenizer.encode(text).ids
        source, stream = streams(chosen, text, max_new_tokens=N)
        assert list(source.ids) == expected.encode(text).ids == [langs.id_of(second), *original[1:]]
        assert original[0] == langs.id_of(first)
        assert list(stream.ids) == generate(ref, list(source.ids), langs.id_of(third))
    assert ckpt.tokenizer.encode(TEXTS[1]).ids[0] == langs.id_of(first)  # the loaded tokenizer is untouched


def test_only_multilingual_families_are_steered_by_language_tokens(folders):
    """A T5 or Marian whose tokenizer happens to hold language-like specials keeps the folder's own decoding."""
    ckpt = load_hf_dir(folders["m2m"], device="cpu")
    assert languages.of(ckpt) == languages.find(ckpt.tokenizer) is not None
    for model_type in ("t5", "marian", "bart"):
        other = dataclasses.replace(ckpt, training={**ckpt.training, "model_type": model_type})
        assert languages.find(other.tokenizer) is not None and languages.of(other) is None
