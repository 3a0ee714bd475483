"""Fixtures for the real-browser tests: the app served by `streamlit run`, Debian's Chromium, and the checkpoints it serves.

The app serves the shipped translator when `assets/translator.safetensors` exists; otherwise a tiny
random-weight translator and language model written to a temp folder (`$ATTNVIZ_ASSETS`), which is
enough for UI behaviour. Tests compare what the page shows with `trace_text` run here on the same file,
on the app's torch threads (`numerics.app_threads`): the same computation as the server's, bit for bit.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from numerics import app_threads

from tests.browser import CHROMIUM, ROOT, VIEWPORT, launch_chromium, running_app
from transformer.api import build_model, trace_text
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint, save_checkpoint
from transformer.checkpoints.tokenizer import train_tokenizer
from transformer.data.toy_english import generate_corpus
from transformer.model.config import ModelConfig

ARTIFACTS = ROOT / "test-artifacts"


def write_tiny(path: Path, kind: str, n_classes: int = 0, n_layers: int = 2, n_heads: int = 4, seed: int = 0) -> Path:
    """A small random-weight checkpoint on Toy English (UI behaviour only; nothing is trained)."""
    texts = [s.text for s in generate_corpus(200, seed)]
    tok = train_tokenizer(texts, kind, vocab_size=200, min_frequency=1)
    extra = dict(n_classes=n_classes, class_names=("ungrammatical", "grammatical")) if n_classes == 2 else {}
    cfg = ModelConfig(
        kind=kind, vocab_size=tok.vocab_size, n_layers=n_layers, n_heads=n_heads, d_model=32, d_ff=64, max_len=48, **extra
    )
    return save_checkpoint(path, build_model(cfg, seed=seed), tok, {"task": f"browser test ({kind})", "seed": seed})


@dataclass(frozen=True)
class Served:
    """What the app under test serves: its default checkpoint (name and file) and the environment it runs with."""

    default: str
    path: Path
    env: dict[str, str]
    shipped: bool
    minilm: bool  # MiniLM is installed and offered too

    def reference(self, text: str, name: str | None = None):
        """The trace of `text` on the default checkpoint (or on MiniLM), computed in this process, independently of the app.

        It runs on the app's torch threads: float32 sums split over another number of threads round
        differently, and then the page's numbers would not be this trace's to the last bit.
        """
        with app_threads():
            if name == catalog.MINILM:
                return trace_text(_minilm(), text)
            return trace_text(load_checkpoint(self.path, device="cpu"), text)


@functools.cache
def _minilm():
    from transformer.checkpoints import importers

    return importers.load_any(catalog.minilm_dir(), device="cpu")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium; without it the browser tests skip, except under CI where they must run."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = f"{CHROMIUM} is missing: browser tests need Debian's chromium (`make browser` installs it as root)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> Served:
    minilm = catalog.minilm_dir() is not None
    no_minilm = {catalog.NO_MINILM_ENV: ""}  # offered when installed, like in `make run`
    shipped = catalog.ASSETS / catalog.SHIPPED["translator"][1]
    if shipped.is_file():
        return Served("translator", shipped, {catalog.ASSETS_ENV: "", **no_minilm}, shipped=True, minilm=minilm)
    folder = tmp_path_factory.mktemp("browser-assets")
    path = write_tiny(folder / "translator.safetensors", "encoder-decoder")
    write_tiny(folder / "lm.safetensors", "decoder", seed=1)
    return Served("translator", path, {catalog.ASSETS_ENV: str(folder), **no_minilm}, shipped=False, minilm=minilm)


@pytest.fixture(scope="session")
def app_url(chromium, served) -> str:
    """Base URL of `streamlit run app.py` for the whole session; the server stops at the end, failures included."""
    ARTIFACTS.mkdir(exist_ok=True)
    with running_app(served.env, log=ARTIFACTS / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="session")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch_chromium(pw)
        yield b
        b.close()


@pytest.fixture
def dialogs() -> list[str]:
    """Messages of every JavaScript dialog (alert, confirm...) the page opened; tests assert it stays empty."""
    return []


@pytest.fixture
def page(browser, app_url, dialogs, request):
    """A fresh browser session (its own Streamlit session); a screenshot of its last state is kept as an artifact."""
    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.base_url = app_url  # type: ignore[attr-defined]
    yield pg
    try:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
        pg.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    finally:
        context.close()
