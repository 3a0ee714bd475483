"""How fast the app feels in a real browser: typing → heatmap, switching heads, and the model view's size and time.

Run: `.venv/bin/python -m benchmarks.browser` (a printed table, not a test; about two minutes).
`--screenshots docs/screenshots` instead saves the README's screenshots (1400×1000 PNGs).

The app runs as `streamlit run app.py` in a subprocess and Playwright drives Debian's Chromium.
"Drawn" means: from the user's action (key press or click, as the browser time-stamped the event)
until the new figure's data is in the page's Plotly chart (checked every animation frame), both
timed inside the page, so Playwright's own work before it sends the input is left out (except for
"cold": from the start of the page load). Bytes are the websocket frames the browser
receives for that action, i.e. everything the app sends (the static JS bundle is cached by the
browser and not counted). The 2048-token model view uses a random 6-layer × 12-head, d_model 384
encoder with max_len 2048 (MiniLM reads at most 512 tokens), written to a temp `$ATTNVIZ_ASSETS`
folder next to links to the shipped checkpoints.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import torch

from benchmarks.core import machine
from tests.browser import (
    CHROMIUM,
    VIEWPORT,
    arm_action,
    launch_chromium,
    running_app,
    seconds_since_action,
    signature,
    wait_changed,
    wait_idle,
    wait_plot,
)
from transformer.api import build_model
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint, save_checkpoint
from transformer.checkpoints.tokenizer import train_tokenizer
from transformer.data.toy_english import generate_corpus
from transformer.model.config import ModelConfig

REPEATS = 10
# Model view texts: a little shorter each time, so each new grid differs from the last (at 128 tokens
# even in shape: 64, 62, 60... pooled rows), and the redraw can be seen in the page.
MV_128 = [128, 124, 120, 116, 112, 108]
MV_2048 = [2048, 2000, 1950]
SHARPEN = 8.0
BIG = "classifier"  # the catalogue slot the random 2048-token model is served under (in the temp assets folder only)
NOTEBOOK = "the best-known notebook tool sends 52 MB and takes about 20 s at 128 tokens (figure from issue 4, not measured here)"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def fit(tokenizer, words: list[str], n_tokens: int) -> str:
    """The longest prefix of `words` that encodes to at most `n_tokens` tokens (specials included)."""
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer.encode(" ".join(words[:mid])).tokens) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def toy_texts(tokenizer, lengths: list[int], seed: int = 0) -> list[str]:
    """One different Toy English text per entry of `lengths`, each of at most that many tokens."""
    words = " ".join(s.text for s in generate_corpus(sum(lengths) // 2 + 50, seed)).split()
    out = []
    for n in lengths:
        out.append(fit(tokenizer, words, n))
        words = words[len(out[-1].split()) :]
    return out


def english_texts(tokenizer, lengths: list[int]) -> list[str]:
    """One different plain English text per entry of `lengths` (sentences rotated, cut at a word)."""
    sentences = [
        "When Mary and John went to the store, John gave a drink to Mary.",
        "The keys to the old wooden cabinet are on the table.",
        "The animal didn't cross the street because it was too tired.",
        "A teacher who reads many books explains the lesson to her students.",
        "After the long storm, the small boats returned to the quiet harbour.",
    ]
    return [fit(tokenizer, " ".join((sentences[i % 5 :] + sentences[: i % 5]) * 12).split(), n) for i, n in enumerate(lengths)]


def write_big(folder: Path) -> Path:
    """A random 6-layer × 12-head, d_model 384 encoder reading up to 2048 tokens (sinusoidal positions)."""
    texts = [s.text for s in generate_corpus(2000, 0)]
    tok = train_tokenizer(texts, "encoder", vocab_size=1000, min_frequency=1)
    cfg = ModelConfig(
        kind="encoder",
        vocab_size=tok.vocab_size,
        n_layers=6,
        n_heads=12,
        d_model=384,
        d_ff=1536,
        max_len=2048,
        positional="sinusoidal",
    )
    model = build_model(cfg, seed=0)
    with torch.no_grad():  # sharper attention than random init's near-uniform rows, so thumbnails differ per text
        for layer in model.encoder.layers:
            layer.self_attn.q_proj.weight.mul_(SHARPEN)
    return save_checkpoint(folder / f"{BIG}.safetensors", model, tok, {"task": "benchmark (random weights)"})


class Frames:
    """Counts the bytes of websocket frames the page receives."""

    def __init__(self, page):
        self.total = 0
        page.on("websocket", lambda ws: ws.on("framereceived", self._add))

    def _add(self, payload) -> None:
        self.total += len(payload)


def url(base: str, path: str, **params) -> str:
    return f"{base}{path}?{urlencode(params)}"


# ---------------------------------------------------------------------------------------------
# Measurements.
# ---------------------------------------------------------------------------------------------


def typing(browser, base: str, name: str, texts: list[str], timeout_ms: int = 60_000, **params) -> list[float]:
    """Seconds from Ctrl+Enter in the text area to the new heatmap's data in the page, one per text (each new).

    params: more link parameters of the Attention page (e.g. kind="cross"); timeout_ms: for the first page's load.
    """
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url(base, "/attention", checkpoint=name, text=texts[-1], **params))
    wait_plot(page, "attn_heatmap", timeout_ms=timeout_ms)
    wait_idle(page)
    times = []
    area = page.locator(".st-key-w_text textarea")
    for text in texts[:-1]:
        area.fill(text)
        before = signature(page, "attn_heatmap")
        arm_action(page, "keydown", "Enter")
        area.press("Control+Enter")
        wait_changed(page, "attn_heatmap", before)
        times.append(seconds_since_action(page))
        wait_idle(page)
    page.close()
    return times


def stepping(browser, base: str, name: str, text: str, button: str, repeats: int) -> list[float]:
    """Seconds from a click on a next-head/next-layer button to the redrawn heatmap."""
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url(base, "/attention", checkpoint=name, text=text))
    wait_plot(page, "attn_heatmap")
    wait_idle(page)
    times = []
    for _ in range(repeats):
        before = signature(page, "attn_heatmap")
        arm_action(page, "click")
        page.locator(f".st-key-{button} button").click()
        wait_changed(page, "attn_heatmap", before)
        times.append(seconds_since_action(page))
        wait_idle(page)
    page.close()
    return times


def model_view(browser, base: str, name: str, texts: list[str], repeats: int) -> dict:
    """The model view, three ways; seconds until the grid is drawn and websocket bytes received, per action.

    cold: open a link to the page (page load, the model runs, the figure is new to the browser);
    new: type a new text on the page (the model runs, a new figure is sent);
    switch: come back from the Checkpoint page (cached trace; Streamlit sends only a reference to a
    figure this browser already holds, so few bytes).
    """
    page = browser.new_page(viewport=VIEWPORT)
    frames = Frames(page)
    t0 = time.perf_counter()
    page.goto(url(base, "/model_view", checkpoint=name, text=texts[0]))
    wait_plot(page, "mv_grid", timeout_ms=300_000)
    out = dict(cold=([time.perf_counter() - t0], [0]))
    wait_idle(page, timeout_ms=300_000)
    out["cold"][1][0] = frames.total
    out["new"] = ([], [])
    area = page.locator(".st-key-w_text textarea")
    for text in texts[1:]:
        area.fill(text)
        before, start = signature(page, "mv_grid"), frames.total
        arm_action(page, "keydown", "Enter")
        area.press("Control+Enter")
        wait_changed(page, "mv_grid", before, timeout_ms=300_000)
        out["new"][0].append(seconds_since_action(page))
        wait_idle(page, timeout_ms=300_000)
        out["new"][1].append(frames.total - start)
    out["switch"] = ([], [])
    for _ in range(repeats):
        page.get_by_role("link", name="Checkpoint", exact=True).click()
        page.wait_for_url("**/checkpoint?**")
        page.locator(".st-key-mv_grid").wait_for(state="detached")
        wait_idle(page, timeout_ms=300_000)
        start = frames.total
        arm_action(page, "click")
        page.get_by_role("link", name="Model view", exact=True).click()
        wait_changed(page, "mv_grid", None)  # the chart was gone: any figure is a change
        out["switch"][0].append(seconds_since_action(page))
        wait_idle(page)
        out["switch"][1].append(frames.total - start)
    page.close()
    return out


def run_benchmarks() -> None:
    lines = [
        f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at start",
        f"browser: {subprocess.run([CHROMIUM, '--version'], capture_output=True, text=True).stdout.strip()}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (_, file) in catalog.SHIPPED.items():
            if name != BIG and (catalog.ASSETS / file).is_file():
                (folder / file).symlink_to(catalog.ASSETS / file)
        big = write_big(folder)
        env = {catalog.ASSETS_ENV: str(folder), catalog.NO_MINILM_ENV: ""}
        shipped = [n for n in ("lm", "translator") if (folder / catalog.SHIPPED[n][1]).exists()]
        minilm = catalog.minilm_dir() is not None
        from playwright.sync_api import sync_playwright

        with running_app(env) as base, sync_playwright() as pw:
            browser = launch_chromium(pw)
            rows = []
            typing_on = shipped or (["minilm"] if minilm else [])
            for name in typing_on:
                tok = _tokenizer(name, folder)
                texts = toy_texts(tok, [32] * (REPEATS + 1), seed={"lm": 1, "translator": 2}.get(name, 3))
                n_tok = statistics.median(len(tok.encode(t).tokens) for t in texts)
                t = typing(browser, base, name, texts)
                rows.append((f"type a sentence → heatmap drawn ({name}, ~{n_tok:.0f} tokens)", t, "p50 ≤ 0.5 s"))
                for button, what in (("attn_next_head", "head"), ("attn_next_layer", "layer")):
                    t = stepping(browser, base, name, texts[0], button, REPEATS)
                    rows.append((f"next {what} → heatmap redrawn ({name})", t, "p50 ≤ 0.25 s"))
            for label, p50, p90, target in ((r[0], statistics.median(r[1]), pct(r[1], 0.9), r[2]) for r in rows):
                lines.append(f"{label:<62} p50 {p50:6.3f} s   p90 {p90:6.3f} s   (target {target}, n={REPEATS})")

            views = []
            if minilm:
                from transformer.checkpoints import importers

                tok = importers.load_any(catalog.minilm_dir(), device="cpu").tokenizer
                views.append(("MiniLM 6×12", "minilm", english_texts(tok, MV_128), tok, "≤ 2 MB, ≤ 1 s"))
            tok = load_checkpoint(big, device="cpu").tokenizer
            # Each 2048-token trace of 72 heads holds ~2.4 GB (weights and scores): only three of them.
            views.append(("random 6×12 d384", BIG, toy_texts(tok, MV_2048), tok, "≤ 3 s"))
            for label, name, texts, tok, target in views:
                n_toks = [len(tok.encode(t, max_len=2048).tokens) for t in texts]
                r = model_view(browser, base, name, texts, 5)
                lines.append(
                    f"model view, {label}, {n_toks[0]} tokens (new texts: {min(n_toks[1:])}–{max(n_toks[1:])}; target {target}):"
                )
                for how, what in (
                    ("cold", "open a link (page load + model run + new figure)"),
                    ("new", "type a new text on the page (model run + new figure)"),
                    ("switch", "switch back from another page (figure cached in the browser)"),
                ):
                    times, sizes = r[how]
                    lines.append(
                        f"    {what:<64} drawn p50 {statistics.median(times):6.3f} s  max {max(times):6.3f} s  "
                        f"sent p50 {statistics.median(sizes) / 1e6:6.3f} MB  (n={len(times)})"
                    )
            lines.append(f"for comparison: {NOTEBOOK}")
            browser.close()
    print("\n".join(lines))


def _tokenizer(name: str, folder: Path):
    if name == "minilm":
        from transformer.checkpoints import importers

        return importers.load_any(catalog.minilm_dir(), device="cpu").tokenizer
    return load_checkpoint(folder / catalog.SHIPPED[name][1], device="cpu").tokenizer


# ---------------------------------------------------------------------------------------------
# README screenshots.
# ---------------------------------------------------------------------------------------------


def _shot(page, path: Path, chart: str | None, scroll_to: str | None = None) -> None:
    if chart is not None:
        wait_plot(page, chart)
    wait_idle(page)
    if scroll_to is not None:
        page.get_by_text(scroll_to).first.scroll_into_view_if_needed()
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.screenshot(path=str(path))
    print(f"{path} ({path.stat().st_size / 1024:.0f} KB)")


def save_screenshots(folder: Path) -> None:
    """Every page on the default shipped checkpoint (else MiniLM), and MiniLM's attention on an English sentence."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = catalog.available()
    name = "translator" if "translator" in entries else "minilm"
    from playwright.sync_api import sync_playwright

    with running_app() as base, sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport=VIEWPORT)
        view = dict(checkpoint=name)
        if name == "translator":  # cross attention shows the alignment between the sentence and its translation
            view.update(kind="cross", layer="1", head="1")  # the alignment head (analysis: L1 H1)
        page.goto(url(base, "/attention", **view))
        _shot(page, folder / "attention.png", "attn_heatmap")
        page.get_by_role("link", name="Q, K, V", exact=True).click()
        _shot(page, folder / "qkv.png", "qkv_weights")
        _shot(page, folder / "qkv-worked-row.png", None, scroll_to="worked by hand")
        for path, title, chart in (("model_view", "Model view", "mv_grid"), ("checkpoint", "Checkpoint", "ck_W_Q")):
            page.get_by_role("link", name=title, exact=True).click()
            page.wait_for_url(f"**/{path}?**")
            _shot(page, folder / f"{path.replace('_', '-')}.png", chart)
        page.get_by_role("link", name="Output", exact=True).click()
        page.wait_for_url("**/output?**")
        _shot(page, folder / "output.png", None)
        if name == "translator":  # the alignment head forming over training
            page.get_by_role("link", name="Training", exact=True).click()
            page.wait_for_url("**/training?**")
            _shot(page, folder / "training.png", "tr_heatmap")
        if "minilm" in entries:
            text = "The keys to the old wooden cabinet are on the table."
            page.goto(url(base, "/attention", checkpoint="minilm", text=text, layer="3", head="1"))  # "are" looks at "keys"
            _shot(page, folder / "minilm-attention.png", "attn_heatmap")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshots", type=Path, help="save the README screenshots into this folder instead of benchmarking")
    args = parser.parse_args()
    if args.screenshots:
        save_screenshots(args.screenshots)
    else:
        run_benchmarks()


if __name__ == "__main__":
    main()
