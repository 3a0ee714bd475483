"""Marian's SentencePiece tokenizer (source.spm and vocab.json, no tokenizer.json) as a `tokenizers.Tokenizer` that
encodes and decodes as transformers' MarianTokenizer does, read without the sentencepiece package.

A `.spm` file is a protobuf ModelProto (sentencepiece_model.proto); `read_model` reads the few fields used here
straight from the wire format, within limits, since it is user input. MarianTokenizer normalizes a text and splits
it into source.spm's pieces (a unigram model: the most probable split; a run of characters that have no piece of
their own becomes one unknown piece, its text), looks each piece up in vocab.json (not there: <unk>) and appends
</s>; "</s>", "<unk>" and "<pad>" in the text are those tokens, and so is a language code (">>de<<") that starts
it. Our tokenizer keeps vocab.json's ids and segments over source.spm's pieces alone:
- a piece of source.spm keeps its score;
- a vocab.json piece made only of characters source.spm has no piece for (a target-language letter, mostly) stands
  for the unknown run that spells it, and wins over covering that run with smaller ones;
- every other vocab.json piece (most of the target language's) ends in a space, which the normalized text never
  holds: it is never matched, and decoding drops that space (the token's label, `id_to_token`, keeps it).

Decoding joins the pieces, "▁" as a space, and strips the ends, as MarianTokenizer.decode does with
skip_special_tokens. Left different from MarianTokenizer:
- a language code is recognised anywhere in the text (MarianTokenizer: only at its start), and only when vocab.json
  has it (MarianTokenizer gives <unk> for another);
- a run of two or more characters source.spm lacks, absent from vocab.json as a whole but with some of its
  characters there, gives those characters' ids (MarianTokenizer: one <unk>);
- a source.spm piece missing from vocab.json is not used (MarianTokenizer segments with it, then gives <unk>);
- a vocab.json piece that is a control piece of source.spm (<s>) decodes as its text (MarianTokenizer: nothing);
- a grapheme of several code points shorter than 6 bytes (decomposed accents: "e" + U+0302 + U+0301) is normalized
  by the first rule that matches its start, and one of 6 bytes or more a code point at a time (tokenizers'
  `Precompiled`, as in every tokenizer.json converted from SentencePiece), where sentencepiece takes the longest rule
  at each point: decomposed text (NFD) can lose accents, or keep them apart, where MarianTokenizer composes them.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, normalizers, processors
from tokenizers import Tokenizer as HFTokenizer

from transformer.checkpoints.format import CheckpointError
from transformer.checkpoints.tokenizer import TokenizerError, check_charsmap

SOURCE_SPM, TARGET_SPM, VOCAB = "source.spm", "target.spm", "vocab.json"  # a Marian folder's tokenizer files
M2M_SPM = "sentencepiece.bpe.model"  # M2M-100's SentencePiece model: a BPE one, not read here
MAX_FILE_BYTES = 50 * 2**20  # a .spm is ~1 MB and a vocab.json ~2 MB; more is not one
MAX_PIECES = 500_000  # pieces in a model, entries in a vocab.json: a Marian model has 8 000 to 80 000
EOS, UNK, PAD = "</s>", "<unk>", "<pad>"  # MarianTokenizer's special tokens
NORMAL, UNKNOWN, USER_DEFINED, BYTE = 1, 2, 4, 6  # ModelProto.SentencePiece.Type (3: control, 5: unused)
UNIGRAM = 1  # TrainerSpec.ModelType
MODEL_TYPES = {UNIGRAM: "unigram", 2: "BPE", 3: "word", 4: "char"}
UNK_PENALTY = 10.0  # sentencepiece's: an unknown character scores the lowest piece's score minus this
SPACE = "▁"  # how sentencepiece writes a space inside a piece
UNSEEN = " "  # ends every piece the segmentation must not produce: the normalized text holds no space
# What Python's str.strip() removes (MarianTokenizer strips the decoded text); a test checks it against str.isspace
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


@dataclass(frozen=True)
class Model:
    """What segmenting with a SentencePiece model reads of it (ModelProto, TrainerSpec and NormalizerSpec fields)."""

    pieces: tuple[tuple[str, float, int], ...]  # (piece, score, type) in the model's id order
    model_type: int  # a key of MODEL_TYPES
    byte_fallback: bool  # unknown characters become byte pieces <0xNN> instead of <unk>
    whitespace_suffix: bool  # treat_whitespace_as_suffix: "▁" ends a word instead of starting it
    charsmap: bytes  # the compiled normalization rules (NFKC and more); b"" for none
    dummy_prefix: bool  # add_dummy_prefix: a text starts with "▁", as if after a space
    extra_whitespace: bool  # remove_extra_whitespaces: strip both ends, collapse runs of spaces
    escape_whitespace: bool  # spaces become "▁"
    denormalizer: bytes  # rules decoding would apply; b"" for none


# ---------------------------------------------------------------------------------------------
# The protobuf wire format, for the fields above.
# ---------------------------------------------------------------------------------------------


def _varint(data: bytes, i: int, what: str) -> tuple[int, int]:
    value = shift = 0
    while shift < 70:
        if i >= len(data):
            raise CheckpointError(f"{what}: truncated (a number runs past the end)")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
    raise CheckpointError(f"{what}: malformed (a number longer than 10 bytes)")


def _fields(data: bytes, what: str, limit: int) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one message: a varint as int, anything else as its bytes."""
    out: list[tuple[int, int, int | bytes]] = []
    i = 0
    while i < len(data):
        if len(out) == limit:
            raise CheckpointError(f"{what}: more than {limit:,} fields (not a SentencePiece model)")
        key, i = _varint(data, i, what)
        number, wire = key >> 3, key & 7
        if number == 0 or wire not in (0, 1, 2, 5):
            raise CheckpointError(f"{what}: malformed at byte {i} (not a SentencePiece model)")
        if wire == 0:
            value, i = _varint(data, i, what)
            out.append((number, wire, value))
            continue
        if wire == 2:
            size, i = _varint(data, i, what)
        else:
            size = 8 if wire == 1 else 4
        if size > len(data) - i:
            raise CheckpointError(f"{what}: truncated (a field of {size:,} bytes runs past the end)")
        out.append((number, wire, data[i : i + size]))
        i += size
    return out


