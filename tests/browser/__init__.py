"""Driving the app in a real browser: start `streamlit run app.py`, launch Debian's Chromium, read figures from the DOM.

Shared by the browser tests (`tests/browser/`) and the browser benchmark (`python -m benchmarks.browser`).
Figures are read back exactly as Plotly holds them in the page (`gd.data`, base64 typed arrays decoded
with `viz.jsonfig`), so assertions compare numbers, never pixels.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from viz import jsonfig

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}
STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[str]:
    """`streamlit run app.py` on a free port until the block ends (stopped on errors too); yields the base URL."""
    with serve("app.py", env, log) as (base, _):
        yield base


@contextlib.contextmanager
def serve(
    script: str = "app.py", env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`streamlit run <script>` on a free port until the block ends (stopped with SIGTERM, on errors too).

    Yields the base URL and the server process. The file watcher is off: other people editing the
    tree must not rerun the app under a test.
    """
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        script,
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--browser.gatherUsageStats",
        "false",
    ]
    full_env = {**os.environ, "ATTNVIZ_DEVICE": "cpu", **(env or {})}
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit run {script} exited with code {proc.returncode} before answering (log: {log})")
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer /_stcore/health within {STARTUP_SECONDS} s (log: {log})")
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out is not subprocess.DEVNULL:
            out.close()


def launch_chromium(playwright):
    """Headless Debian Chromium through Playwright (Playwright cannot download its own browser here)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


# ---------------------------------------------------------------------------------------------
# Waiting for Streamlit and reading figures.
# ---------------------------------------------------------------------------------------------

PLOT = ".st-key-{key} .js-plotly-plot"

# True once the script has stopped running and no "Running..." status is shown, stable for 300 ms
# (a rerun triggered by a widget starts a few ms after the event, so one idle reading is not enough).
IDLE_JS = """() => {
  const app = document.querySelector('[data-testid=stApp]');
  const busy = !app || app.getAttribute('data-test-script-state') === 'running'
    || app.getAttribute('data-test-script-state') === 'initial'
    || document.querySelector('[data-testid=stStatusWidget]') !== null
    || document.querySelector('[data-testid=stSpinner]') !== null;
  const now = performance.now();
  if (busy) { window.__idleSince = null; return false; }
  if (window.__idleSince == null) window.__idleSince = now;
  return now - window.__idleSince > 300;
}"""


def wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit has finished running the script (no fixed sleeps)."""
    page.evaluate("() => { window.__idleSince = null; }")
    page.wait_for_function(IDLE_JS, timeout=timeout_ms, polling=50)


def address(page) -> str:
    """The page's address as the page itself has it (`location.href`).

    Streamlit writes the view into the address with `history.pushState`. Playwright's `page.url` hears of such a
    change through an event of its own, and on a busy machine it was seen to keep an older address for more than
    15 s after the page's had changed (a follower whose page showed the class's new text while `page.url` said the
    old one).
    """
    return page.evaluate("() => location.href")


# Counts the script runs the page has seen start (`data-test-script-state` turning to "running"), from the first call.
COUNT_RUNS_JS = """() => {
  const app = document.querySelector('[data-testid=stApp]');
  if (app && !window.__attnvizRunsObserved) {
    window.__attnvizRunsObserved = true;
    window.__attnvizRuns = 0;
    new MutationObserver(() => {
      if (app.getAttribute('data-test-script-state') === 'running') window.__attnvizRuns++;
    }).observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
  }
  return window.__attnvizRuns || 0;
}"""


