"""The languages of a multilingual translator: which tokens name them, and a checkpoint set to translate between two.

mBART-50, M2M-100 and NLLB-200 name each language by a special token: mBART's `en_XX`, `de_DE`; M2M-100's `__en__`,
`__ast__`; NLLB's `eng_Latn`, `deu_Latn`. The source's language is part of the tokenizer's template (NLLB
"eng_Latn $A </s>", mBART-50 "en_XX $A </s>", M2M-100 "__en__ $A </s>", mBART-cc25 "$A </s> en_XX"); the target's
is the decoder's first free token (`forced_bos_token_id`, which users pass to `generate` per call: most folders set
none) or, for mBART-cc25, the decoder's start token. `translating` returns a checkpoint that shares the model and
reads and writes the two languages chosen; the checkpoint it was made from, shared by every session, is unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

from transformer.checkpoints.format import Checkpoint
from transformer.checkpoints.tokenizer import Tokenizer
from transformer.decoding import Decoding

# family -> what its language tokens look like (matched against the whole token)
PATTERNS = {
    "mbart": re.compile(r"[a-z]{2}_[A-Z]{2}"),  # en_XX, de_DE
    "m2m_100": re.compile(r"__[a-z]{2,3}__"),  # __en__, __ast__
    "nllb": re.compile(r"[a-z]{3}_[A-Z][a-z]{3}"),  # eng_Latn, zho_Hans
}


@dataclass(frozen=True)
class Languages:
    """A multilingual tokenizer's language tokens, and where its template marks the source's language."""

    family: str  # whose pattern the tokens follow: a key of PATTERNS
    tokens: tuple[str, ...]  # in id order
    ids: tuple[int, ...]  # tokens[i]'s id
    source: str | None  # the language token the template adds around a source text (None: it adds none)
    source_last: bool = False  # the template puts it after the text (mBART-cc25's "$A </s> en_XX")

    def id_of(self, token: str) -> int:
        if token not in self.tokens:
            raise ValueError(f"{token!r} is not one of this tokenizer's languages")
        return self.ids[self.tokens.index(token)]

    def target_slot(self, decoding: Decoding) -> str:
        """Where the target language goes: "forced_bos" (the first free step) or "start" (the decoder's first input).

        Where the folder already puts a language; else forced_bos, as mBART-50, M2M-100 and NLLB are used, except
        for a template with the language after the text (mBART-cc25), whose decoder starts with the target's.
        """
        if decoding.forced_bos in self.ids:
            return "forced_bos"
        if decoding.start in self.ids or (decoding.forced_bos is None and self.source_last):
            return "start"
        return "forced_bos"

    def default_target(self, decoding: Decoding, source: str | None = None) -> str:
        """The folder's own target language when it names one, else the first language that is not `source`."""
        forced = getattr(decoding, self.target_slot(decoding))
        if forced in self.ids:
            return self.tokens[self.ids.index(forced)]
        return next((t for t in self.tokens if t != source), self.tokens[0])


MULTILINGUAL = ("mbart", "m2m_100")  # the families trained to read and write a language token (NLLB is m2m_100)


def of(ckpt: Checkpoint) -> Languages | None:
    """A checkpoint's languages: `find` on its tokenizer, for a multilingual family's encoder-decoder only (a T5 or a
    Marian whose tokenizer holds such tokens was not trained to be steered by them: its decoding stays the folder's)."""
    if ckpt.config.kind != "encoder-decoder" or ckpt.training.get("model_type") not in MULTILINGUAL:
        return None
    return find(ckpt.tokenizer)


def find(tokenizer: Tokenizer) -> Languages | None:
    """The tokenizer's language tokens: its added special tokens that follow one family's pattern, when there are 2 or more.

    Only special tokens count (a language code the tokenizer treats as text is not one the model was trained to
    read); a tokenizer whose specials follow several patterns takes the family with the most.
    """
    added = sorted(tokenizer.inner.get_added_tokens_decoder().items())
    best: list[tuple[int, str]] = []
    family = ""
    for name, pattern in PATTERNS.items():
        found = [(i, t.content) for i, t in added if t.special and pattern.fullmatch(t.content)]
        if len(found) > len(best):
            best, family = found, name
    if len(best) < 2:
        return None
    tokens = tuple(t for _, t in best)
    source, last = _template_language(tokenizer, tokens)
    return Languages(family, tokens, tuple(i for i, _ in best), source, last)


def _template_language(tokenizer: Tokenizer, tokens: tuple[str, ...]) -> tuple[str | None, bool]:
    """The first language token in the single-text template, and whether it comes after the text."""
    processor = tokenizer.inner.post_processor
    if processor is None:
        return None, False
    for template in _templates(json.loads(processor.__getstate__())):
        seen_text = False
        for item in template.get("single", ()):
            special = item.get("SpecialToken", {}).get("id")
            seen_text = seen_text or "Sequence" in item
            if special in tokens:
                return special, seen_text
    return None, False


def _templates(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The TemplateProcessing nodes of a post-processor's JSON (itself, or inside a Sequence of processors)."""
    if node.get("type") == "Sequence":
        return [t for p in node.get("processors", ()) for t in _templates(p)]
    return [node] if node.get("type") == "TemplateProcessing" else []


def with_source(tokenizer: Tokenizer, languages: Languages, source: str) -> Tokenizer:
    """A new tokenizer whose template marks `source` where it marked `languages.source`; `tokenizer` itself is untouched.

    `tokenizer` when `source` is already the template's. Built from the JSON, so a full copy of the vocabulary (0.9 s
    for a 256 000-word one, measured): callers that switch often keep the result.
    """
    if languages.source is None:
        raise ValueError("this tokenizer's template marks no source language")
    new_id = languages.id_of(source)
    if source == languages.source:
        return tokenizer
    old = languages.source
    data = json.loads(tokenizer.to_json())

    def swap(node: dict[str, Any]) -> dict[str, Any]:
        if node.get("type") == "Sequence":
            return {**node, "processors": [swap(p) for p in node["processors"]]}
        if node.get("type") != "TemplateProcessing":
            return node

        def item(x: dict[str, Any]) -> dict[str, Any]:
            return {"SpecialToken": {**x["SpecialToken"], "id": source}} if x.get("SpecialToken", {}).get("id") == old else x

        specials = {k: v for k, v in node["special_tokens"].items() if k != old}
        specials[source] = {"id": source, "ids": [new_id], "tokens": [source]}
        return {**node, **{k: [item(x) for x in node[k]] for k in ("single", "pair") if k in node}, "special_tokens": specials}

    data["post_processor"] = swap(data["post_processor"])
    return Tokenizer.from_json(json.dumps(data))


def with_target(decoding: Decoding, languages: Languages, target: str) -> Decoding:
    """`decoding` with `target`'s token where the target language goes (`Languages.target_slot`)."""
    return dataclasses.replace(decoding, **{languages.target_slot(decoding): languages.id_of(target)})


def translating(
    ckpt: Checkpoint,
    languages: Languages,
    source: str | None = None,
    target: str | None = None,
    tokenizer: Tokenizer | None = None,
) -> Checkpoint:
    """`ckpt` reading `source` texts and writing `target`: the same model, its tokenizer and decoding changed.

    None keeps the folder's own. tokenizer: `with_source(ckpt.tokenizer, languages, source)` when the caller keeps
    one. The decoding travels in the training facts, where `Checkpoint.decoding` reads it.
    """
    if source is not None:
        tokenizer = tokenizer or with_source(ckpt.tokenizer, languages, source)
    training = ckpt.training
    if target is not None:
        training = {**training, "decoding": with_target(ckpt.decoding, languages, target).to_facts()}
    return dataclasses.replace(ckpt, tokenizer=tokenizer or ckpt.tokenizer, training=training)
