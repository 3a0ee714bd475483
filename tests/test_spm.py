"""Marian folders without tokenizer.json: source.spm and vocab.json read by `spm.py` (no sentencepiece at run time),
against transformers' MarianTokenizer, which reads them with the sentencepiece package (a test-only reference).

The two SentencePiece models are trained here with sentencepiece's own trainer, the source on English (CORPUS and
some accented words), the target on German, and vocab.json is laid out as transformers' Marian conversion writes
it: </s>=0, <unk>=1, the pieces of both models, two language codes, <pad> last. Nothing is downloaded. The ids
and the decoded text must be MarianTokenizer's on every text below (spaces, NFKC cases, emoji, unknown characters,
special tokens in the text, 10 000 characters) and on random ids; the differences spm.py's docstring names are
pinned as they are. A random MarianMTModel saved with those files and no tokenizer.json loads, at parity with
transformers and token for token its greedy output. Hostile files are refused with a message.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import shutil
import struct
import warnings
import zipfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never reach for the hub

import pytest
import sentencepiece
import torch
import transformers
from hf_reference import CORPUS
from sentencepiece import sentencepiece_model_pb2
from test_import_bart_family import build, parity, reference
from test_sources import cache_repo
from tokenizers import normalizers

from transformer import CheckpointError
from transformer.api import greedy_decode
from transformer.checkpoints import sources, spm, uploads
from transformer.checkpoints.importers import judge_folder, load_hf_dir
from transformer.checkpoints.tokenizer import Tokenizer, TokenizerError

pytestmark = pytest.mark.numerics

ENGLISH = [
    *dict.fromkeys(CORPUS),
    "the café serves crème brûlée to a naïve fiancé at the façade",
    "The Cat Met Mary And A Dog In Berlin On Sunday",
    'numbers 1 2 3 and 42 , in 2024 ; x = y + 1 ? she said : " it\'s warm ! " ( maybe )',
]
GERMAN = [
    "die katze saß auf der matte , weil es warm war .",
    "ein hund läuft im park und die katze sieht zu",
    "oma backt jeden sonntag brot ; die straße riecht danach !",
    "aufmerksamkeit ist eine gewichtete summe der werte",
    "größe , übermäßig , ärger , öl , süß , fuß , Mädchen , Übung",
]
CODES = (">>de<<", ">>fr<<")  # a multilingual model's target-language codes, in its vocab.json
TEXTS = (
    "the cat sat on the mat",
    "  leading, trailing and   inner   spaces  ",
    "\t\ttabs\nand\r\nnewlines\n",
    "\u3000ideographic\u3000and\u00a0no-break spaces\u2028",
    "",
    "   ",
    "\n",
    "ﬁne ﬂat ﬀ",  # ligatures: NFKC spells them out
    "１２３ ｔｈｅ ｃａｔ Ⅻ x² ㍻ ｶﾀｶﾅ",  # full-width, compatibility forms
    "cafe\u0301 n\u0303o",  # combining accents: NFKC composes them
    "the\u200bcat \u200b zero width",
    "emoji 😀 👍🏽 🇩🇪 👨\u200d👩\u200d👧 ☃",
    "東京 is unknown to both",
    "die Straße am Fuß , über Mädchen",  # ß, ü, ä: only the target model has them (one at a time)
    "a</s>b <unk> <pad>x </s>",  # MarianTokenizer's special tokens in the text
    ">>de<< the cat sat",  # a language code starting the text
    ">>fr<<the cat",
    "▁x ▁ ▁▁",  # SentencePiece's own space mark, typed
    "« quotes » — dashes … ellipsis",
)
WORDS = [
    *" ".join(ENGLISH).split(),
    *"katze saß straße läuft oma Mädchen Übung über ärger öl fuß".split(),
    *"ﬁne ﬂat １２３ ｔｈｅ Ⅻ x² cafe\u0301 n\u0303o the\u200bcat 😀 👍🏽 🇩🇪 東京 ☃ </s> <unk> <pad> a</s>b ▁x".split(),
]
SEPARATORS = (" ", " ", " ", "  ", "\t", "\n", " \n ", "\u3000", "\u00a0")


def train(texts: list[str], vocab_size: int, model_type: str = "unigram") -> bytes:
    """A SentencePiece model trained by sentencepiece itself (its defaults: nmt_nfkc rules, a dummy prefix)."""
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts * 20),
        model_writer=out,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return out.getvalue()


def marian_vocab(*models: bytes) -> dict[str, int]:
    """vocab.json as transformers' Marian conversion writes it: </s>=0, <unk>=1, the pieces, codes, <pad> last."""
    vocab = {"</s>": 0, "<unk>": 1}
    for data in models:
        sp = sentencepiece.SentencePieceProcessor(model_proto=data)
        for i in range(sp.get_piece_size()):
            if not (sp.is_control(i) or sp.is_unknown(i)):
                vocab.setdefault(sp.id_to_piece(i), len(vocab))
    for code in CODES:
        vocab[code] = len(vocab)
    vocab["<pad>"] = len(vocab)
    return vocab


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """source.spm (English), target.spm (German) and vocab.json, in a folder."""
    folder = tmp_path_factory.mktemp("marian") / "tokenizer"
    folder.mkdir()
    source, target = train(ENGLISH, 300), train(GERMAN, 300)
    (folder / spm.SOURCE_SPM).write_bytes(source)
    (folder / spm.TARGET_SPM).write_bytes(target)
    (folder / spm.VOCAB).write_text(json.dumps(marian_vocab(source, target), ensure_ascii=False), encoding="utf-8")
    return folder


