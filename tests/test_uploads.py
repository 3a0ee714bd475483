"""Browser uploads of several files: a Hugging Face folder's files, a .zip of the folder, a nanoGPT ckpt.pt with its
meta.pkl, and this project's own .safetensors, each judged before a tensor is read.

The folders are real: a tiny random GPT-2 built with `transformers`' own classes and `save_pretrained`
(sharded too, with its own index), and a byte-level BPE `tokenizer.json` trained here with `tokenizers`.
Hostile zips (a "../" member, an absolute path, a link, a bomb) and shard indexes pointing outside the
upload are refused with a message saying what would work, and leave nothing behind.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never reach for the hub

import pytest
import torch
from numerics import app_threads, assert_same_bits
from safetensors.torch import load_file
from streamlit.testing.v1 import AppTest
from test_app import APP, SAME_TRACE, TIMEOUT, charts, no_errors, write_tiny
from test_hf_import import byte_level_tokenizer  # a GPT-2-style byte-level BPE trained in the test
from test_nanogpt import CHARS, make_gpt, model_args, write_ckpt, write_meta

from server import shared
from transformer import trace_text
from transformer.checkpoints import catalog, uploads
from transformer.checkpoints.format import atomic_save_file, load_checkpoint
from transformer.checkpoints.importers import load_hf_dir
from transformer.checkpoints.importers.nanogpt import load_nanogpt
from transformer.checkpoints.snapshots import FORMAT as SNAPSHOTS_FORMAT
from transformer.checkpoints.uploads import UploadError, prepare
from transformer.train.state import FORMAT as STATE_FORMAT

LIMIT = 100 * 2**20  # the app's: .streamlit/config.toml maxUploadSize = 100 (MB)


# --- a real Hugging Face GPT-2 folder, as save_pretrained writes it --------------------------------------------


def make_gpt2(path: Path, max_shard_size: str | None = None, seed: int = 0) -> Path:
    """A tiny random GPT2LMHeadModel saved with save_pretrained (sharded when `max_shard_size`), and its tokenizer.json."""
    import transformers

    tok = byte_level_tokenizer()
    end = tok.token_to_id("<|endoftext|>")
    cfg = transformers.GPT2Config(
        vocab_size=tok.get_vocab_size(), n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=end, eos_token_id=end
    )
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    tok.save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> Path:
    return make_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    folder = make_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2-sharded", max_shard_size="30KB")
    assert len(list(folder.glob("model-*-of-*.safetensors"))) > 2
    return folder


def files_of(folder: Path, *names: str) -> list[tuple[str, bytes]]:
    return [(n, (folder / n).read_bytes()) for n in names]


def zip_of(members: list[tuple[str, bytes]], compression=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, data in members:
            z.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def upload_folder():
    """shared.load_upload's private folder, empty before and (checked) after each test."""
    shared.load_upload.clear()
    folder = shared.upload_dir()
    assert list(folder.iterdir()) == []
    yield folder
    assert list(folder.rglob("*")) == [], "an upload left files behind"
    shared.load_upload.clear()


def load(files: list[tuple[str, bytes]]):
    """What the sidebar does with uploaded files: one digest of them all, then the shared loader."""
    digest = shared.uploads_digest([(n, shared.upload_digest(d)) for n, d in files])
    names, data = zip(*files, strict=True)
    return shared.load_upload(digest, names, data)


def assert_same_model(a, b) -> None:
    assert a.config == b.config
    assert a.tokenizer.to_json() == b.tokenizer.to_json()
    for name, t in b.model.state_dict().items():
        assert_same_bits(a.model.state_dict()[name], t, why=f"{name}: the upload against the folder it came from")


# --- what a set of files is ----------------------------------------------------------------------------------


def test_a_folders_files_open_as_the_folder_does(gpt2, upload_folder):
    files = files_of(gpt2, "config.json", "model.safetensors", "tokenizer.json", "generation_config.json")
    upload = prepare(files, LIMIT)
    assert upload.kind == "huggingface"
    assert sorted(upload.files) == ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]
    assert_same_model(load(files), load_hf_dir(gpt2, "cpu"))


def test_a_zip_of_the_folder_opens_with_its_top_folder_flattened(gpt2, upload_folder):
    names = ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json")
    members = [(f"tiny-gpt2/{n}", d) for n, d in files_of(gpt2, *names)]
    members += [("__MACOSX/tiny-gpt2/._config.json", b"\x00\x05\x16\x07"), ("tiny-gpt2/.DS_Store", b"\x00")]
    data = zip_of(members)
    upload = prepare([("tiny-gpt2.zip", data)], LIMIT)
    assert upload.kind == "huggingface" and upload.name == "tiny-gpt2"
    ckpt = load([("tiny-gpt2.zip", data)])
    assert ckpt.name == "tiny-gpt2"
    assert_same_model(ckpt, load_hf_dir(gpt2, "cpu"))
    flat = zip_of(files_of(gpt2, *names[:3]), zipfile.ZIP_STORED)  # the files at the top of the zip work too
    assert prepare([("flat.zip", flat)], LIMIT).kind == "huggingface"