def _get(fields: list, number: int, wire: int, what: str, default=None):
    """The last value of a field (protobuf's rule for a field given twice), or `default`."""
    if any(n == number and w != wire for n, w, _ in fields):
        raise CheckpointError(f"{what}: field {number} has the wrong wire type (not a SentencePiece model)")
    found = [v for n, w, v in fields if n == number]
    return found[-1] if found else default


def _message(fields: list, number: int, what: str, limit: int) -> list:
    """The fields of a nested message (a message given twice is merged: its parts read as one)."""
    if any(n == number and w != 2 for n, w, _ in fields):
        raise CheckpointError(f"{what}: field {number} has the wrong wire type (not a SentencePiece model)")
    return _fields(b"".join(v for n, _, v in fields if n == number), what, limit)


def read_model(data: bytes, name: str) -> Model:
    """A SentencePiece model from its file's bytes; CheckpointError (naming `name`) says what is wrong with it."""
    if len(data) > MAX_FILE_BYTES:
        raise CheckpointError(f"{name} is {len(data):,} bytes: too large for a SentencePiece model (at most 50 MB)")
    top = _fields(data, name, MAX_PIECES + 64)
    pieces, seen = [], set()
    for number, wire, value in top:
        if number != 1:
            continue
        what = f"{name}: piece {len(pieces)}"
        if wire != 2:
            raise CheckpointError(f"{what}: not a message (not a SentencePiece model)")
        fields = _fields(value, what, 16)
        try:
            piece = _get(fields, 1, 2, what, b"").decode("utf-8")
        except UnicodeDecodeError as e:
            raise CheckpointError(f"{what} is not UTF-8 text: {e}") from e
        (score,) = struct.unpack("<f", _get(fields, 2, 5, what, bytes(4)))
        kind = _get(fields, 3, 0, what, NORMAL)
        if kind not in range(NORMAL, BYTE + 1):
            raise CheckpointError(f"{what} has an unknown type {kind}")
        if not piece or piece in seen:
            raise CheckpointError(f"{what} is {'given twice' if piece else 'empty'}: {piece[:40]!r}")
        if not math.isfinite(score):
            raise CheckpointError(f"{what} has a score that is not a finite number: {piece[:40]!r}")
        seen.add(piece)
        pieces.append((piece, score, kind))
    if not pieces:
        raise CheckpointError(f"{name} holds no pieces (not a SentencePiece model)")
    if sum(kind == UNKNOWN for _, _, kind in pieces) != 1:
        raise CheckpointError(f"{name} must have exactly one unknown piece (<unk>), as sentencepiece requires")
    for number, field in ((2, "trainer_spec"), (3, "normalizer_spec")):  # sentencepiece writes both, after the pieces
        if not any(n == number for n, _, _ in top):
            raise CheckpointError(f"{name} has no {field} (a truncated file?)")
    trainer = _message(top, 2, f"{name}: trainer_spec", 1000)
    normalizer = _message(top, 3, f"{name}: normalizer_spec", 100)
    denormalizer = _message(top, 5, f"{name}: denormalizer_spec", 100)
    return Model(
        pieces=tuple(pieces),
        model_type=_get(trainer, 3, 0, name, UNIGRAM),
        byte_fallback=bool(_get(trainer, 35, 0, name, 0)),
        whitespace_suffix=bool(_get(trainer, 24, 0, name, 0)),
        charsmap=_get(normalizer, 2, 2, name, b""),
        dummy_prefix=bool(_get(normalizer, 3, 0, name, 1)),
        extra_whitespace=bool(_get(normalizer, 4, 0, name, 1)),
        escape_whitespace=bool(_get(normalizer, 5, 0, name, 1)),
        denormalizer=_get(denormalizer, 2, 2, name, b""),
    )