def marian_tokenizer(folder: Path) -> transformers.MarianTokenizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Recommended: pip install sacremoses" (MarianTokenizer does not call it)
        return transformers.MarianTokenizer(*(str(folder / n) for n in (spm.SOURCE_SPM, spm.TARGET_SPM, spm.VOCAB)))


def random_texts(n: int, seed: int = 0) -> list[str]:
    """`n` texts of random words and separators (a language code at the start of some). A character source.spm lacks
    but vocab.json has (ß, ä, ü) stands alone between known ones: a run of several is where spm.py says we differ."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 30))]
        text = "".join(w + rng.choice(SEPARATORS) for w in words)
        out.append((rng.choice(CODES) if rng.random() < 0.2 else "") + text)
    return out


def long_text(n: int = 10_000) -> str:
    rng, text = random.Random(1), ""
    while len(text) < n:
        text += rng.choice(WORDS) + rng.choice(SEPARATORS)
    return text[:n]


# --- the tokenizer --------------------------------------------------------------------------------------------


def test_encoding_and_decoding_equal_marian_tokenizers(files):
    """Ids of every text as MarianTokenizer's; decoding them, its text; the same after a JSON round trip (how the
    tokenizer is saved into our checkpoints)."""
    ref = marian_tokenizer(files)
    ours = Tokenizer(spm.read_marian(files))
    saved = Tokenizer.from_json(ours.to_json())
    texts = [*TEXTS, *random_texts(300), long_text()]
    tokens = 0
    for text in texts:
        expected = ref(text).input_ids
        for tok in (ours, saved):
            assert list(tok.encode(text).ids) == expected, repr(text[:80])
            assert tok.decode(expected) == ref.decode(expected, skip_special_tokens=True), repr(text[:80])
        tokens += len(expected)
    unknown = sum(ref(t).input_ids.count(ref.unk_token_id) for t in texts)
    print(f"{len(texts)} texts, {tokens} tokens ({unknown} <unk>), {len(long_text())}-character text included")
    assert unknown > 10  # unknown characters were in the texts, and came out as <unk>


def test_decoding_random_and_target_ids_equals_marian_tokenizers(files):
    """Any ids (pieces of either model, specials, codes) and the target model's ids of German text decode as
    MarianTokenizer.decode(skip_special_tokens=True) decodes them."""
    ref, ours = marian_tokenizer(files), Tokenizer(spm.read_marian(files))
    rng = random.Random(2)
    batches = [[rng.randrange(len(ref)) for _ in range(rng.randint(0, 20))] for _ in range(500)]
    batches += [ref(text_target=t).input_ids for t in [*GERMAN, *random_texts(50, seed=3)]]
    for ids in batches:
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True), ids


def test_where_we_differ_from_marian_tokenizer_as_documented(files):
    """spm.py names the differences; these are they (a change in either tokenizer shows here)."""
    ref, ours = marian_tokenizer(files), Tokenizer(spm.read_marian(files))
    vocab = ref.get_vocab()
    texts = ("the >>de<< cat", ">>xx<< the", "größe", "e\u0302\u0301")
    ids = {text: (ref(text).input_ids, list(ours.encode(text).ids)) for text in texts}
    theirs, mine = ids["the >>de<< cat"]  # a code inside the text: pieces for it, its id for us
    assert vocab[">>de<<"] in mine and vocab[">>de<<"] not in theirs
    theirs, mine = ids[">>xx<< the"]  # a code vocab.json lacks, at the start: <unk> for it, pieces for us
    assert theirs[0] == ref.unk_token_id and mine[0] != ref.unk_token_id
    theirs, mine = ids["größe"]  # "öß": two characters source.spm lacks, each in vocab.json, the pair not
    assert theirs[theirs.index(vocab["r"]) + 1] == ref.unk_token_id
    assert mine[mine.index(vocab["r"]) + 1 : mine.index(vocab["r"]) + 3] == [vocab["ö"], vocab["ß"]]
    # decomposed ế (unknown to both): sentencepiece composes it, tokenizers' Precompiled keeps ê and drops the acute
    assert ref.tokenize("e\u0302\u0301") == ["▁", "ế"] and ours.encode("e\u0302\u0301").tokens == ("▁", "ê", "</s>")


def test_offsets_and_truncation(files):
    """Each token's offsets are the characters it stands for; a cut keeps the first tokens and the closing </s>."""
    tok = Tokenizer(spm.read_marian(files))
    plain = tok.encode("  the cat\tsat on   the mat ")
    assert [plain.text[a:b].strip() for a, b in plain.offsets[:-1]] == [t.lstrip("▁") for t in plain.tokens[:-1]]
    assert plain.offsets[-1] == (0, 0)  # the closing </s> stands for no text
    text = "  the café sat ﬁne </s> Straße 😀 東京 "
    stream = tok.encode(text)
    spans = stream.offsets[:-1]  # "ﬁ" is two tokens ("▁f", "i") of one character: (14, 16) " ﬁ" and (15, 16)
    assert [a for a, _ in spans] == sorted(a for a, _ in spans) and all(0 <= a < b <= len(text) for a, b in spans)
    assert set().union(*(range(a, b) for a, b in spans)) >= {i for i, c in enumerate(text) if c != " "}
    cut = tok.encode(text, max_len=5)
    assert cut.ids == (*stream.ids[:4], stream.ids[-1]) and cut.truncated == len(stream.ids) - 5


