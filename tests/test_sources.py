"""Where models come from: the server owner's models folders and the Hugging Face cache, found, judged and named.

A models folder and a cache (the hub's `models--ORG--NAME/snapshots/<rev>/` layout, files symlinked
into `blobs/`, `refs/main` naming the current commit) are made here with real checkpoints: ours, a
tiny GPT-2 saved by `transformers`, a nanoGPT ckpt.pt. What cannot be opened is listed with the reason;
nothing is written into the cache by scanning or loading; the picker offers what was found.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: never reach for the hub

import pytest
import torch
from numerics import app_threads, assert_same_bits
from streamlit.testing.v1 import AppTest
from test_app import APP, SAME_TRACE, TIMEOUT, charts, no_errors, write_tiny
from test_literal import MARKUP, outside_code_spans
from test_nanogpt import Hostile, make_gpt, model_args, write_ckpt, write_meta
from test_uploads import make_gpt2

from server import model_sources
from server.session import short_label
from transformer import trace_text
from transformer.checkpoints import catalog, sources
from transformer.checkpoints.budget import Budget
from transformer.checkpoints.format import atomic_save_file
from transformer.checkpoints.importers import load_any, load_hf_dir
from transformer.train.state import FORMAT as STATE_FORMAT

REV, OLD_REV = "a" * 40, "b" * 40


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> Path:
    return make_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2")


@pytest.fixture(scope="module")
def models(tmp_path_factory, gpt2) -> Path:
    """A models folder holding one of everything, the good and the bad."""
    root = tmp_path_factory.mktemp("src") / "models"
    root.mkdir()
    write_tiny(root / "lm.safetensors", "lm")  # "lm" is a shipped name: this one is named by its path
    write_tiny(root / "mine.safetensors", "classifier")
    atomic_save_file({"model.x": torch.zeros(2)}, root / "mine.state.safetensors", {"format": STATE_FORMAT})  # beside it
    shutil.copy(root / "mine.safetensors", root / "mine.snapshots.safetensors")  # skipped by its name
    atomic_save_file({"model.x": torch.zeros(2)}, root / "old.safetensors", {"format": STATE_FORMAT})
    shutil.copy(gpt2 / "model.safetensors", root / "weights.safetensors")  # Hugging Face weights without their folder
    (root / "runs" / "a").mkdir(parents=True)
    write_tiny(root / "runs" / "a" / "mine.safetensors", "lm")  # a second "mine"
    shutil.copytree(gpt2, root / "tiny-gpt2")
    (root / "pegasus").mkdir()
    (root / "pegasus" / "config.json").write_text('{"model_type": "pegasus"}')
    for name, vocab in (("shakespeare", True), ("novocab", False)):
        (root / name).mkdir()
        write_ckpt(root / name, make_gpt(model_args()), model_args())
        if vocab:
            write_meta(root / name)
    (root / "evilnano").mkdir()  # a pickled function in ckpt.pt: weights_only refuses it, even when only peeking
    torch.save(
        {"model_args": model_args(), "model": {}, "config": Hostile(str(root.parent / "code-ran"))}, root / "evilnano" / "ckpt.pt"
    )
    write_meta(root / "evilnano")
    (root / ".hidden").mkdir()
    write_tiny(root / ".hidden" / "secret.safetensors", "lm")
    (root / "a" / "b" / "c" / "d").mkdir(parents=True)
    write_tiny(root / "a" / "b" / "c" / "shallow.safetensors", "lm")  # three levels down: found
    write_tiny(root / "a" / "b" / "c" / "d" / "deep.safetensors", "lm")  # four: too deep
    return root


def cache_repo(hub: Path, repo_id: str, files: dict[str, bytes], rev: str = REV, ref: bool = True) -> Path:
    """A repository in the hub cache's layout: blobs by content hash, a snapshot of symlinks into them, refs/main."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("../../blobs") / blob.name)
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(rev)
    return repo


