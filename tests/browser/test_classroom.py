"""A classroom on one server, in real Chromium: sessions at once keep their own work, and what one user sends
(a huge paste, an absurd checkpoint, a closed tab mid-run, a storm of reloads) leaves the others served.

These tests start their own `streamlit run app.py` (so they can read the server's memory) on a folder
with a tiny language model and translator, and a slower random encoder (6 × 8 heads, d_model 256,
max_len 1024: a 1000-token text takes it a noticeable moment) in the "classifier" slot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlencode

import pytest
from safetensors.torch import save_file

from tests.browser import VIEWPORT, exceptions, figure, serve, signature, type_text, wait_changed, wait_idle, wait_plot
from tests.browser.conftest import ARTIFACTS, write_tiny
from transformer.api import build_model
from transformer.checkpoints import catalog
from transformer.checkpoints.format import FORMAT, load_checkpoint, save_checkpoint
from transformer.checkpoints.tokenizer import train_tokenizer
from transformer.data.toy_english import generate_corpus
from transformer.model.config import ModelConfig

pytestmark = pytest.mark.browser

SENTENCES = [
    "the dog runs .",
    "the big dog near the old tables sees the cats .",
    "two small cats that the teacher sees sleep .",
    "a bird sings while the quiet dogs near the green field read books .",
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def classroom(chromium, tmp_path_factory):
    """(base URL, server pid, assets folder) of a server of its own."""
    folder = tmp_path_factory.mktemp("classroom-assets")
    write_tiny(folder / "lm.safetensors", "decoder", seed=1)
    write_tiny(folder / "translator.safetensors", "encoder-decoder")
    texts = [s.text for s in generate_corpus(300, 0)]
    tok = train_tokenizer(texts, "encoder", vocab_size=300, min_frequency=1)
    cfg = ModelConfig(kind="encoder", vocab_size=tok.vocab_size, n_layers=6, n_heads=8, d_model=256, d_ff=1024, max_len=1024)
    save_checkpoint(folder / "classifier.safetensors", build_model(cfg, seed=0), tok, {"task": "a slow random encoder"})
    env = {catalog.ASSETS_ENV: str(folder), catalog.NO_MINILM_ENV: "1"}
    ARTIFACTS.mkdir(exist_ok=True)
    with serve("app.py", env, log=ARTIFACTS / "streamlit-classroom.log") as (url, proc):
        yield url, proc.pid, folder


def new_page(browser, url: str, path: str = "/attention", params: dict | None = None):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.goto(url + path + (f"?{urlencode(params)}" if params else ""))
    return page


def ready(page, chart: str = "attn_heatmap") -> None:
    wait_plot(page, chart)
    wait_idle(page)
    assert not exceptions(page), exceptions(page)


def upload(page, path: Path) -> None:
    """Choose "Upload…" in the checkpoint picker and give it `path`, as a user would."""
    page.locator(".st-key-w_checkpoint input").click()
    page.get_by_role("option", name="Upload…", exact=True).click()
    page.locator(".st-key-upload [data-testid=stFileUploaderDropzoneInput]").set_input_files(str(path))


def tokens_of(folder: Path, name: str, text: str) -> list[str]:
    from viz.labels import plotly_text

    return [plotly_text(t) for t in load_checkpoint(folder / f"{name}.safetensors", device="cpu").tokenizer.encode(text).tokens]


def test_sessions_typing_at_once_each_see_their_own_tokens(browser, classroom):
    url, _, folder = classroom
    pages = [new_page(browser, url, params={"checkpoint": "lm"}) for _ in SENTENCES]
    try:
        for page in pages:
            ready(page)
        before = [signature(page, "attn_heatmap") for page in pages]
        for page, sentence in zip(pages, SENTENCES):  # fill every box, then send them all as close together as we can
            page.locator(".st-key-w_text textarea").fill(sentence)
        for page in pages:
            page.locator(".st-key-w_text textarea").press("Control+Enter")
        for page, old, sentence in zip(pages, before, SENTENCES):
            wait_changed(page, "attn_heatmap", old)
            wait_idle(page)
            assert figure(page, "attn_heatmap")["layout"]["yaxis"]["ticktext"] == tokens_of(folder, "lm", sentence)
            assert page.locator(".st-key-w_text textarea").input_value() == sentence
    finally:
        for page in pages:
            page.screenshot(path=str(ARTIFACTS / f"classroom-session-{pages.index(page)}.png"))
            page.context.close()


def test_a_100000_character_paste_is_cut_to_what_the_model_reads(browser, classroom):
    url, _, folder = classroom
    page = new_page(browser, url, params={"checkpoint": "lm"})
    try:
        ready(page)
        before = signature(page, "attn_heatmap")
        paste = ("the dog that the cats see runs . " * 4000)[:100_000]
        type_text(page, paste)
        wait_changed(page, "attn_heatmap", before)
        wait_idle(page)
        warning = page.locator("[data-testid=stAlert]").filter(has_text="longer than this model reads").inner_text()
        assert "tokens were cut" in warning
        kept = page.locator(".st-key-w_text textarea").input_value()
        assert paste.startswith(kept) and 0 < len(kept) < 200
        assert figure(page, "attn_heatmap")["layout"]["yaxis"]["ticktext"] == tokens_of(folder, "lm", kept)
        page.screenshot(path=str(ARTIFACTS / "classroom-paste.png"))
    finally:
        page.context.close()


def absurd_checkpoint(path: Path, folder: Path) -> Path:
    """The tiny LM's real weights (a few hundred KB) under a config claiming max_len 999 999: no position table in the file."""
    ckpt = load_checkpoint(folder / "lm.safetensors", device="cpu")
    config = json.loads(ckpt.config.to_json())
    config.update(max_len=999_999, positional="sinusoidal")
    metadata = {
        "format": FORMAT,
        "config": json.dumps(config),
        "tokenizer": ckpt.tokenizer.to_json(),
        "training": json.dumps({"task": "absurd"}),
    }
    save_file({k: v.contiguous() for k, v in ckpt.model.state_dict().items()}, str(path), metadata=metadata)
    assert path.stat().st_size < 2_000_000
    return path


