"""What a key press on the Attention page costs the browser, against the bare Streamlit + Plotly floor.

Run: `.venv/bin/python -m benchmarks.browser_cost [--presses 8] [--profile]` (a printed table, not a test; about two
minutes). One headless Chromium (Debian's, through Playwright), one tab at a time: the app's Attention page on `lm`
and on `translator` (its source's own attention, `kind=encoder self`, so both axes are the typed text), and the floor
(`benchmarks/floor_app.py`: one text area and one heatmap), and the page floor (`benchmarks/floor_page_app.py`: the
Attention page's elements, with no model and no logic of ours). In each tab, PRESSES times: a new Toy English text
(20–39 tokens), Ctrl+Enter, wait until the heatmap shows it and the app is idle, 0.3 s more. Per key press:

- CPU seconds of Chromium's processes (utime + stime from /proc, every process whose command line names chromium,
  grouped by `--type`): the renderer (the page's main thread, its compositor and raster threads), the GPU process
  (software compositing here: `--disable-gpu`), the browser process;
- the page's main thread from the DevTools protocol's `Performance.getMetrics`: task, script, layout and style
  recalculation seconds, and how many layouts and style recalculations;
- with `--profile`, the functions with the most self time in a JS CPU profile of the presses (`Profiler`).

The server runs on the same cores: its CPU is left out here (`benchmarks/ws_load.py` measures it without browsers),
but a busy server still delays the page. Waiting (Streamlit's "running" indicator, the idle spell) costs the floor
as much as the app, and is in both.
"""

from __future__ import annotations

import argparse
import collections
import re
from urllib.parse import urlencode

from playwright.sync_api import sync_playwright

from benchmarks.browser import toy_texts
from benchmarks.classroom import processes
from benchmarks.core import machine
from tests.browser import VIEWPORT, launch_chromium, serve, signature, wait_changed, wait_idle, wait_plot
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint

PRESSES = 8
METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration", "LayoutCount", "RecalcStyleCount")
SETTLE_MS = 300


def chromium_cpu() -> collections.Counter:
    """CPU seconds so far of every Chromium process on this machine, by process type (`--type=`, none: the browser)."""
    out: collections.Counter = collections.Counter()
    for pid, (_, comm, cpu) in processes().items():
        if not comm.startswith("chrom"):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                kind = re.search(r"--type=([a-z-]+)", f.read().decode(errors="replace"))
        except OSError:  # gone meanwhile
            continue
        out[kind.group(1) if kind else "browser"] += cpu
    return out


def presses(browser, url: str, texts: list[str], profile: bool) -> dict:
    """Per key press: Chromium's CPU by process type, the main thread's metrics, and (profile) JS self time."""
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    wait_plot(page, "attn_heatmap", timeout_ms=120_000)
    wait_idle(page)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    if profile:
        cdp.send("Profiler.enable")
        cdp.send("Profiler.setSamplingInterval", {"interval": 200})
        cdp.send("Profiler.start")

    def metrics() -> dict:
        return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}

    area = page.locator(".st-key-w_text textarea")
    main: collections.Counter = collections.Counter()
    cpu0 = chromium_cpu()
    for text in texts:
        area.fill(text)
        before, m0 = signature(page, "attn_heatmap"), metrics()
        area.press("Control+Enter")
        wait_changed(page, "attn_heatmap", before)
        wait_idle(page)
        page.wait_for_timeout(SETTLE_MS)
        m1 = metrics()
        main.update({k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in METRICS})
    cpu1 = chromium_cpu()
    n = len(texts)
    result = {"cpu": {k: (cpu1[k] - cpu0[k]) / n for k in cpu1}, "main": {k: v / n for k, v in main.items()}}
    if profile:
        result["functions"] = self_time(cdp.send("Profiler.stop")["profile"], n)
    page.close()
    return result


def self_time(prof: dict, n: int, top: int = 12) -> list[tuple[str, float]]:
    """The functions with the most self time, ms per press (idle and the profiler's own entries left out)."""
    nodes = {node["id"]: node for node in prof["nodes"]}
    spent: collections.Counter = collections.Counter()
    for sample, delta in zip(prof["samples"], prof["timeDeltas"]):
        frame = nodes[sample]["callFrame"]
        name = frame["functionName"] or "(anonymous)"
        if name in ("(idle)", "(root)"):
            continue
        where = frame["url"].rsplit("/", 1)[-1].split(".")[0]
        spent[f"{name} ({where})" if where else name] += delta
    return [(name, us / 1000 / n) for name, us in spent.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=PRESSES, help=f"key presses per page (default {PRESSES})")
    parser.add_argument("--profile", action="store_true", help="also list the JS functions with the most self time")
    args = parser.parse_args()
    rows = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        for name, script, params in (
            ("floor", "benchmarks/floor_app.py", {}),
            ("page floor", "benchmarks/floor_page_app.py", {}),
            ("lm", "app.py", {"checkpoint": "lm"}),
            ("translator", "app.py", {"checkpoint": "translator", "kind": "encoder self"}),
        ):
            tokenizer = load_checkpoint(catalog.available()["lm" if "floor" in name else name].path).tokenizer
            texts = toy_texts(tokenizer, [20 + (7 * i) % 20 for i in range(args.presses + 1)], seed=11)
            with serve(script) as (base, _):
                path = "/attention" if script == "app.py" else "/"
                url = f"{base}{path}?{urlencode({**params, 'text': texts[-1]})}"
                rows.append((name, presses(browser, url, texts[:-1], args.profile)))
        browser.close()
    print(f"machine: {machine()}; one Chromium tab at a time, {args.presses} key presses each")
    print()
    head = f"{'page':<11} {'renderer s':>10} {'GPU s':>6} {'browser s':>9} {'all s':>6} {'× floor':>7}"
    head += f" {'task s':>7} {'script s':>8} {'layout s':>8} {'style s':>7} {'layouts':>7} {'styles':>7}"
    print(head)
    floor = sum(rows[0][1]["cpu"].values())
    for name, r in rows:
        cpu, m = r["cpu"], r["main"]
        total = sum(cpu.values())
        print(
            f"{name:<11} {cpu.get('renderer', 0):10.3f} {cpu.get('gpu-process', 0):6.3f} {cpu.get('browser', 0):9.3f}"
            f" {total:6.3f} {total / floor:7.2f} {m['TaskDuration']:7.3f} {m['ScriptDuration']:8.3f}"
            f" {m['LayoutDuration']:8.3f} {m['RecalcStyleDuration']:7.3f} {m['LayoutCount']:7.0f} {m['RecalcStyleCount']:7.0f}"
        )
    print(
        "\nper key press. renderer, GPU, browser: CPU seconds of Chromium's processes of that type; all: every Chromium "
        "process.\ntask, script, layout, style: the page's main thread (DevTools Performance metrics), seconds; "
        "layouts, styles: how many."
    )
    for name, r in rows:
        for fn, ms in r.get("functions", []):
            print(f"  {name:<11} {ms:7.1f} ms  {fn}")


if __name__ == "__main__":
    main()
