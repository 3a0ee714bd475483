"""The shared server's own machinery: values made once for many sessions, private uploads, pastes of any length,
texts whose full trace would not fit the memory budget, and what `make run` configures."""

from __future__ import annotations

import os
import stat
import threading
import time
import tomllib
from pathlib import Path

import numerics
import pytest
import torch
from streamlit.testing.v1 import AppTest
from test_app import APP, TIMEOUT, write_tiny

from server import shared
from server.lru import ByteLRU
from server.notices import HEADLINE
from transformer import api
from transformer.checkpoints import budget, catalog
from transformer.checkpoints.format import CheckpointError, load_checkpoint
from viz import jsonfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(monkeypatch, tmp_path):
    folder = tmp_path / "assets"
    folder.mkdir()
    write_tiny(folder / "lm.safetensors", "lm")
    monkeypatch.setenv("ATTNVIZ_DEVICE", "cpu")
    monkeypatch.setenv(catalog.ASSETS_ENV, str(folder))
    monkeypatch.setenv(catalog.NO_MINILM_ENV, "1")
    return folder


def start(params: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(params or {})
    return at.run()


# ---------------------------------------------------------------------------------------------
# One value for many sessions.
# ---------------------------------------------------------------------------------------------


def test_a_value_asked_for_by_many_threads_at_once_is_made_once():
    cache = ByteLRU(10_000, len)
    made, gate = [], threading.Event()

    def make() -> str:
        made.append(1)
        gate.wait(5)  # hold every other thread at the door while this one works
        return "x" * 100

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_create("k", make))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert made == [1] and results == ["x" * 100] * 8


def test_a_failed_maker_lets_a_waiting_thread_make_the_value():
    cache = ByteLRU(10_000, len)
    started = threading.Event()
    calls: list[str] = []

    def failing() -> str:
        calls.append("failing")
        started.set()
        time.sleep(0.2)
        raise RuntimeError("interrupted")

    def first() -> None:
        with pytest.raises(RuntimeError):
            cache.get_or_create("k", failing)

    t = threading.Thread(target=first)
    t.start()
    started.wait(5)
    assert cache.get_or_create("k", lambda: calls.append("second") or "ok") == "ok"
    t.join(5)
    assert calls == ["failing", "second"]


def test_model_runs_share_the_cores_one_torch_thread_each(env, monkeypatch):
    assert shared.THREADS_PER_RUN == 1
    assert numerics.APP_THREADS == shared.THREADS_PER_RUN  # the tests' references of the app's numbers run as the app does
    # Tests start on --reference-threads torch threads, 1 by default: the app's own count. Start from 2, so that
    # a model run left on whatever count the process had is seen. The process-wide setting is made once per
    # process (cached): clear it, so this app start makes it again.
    torch.set_num_threads(2)
    shared.use_one_torch_thread.clear()
    runs: list[int] = []
    real = api.trace_text
    monkeypatch.setattr(api, "trace_text", lambda *a, **k: runs.append(torch.get_num_threads()) or real(*a, **k))
    at = start({"checkpoint": "lm"})
    seen: list[int] = []

    def a_session_thread() -> None:  # Streamlit runs each script run in a new thread; torch reads the setting there
        torch.ones(4).sum()
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=a_session_thread)
    t.start()
    t.join()
    assert seen == [1]  # set once by the app, for every session's model runs
    # And for each run itself, whatever else in the process changed the count since (a notebook, a test's reference).
    torch.set_num_threads(2)
    at.text_area(key="w_text").input("the cat runs .").run()
    assert not at.exception
    assert runs == [shared.THREADS_PER_RUN] * 2  # both texts' model runs, on one thread
    assert shared.MODEL_SLOTS == max(1, shared.CORES)
    torch.set_num_threads(2)
    held = []
    with shared.model_slot():
        held.append((shared._slots._value, torch.get_num_threads()))  # a slot is taken while the model runs, on one thread
    assert held == [(shared.MODEL_SLOTS - 1, shared.THREADS_PER_RUN)]
    assert torch.get_num_threads() == 2  # the count set before is back after the run


def test_a_wide_run_takes_a_second_slot_only_when_one_is_free(monkeypatch):
    """The model view's long light pass runs on two threads when the other slot is idle, and never waits for it."""
    monkeypatch.setattr(shared, "MODEL_SLOTS", 2)
    monkeypatch.setattr(shared, "_slots", threading.BoundedSemaphore(2))
    seen = []
    with shared.model_slot(wide=True):
        seen.append((shared._slots._value, torch.get_num_threads()))
    with shared.model_slot():  # another session's run holds one slot...
        with shared.model_slot(wide=True):  # ...so the wide one gets the other, alone, at once
            seen.append((shared._slots._value, torch.get_num_threads()))
    assert seen == [(0, 2 * shared.THREADS_PER_RUN), (0, shared.THREADS_PER_RUN)]
    assert shared._slots._value == 2  # both slots given back


