"""The app in a real browser on a SmolLM2-135M-shaped model: the model view of 270 heads, typing, the server's memory.

Run: `.venv/bin/python -m benchmarks.modern_browser` (a printed table, not a test; about six minutes on an idle machine).

The model is `benchmarks.modern`'s (SmolLM2-135M's shape, random weights, float32, a byte-level BPE
trained on Toy English), saved by transformers, converted with `python -m transformer.convert` and
served under the catalogue slot `benchmarks.browser.BIG` of a temp `$ATTNVIZ_ASSETS` folder, next to
links to the other shipped checkpoints. The app runs as `streamlit run app.py` and Debian's Chromium
drives it, timed as `benchmarks.browser` times it (inside the page, from the browser's time stamp of
the key press or click to the animation frame in which the new figure's data is in the chart; bytes
are the websocket frames the page receives for that action).

The model view of a text that long draws the light pass (`forward(pool=64)`), never a full trace; a
text longer than the model's max_len is cut there (a rotary model's max_len is what the server's trace
budget lets the light pass read: `importers.fit_context`). The server's memory is its resident set
(`VmRSS`; peak `VmHWM`) from /proc. The last table times the server's parts in this process after the
browser has gone (model runs on one torch thread, as the app runs them).
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built here: never ask the hub for anything

import torch  # noqa: E402

from benchmarks.browser import BIG, model_view, pct, toy_texts, typing, url  # noqa: E402
from benchmarks.core import machine  # noqa: E402
from benchmarks.modern import write_hf_folder  # noqa: E402
from tests.browser import CHROMIUM, VIEWPORT, launch_chromium, serve, wait_idle, wait_plot  # noqa: E402
from transformer.checkpoints import catalog  # noqa: E402
from transformer.checkpoints.format import read_header  # noqa: E402
from transformer.checkpoints.tokenizer import Tokenizer  # noqa: E402
from transformer.model.config import ModelConfig  # noqa: E402

TYPING = 9  # texts typed on the Attention page (the first opens the page): p50 of 8
TYPING_TOKENS = 32
MV_1024 = [1024, 1000, 976, 952]  # opened, then three typed; each a different text
MV_LONG = [2048, 2040, 2030, 2020]  # at least the model's max_len: the app reads its first max_len tokens
SWITCHES = 3
MB = 1e6
TARGETS = {
    "mv_time": 4.0,  # s, model view of 270 heads at 1024 tokens
    "mv_bytes": 6.0,  # MB
    "rss": 1.3e9,  # bytes, the server with it and the shipped models loaded
    "typing": 1.5,  # s, p50
}


def server_memory(pid: int) -> tuple[int, int]:
    """(resident, peak resident) bytes of process `pid`, from /proc/<pid>/status."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def convert(hf: Path, out: Path) -> tuple[float, str]:
    """`python -m transformer.convert hf out`: seconds taken and what it printed."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "transformer.convert", str(hf), str(out)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"transformer.convert failed: {done.stderr.strip()}")
    return time.perf_counter() - t0, done.stdout.strip()


def open_page(browser, base: str, path: str, chart: str, **params) -> float:
    """Seconds from opening a link to its chart's data in the page (page load, model load and runs included)."""
    page = browser.new_page(viewport=VIEWPORT)
    t0 = time.perf_counter()
    page.goto(url(base, path, **params))
    wait_plot(page, chart, timeout_ms=600_000)
    seconds = time.perf_counter() - t0
    wait_idle(page, timeout_ms=600_000)
    page.close()
    return seconds