# ---------------------------------------------------------------------------------------------
# Marian's tokenizer.
# ---------------------------------------------------------------------------------------------


def read_vocab(data: bytes, name: str = VOCAB) -> list[str]:
    """vocab.json's pieces in id order: a JSON object of piece -> id whose ids are 0 .. N-1, each once."""
    if len(data) > MAX_FILE_BYTES:
        raise CheckpointError(f"{name} is {len(data):,} bytes: too large for a vocabulary (at most 50 MB)")
    try:
        vocab = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{name} is not valid JSON: {e}") from e
    if not isinstance(vocab, dict):
        raise CheckpointError(f"{name} must be a JSON object of piece -> id, got {type(vocab).__name__}")
    if len(vocab) > MAX_PIECES:
        raise CheckpointError(f"{name} has {len(vocab):,} entries (at most {MAX_PIECES:,})")
    pieces: list[str | None] = [None] * len(vocab)
    for piece, i in vocab.items():
        if type(i) is not int or not 0 <= i < len(vocab) or pieces[i] is not None or not piece:
            why = "an empty piece" if not piece else f"{piece[:40]!r} -> {str(i)[:40]}"
            raise CheckpointError(f"{name}: {why}: the ids must be 0 .. {len(vocab) - 1}, each once, for non-empty pieces")
        pieces[i] = piece
    missing = [s for s in (EOS, UNK, PAD) if s not in vocab]
    if missing:
        raise CheckpointError(f"{name} has no {', '.join(missing)} (MarianTokenizer's special tokens)")
    return pieces  # type: ignore[return-value]  # every slot was filled: N distinct ids in 0 .. N-1