def test_the_space_set_is_pythons_strip():
    """MarianTokenizer strips its decoded text with str.strip(): spm.WHITESPACE must be that set."""
    space = re.compile(f"[{spm.WHITESPACE}]")
    assert {c for c in map(chr, range(0x110000)) if space.fullmatch(c)} == {c for c in map(chr, range(0x110000)) if c.isspace()}


# --- a Marian folder ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(files, tmp_path_factory) -> Path:
    """A random MarianMTModel saved by save_pretrained with source.spm, target.spm and vocab.json, no tokenizer.json."""
    path = tmp_path_factory.mktemp("marian") / "opus-mt-en-de"
    vocab = json.loads((files / spm.VOCAB).read_text(encoding="utf-8"))
    pad = vocab["<pad>"]
    ids = dict(pad_token_id=pad, decoder_start_token_id=pad, eos_token_id=0, forced_eos_token_id=0, bos_token_id=None)
    model = build(transformers.MarianMTModel, spm.read_marian(files), scale_embedding=True, **ids)
    model.generation_config.no_repeat_ngram_size = 3  # a tiny random model repeats one token; this walks through many
    model.save_pretrained(path)
    for name in (spm.SOURCE_SPM, spm.TARGET_SPM, spm.VOCAB):
        shutil.copy(files / name, path / name)
    return path


def test_a_marian_folder_without_tokenizer_json_loads_at_parity(folder):
    assert not (folder / "tokenizer.json").exists()
    assert judge_folder(folder) == "marian"
    ckpt = parity(folder, texts=("the cat sat on the mat", "die Straße , 😀 ﬁne"), target="der hund")["ckpt"]
    assert ckpt.tokenizer.vocab_size == ckpt.config.vocab_size


