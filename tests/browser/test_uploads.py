"""Uploading a Hugging Face folder in a real browser: its three files picked together, then a .zip of another folder.

The folders are tiny random GPT-2s saved with `transformers`' `save_pretrained` (`tests/test_uploads.py`);
each upload must draw that model's attention, the page's Plotly data equal to `trace_text` run here on
the same folder on the app's threads.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from numerics import app_threads
from test_uploads import make_gpt2

from tests.browser import exceptions, figure, remove_uploads, signature, wait_changed, wait_idle, wait_plot
from tests.browser.conftest import ARTIFACTS
from tests.browser.test_browser import assert_shown, choose, open_app, plotly_ticks, shown_head, shown_text
from transformer.api import trace_text
from transformer.checkpoints.importers import load_hf_dir

pytestmark = pytest.mark.browser

FILES = ("config.json", "model.safetensors", "tokenizer.json")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(a GPT-2 folder, a .zip of another one, that other folder)."""
    root = tmp_path_factory.mktemp("hf-upload")
    files = make_gpt2(root / "tiny-gpt2", seed=0)
    other = make_gpt2(root / "other-gpt2", seed=1)
    zipped = root / "other-gpt2.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        for name in (*FILES, "generation_config.json"):
            z.write(other / name, f"other-gpt2/{name}")
    return files, zipped, other


def assert_draws(page, folder: Path, what: str) -> None:
    """The page's heatmap is the folder's model's first head on the text shown, bit for bit (the same computation)."""
    with app_threads():
        ref = trace_text(load_hf_dir(folder, device="cpu"), shown_text(page))
    fig = figure(page, "attn_heatmap")
    kind, layer, head = shown_head(page)  # a new model opens on its most telling head
    assert kind == "decoder self" and f"decoder self · layer {layer} · head {head}" in fig["layout"]["title"]["text"]
    assert fig["layout"]["xaxis"]["ticktext"] == plotly_ticks(ref.key_tokens("decoder self"))
    assert_shown(fig["data"][0]["z"], ref.attention(kind, layer).weights[0, head].numpy(), what)
    assert "decoder · 2 layers × 4 heads" in page.locator("[data-testid=stSidebar]").inner_text()


def test_a_folders_three_files_then_a_zip_each_draw_their_model(page, folders):
    files, zipped, other = folders
    open_app(page)
    before = signature(page, "attn_heatmap")
    choose(page, "w_checkpoint", "Upload…")
    drop = page.locator(".st-key-upload [data-testid=stFileUploaderDropzoneInput]")
    drop.set_input_files([str(files / name) for name in FILES])  # picked together in the file dialog
    wait_changed(page, "attn_heatmap", before)
    wait_idle(page)
    assert not exceptions(page), exceptions(page)
    assert_draws(page, files, "the uploaded folder's heatmap")
    page.screenshot(path=str(ARTIFACTS / "upload-hf-files.png"))

    first = signature(page, "attn_heatmap")
    remove_uploads(page)
    page.get_by_text("Choose a .safetensors checkpoint", exact=False).wait_for()
    assert page.locator(".st-key-attn_heatmap").count() == 0
    drop.set_input_files(str(zipped))
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    assert not exceptions(page), exceptions(page)
    assert signature(page, "attn_heatmap") != first
    assert_draws(page, other, "the uploaded zip's heatmap")
    page.screenshot(path=str(ARTIFACTS / "upload-hf-zip.png"))