def _check_source(spm: Model, name: str) -> None:
    """Refuse what sentencepiece would segment or decode otherwise than the tokenizer built here."""
    kinds = {kind for _, _, kind in spm.pieces}
    refusals = (
        (spm.model_type != UNIGRAM, f"is a {MODEL_TYPES.get(spm.model_type, f'type {spm.model_type}')} model"),
        (spm.byte_fallback or BYTE in kinds, "falls back to bytes for unknown characters"),
        (USER_DEFINED in kinds, "has user-defined symbols"),
        (spm.whitespace_suffix, "puts '▁' at the end of words"),
        (not spm.escape_whitespace, "does not write spaces as '▁'"),
        (bool(spm.denormalizer), "has denormalization rules"),
    )
    for refused, why in refusals:
        if refused:
            raise CheckpointError(f"{name} {why}: only Marian's usual unigram model is read")
    if spm.charsmap:
        try:
            check_charsmap(spm.charsmap)
        except TokenizerError as e:
            raise CheckpointError(f"{name}: {e}") from e


def marian_tokenizer(source: Model, vocab: list[str], name: str = SOURCE_SPM) -> HFTokenizer:
    """The tokenizer MarianTokenizer is for `source` (source.spm) and `vocab` (vocab.json's pieces in id order)."""
    _check_source(source, name)
    scores = {piece: score for piece, score, kind in source.pieces if kind == NORMAL}
    known = {piece for piece in scores if len(piece) == 1}  # characters that have a piece of their own
    lowest = min(min(scores.values(), default=0.0), 0.0)
    codes = {p for p in vocab if p.startswith(">>") and p.endswith("<<")}  # MarianTokenizer's language codes
    entries = []
    for piece in vocab:
        if piece in scores and UNSEEN not in piece:
            entries.append((piece, scores[piece]))
        elif piece in (EOS, UNK, PAD) or piece in codes:  # added tokens take their ids from these; never chosen
            entries.append((piece, len(piece) * (lowest - 1.0)))
        elif UNSEEN not in piece and known.isdisjoint(piece):  # the text of an unknown run, scored as sentencepiece would
            entries.append((piece, lowest - UNK_PENALTY))
        else:
            entries.append((piece + UNSEEN, 0.0))
    tok = HFTokenizer(models.Unigram(entries, unk_id=vocab.index(UNK), byte_fallback=False))
    tok.normalizer = normalizers.Sequence(_normalizers(source))
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace(Regex(f"{UNSEEN}\\z"), ""),
            decoders.Replace(SPACE, " "),
            decoders.Fuse(),
            decoders.Replace(Regex(f"\\A[{WHITESPACE}]+|[{WHITESPACE}]+\\z"), ""),
        ]
    )
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in (EOS, UNK, PAD)])
    tok.add_tokens([AddedToken(p, normalized=False, special=False) for p in vocab if p in codes])
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab.index(EOS))])
    return tok


def _normalizers(spm: Model) -> list:
    """sentencepiece's normalization: the rules, then its spaces (ends stripped, runs collapsed, "▁" for each, one
    "▁" in front); a text that is only spaces becomes empty."""
    steps = [normalizers.Precompiled(spm.charsmap)] if spm.charsmap else []
    if spm.extra_whitespace:
        steps += [normalizers.Replace(Regex(r"\A +"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spm.dummy_prefix:
        steps.append(normalizers.Prepend(SPACE))
    steps.append(normalizers.Replace(" ", SPACE))
    if spm.extra_whitespace:
        steps.append(normalizers.Replace(Regex(f"{SPACE}+\\z"), ""))
    return steps


def is_marian(folder: Path) -> bool:
    """Whether `folder` has Marian's tokenizer files (the ones read: source.spm and vocab.json)."""
    return (folder / SOURCE_SPM).is_file() and (folder / VOCAB).is_file()


def read_marian(folder: Path) -> HFTokenizer:
    """The tokenizer of a Marian folder without tokenizer.json, from its source.spm and vocab.json."""
    data = {}
    for name in (SOURCE_SPM, VOCAB):
        path = folder / name
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CheckpointError(f"{name} is {path.stat().st_size:,} bytes: too large (at most 50 MB)")
        data[name] = path.read_bytes()
    return marian_tokenizer(read_model(data[SOURCE_SPM], SOURCE_SPM), read_vocab(data[VOCAB]))