def test_greedy_output_equals_generate_from_marian_tokenizers_ids(folder):
    """The source ids are MarianTokenizer's, the output is generate's token for token, and decodes as it decodes."""
    ckpt, ref, tok = load_hf_dir(folder, device="cpu"), reference(folder), marian_tokenizer(folder)
    for text in ("the cat sat on the mat because it was warm", ">>de<< grandma bakes bread 😀"):
        src = tok(text).input_ids
        assert list(ckpt.tokenizer.encode(text).ids) == src
        ours = greedy_decode(ckpt.model, src, ckpt.decoding, max_new_tokens=24)
        theirs = ref.generate(torch.tensor([src]), num_beams=1, do_sample=False, max_new_tokens=24)[0].tolist()
        print(f"{text!r}: {theirs}")
        expected = theirs[1:-1] if theirs[-1] in ckpt.decoding.eos else theirs[1:]
        assert ours == expected and len(set(ours)) >= 4
        assert ckpt.tokenizer.decode(ours) == tok.decode(theirs, skip_special_tokens=True)


def test_the_hugging_face_cache_offers_a_marian_snapshot(folder, tmp_path):
    hub = tmp_path / "hub"
    names = ("config.json", "generation_config.json", "model.safetensors", spm.SOURCE_SPM, spm.TARGET_SPM, spm.VOCAB)
    cache_repo(hub, "Helsinki-NLP/opus-mt-en-de", {n: (folder / n).read_bytes() for n in names})
    scan = sources.scan((), hub)
    assert [f.name for f in scan.offered] == ["Helsinki-NLP/opus-mt-en-de"] and not scan.refused
    vocab = json.loads((folder / spm.VOCAB).read_text(encoding="utf-8"))
    assert load_hf_dir(scan.offered[0].path, device="cpu").tokenizer.vocab_size == len(vocab)


def test_uploads_carry_the_spm_files(folder):
    """A folder's files or its zip: source.spm and vocab.json are kept (target.spm is accepted, never read)."""
    names = ("config.json", "generation_config.json", "model.safetensors", spm.SOURCE_SPM, spm.TARGET_SPM, spm.VOCAB)
    files = [(n, (folder / n).read_bytes()) for n in names]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for n, data in files:
            z.writestr(f"opus-mt-en-de/{n}", data)
    for upload in (uploads.prepare(files, 2**30), uploads.prepare([("opus.zip", archive.getvalue())], 2**30)):
        assert upload.kind == "huggingface"
        assert sorted(upload.files) == sorted(set(names) - {spm.TARGET_SPM})
    without = [(n, d) for n, d in files if n != spm.VOCAB]
    with pytest.raises(uploads.UploadError, match=r"needs its tokenizer\.json too .*Marian folder's source\.spm and vocab\.json"):
        uploads.prepare(without, 2**30)
    m2m = [(n, d) for n, d in without if n != spm.SOURCE_SPM] + [(spm.M2M_SPM, b"\0")]
    with pytest.raises(uploads.UploadError, match=r"M2M-100's sentencepiece\.bpe\.model is not converted; a folder with"):
        uploads.prepare(m2m, 2**30)