def test_sharded_weights_open_from_their_index(sharded, gpt2, upload_folder):
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    files = files_of(sharded, "config.json", "tokenizer.json", "model.safetensors.index.json", *shards)
    ckpt = load(files)
    assert ckpt.training["weights"] == "model.safetensors.index.json"
    assert_same_model(ckpt, load_hf_dir(gpt2, "cpu"))  # the same seed and config: the same weights, sharded
    assert_same_model(load_hf_dir(sharded, "cpu"), ckpt)


def test_pickled_shards_open_through_torch_load_weights_only(sharded, gpt2, tmp_path):
    folder = tmp_path / "bin"
    shutil.copytree(sharded, folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    renamed = {}
    for shard in sorted(set(index["weight_map"].values())):
        renamed[shard] = shard.replace("model-", "pytorch_model-").replace(".safetensors", ".bin")
        torch.save(load_file(folder / shard), folder / renamed[shard])
        (folder / shard).unlink()
    (folder / "model.safetensors.index.json").unlink()
    index["weight_map"] = {k: renamed[v] for k, v in index["weight_map"].items()}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    ckpt = load_hf_dir(folder, "cpu")
    assert ckpt.training["weights"] == "pytorch_model.bin.index.json"
    assert_same_model(ckpt, load_hf_dir(gpt2, "cpu"))


def test_a_nanogpt_checkpoint_and_its_meta_pkl_open(tmp_path, upload_folder):
    write_ckpt(tmp_path, make_gpt(model_args()), model_args())
    write_meta(tmp_path)
    files = files_of(tmp_path, "ckpt.pt", "meta.pkl")
    ckpt = load(files)
    assert ckpt.training["source"] == "nanogpt" and ckpt.tokenizer.vocab_size == len(CHARS)
    assert_same_model(ckpt, load_nanogpt(tmp_path, "cpu"))
    with pytest.raises(UploadError, match=r"ckpt\.pt needs its vocabulary: upload the meta\.pkl of its dataset"):
        load(files[:1])


def test_our_own_checkpoint_still_opens_alone(tmp_path, upload_folder):
    path = write_tiny(tmp_path / "mine.safetensors", "lm")
    ckpt = load([("mine.safetensors", path.read_bytes())])
    assert ckpt.name == "mine"
    assert_same_model(ckpt, load_checkpoint(path, "cpu"))


# --- refusals: each says what is wrong and what would work --------------------------------------------------------


def refused(files: list[tuple[str, bytes]], match: str, limit: int = LIMIT) -> None:
    with pytest.raises(UploadError, match=match):
        prepare(files, limit)
    if files and limit == LIMIT:
        with pytest.raises(UploadError, match=match):  # and the server's loader, which writes nothing
            load(files)


def test_a_training_state_file_says_which_file_to_upload(tmp_path, upload_folder):
    atomic_save_file({"model.x": torch.zeros(2)}, tmp_path / "mine.state.safetensors", {"format": STATE_FORMAT})
    refused(
        files_of(tmp_path, "mine.state.safetensors"),
        r"mine\.state\.safetensors is a training-state file .*: upload mine\.safetensors, the checkpoint itself",
    )
    atomic_save_file({"x": torch.zeros(2)}, tmp_path / "mine.snapshots.safetensors", {"format": SNAPSHOTS_FORMAT})
    refused(files_of(tmp_path, "mine.snapshots.safetensors"), r"holds training snapshots .*: upload mine\.safetensors")


def test_a_hugging_face_weights_file_alone_says_to_bring_its_folder(gpt2, upload_folder):
    message = (
        r"model\.safetensors is a Hugging Face weights file \(no attnviz metadata\): upload it together with its "
        r"config\.json and tokenizer\.json \(or a \.zip of the folder\), or convert it with `python -m transformer\.convert"
    )
    refused(files_of(gpt2, "model.safetensors"), message)
    refused([("renamed.safetensors", (gpt2 / "model.safetensors").read_bytes())], r"renamed\.safetensors is a Hugging Face")
    refused([("pytorch_model.bin", b"PK")], r"pytorch_model\.bin: Hugging Face weights: upload them together with their config")


def test_missing_pieces_of_a_folder_are_named(gpt2, sharded, upload_folder):
    refused(files_of(gpt2, "config.json", "model.safetensors"), r"needs its tokenizer\.json too")
    refused(files_of(gpt2, "config.json", "tokenizer.json"), r"no weights among the uploaded files: upload model\.safetensors")
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    files = files_of(sharded, "config.json", "tokenizer.json", "model.safetensors.index.json", *shards[1:])
    refused(files, rf"index\.json names the shard {shards[0]} \(\d+ tensor\(s\): .*\), which was not uploaded: upload it too")


def test_a_shard_index_pointing_outside_the_upload_is_refused(sharded, upload_folder):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    for outside in ("../../etc/passwd.safetensors", "/etc/shadow.safetensors", "..", "sub/model.safetensors"):
        index["weight_map"][first] = outside
        files = files_of(sharded, "config.json", "tokenizer.json", *sorted(p.name for p in sharded.glob("model-*")))
        files.append(("model.safetensors.index.json", json.dumps(index).encode()))
        refused(files, r"is not a file name inside the folder \(no '/', no '\.\.', no absolute path\): refused")


def test_a_shard_index_naming_a_missing_file_is_refused_by_the_folder_loader_too(sharded, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(sharded, folder)
    missing = sorted(folder.glob("model-*.safetensors"))[-1]
    missing.unlink()
    with pytest.raises(Exception, match=rf"names the shard {missing.name}, which is missing: it should hold \d+ tensor"):
        load_hf_dir(folder, "cpu")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: "../" + v for k, v in index["weight_map"].items()}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(Exception, match=r"not a file name inside the folder"):
        load_hf_dir(folder, "cpu")


def test_zip_members_that_escape_or_link_are_refused_before_anything_is_extracted(gpt2, tmp_path, upload_folder):
    good = files_of(gpt2, "config.json", "model.safetensors", "tokenizer.json")
    refused([("evil.zip", zip_of([*good, ("../evil.txt", b"x")]))], r"member '\.\./evil\.txt' points outside the zip \('\.\.'\)")
    refused([("evil.zip", zip_of([*good, ("a/../../b", b"x")]))], r"points outside the zip")
    refused([("evil.zip", zip_of([*good, ("/tmp/evil.txt", b"x")]))], r"member '/tmp/evil\.txt' has an absolute path")
    refused([("evil.zip", zip_of([*good, ("C:\\evil.txt", b"x")]))], r"has an absolute path")
    link = zipfile.ZipInfo("tokenizer.json")
    link.external_attr = (0o120777 << 16) | 0x20  # a symbolic link, as `zip -y` stores one
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in good[:2]:
            z.writestr(name, data)
        z.writestr(link, "/etc/passwd")
    refused([("link.zip", out.getvalue())], r"member 'tokenizer\.json' is a symbolic link: refused")
    assert not (tmp_path.parent / "evil.txt").exists()


def test_a_zip_bomb_is_refused_from_its_directory(gpt2, monkeypatch, upload_folder):
    bomb = zip_of([*files_of(gpt2, "config.json", "tokenizer.json"), ("model.safetensors", bytes(50 * 2**20))])
    assert len(bomb) < 2**20  # 50 MB of zeros in well under 1 MB
    read = []
    monkeypatch.setattr(uploads, "_extract", lambda *a: read.append(a) or b"")
    refused([("bomb.zip", bomb)], r"'model\.safetensors' expands [\d,]+× .*: refused as a likely zip bomb \(at most 100×\)")
    assert read == [], "a member was extracted before the zip was judged"
    refused(
        [("big.zip", bomb)], r"'model\.safetensors' expands to 50\.0 MB, more than one upload may hold \(10\.0 MB\)", 10 * 2**20
    )


def test_a_zip_entry_that_lies_about_its_size_is_not_believed(gpt2):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files_of(gpt2, "config.json", "tokenizer.json", "model.safetensors"):
            z.writestr(name, data)
        z.filelist[0].file_size = 10  # the directory claims 10 bytes; the member holds the whole config.json
    with pytest.raises(UploadError, match=r"liar\.zip: 'config\.json' (is larger than its zip entry says|cannot be extracted)"):
        prepare([("liar.zip", out.getvalue())], LIMIT)


def test_other_bad_zips_and_file_sets_are_refused(gpt2, tmp_path, upload_folder):
    good = files_of(gpt2, "config.json", "model.safetensors", "tokenizer.json")
    refused([("many.zip", zip_of([(f"f{i}.json", b"{}") for i in range(65)]))], r"holds 65 files: a model folder has at most 64")
    refused([("nested.zip", zip_of([(f"a/{n}", d) for n, d in good] + [("b/x.json", b"{}")]))], r"holds files in sub-folders")
    refused([("not.zip", b"PK\x03\x04 not really")], r"not\.zip is not a valid zip file")
    refused([*good, ("x.zip", zip_of(good))], r"x\.zip came with other files: upload either one \.zip")
    refused([*good, ("notes.txt", b"hello")], r"notes\.txt: not among the files of a Hugging Face folder")
    refused(files_of(gpt2, "tokenizer.json"), r"tokenizer\.json: not a model this app opens without more\. Upload one of this")
    refused(good, r"more than this server takes in one upload \(0\.0 MB\)", limit=1000)
    refused([], r"nothing was uploaded")
    write_tiny(tmp_path / "a.safetensors", "lm")
    write_tiny(tmp_path / "b.safetensors", "lm")
    refused(files_of(tmp_path, "a.safetensors", "b.safetensors"), r"2 \.safetensors files without a config\.json")


def test_a_hostile_meta_pkl_in_an_upload_never_runs(tmp_path, upload_folder):
    marker = tmp_path / "ran"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    write_ckpt(tmp_path, make_gpt(model_args()), model_args())
    files = [*files_of(tmp_path, "ckpt.pt"), ("meta.pkl", pickle.dumps({"itos": Hostile()}))]
    with pytest.raises(Exception, match=r"meta\.pkl holds a Python object \((posix|os)\.system\): refused, nothing was run"):
        load(files)
    assert not marker.exists()


def test_file_names_are_reduced_to_base_names_and_never_become_paths(gpt2, tmp_path, upload_folder):
    files = [(f"../../{n}", d) for n, d in files_of(gpt2, "config.json", "model.safetensors", "tokenizer.json")]
    upload = prepare(files, LIMIT)
    assert sorted(upload.files) == ["config.json", "model.safetensors", "tokenizer.json"]
    ours = prepare([("../x/<b>evil</b>.safetensors", write_tiny(tmp_path / "t.safetensors", "lm").read_bytes())], LIMIT)
    assert list(ours.files) == [".._x__b_evil__b_.safetensors"] and ours.name == "../x/<b>evil</b>"
    assert "/" not in ours.open
    load([("../x/<b>evil</b>.safetensors", (tmp_path / "t.safetensors").read_bytes())])


# --- the sidebar (AppTest) --------------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch, tmp_path):
    folder = tmp_path / "assets"
    folder.mkdir()
    write_tiny(folder / "lm.safetensors", "lm")
    monkeypatch.setenv("ATTNVIZ_DEVICE", "cpu")
    monkeypatch.setenv(catalog.ASSETS_ENV, str(folder))
    monkeypatch.setenv(catalog.NO_MINILM_ENV, "1")
    monkeypatch.setenv("ATTNVIZ_NO_HF_CACHE", "1")
    monkeypatch.delenv("ATTNVIZ_MODELS", raising=False)
    shared.load_upload.clear()
    return folder


def uploaded(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.selectbox(key="w_checkpoint").set_value("upload").run()
    uploader = at.file_uploader(key="upload")
    assert uploader.accept_multiple_files
    return uploader.set_value([(n, d, "application/octet-stream") for n, d in files]).run()


@pytest.mark.numerics
@pytest.mark.parametrize("how", ["files", "zip"])
def test_uploading_a_gpt2_folder_in_the_sidebar_draws_its_attention(env, gpt2, how):
    files = files_of(gpt2, "config.json", "model.safetensors", "tokenizer.json")
    if how == "zip":
        files = [("tiny-gpt2.zip", zip_of([(f"tiny-gpt2/{n}", d) for n, d in files]))]
    at = uploaded(AppTest.from_file(APP, default_timeout=TIMEOUT).run(), files)
    no_errors(at)
    assert any("decoder · 2 layers × 4 heads" in c.value for c in at.sidebar.caption)
    with app_threads():
        ref = trace_text(load_hf_dir(gpt2, device="cpu"), at.session_state["sel_text"])
    fig = charts(at)["attn_heatmap"]
    assert_same_bits(fig["data"][0]["z"], ref.attention("decoder self", 0).weights[0, 0].numpy(), why=SAME_TRACE)


def test_a_refused_upload_says_so_once_with_what_would_work(env, gpt2):
    at = uploaded(AppTest.from_file(APP, default_timeout=TIMEOUT).run(), files_of(gpt2, "model.safetensors"))
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors  # in the sidebar only; the page points there
    assert errors == [e.value for e in at.sidebar.error]
    assert "Could not load the uploaded file" in errors[0] and "Hugging Face weights file" in errors[0]
    assert "python -m transformer.convert" in errors[0]
    assert any("the message is in the sidebar" in i.value for i in at.info)
    assert not at.get("plotly_chart")
