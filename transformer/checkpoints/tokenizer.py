"""Subword tokenizers trained, saved and loaded with the `tokenizers` library."""

from __future__ import annotations

from collections.abc import Iterable

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
        try:
            return cls(HFTokenizer.from_str(text))
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