def test_trace_cache_is_fitted_to_the_machine():
    memory = budget.physical_memory()
    expected = min(3 * 1024**3, max(512 * 1024**2, (memory or 8 * 1024**3) // 4))
    assert shared.TRACE_CACHE_BYTES == expected


# ---------------------------------------------------------------------------------------------
# Uploads: a private folder, a file only while it is read.
# ---------------------------------------------------------------------------------------------


def test_uploads_are_read_from_a_private_folder_and_removed(env, tmp_path):
    data = (env / "lm.safetensors").read_bytes()
    name = "my <b>model</b>.safetensors"
    digest = shared.uploads_digest([(name, shared.upload_digest(data))])
    shared.load_upload.clear()
    ckpt = shared.load_upload(digest, (name,), (data,))
    assert ckpt.config == load_checkpoint(env / "lm.safetensors").config
    assert ckpt.name == "my <b>model</b>"  # the user's name, for messages shown literally
    folder = shared.upload_dir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and str(os.getpid()) in folder.name
    assert list(folder.rglob("*")) == []  # nothing left behind once loaded


def test_a_bad_upload_is_refused_and_leaves_no_file(env):
    shared.load_upload.clear()
    with pytest.raises(CheckpointError, match="evil.safetensors"):
        shared.load_upload("0" * 64, ("evil.safetensors",), (b"\x80\x04\x95" + b"cos\nsystem\n" * 10,))
    assert list(shared.upload_dir().rglob("*")) == []


def test_folders_left_by_dead_servers_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = tmp_path / f"{shared.UPLOAD_PREFIX}999999999-abc"  # no such process
    dead.mkdir()
    (dead / "x.safetensors").write_bytes(b"x")
    alive = tmp_path / f"{shared.UPLOAD_PREFIX}1-abc"  # pid 1 is always alive
    alive.mkdir()
    shared.upload_dir.clear()
    try:
        mine = shared.upload_dir()
        assert not dead.exists() and alive.exists() and mine.parent == tmp_path
    finally:
        shared.upload_dir.clear()


# ---------------------------------------------------------------------------------------------
# Texts: a paste of any length, and texts whose full trace would not fit.
# ---------------------------------------------------------------------------------------------


def test_a_100000_character_paste_is_cut_to_what_the_model_reads(env):
    at = start({"checkpoint": "lm"})
    paste = ("the dog sees the cats . " * 5000)[:100_000]
    at.text_area(key="w_text").input(paste).run()
    assert not at.exception
    messages = " ".join(w.value for w in at.warning)
    assert "longer than this model reads (24 tokens)" in messages and "were cut" in messages
    kept = at.session_state["sel_text"]
    ckpt = load_checkpoint(env / "lm.safetensors")
    assert paste.startswith(kept) and len(kept) < 200
    assert len(ckpt.tokenizer.encode(kept).ids) <= 24 and ckpt.tokenizer.encode(kept).truncated == 0
    chart = next(jsonfig.parse(el.proto.spec) for el in at.get("plotly_chart") if el.key == "attn_heatmap")
    assert len(chart["data"][0]["z"]) == len(ckpt.tokenizer.encode(kept).ids)
    assert at.query_params["text"] == kept  # the link holds what the model read
    at.run()  # and the next run keeps it: no further cut, no message
    # no further message (a tiny random-weight LM predicts flat: only the out-of-vocabulary notice stays)
    assert at.session_state["sel_text"] == kept and all(w.value.startswith(HEADLINE) for w in at.warning)


def test_a_text_whose_trace_would_not_fit_the_budget_gets_a_message_and_the_model_view(env, monkeypatch):
    ckpt = load_checkpoint(env / "lm.safetensors")
    small = budget.Budget(model_bytes=1024**3, trace_bytes=budget.trace_bytes(ckpt.config, 8))
    monkeypatch.setattr(shared, "BUDGET", small)
    text = "the dog sees the cats near the old tables ."
    assert len(ckpt.tokenizer.encode(text).ids) > 8
    at = start({"checkpoint": "lm", "text": text})
    assert not at.exception and not at.get("plotly_chart")
    assert any("more than this server allows for one trace" in w.value for w in at.warning)
    assert at.button(key="cut_to_budget")
    at.switch_page("pages/model_view.py").run()  # the light pass draws the whole text
    assert not at.exception and at.get("plotly_chart")
    at.switch_page("pages/attention.py").run()
    at.button(key="cut_to_budget").click().run()
    fit = budget.max_trace_tokens(ckpt.config, small)
    assert len(ckpt.tokenizer.encode(at.session_state["sel_text"]).ids) <= fit
    assert not at.exception and at.get("plotly_chart")


@pytest.mark.parametrize("page", ["ablation", "attribution", "lens", "compare"])
def test_the_ask_why_pages_keep_to_the_trace_budget_too(env, monkeypatch, page):
    ckpt = load_checkpoint(env / "lm.safetensors")
    small = budget.Budget(model_bytes=1024**3, trace_bytes=budget.trace_bytes(ckpt.config, 8))
    monkeypatch.setattr(shared, "BUDGET", small)
    at = start({"checkpoint": "lm", "text": "the dog sees the cats near the old tables .", "page": page})
    assert not at.exception and not at.get("plotly_chart"), page
    assert any("more than this server allows for one trace" in w.value for w in at.warning), page
    assert at.button(key="cut_to_budget")


# ---------------------------------------------------------------------------------------------
# What `make run` configures.
# ---------------------------------------------------------------------------------------------


def test_the_server_watches_no_files_and_sends_no_usage_statistics():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none" and config["server"]["runOnSave"] is False
    assert config["browser"]["gatherUsageStats"] is False