@pytest.fixture(scope="module")
def hub(tmp_path_factory, gpt2) -> Path:
    hub = tmp_path_factory.mktemp("cache") / "hub"
    folder = {n: (gpt2 / n).read_bytes() for n in ("config.json", "model.safetensors", "tokenizer.json")}
    repo = cache_repo(hub, "org/tiny-gpt2", folder)
    time.sleep(0.01)
    broken = dict(folder, **{"config.json": b'{"model_type": "pegasus"}'})
    cache_repo(hub, "org/tiny-gpt2", broken, rev=OLD_REV, ref=False)  # newer on disk, but refs/main names REV
    assert (repo / "snapshots" / OLD_REV).stat().st_mtime_ns > (repo / "snapshots" / REV).stat().st_mtime_ns
    cache_repo(hub, "org/norefs", folder, ref=False)  # no refs/main: the newest snapshot
    cache_repo(hub, "org/no-weights", {n: folder[n] for n in ("config.json", "tokenizer.json")})
    cache_repo(hub, "pegasus-small", {"config.json": b'{"model_type": "pegasus"}'})
    (hub / "models--org--empty" / "blobs").mkdir(parents=True)  # an interrupted download
    cache_repo(hub, "org/data", folder).rename(hub / "datasets--org--data")  # not a model repository
    return hub


def by_name(found) -> dict[str, sources.Found]:
    return {f.name: f for f in found}


def test_a_models_folder_offers_every_model_and_says_why_not_for_the_rest(models):
    scan = sources.scan((models,), None, model_sources.reserved)
    offered, refused = by_name(scan.offered), by_name(scan.refused)
    assert {n: (f.kind, f.path.relative_to(models).as_posix()) for n, f in offered.items()} == {
        "models/lm": ("ours", "lm.safetensors"),  # "lm" is the shipped model's name
        "models/mine": ("ours", "mine.safetensors"),  # two "mine": each by its path in the folder
        "runs/a/mine": ("ours", "runs/a/mine.safetensors"),
        "shallow": ("ours", "a/b/c/shallow.safetensors"),
        "tiny-gpt2": ("huggingface", "tiny-gpt2"),
        "shakespeare": ("nanogpt", "shakespeare"),
    }
    assert offered["tiny-gpt2"].detail == "gpt2" and offered["models/mine"].detail == "encoder, 2 layers × 2 heads"
    assert {n: f.problem for n, f in refused.items() if n != "pegasus"} == {
        "old": "a training-state file (to resume training), not a model",
        "weights": "no attnviz metadata: a Hugging Face weights file? Put it in a folder with its config.json and tokenizer.json",
        "novocab": "no vocabulary: put the meta.pkl of its dataset, or a tokenizer.json, beside ckpt.pt",
        "evilnano": "ckpt.pt was refused: torch.load(weights_only=True) does not accept it (it may contain code)",
    }
    assert not (models.parent / "code-ran").exists()
    assert refused["pegasus"].problem.startswith("config.json: unsupported model_type 'pegasus' (supported: ")
    assert scan.notes == ()
    everything = {f.path for f in (*scan.offered, *scan.refused)}
    assert not any(p.name.endswith((".state.safetensors", ".snapshots.safetensors")) for p in everything)
    assert not any(".hidden" in p.parts or "deep.safetensors" == p.name for p in everything)


def test_a_model_over_the_memory_budget_is_listed_not_offered(models):
    scan = sources.scan((models,), None, budget=Budget(model_bytes=1000, trace_bytes=256 * 2**20))
    assert not scan.offered
    refused = by_name(scan.refused)
    for name in ("lm", "mine", "runs/a/mine", "a/b/c/shallow", "tiny-gpt2", "shakespeare"):  # ours, Hugging Face, nanoGPT
        assert refused[name].problem.endswith("(this server's limit for one model is 1000 bytes)"), refused[name]
    assert refused["shakespeare"].problem.startswith("ckpt.pt (model_args): ")  # judged from its model_args alone


def test_the_hugging_face_cache_offers_each_repository_at_its_current_snapshot(hub, gpt2):
    scan = sources.scan((), hub)
    offered, refused = by_name(scan.offered), by_name(scan.refused)
    assert offered["org/tiny-gpt2"].path == hub / "models--org--tiny-gpt2" / "snapshots" / REV  # refs/main, not the newest
    assert offered["org/norefs"].path == hub / "models--org--norefs" / "snapshots" / REV
    assert set(offered) == {"org/tiny-gpt2", "org/norefs"} and offered["org/tiny-gpt2"].where == "Hugging Face cache"
    assert set(refused) == {"org/no-weights", "pegasus-small", "org/empty"}
    assert refused["org/no-weights"].problem.endswith("no weights: expected model.safetensors, or its shards with "
                                                      "model.safetensors.index.json, or pytorch_model.bin (or its shards)")  # fmt: skip
    assert "unsupported model_type 'pegasus'" in refused["pegasus-small"].problem
    assert refused["org/empty"].problem == "no snapshot folder (an interrupted download?)"
    entry = sources.catalog_entries(scan)["org/tiny-gpt2"]
    assert entry.kind == "huggingface" and entry.hf_dir
    assert short_label(entry.label) == ("org/tiny-gpt2", "Hugging Face gpt2; Hugging Face cache")