def test_a_folder_without_a_tokenizer_says_what_is_needed(folder, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    (bare / spm.VOCAB).unlink()
    for check in (judge_folder, load_hf_dir):
        with pytest.raises(CheckpointError, match=r"no tokenizer\.json .* and no Marian source\.spm with vocab\.json"):
            check(bare)
    m2m = tmp_path / "m2m"
    m2m.mkdir()
    transformers.M2M100Config(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1).save_pretrained(m2m)
    (m2m / spm.M2M_SPM).write_bytes(train(ENGLISH, 60, "bpe"))
    for check in (judge_folder, load_hf_dir):
        with pytest.raises(CheckpointError, match=r"M2M-100's sentencepiece\.bpe\.model is not converted; a folder with"):
            check(m2m)


# --- hostile files --------------------------------------------------------------------------------------------


def proto(files: Path) -> sentencepiece_model_pb2.ModelProto:
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString((files / spm.SOURCE_SPM).read_bytes())
    return model


def build_from(data: bytes, vocab: bytes) -> None:
    spm.marian_tokenizer(spm.read_model(data, spm.SOURCE_SPM), spm.read_vocab(vocab))


def test_broken_spm_files_are_refused(files):
    data, vocab = (files / spm.SOURCE_SPM).read_bytes(), (files / spm.VOCAB).read_bytes()
    pieces = sentencepiece_model_pb2.ModelProto(pieces=proto(files).pieces).SerializeToString()
    assert data.startswith(pieces)  # sentencepiece writes the pieces first: a cut there leaves a parsable file
    cuts = {*range(1, len(data), len(data) // 13), len(pieces)}
    for cut in sorted(cuts):
        with pytest.raises(CheckpointError, match=r"source\.spm"):
            build_from(data[:cut], vocab)
    rng = random.Random(4)
    for junk in (b"", b"hello world", vocab, b"\x89PNG\r\n\x1a\n" + bytes(100), *(rng.randbytes(2000) for _ in range(20))):
        with pytest.raises(CheckpointError, match=r"source\.spm"):
            build_from(junk, vocab)
    with pytest.raises(CheckpointError, match=r"source\.spm is 52,428,801 bytes: too large"):
        spm.read_model(bytes(spm.MAX_FILE_BYTES + 1), spm.SOURCE_SPM)
    with pytest.raises(CheckpointError, match=f"more than {spm.MAX_PIECES + 64:,} fields"):
        spm.read_model(b"\x20\x01" * (spm.MAX_PIECES + 100), spm.SOURCE_SPM)  # field 4, tiny and many


def test_an_oversized_file_in_a_folder_is_refused_before_it_is_read(files, tmp_path):
    shutil.copytree(files, tmp_path / "big")
    with open(tmp_path / "big" / spm.SOURCE_SPM, "r+b") as f:
        f.truncate(spm.MAX_FILE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(CheckpointError, match=r"source\.spm is 52,428,801 bytes: too large"):
        spm.read_marian(tmp_path / "big")


def test_models_other_than_marians_unigram_are_refused(files):
    vocab = (files / spm.VOCAB).read_bytes()
    with pytest.raises(CheckpointError, match=r"source\.spm is a BPE model: only Marian's usual unigram model is read"):
        build_from(train(ENGLISH, 60, "bpe"), vocab)
    for change, message in (
        (lambda m: setattr(m.trainer_spec, "byte_fallback", True), "falls back to bytes"),
        (lambda m: m.pieces.add(piece="<sep>", score=0.0, type=4), "has user-defined symbols"),
        (lambda m: setattr(m.normalizer_spec, "escape_whitespaces", False), "does not write spaces as '▁'"),
        (lambda m: setattr(m.denormalizer_spec, "precompiled_charsmap", m.normalizer_spec.precompiled_charsmap),
         "has denormalization rules"),
        (lambda m: m.pieces.add(piece="the", score=float("nan")), "piece .* has a score that is not a finite number"),
        (lambda m: m.pieces.add(piece=m.pieces[5].piece), r"piece \d+ is given twice: "),
        (lambda m: m.pieces[0].ClearField("type"), "must have exactly one unknown piece"),
        (lambda m: m.ClearField("normalizer_spec"), "has no normalizer_spec"),
    ):  # fmt: skip
        model = proto(files)
        change(model)
        with pytest.raises(CheckpointError, match=message):
            build_from(model.SerializeToString(), vocab)
    piece = b"\x0a\x01x\x18\x09"  # piece "x" of type 9, which protobuf's own classes will not write
    with pytest.raises(CheckpointError, match=r"piece \d+ has an unknown type 9"):
        build_from((files / spm.SOURCE_SPM).read_bytes() + b"\x0a" + bytes([len(piece)]) + piece, vocab)


def charsmap(files: Path, change) -> bytes:
    """source.spm's normalization rules with `change(units, strings)` applied."""
    blob = proto(files).normalizer_spec.precompiled_charsmap
    size = struct.unpack_from("<I", blob)[0]
    units, strings = list(struct.unpack_from(f"<{size // 4}I", blob, 4)), bytearray(blob[4 + size :])
    change(units, strings)
    return struct.pack("<I", size) + struct.pack(f"<{len(units)}I", *units) + bytes(strings)


def test_normalization_rules_that_would_crash_the_normalizer_are_refused(files):
    """tokenizers' Precompiled panics on rules that point outside themselves (shown here); spm.py refuses them."""
    vocab = (files / spm.VOCAB).read_bytes()

    def outside(units, strings):
        units[0] = 0xFFFFFC00  # the root's offset far past the end

    def inside_a_character(units, strings):
        leaf = next(i for i, u in enumerate(units) if i and not u >> 31 and u >> 8 & 1)  # a node with a rule
        base = leaf ^ ((units[leaf] >> 10) << ((units[leaf] & (1 << 9)) >> 6))
        at = strings.index("é".encode()) + 1  # the second byte of é
        units[base] = (1 << 31) | at

    def not_utf8(units, strings):
        strings[0:1] = b"\xff"

    for change, message in ((outside, "points outside the trie"), (inside_a_character, "points inside a character"),
                            (not_utf8, "strings are not UTF-8")):  # fmt: skip
        model = proto(files)
        model.normalizer_spec.precompiled_charsmap = charsmap(files, change)
        with pytest.raises(CheckpointError, match=message):
            build_from(model.SerializeToString(), vocab)
    with pytest.raises(BaseException, match="out of bounds"):  # pyo3's PanicException: what the check prevents
        normalizers.Precompiled(charsmap(files, outside)).normalize_str("the cat")


def test_a_tokenizer_json_with_such_rules_is_refused_wherever_it_comes_from(files, tmp_path):
    """A tokenizer.json (a folder's, an upload's, one inside our checkpoint) whose Precompiled rules point outside
    themselves is refused when it is read; the same tokenizer with the rules as the .spm has them still reads text."""
    good = Tokenizer(spm.read_marian(files))
    data = json.loads(good.to_json())
    ok = Tokenizer.from_json(json.dumps(data))
    assert ok.encode("the cat").ids == good.encode("the cat").ids

    def outside(units, strings):
        units[0] = 0xFFFFFC00

    def swap(node):
        if isinstance(node, dict):
            if node.get("type") == "Precompiled":
                node["precompiled_charsmap"] = base64.b64encode(charsmap(files, outside)).decode()
                return True
            return any(swap(v) for v in node.values())
        return isinstance(node, list) and any(swap(v) for v in node)

    assert swap(data)
    with pytest.raises(TokenizerError, match="points outside the trie"):
        Tokenizer.from_json(json.dumps(data))
    data["normalizer"] = {"type": "Precompiled", "precompiled_charsmap": "not base64!"}
    with pytest.raises(TokenizerError, match="not base64"):
        Tokenizer.from_json(json.dumps(data))


@pytest.mark.parametrize(
    ("vocab", "message"),
    [
        (b"not json", r"vocab\.json is not valid JSON"),
        (b"\xff\xfe", r"vocab\.json is not valid JSON"),
        (b'["</s>", "<unk>"]', r"vocab\.json must be a JSON object of piece -> id, got list"),
        (b'{"</s>": 0, "<unk>": 1, "<pad>": 1}', r"'<pad>' -> 1: the ids must be 0 \.\. 2, each once"),
        (b'{"</s>": 0, "<unk>": 1, "<pad>": 3}', r"'<pad>' -> 3: the ids must be 0 \.\. 2"),
        (b'{"</s>": 0, "<unk>": 1, "<pad>": -1}', r"'<pad>' -> -1"),
        (b'{"</s>": 0, "<unk>": true, "<pad>": 2}', r"'<unk>' -> True"),
        (b'{"</s>": 0, "<unk>": "1", "<pad>": 2}', r"'<unk>' -> 1"),
        (b'{"</s>": 0, "<unk>": 1.0, "<pad>": 2}', r"'<unk>' -> 1\.0"),
        (b'{"</s>": 0, "": 1, "<pad>": 2}', r"an empty piece"),
        (b'{"</s>": 0, "x": 1, "<pad>": 2}', r"vocab\.json has no <unk> \(MarianTokenizer's special tokens\)"),
    ],
)
def test_a_broken_vocab_json_is_refused(files, vocab, message):
    with pytest.raises(CheckpointError, match=message):
        build_from((files / spm.SOURCE_SPM).read_bytes(), vocab)


def test_an_oversized_vocab_json_is_refused():
    with pytest.raises(CheckpointError, match=r"vocab\.json is 52,428,801 bytes: too large"):
        spm.read_vocab(bytes(spm.MAX_FILE_BYTES + 1))
