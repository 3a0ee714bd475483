"""Subword tokenizers trained, saved and loaded with the `tokenizers` library."""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterable
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from transformer.model.trace import Stream

PAD, UNK, BOS, EOS, CLS, SEP = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]"
SPECIALS = (PAD, UNK, BOS, EOS, CLS, SEP)  # ids 0..5 in every tokenizer we train

# What the tokenizer adds around a source text, per model kind.
TEMPLATES = {
    "encoder": f"{CLS} $A {SEP}",  # the classifier reads the first token's vector
    "decoder": f"{BOS} $A",  # every position predicts the next token
    "encoder-decoder": f"$A {EOS}",  # the source; the target starts with BOS and ends with EOS
}


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded or used."""


MAX_CHARSMAP_BYTES = 8 * 2**20  # sentencepiece's NFKC rules take 240 kB


def check_charsmap(blob: bytes) -> None:
    """Refuse normalization rules that would make `normalizers.Precompiled` read outside them (it panics then).

    The rules are a trie (darts-clone's double array of 32-bit units) and the replacement strings after it. A
    unit that a byte can lead to sends the next byte to `position ^ offset ^ byte`: those 256 places, and the
    replacement a leaf points to (a character boundary of the UTF-8 strings), must lie inside.
    """
    if len(blob) > MAX_CHARSMAP_BYTES:
        raise TokenizerError(f"normalization rules of {len(blob):,} bytes (at most {MAX_CHARSMAP_BYTES:,})")
    size = struct.unpack_from("<I", blob)[0] if len(blob) >= 4 else 0
    if size == 0 or size % 4 or size > len(blob) - 4:
        raise TokenizerError(f"malformed normalization rules (a trie of {size:,} bytes in {len(blob):,})")
    units = struct.unpack_from(f"<{size // 4}I", blob, 4)
    strings = blob[4 + size :]
    try:
        strings.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerError(f"the normalization rules' strings are not UTF-8 ({e})") from e
    n = len(units)
    for position, unit in enumerate(units):
        if position and unit >> 31:  # a leaf's value: never a place a byte leads to
            continue
        base = position ^ ((unit >> 10) << ((unit & (1 << 9)) >> 6))
        if base | 0xFF >= n:
            raise TokenizerError(f"malformed normalization rules (unit {position} points outside the trie)")
        if position and unit >> 8 & 1:
            at = units[base] & 0x7FFFFFFF
            if at > len(strings) or (at < len(strings) and 0x80 <= strings[at] < 0xC0):
                raise TokenizerError(f"malformed normalization rules (unit {position} points inside a character)")


def _check_normalizers(node: Any) -> None:
    """Every Precompiled normalizer's rules in a tokenizer's JSON, checked before `tokenizers` reads them."""
    if isinstance(node, dict):
        if node.get("type") == "Precompiled":
            try:
                blob = base64.b64decode(node.get("precompiled_charsmap") or "", validate=True)
            except (binascii.Error, TypeError, ValueError) as e:
                raise TokenizerError(f"a Precompiled normalizer's rules are not base64: {e}") from e
            if blob:
                check_charsmap(blob)
        for value in node.values():
            _check_normalizers(value)
    elif isinstance(node, list):
        for value in node:
            _check_normalizers(value)


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the special-token ids the model kinds need."""

    def __init__(self, inner: HFTokenizer):
        self.inner = inner
        self.pad_id = inner.token_to_id(PAD)
        self.bos_id = inner.token_to_id(BOS)
        self.eos_id = inner.token_to_id(EOS)

    @property
    def vocab_size(self) -> int:
        return self.inner.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        """A tokenizer from its JSON; a normalizer whose rules would make `tokenizers` read outside them (a Rust
        panic on the first text, not an exception) is refused here."""
        try:
            _check_normalizers(json.loads(text))
            return cls(HFTokenizer.from_str(text))
        except TokenizerError:
            raise
        except Exception as e:  # the library raises a bare Exception on malformed JSON
            raise TokenizerError(f"tokenizer JSON could not be loaded: {e}") from e

    def to_json(self) -> str:
        return self.inner.to_str()

    def encode(self, text: str, add_special_tokens: bool = True, max_len: int | None = None) -> Stream:
        """Tokenize `text`, keeping at most `max_len` tokens (the stream records how many were cut)."""
        enc = self.inner.encode(text, add_special_tokens=add_special_tokens)
        ids, tokens, offsets = list(enc.ids), list(enc.tokens), [tuple(o) for o in enc.offsets]
        cut = 0
        if max_len is not None and len(ids) > max_len:
            cut = len(ids) - max_len
            # Keep the first max_len - 1 tokens and the closing special token, if the template adds one.
            tail = 1 if add_special_tokens and enc.special_tokens_mask and enc.special_tokens_mask[-1] else 0
            keep = list(range(max_len - tail)) + list(range(len(ids) - tail, len(ids)))
            ids, tokens, offsets = ([seq[i] for i in keep] for seq in (ids, tokens, offsets))
        return Stream(text=text, ids=tuple(ids), tokens=tuple(tokens), offsets=tuple(offsets), truncated=cut)

    def decode(self, ids: Iterable[int]) -> str:
        return self.inner.decode(list(ids), skip_special_tokens=True)

    def token_id(self, token: str) -> int | None:
        return self.inner.token_to_id(token)

    def id_to_token(self, i: int) -> str:
        return self.inner.id_to_token(i) or UNK


def train_tokenizer(texts: Iterable[str], kind: str, vocab_size: int = 1000, min_frequency: int = 2) -> Tokenizer:
    """Train a BPE tokenizer (words split into `##`-continued subwords) with our special tokens."""
    if kind not in TEMPLATES:
        raise TokenizerError(f"unknown model kind {kind!r}")
    tok = HFTokenizer(models.BPE(unk_token=UNK, continuing_subword_prefix="##"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIALS),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=TEMPLATES[kind],
        special_tokens=[(s, tok.token_to_id(s)) for s in SPECIALS],
    )
    return Tokenizer(tok)