def tree(root: Path) -> list[tuple]:
    """Every path under `root` with what a write would change: kind, link target, size, mtime."""
    out = []
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out.append((str(path), path.is_symlink(), os.readlink(path) if path.is_symlink() else "", st.st_size, st.st_mtime_ns))
    return out


def test_scanning_and_loading_write_nothing_into_the_cache(hub, gpt2):
    before = tree(hub)
    scan = sources.scan((), hub)
    direct = load_hf_dir(gpt2, "cpu")
    for found in scan.offered:
        sources.identity(found.path)
        ckpt = load_any(found.path, "cpu")  # read in place, through the symlinks
        for name, t in direct.model.state_dict().items():
            assert_same_bits(ckpt.model.state_dict()[name], t, why=f"{found.name}: {name}, the cached copy of the folder")
    assert tree(hub) == before


def test_where_the_folders_and_the_cache_are_read_from(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNVIZ_MODELS", f"{tmp_path}/a:{tmp_path}/b::{tmp_path}/a")
    assert sources.models_folders() == (tmp_path / "a", tmp_path / "b")
    for name in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "ATTNVIZ_NO_HF_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sources.hf_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.hf_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert sources.hf_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert sources.hf_cache_dir() == tmp_path / "hub"
    monkeypatch.setenv("ATTNVIZ_NO_HF_CACHE", "1")
    assert sources.hf_cache_dir() is None
    scan = sources.scan()
    assert scan.folders == (tmp_path / "a", tmp_path / "b") and scan.cache is None
    assert scan.notes == (f"models folder {tmp_path / 'a'} does not exist", f"models folder {tmp_path / 'b'} does not exist")


def test_names_are_unique_and_leave_the_apps_own_alone():
    names = sources.unique_names(
        [("mine", "m/mine"), ("mine", "runs/mine", "m/runs/mine"), ("lm", "m/lm"), ("x",), ("x",), ("solo",)],
        reserved=lambda n: n == "lm",
    )
    assert names == ["m/mine", "runs/mine", "m/lm", "x", "x~2", "solo"]
    assert sources.unique_names([("trained-1", "m/trained-1")], model_sources.reserved) == ["m/trained-1"]


def test_a_folders_identity_changes_with_its_files(models, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(models / "shakespeare", folder)
    before = sources.identity(folder)
    assert sources.identity(folder) == before
    time.sleep(0.01)
    (folder / "meta.pkl").write_bytes((folder / "meta.pkl").read_bytes())
    assert sources.identity(folder) != before


# --- in the app -------------------------------------------------------------------------------------------------


@pytest.fixture
def app_env(monkeypatch, tmp_path, models, hub):
    assets = tmp_path / "assets"
    assets.mkdir()
    write_tiny(assets / "lm.safetensors", "lm")
    monkeypatch.setenv("ATTNVIZ_DEVICE", "cpu")
    monkeypatch.setenv(catalog.ASSETS_ENV, str(assets))
    monkeypatch.setenv(catalog.NO_MINILM_ENV, "1")
    monkeypatch.setenv(sources.MODELS_ENV, str(models))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.delenv(sources.NO_HF_CACHE_ENV, raising=False)
    model_sources._scan.clear()
    yield assets
    model_sources._scan.clear()


@pytest.mark.numerics
def test_the_picker_offers_the_models_found_after_the_shipped_ones(app_env, models, gpt2):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    options = list(at.selectbox(key="w_checkpoint").options)
    assert options[0] == "Language model" and options[-1] == "Upload…"
    # A folder's own files first, then its sub-folders by name; the models folders, then the cache.
    assert options[1:-1] == ["models/lm", "models/mine", "shallow", "runs/a/mine", "shakespeare", "tiny-gpt2",
                             "org/norefs", "org/tiny-gpt2"]  # fmt: skip
    for name, reference in (("shakespeare", models / "shakespeare"), ("org/tiny-gpt2", gpt2)):
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.query_params["checkpoint"] = name  # a link names a found model like a shipped one
        at.run()
        no_errors(at)
        assert at.session_state["sel_checkpoint"] == name
        with app_threads():
            ref = trace_text(load_any(reference, device="cpu"), at.session_state["sel_text"])
        z = charts(at)["attn_heatmap"]["data"][0]["z"]
        assert_same_bits(z, ref.attention("decoder self", 0).weights[0, 0].numpy(), why=SAME_TRACE)


def _sources_page():
    import streamlit as st

    from server.model_sources import render_sources

    render_sources(st)


def test_where_models_come_from_is_shown_literally(app_env, models, tmp_path, monkeypatch):
    hostile = tmp_path / "evil" / "[x](https:evil.example) <img src=x> $x^2$ **b** :rocket:"
    hostile.mkdir(parents=True)
    (hostile / "config.json").write_text('{"model_type": "<img src=http://evil.example/y>"}')
    monkeypatch.setenv(sources.MODELS_ENV, f"{models}:{hostile.parent}")
    at = AppTest.from_function(_sources_page, default_timeout=TIMEOUT).run()
    assert not at.exception
    shown = [m.value for m in (*at.markdown, *at.caption)]
    for text in shown:
        assert not any(bit in outside_code_spans(text) for bit in MARKUP), text
    assert any(str(models) in t for t in shown) and any(os.environ["HF_HUB_CACHE"] in t for t in shown)
    assert any("Offered in the picker: 8 model(s)" in t for t in shown)
    table = at.dataframe[0].value
    rows = dict(zip(table["model"], table["why"], strict=True))
    assert rows["pegasus"].startswith("config.json: unsupported model_type 'pegasus'")
    assert rows[hostile.name].startswith("config.json: unsupported model_type '<img src=http://evil.example/y>'")
    assert rows["org/empty"] == "no snapshot folder (an interrupted download?)"


def test_make_run_passes_the_models_folders_to_the_app():
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def recipe(*args: str) -> str:
        out = subprocess.run(["make", "-n", *args], cwd=root, capture_output=True, text=True, check=True).stdout
        return next(line for line in out.splitlines() if "streamlit run app.py" in line)

    assert recipe("run", "MODELS=/srv/a:/srv/b").startswith(
        "MALLOC_ARENA_MAX=2 ATTNVIZ_MODELS='/srv/a:/srv/b' .venv/bin/streamlit run app.py"
    )
    assert recipe("dev", "MODELS=/srv/a").startswith("ATTNVIZ_MODELS='/srv/a' ")
    assert recipe("run").startswith("MALLOC_ARENA_MAX=2 .venv/bin/streamlit run app.py")  # no MODELS: the environment's


@pytest.mark.skipif(
    not (catalog.ASSETS / "translator.snapshots.safetensors").is_file(), reason="needs the shipped translator's snapshots"
)
def test_a_found_checkpoint_replays_the_snapshots_beside_it(monkeypatch, tmp_path):
    """The Training page finds `NAME.snapshots.safetensors` beside a checkpoint from a models folder, as beside a shipped one."""
    folder, assets = tmp_path / "models", tmp_path / "assets"
    folder.mkdir()
    assets.mkdir()
    for suffix in (".safetensors", ".snapshots.safetensors"):
        shutil.copy(catalog.ASSETS / f"translator{suffix}", folder / f"mine{suffix}")
    for name, value in (("ATTNVIZ_DEVICE", "cpu"), (catalog.ASSETS_ENV, str(assets)), (catalog.NO_MINILM_ENV, "1"),
                        (sources.MODELS_ENV, str(folder)), (sources.NO_HF_CACHE_ENV, "1")):  # fmt: skip
        monkeypatch.setenv(name, value)
    model_sources._scan.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.query_params.update(checkpoint="mine", page="training")
        at.run()
        no_errors(at)
        assert len(charts(at)["tr_strip"]["data"]) == 9  # the nine snapshots, drawn
    finally:
        model_sources._scan.clear()