def model_view_lines(label: str, r: dict, targeted: bool) -> list[str]:
    """The lines of one `benchmarks.browser.model_view` result; `targeted`: the 1024-token view the targets are for."""
    lines = [label]
    for how, what in (
        ("cold", "open a link (page load + model run + new figure)"),
        ("new", "type a new text on the page (model run + new figure)"),
        ("switch", "switch back from another page (figure cached in the browser)"),
    ):
        times, sizes = r[how]
        target = ""
        if how == "new" and targeted:
            met = statistics.median(times) <= TARGETS["mv_time"] and statistics.median(sizes) / MB <= TARGETS["mv_bytes"]
            target = f"  (target ≤ {TARGETS['mv_time']:g} s, ≤ {TARGETS['mv_bytes']:g} MB at 1024: {'met' if met else 'MISSED'})"
        lines.append(
            f"    {what:<62} drawn p50 {statistics.median(times):6.2f} s  max {max(times):6.2f} s  "
            f"sent p50 {statistics.median(sizes) / MB:6.2f} MB  (n={len(times)}){target}"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# Where the server's time goes, in this process (the browser gone).
# ---------------------------------------------------------------------------------------------


def median_time(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def server_parts(path: Path, texts_1024: list[str], texts_long: list[str], typed: str) -> list[str]:
    """The parts of one model-view action and one typed sentence, timed here on one torch thread."""
    from server.shared_figures import attention_figure, layer_grid, mean_heads_figure
    from transformer import api
    from transformer.checkpoints.format import load_checkpoint
    from transformer.model.device import torch_threads
    from viz import grid

    ckpt = load_checkpoint(path, device="cpu")
    model, kind = ckpt.model, "decoder self"
    lines = []
    with torch.inference_mode(), torch_threads(1):
        for text in (texts_1024[0], texts_long[0]):
            source, _ = api.streams(ckpt, text)
            T = len(source.ids)
            ids = torch.tensor([source.ids])
            light = median_time(lambda: api.attention_maps(ckpt, text, max_cells=grid.MAX_CELLS, tokens=(source, None)))
            plain = median_time(lambda: model(ids))
            hidden = model.decode(ids)[0]
            head = median_time(lambda: model.lm_logits(hidden))
            maps = api.attention_maps(ckpt, text, max_cells=grid.MAX_CELLS, tokens=(source, None))
            build = median_time(lambda: grid.head_grid(maps, kind, selected=(0, 0)))
            fig = grid.head_grid(maps, kind, selected=(0, 0))
            as_json = median_time(fig.to_json)
            lines.append(
                f"model view, {T} tokens: light pass {light:.2f} s (untraced forward {plain:.2f} s; "
                f"the LM head's logits {head:.2f} s, which the light pass skips), figure built {build * 1e3:.0f} ms, "
                f"to_json {as_json * 1e3:.0f} ms, {len(fig.to_json()) / MB:.2f} MB of JSON"
            )
        source, _ = api.streams(ckpt, typed)
        traced = median_time(lambda: api.trace_text(ckpt, typed, tokens=(source, None)))
        trace = api.trace_text(ckpt, typed, tokens=(source, None))
        calls = iter(range(1_000_000))  # a new cache key per call: the figures are built each time, never reused

        def page_figures() -> None:
            key = ("benchmark", next(calls))
            attention_figure(key, trace, kind, 0, 0, False, False)
            mean_heads_figure(key, trace, kind, 0, False, False)
            layer_grid(key, trace, kind, 0, 0, False)

        figures = median_time(page_figures)
        lines.append(
            f"typed sentence, {len(source.ids)} tokens: traced forward {traced:.3f} s, trace.nbytes "
            f"{trace.nbytes() / MB:.0f} MB; the page's three figures built {figures * 1e3:.0f} ms"
        )
    return lines


def run_benchmarks() -> None:
    lines = [
        f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at start",
        f"browser: {subprocess.run([CHROMIUM, '--version'], capture_output=True, text=True).stdout.strip()}",
    ]
    with tempfile.TemporaryDirectory(prefix="attnviz-modern-browser-") as tmp:
        folder = Path(tmp)
        for name, (_, file) in catalog.SHIPPED.items():
            if name != BIG and (catalog.ASSETS / file).is_file():
                (folder / file).symlink_to(catalog.ASSETS / file)
        big = folder / catalog.SHIPPED[BIG][1]
        seconds, said = convert(write_hf_folder(folder / "hf", "llama"), big)
        metadata, _ = read_header(big)
        cfg, tok = ModelConfig.from_json(metadata["config"]), Tokenizer.from_json(metadata["tokenizer"])
        lines.append(f"model: SmolLM2-135M's shape, random weights, served as {BIG!r}; converted in {seconds:.1f} s: {said}")
        shipped = [n for n in catalog.SHIPPED if n != BIG and (folder / catalog.SHIPPED[n][1]).exists()]
        typed = toy_texts(tok, [TYPING_TOKENS] * TYPING, seed=1)
        texts_1024, texts_long = toy_texts(tok, MV_1024, seed=2), toy_texts(tok, MV_LONG, seed=3)
        env = {catalog.ASSETS_ENV: str(folder), catalog.NO_MINILM_ENV: "1"}
        from playwright.sync_api import sync_playwright

        with serve("app.py", env) as (base, proc), sync_playwright() as pw:
            memory = [("server started", server_memory(proc.pid))]
            browser = launch_chromium(pw)
            first = open_page(browser, base, "/attention", "attn_heatmap", checkpoint=BIG, text=typed[-1])
            lines.append(
                f"first Attention page on it: {first:.1f} s (loads the model, scores head jobs on the probes, traces {TYPING_TOKENS} tokens)"
            )
            memory.append((f"{BIG!r} loaded and traced", server_memory(proc.pid)))
            for name in shipped:
                open_page(browser, base, "/attention", "attn_heatmap", checkpoint=name)
            memory.append((f"and the shipped {', '.join(shipped)} loaded", server_memory(proc.pid)))

            t = typing(browser, base, BIG, typed)
            n_tok = statistics.median(len(tok.encode(x).tokens) for x in typed)
            verdict = "met" if statistics.median(t) <= TARGETS["typing"] else "MISSED"
            lines.append(
                f"type a sentence → heatmap drawn (Attention page, ~{n_tok:.0f} tokens)   p50 {statistics.median(t):.2f} s   "
                f"p90 {pct(t, 0.9):.2f} s   max {max(t):.2f} s   (n={len(t)}; target p50 ≤ {TARGETS['typing']:g} s: {verdict})"
            )
            memory.append(("after typing", server_memory(proc.pid)))

            for texts, targeted in ((texts_1024, True), (texts_long, False)):
                n_toks = [len(tok.encode(x, max_len=cfg.max_len).tokens) for x in texts]
                asked = [len(tok.encode(x).tokens) for x in texts]
                r = model_view(browser, base, BIG, texts, SWITCHES)
                cut = (
                    f"; texts of {min(asked)}–{max(asked)} tokens cut to max_len {cfg.max_len}"
                    if max(asked) > cfg.max_len
                    else ""
                )
                lines += model_view_lines(
                    f"model view, {cfg.n_layers} × {cfg.n_heads} = {cfg.n_layers * cfg.n_heads} heads, {n_toks[0]} tokens "
                    f"(new texts: {min(n_toks[1:])}–{max(n_toks[1:])}{cut}):",
                    r,
                    targeted,
                )
                memory.append((f"after the model view at {n_toks[0]} tokens", server_memory(proc.pid)))
            browser.close()
        rss_lines = [
            f"server memory (VmRSS, peak VmHWM); target ≤ {TARGETS['rss'] / 1e9:g} GB with it and the shipped models loaded:"
        ]
        for what, (rss, peak) in memory:
            rss_lines.append(f"    {what:<52} RSS {rss / MB:7,.0f} MB   peak so far {peak / MB:7,.0f} MB")
        loaded, peak = memory[2][1][0], max(p for _, (_, p) in memory)
        rss_lines.append(
            f"    → loaded: {'met' if loaded <= TARGETS['rss'] else 'MISSED'}; peak through the model views: "
            f"{'met' if peak <= TARGETS['rss'] else 'MISSED'}"
        )
        print("\n".join(lines + rss_lines))
        print("\nwhere the server's time goes (this process, the browser gone; one torch thread, medians of 3):")
        sys.stdout.flush()
        gc.collect()
        print("\n".join(server_parts(big, texts_1024, texts_long, typed[0])))


def main() -> None:
    run_benchmarks()


if __name__ == "__main__":
    main()