def click_and_wait(page, target, started_ms: int = 10_000) -> None:
    """Click `target` (a locator on `page`) and wait for the run it asks for to finish.

    A widget's click does not change the page's script state by itself: the page reads "not running" until the
    server starts the run, and on a busy machine that takes longer than `wait_idle`'s quiet spell, which then
    returns before the run has begun. So first wait until a run has started after the click. A run too short for
    the page to draw "running" is not seen: after `started_ms` this goes on to `wait_idle` all the same. On a page
    with a timer (a following student's poll) the run seen may be the timer's: wait there for what the click changes.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    before = page.evaluate(COUNT_RUNS_JS)
    target.click()
    try:
        page.wait_for_function(f"(n) => ({COUNT_RUNS_JS})() > n", arg=before, timeout=started_ms, polling=20)
    except PlaywrightTimeout:
        pass
    wait_idle(page)


def wait_plot(page, key: str, timeout_ms: int = 60_000) -> None:
    page.wait_for_selector(PLOT.format(key=key), timeout=timeout_ms)
    page.wait_for_function(
        "(sel) => { const g = document.querySelector(sel); return g && g.data && g.data.length > 0; }",
        arg=PLOT.format(key=key),
        timeout=timeout_ms,
    )


def figure(page, key: str) -> dict:
    """The chart under `.st-key-<key>` as Plotly holds it in the page: {"data": [...], "layout": {...}}, arrays decoded."""
    raw = page.evaluate(
        "(sel) => { const g = document.querySelector(sel); return g ? {data: g.data, layout: g.layout} : null; }",
        PLOT.format(key=key),
    )
    if raw is None:
        raise AssertionError(f"no Plotly chart under .st-key-{key}")
    return jsonfig.decode(raw)


def signature(page, key: str) -> str | None:
    """A cheap fingerprint of a chart's first trace (z base64 + title), to detect a redraw."""
    return page.evaluate(SIGNATURE_JS, PLOT.format(key=key))


SIGNATURE_JS = """(sel) => {
  const g = document.querySelector(sel);
  if (!g || !g.data || !g.data.length) return null;
  const z = g.data[0].z;
  const zs = z && z.bdata ? z.bdata : JSON.stringify(z);
  return (g.layout && g.layout.title ? g.layout.title.text : '') + '|' + zs.length + '|' + zs.slice(0, 64) + zs.slice(-64);
}"""


def wait_changed(page, key: str, before: str | None, timeout_ms: int = 60_000) -> None:
    """Wait until the chart's fingerprint differs from `before` (the new figure is in the DOM).

    The page notes when it saw the change (`performance.now()`, checked every animation frame), for `seconds_since_action`.
    """
    page.wait_for_function(
        f"""([sel, before]) => {{
          const s = ({SIGNATURE_JS})(sel);
          if (s === null || s === before) return false;
          window.__attnvizChanged = performance.now();
          return true;
        }}""",
        arg=[PLOT.format(key=key), before],
        timeout=timeout_ms,
        polling="raf",
    )


def arm_action(page, event: str, key: str | None = None) -> None:
    """Have the page note the time of the next `event` ("click", or "keydown" of `key`), as the browser stamped it."""
    page.evaluate(
        """([type, key]) => {
          window.__attnvizAction = null;
          const note = (e) => {
            if (key !== null && e.key !== key) return;
            window.__attnvizAction = e.timeStamp;
            document.removeEventListener(type, note, true);
          };
          document.addEventListener(type, note, true);
        }""",
        [event, key],
    )


def seconds_since_action(page) -> float:
    """Seconds from the armed user event to the figure change `wait_changed` saw, both timed inside the page.

    This leaves out Playwright's own work (finding the element, checking it is stable, sending the
    input through the driver), which is not what a person at the browser waits for.
    """
    ms = page.evaluate("() => window.__attnvizChanged - window.__attnvizAction")
    if ms is None or ms != ms:  # NaN: the event was not seen
        raise AssertionError("the armed event was not seen by the page")
    return ms / 1000


def type_text(page, text: str) -> None:
    """Replace the sidebar text and submit it (Ctrl+Enter), as a user would."""
    area = page.locator(".st-key-w_text textarea")
    area.fill(text)
    area.press("Control+Enter")


def exceptions(page) -> list[str]:
    return page.locator("[data-testid=stException]").all_inner_texts()


def remove_uploads(page) -> None:
    """Remove every file from the sidebar's uploader (its chips' ✕ buttons), as a user would before another upload."""
    chips = page.locator("[data-testid=stFileChipDeleteBtn] button")
    while chips.count():
        chips.first.click()
        wait_idle(page)


def run_async(coroutine):
    """Run `coroutine` to its end on an event loop of its own, on a thread of its own (a websocket client's test): in
    the whole suite, Playwright's sync API already runs a loop on this thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