def test_an_upload_asking_for_a_huge_model_is_refused_and_the_server_stays_small(browser, classroom, tmp_path):
    url, pid, folder = classroom
    path = absurd_checkpoint(tmp_path / "absurd.safetensors", folder)
    page = new_page(browser, url, params={"checkpoint": "lm"})
    other = new_page(browser, url, params={"checkpoint": "lm"})
    try:
        ready(page)
        ready(other)
        before = rss_mb(pid)
        upload(page, path)
        error = page.locator("[data-testid=stSidebar] [data-testid=stAlert]").filter(has_text="Could not load")
        error.wait_for()
        wait_idle(page)
        assert "max_len" in error.inner_text() and "999,999" in error.inner_text()
        assert rss_mb(pid) < before + 150, (before, rss_mb(pid))  # the position table alone would be 128 MB, the mask terabytes
        page.screenshot(path=str(ARTIFACTS / "classroom-absurd-upload.png"))
        old = signature(other, "attn_heatmap")  # and everyone else is still served
        type_text(other, SENTENCES[1])
        wait_changed(other, "attn_heatmap", old)
        assert figure(other, "attn_heatmap")["layout"]["yaxis"]["ticktext"] == tokens_of(folder, "lm", SENTENCES[1])
    finally:
        page.context.close()
        other.context.close()


def test_a_tab_closed_mid_run_and_twenty_reloads_leave_the_server_serving(browser, classroom):
    url, pid, folder = classroom
    long_text = " ".join(s.text for s in generate_corpus(200, 5))
    slow = new_page(browser, url, params={"checkpoint": "classifier"})
    ready(slow)
    slow.locator(".st-key-w_text textarea").fill(long_text)
    slow.locator(".st-key-w_text textarea").press("Control+Enter")
    slow.wait_for_selector("[data-test-script-state=running]", timeout=30_000)  # the model is running
    slow.context.close()  # the student closes the tab in the middle of it

    stormy = new_page(browser, url, params={"checkpoint": "lm"})
    for _ in range(20):  # reload after reload (each a new Streamlit session), never waiting for the page
        stormy.goto(f"{url}/attention?checkpoint=lm", wait_until="commit")
    ready(stormy)

    page = new_page(browser, url, params={"checkpoint": "lm"})
    try:
        ready(page)
        old = signature(page, "attn_heatmap")
        type_text(page, SENTENCES[2])
        wait_changed(page, "attn_heatmap", old)
        assert figure(page, "attn_heatmap")["layout"]["yaxis"]["ticktext"] == tokens_of(folder, "lm", SENTENCES[2])
        assert figure(stormy, "attn_heatmap")["layout"]["yaxis"]["ticktext"]
        assert os.path.exists(f"/proc/{pid}") and rss_mb(pid) < 1500
        log = (ARTIFACTS / "streamlit-classroom.log").read_text()
        assert "Traceback" not in log, log[-3000:]
    finally:
        page.context.close()
        stormy.context.close()


def test_uploads_live_in_a_private_folder_only_while_read_and_it_goes_with_the_server(browser, chromium, tmp_path):
    folder = tmp_path / "assets"
    folder.mkdir()
    write_tiny(folder / "lm.safetensors", "decoder", seed=1)
    path = write_tiny(tmp_path / "mine.safetensors", "encoder", n_classes=2, seed=3)
    with serve("app.py", {catalog.ASSETS_ENV: str(folder), catalog.NO_MINILM_ENV: "1"}) as (url, proc):
        pid = proc.pid
        page = new_page(browser, url, params={"checkpoint": "lm"})
        try:
            ready(page)
            before = signature(page, "attn_heatmap")
            upload(page, path)
            wait_changed(page, "attn_heatmap", before)
            wait_idle(page)
            made = list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"attnviz-uploads-{pid}-*"))
            assert len(made) == 1 and oct(made[0].stat().st_mode & 0o777) == "0o700"
            assert [p for p in made[0].rglob("*") if p.is_file()] == []  # loaded, then removed
        finally:
            page.context.close()
    assert not made[0].exists()  # serve() stops the server with SIGTERM, as a teacher's Ctrl+C or a service manager would
