"""A classroom on one server: N browser sessions type at the same moment; how long until each sees its own heatmap.

Run: `.venv/bin/python -m benchmarks.classroom` (a printed table, not a test; progress on stderr). The default,
N = 1, 10, 30 on the `lm` and `translator` checkpoints plus the floor, 3 rounds each, takes about 10 minutes on
a quiet 2-core machine and needs ~7 GB of free memory (each session's tab holds ~200 MB). `--sessions 1,2,4`
is a quick check.

The app runs as `streamlit run app.py` in a subprocess, and so does the floor, `benchmarks/floor_app.py`
(a bare Streamlit + Plotly app: one text area, one heatmap, no model). For each N, N Playwright browser
contexts (each with its own cookies, so its own Streamlit session) in headless Chromium open the
Attention page (`/attention?checkpoint=…`) and wait until it is drawn and idle. Then come the rounds:
every session's text area gets its own Toy English text (6 to 40 tokens, different in every session
and every round, so no session is served another's cached trace), and Ctrl+Enter is pressed in all
of them at once (the presses are sent concurrently; "spread" is the time from the first to the last
press as the pages time-stamped them). The floor gets the same texts, sessions and rounds. `--page-floor` adds a
second floor, `benchmarks/floor_page_app.py`: the Attention page's elements with no model and no code of ours (what
Streamlit alone charges for a page of that shape), and prints each app's slowest against it.

Timed in the page, as benchmarks/browser.py does: from the key press (the browser's event time
stamp) to the animation frame in which the new figure's data is in that session's heatmap. A
MutationObserver notices the new data and the next animation frame is the time stamp, so N idle
pages do not each poll every frame. After every round each heatmap's axes must be that session's own
tokens (the checkpoint's tokenizer, labelled as the app labels them); anything else is cross-talk.

Server cost: CPU seconds (utime + stime from /proc) of the server process from just before the key
presses until every session is idle again, per script run; runs are counted from the websocket (each
`script_finished` message Streamlit sends a session is one run). Server RSS is sampled every 0.2 s
while N sessions are open (and the kernel's high-water mark is printed). Browser CPU is the same
window summed over the Chromium processes; the harness (Playwright's driver and this script) apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from benchmarks.browser import pct, toy_texts
from benchmarks.core import machine
from tests.browser import CHROMIUM, IDLE_JS, PLOT, SIGNATURE_JS, launch_chromium, serve
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint
from viz.labels import plotly_text, unique_labels

SESSIONS = "1,10,30"
CHECKPOINTS = "lm,translator"
REPEATS = 3
SHORTEST, LONGEST = 6, 40  # tokens per text, specials included
TIMEOUT_S = 180.0  # per round, from the key presses: a session not drawn by then counts as "not drawn"
OPEN_TIMEOUT_S = 120.0  # one session's page load, until its first heatmap
OPEN_AT_ONCE = 4  # sessions loading the page together while a class sits down (not timed)
TEXTAREA = ".st-key-w_text textarea"
CHART = "attn_heatmap"  # the app's heatmap key; the floor uses the same one
TICK = os.sysconf("SC_CLK_TCK")

# The targets, on a 2-core machine.
FLOOR_FACTOR, SLOWEST_AT_10_S, RSS_LIMIT_GB = 2.0, 3.0, 1.5

# Armed in each page before the presses: note the Ctrl+Enter's time stamp, then the first animation
# frame after the chart's fingerprint differs from `before`.
ARM_JS = f"""([sel, before]) => {{
  const sig = {SIGNATURE_JS};
  const s = window.__classroom = {{action: null, pressedAt: null, drawn: null}};
  const onKey = (e) => {{
    if (e.key !== 'Enter' || !e.ctrlKey) return;
    s.action = e.timeStamp;
    s.pressedAt = performance.timeOrigin + e.timeStamp;  // wall clock, comparable across pages
    document.removeEventListener('keydown', onKey, true);
  }};
  document.addEventListener('keydown', onKey, true);
  let seen = false;
  const obs = new MutationObserver(() => {{
    if (seen) return;
    const now = sig(sel);
    if (now === null || now === before) return;
    seen = true;
    obs.disconnect();
    requestAnimationFrame(() => {{ s.drawn = performance.now(); }});
  }});
  obs.observe(document.body, {{subtree: true, childList: true, attributes: true, characterData: true}});
}}"""

AXES_JS = "(sel) => { const g = document.querySelector(sel); return g ? [g.data[0].y, g.data[0].x] : null; }"


# ---------------------------------------------------------------------------------------------
# Processes: the servers, and CPU seconds and memory read from /proc.
# ---------------------------------------------------------------------------------------------


def processes() -> dict[int, tuple[int, str, float]]:
    """pid → (parent pid, command name, CPU seconds so far) for every process we can read."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
            out[int(entry)] = (int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / TICK)
    return out


@dataclass(frozen=True)
class Cpu:
    """CPU seconds spent in a window: by the server, by all Chromium processes, by the harness (Playwright's driver, this script)."""

    server: float
    browsers: float
    harness: float


def cpu_now(server_pid: int) -> dict[int, tuple[str, float]]:
    """pid → (which of Cpu's fields it counts in, CPU seconds so far), for the server and our own descendants.

    Other servers we started are left out; Chromium's processes count under "browsers", the rest under "harness".
    """
    procs, me = processes(), os.getpid()

    def ours(pid: int) -> bool:
        while pid > 1 and pid != me:
            pid = procs[pid][0] if pid in procs else 0
        return pid == me

    out = {}
    for pid, (_, comm, cpu) in procs.items():
        if pid == server_pid:
            out[pid] = ("server", cpu)
        elif comm.startswith("chrom") and ours(pid):
            out[pid] = ("browsers", cpu)
        elif ours(pid) and pid != me and not comm.startswith(("python", "streamlit")):
            out[pid] = ("harness", cpu)  # Playwright's driver
    out[me] = ("harness", procs[me][2] if me in procs else 0.0)
    return out


def cpu_since(start: dict[int, tuple[str, float]], server_pid: int) -> Cpu:
    """CPU seconds since `start` (a `cpu_now`), process by process (one that exited meanwhile is left out)."""
    totals = {"server": 0.0, "browsers": 0.0, "harness": 0.0}
    for pid, (field_, cpu) in cpu_now(server_pid).items():
        totals[field_] += cpu - start.get(pid, (field_, 0.0))[1]
    return Cpu(**totals)


def memory_mb(pid: int) -> tuple[float, float]:
    """The server's resident memory now and its high-water mark, in MB."""
    with open(f"/proc/{pid}/status") as f:
        kb = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("VmRSS", "VmHWM"))}
    return kb["VmRSS"] / 1024, kb["VmHWM"] / 1024


async def sample_rss(pid: int, peak: list[float]) -> None:
    """Keep peak[0] at the largest resident memory seen (MB), every 0.2 s until cancelled."""
    while True:
        with contextlib.suppress(OSError):
            peak[0] = max(peak[0], memory_mb(pid)[0])
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# Sessions and rounds.
# ---------------------------------------------------------------------------------------------


@dataclass
class Session:
    """One student: a browser context (its own cookies, so its own Streamlit session) with one page."""

    context: object
    page: object
    runs: int = 0  # `script_finished` messages received

    def count(self, payload) -> None:
        if isinstance(payload, bytes) and len(payload) < 1024:  # script_finished is a few bytes; figures are not
            with contextlib.suppress(Exception):
                if ForwardMsg.FromString(payload).WhichOneof("type") == "script_finished":
                    self.runs += 1


def note(message: str) -> None:
    """Progress on stderr (the table goes to stdout at the end)."""
    print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


async def wait_idle(page, timeout_ms: float = 60_000) -> None:
    """`tests.browser.wait_idle`, for the async API."""
    await page.evaluate("() => { window.__idleSince = null; }")
    await page.wait_for_function(IDLE_JS, timeout=timeout_ms, polling=50)


async def open_session(browser, link: str, viewport: dict, gate: asyncio.Semaphore) -> Session:
    """A new context on `link`, once its heatmap is drawn and the script idle; fails fast if the page shows an exception."""
    async with gate:
        context = await browser.new_context(viewport=viewport)
        page = await context.new_page()
        session = Session(context, page)
        page.on("websocket", lambda ws: ws.on("framereceived", session.count))
        await page.goto(link)
        await page.wait_for_function(
            """(sel) => { const g = document.querySelector(sel);
              return (g && g.data && g.data.length > 0) || document.querySelector('[data-testid=stException]') !== null; }""",
            arg=PLOT.format(key=CHART),
            timeout=OPEN_TIMEOUT_S * 1000,
        )
        errors = await page.locator("[data-testid=stException]").all_inner_texts()
        if errors:
            raise RuntimeError(f"{link} shows an exception: {errors[0][:500]}")
        await wait_idle(page, OPEN_TIMEOUT_S * 1000)
        return session


async def drawn_seconds(page, deadline: float) -> float | None:
    """Seconds from this page's key press to its new heatmap, or None if not drawn by `deadline` (monotonic)."""
    try:
        await page.wait_for_function(
            "() => window.__classroom.drawn !== null", timeout=max(1.0, deadline - time.monotonic()) * 1000, polling=100
        )
    except Exception:
        return None
    return await page.evaluate(
        "() => { const s = window.__classroom; return s.action === null ? null : (s.drawn - s.action) / 1000; }"
    )


def tokens_of(ckpt):
    """Text → the tokens the app shows for it (the source: the rows and columns of the first attention kind)."""
    return lambda text: ckpt.tokenizer.encode(text, max_len=ckpt.config.max_len).tokens


def expected_labels(texts: list[str], tokenize) -> list[list[str]]:
    """Each text's heatmap axis values, as the app makes them: "0·tok", "1·tok", ... (Plotly-escaped)."""
    return [[plotly_text(label) for label in unique_labels(tokenize(text))] for text in texts]


def crosstalk(shown: list, expected: list[list[str]]) -> list[str]:
    """One line per session whose heatmap axes are not its own tokens (naming whose they are, if anyone's)."""
    problems = []
    for i, axes in enumerate(shown):
        if axes is not None and list(axes[0]) == expected[i] and list(axes[1]) == expected[i]:
            continue
        whose = [j for j, labels in enumerate(expected) if axes is not None and list(axes[0]) == labels]
        problems.append(f"session {i} shows " + (f"session {whose[0]}'s tokens" if whose else "tokens of no session's text"))
    return problems


@dataclass(frozen=True)
class Round:
    """One round: every session pressed Ctrl+Enter once."""

    seconds: list[float | None]  # per session, key press to its heatmap drawn; None: not drawn in time
    spread: float  # first to last key press, seconds
    cpu: Cpu | None  # from just before the presses until every session was idle again
    runs: int  # script runs counted in that window
    problems: list[str]


async def one_round(sessions: list[Session], texts: list[str], tokenize, server_pid: int) -> Round:
    """Type each session's text, press Ctrl+Enter in all at once, time each heatmap, check its tokens."""
    sel = PLOT.format(key=CHART)
    await asyncio.gather(*(s.page.locator(TEXTAREA).fill(t) for s, t in zip(sessions, texts)))  # focuses it too
    befores = await asyncio.gather(*(s.page.evaluate(SIGNATURE_JS, sel) for s in sessions))
    await asyncio.gather(*(s.page.evaluate(ARM_JS, [sel, b]) for s, b in zip(sessions, befores)))
    runs, cpu = sum(s.runs for s in sessions), cpu_now(server_pid)
    deadline = time.monotonic() + TIMEOUT_S
    await asyncio.gather(*(s.page.keyboard.press("Control+Enter") for s in sessions))
    seconds = await asyncio.gather(*(drawn_seconds(s.page, deadline) for s in sessions))
    idle = await asyncio.gather(
        *(wait_idle(s.page, max(1.0, deadline - time.monotonic()) * 1000) for s in sessions), return_exceptions=True
    )
    cpu = cpu_since(cpu, server_pid)
    runs = sum(s.runs for s in sessions) - runs
    pressed = await asyncio.gather(*(s.page.evaluate("() => window.__classroom.pressedAt") for s in sessions))
    shown = await asyncio.gather(*(s.page.evaluate(AXES_JS, sel) for s in sessions))
    problems = [
        f"session {i} still running {TIMEOUT_S:g} s after the key press" for i, e in enumerate(idle) if isinstance(e, Exception)
    ]
    problems += [f"session {i}: the page did not see its key press" for i, p in enumerate(pressed) if p is None]
    problems += crosstalk(shown, expected_labels(texts, tokenize))
    pressed = [p for p in pressed if p is not None]
    return Round(seconds, (max(pressed) - min(pressed)) / 1000 if pressed else float("nan"), cpu, runs, problems)


@dataclass
class Result:
    """All rounds of one app at one N, and the server's memory meanwhile."""

    rounds: list[Round] = field(default_factory=list)
    rss_peak_mb: float = 0.0  # sampled while the sessions were open
    rss_hwm_mb: float = 0.0  # the kernel's high-water mark since the server started

    @property
    def times(self) -> list[float]:
        return [t for r in self.rounds for t in r.seconds if t is not None]

    @property
    def not_drawn(self) -> int:
        return sum(t is None for r in self.rounds for t in r.seconds)

    @property
    def problems(self) -> list[str]:
        return [f"round {i + 1}: {p}" for i, r in enumerate(self.rounds) for p in r.problems]


async def measure(browsers, link: str, rounds: list[list[str]], tokenize, server_pid: int, viewport: dict) -> Result:
    """N sessions on `link` (N = texts per round), one round per entry of `rounds`; the server's memory sampled meanwhile."""
    n, out, peak = len(rounds[0]), Result(), [0.0]
    sampler = asyncio.create_task(sample_rss(server_pid, peak))
    gate = asyncio.Semaphore(OPEN_AT_ONCE)
    sessions = []
    try:
        sessions = await asyncio.gather(*(open_session(browsers[i % len(browsers)], link, viewport, gate) for i in range(n)))
        for i, texts in enumerate(rounds):
            try:
                r = await asyncio.wait_for(one_round(sessions, texts, tokenize, server_pid), TIMEOUT_S + 120)
            except TimeoutError:  # a page stopped answering: the rest of this N would not mean much
                out.rounds.append(Round([None] * n, float("nan"), None, 0, [f"did not finish within {TIMEOUT_S + 120:g} s"]))
                break
            out.rounds.append(r)
            drawn = [t for t in r.seconds if t is not None]
            note(f"round {i + 1}/{len(rounds)}: drawn {len(drawn)}/{n}, slowest {max(drawn, default=float('nan')):.2f} s")
        out.rss_hwm_mb = memory_mb(server_pid)[1]
    finally:
        sampler.cancel()
        out.rss_peak_mb = peak[0]
        await asyncio.gather(*(s.context.close() for s in sessions), return_exceptions=True)
    return out


def lengths(n: int, shift: int) -> list[int]:
    """N text lengths spread from SHORTEST to LONGEST tokens, rotated by `shift` (each round another session gets each)."""
    if n == 1:
        return [(SHORTEST + LONGEST) // 2]
    spread = [round(SHORTEST + (LONGEST - SHORTEST) * i / (n - 1)) for i in range(n)]
    return spread[shift % n :] + spread[: shift % n]


# ---------------------------------------------------------------------------------------------
# The run and the table.
# ---------------------------------------------------------------------------------------------


def row(label: str, n: int, r: Result, repeats: int) -> str:
    timed = [x for x in r.rounds if x.cpu is not None]
    runs = sum(x.runs for x in timed)
    server = sum(x.cpu.server for x in timed) / runs if runs else float("nan")
    presses = n * len(timed) or float("nan")
    browsers, harness = sum(x.cpu.browsers for x in timed) / presses, sum(x.cpu.harness for x in timed) / presses
    spread = max((x.spread for x in timed), default=float("nan"))
    t = r.times or [float("nan")]
    return (
        f"{label:<17} {n:>3} {len(r.times):>5}/{n * repeats:<4} {statistics.median(t):6.2f} {pct(t, 0.9):6.2f} {max(t):6.2f}"
        f" {spread:7.3f} {server:8.3f} {runs:>5} {browsers:8.2f} {harness:6.2f} {r.rss_peak_mb:7.0f} {r.rss_hwm_mb:6.0f}"
    )


HEADER = (
    f"{'':<17} {'N':>3} {'drawn':>10} {'p50 s':>6} {'p90 s':>6} {'max s':>6} {'spread':>7} {'CPU/run':>8} {'runs':>5}"
    f" {'browser':>8} {'harns':>6} {'RSS MB':>7} {'HWM':>6}"
)
LEGEND = """\
drawn: heatmaps drawn / sessions × rounds. p50, p90, max: seconds from a session's key press to its own heatmap,
timed in its page. spread: first to last key press of a round, seconds. CPU/run: the server's CPU seconds per
script run; runs: script runs counted (one per key press expected). browser, harns: CPU seconds per key press,
of all Chromium processes together and of Playwright's driver with this script. RSS: the server's peak resident
memory while the N sessions were open, MB; HWM: its high-water mark since it started."""


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("PASS" if ok else "MISS")


def slowest(r: Result | None) -> float | None:
    """The slowest session's seconds; infinite when one was not drawn at all."""
    return None if r is None else (float("inf") if r.not_drawn else max(r.times))


def targets(name: str, results: dict[tuple[str, int], Result]) -> list[str]:
    """The issue's targets for checkpoint `name`, measured value and PASS/MISS beside each."""
    at10, at30, floor30 = results.get((f"app ({name})", 10)), results.get((f"app ({name})", 30)), results.get(("floor", 30))
    problems = [f"N={n}, {p}" for (label, n), r in results.items() if label == f"app ({name})" for p in r.problems]
    mixed = [p for p in problems if " shows " in p]  # cross-talk (see `crosstalk`)
    rows = [
        (
            "30 sessions, every one drawn",
            f"{len(at30.times)}/{len(at30.times) + at30.not_drawn}" if at30 else "-",
            None if at30 is None else at30.not_drawn == 0,
        ),
        (
            f"30 sessions, slowest ≤ {FLOOR_FACTOR:g}× the floor's slowest",
            f"{slowest(at30):.2f} s vs {slowest(floor30):.2f} s" if at30 and floor30 else "-",
            None if not (at30 and floor30) else slowest(at30) <= FLOOR_FACTOR * slowest(floor30),
        ),
        (
            f"10 sessions, slowest ≤ {SLOWEST_AT_10_S:g} s",
            f"{slowest(at10):.2f} s" if at10 else "-",
            None if at10 is None else slowest(at10) <= SLOWEST_AT_10_S,
        ),
        (
            f"server RSS, 30 sessions on 30 texts ≤ {RSS_LIMIT_GB:g} GB",
            f"{at30.rss_peak_mb / 1024:.2f} GB" if at30 else "-",
            None if at30 is None else at30.rss_peak_mb / 1024 <= RSS_LIMIT_GB,
        ),
        ("every session drew its own tokens", f"{len(mixed)} mixed up", not mixed),
    ]
    return [f"  {name:<11} {what:<48} {value:>22}  {verdict(ok)}" for what, value, ok in rows] + [
        f"      {p}" for p in problems[:20]
    ]


async def run(args) -> None:
    from playwright.async_api import async_playwright

    entries = catalog.available()
    names = [n for n in args.checkpoint.split(",") if n]
    missing = [n for n in names if n not in entries]
    if missing:
        raise SystemExit(f"no checkpoint {', '.join(missing)} here (have: {', '.join(entries)})")
    sizes = [int(n) for n in args.sessions.split(",")]
    w, h = (int(v) for v in args.viewport.split("x"))
    checkpoints = {name: load_checkpoint(entries[name].path, device="cpu") for name in names}
    # Every text of the run is different: one per session, round and N (the floor types the same ones).
    flat = toy_texts(
        checkpoints[names[0]].tokenizer, [k for n in sizes for r in range(args.repeats) for k in lengths(n, r)], seed=9
    )
    texts, at = {}, 0
    for n in sizes:
        texts[n] = [flat[at + r * n : at + (r + 1) * n] for r in range(args.repeats)]
        at += n * args.repeats
    n_tokens = [len(tokens_of(checkpoints[names[0]])(t)) for t in flat]
    lines = [
        f"machine: {machine()}, load average {os.getloadavg()[0]:.2f} at start",
        f"browser: {subprocess.run([CHROMIUM, '--version'], capture_output=True, text=True).stdout.strip()}, "
        f"{args.browsers} process(es), one context per session, viewport {w}×{h}",
        f"{args.repeats} rounds per N; every session types its own Toy English text, new each round "
        f"({min(n_tokens)}–{max(n_tokens)} tokens for {names[0]}), and all press Ctrl+Enter at once",
        "",
        HEADER,
    ]

    results: dict[tuple[str, int], Result] = {}
    with contextlib.ExitStack() as stack:
        servers = {}  # label → (link, server pid, text → tokens shown)
        if not args.skip_floor:
            base, proc = stack.enter_context(serve("benchmarks/floor_app.py"))
            pid = proc.pid
            servers["floor"] = (f"{base}/", pid, str.split)
        if args.page_floor:  # the Attention page's elements without the app: what Streamlit charges for its shape
            base, proc = stack.enter_context(serve("benchmarks/floor_page_app.py"))
            servers["page floor"] = (f"{base}/", proc.pid, str.split)
        for name in names:
            base, proc = stack.enter_context(serve("app.py"))
            pid = proc.pid
            # A translator opens on cross attention (target rows); its source's own attention has the typed text's tokens
            # on both axes, which is what the check for cross-talk reads (as in ws_load). Its run still decodes.
            kind = {"kind": "encoder self"} if checkpoints[name].config.kind == "encoder-decoder" else {}
            servers[f"app ({name})"] = (
                f"{base}/attention?{urlencode({'checkpoint': name, **kind})}",
                pid,
                tokens_of(checkpoints[name]),
            )
        async with async_playwright() as pw:
            browsers = [await launch_chromium(pw) for _ in range(args.browsers)]
            try:
                for n in sizes:
                    for label, (link, pid, tokenize) in servers.items():
                        note(f"{label}, N={n}: opening {n} session(s)")
                        results[label, n] = await measure(browsers, link, texts[n], tokenize, pid, {"width": w, "height": h})
                        lines.append(row(label, n, results[label, n], args.repeats))
            finally:
                await asyncio.gather(*(b.close() for b in browsers), return_exceptions=True)

    lines += ["", LEGEND, "", f"targets (issue 9, on a 2-core machine; load average {os.getloadavg()[0]:.2f} at the end):"]
    for name in names:
        lines += targets(name, results)
    for n in sizes:
        floor, shaped = results.get(("floor", n)), results.get(("page floor", n))
        if floor and shaped:
            apps = "; ".join(
                f"{label} {slowest(results[label, n]) / slowest(shaped):.2f}× the page floor"
                for label in servers
                if label.startswith("app") and (label, n) in results
            )
            lines.append(f"  N={n}: page floor {slowest(shaped) / slowest(floor):.2f}× the floor; {apps}")
    floor_problems = [f"N={n}, {p}" for (label, n), r in results.items() if "floor" in label for p in r.problems]
    if floor_problems:  # the harness itself is wrong if the floor mixes sessions up
        lines += [f"  floor: {len(floor_problems)} problem(s)"] + [f"      {p}" for p in floor_problems[:20]]
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default=SESSIONS, help=f"comma-separated session counts (default {SESSIONS})")
    parser.add_argument("--checkpoint", default=CHECKPOINTS, help=f"comma-separated catalogue names (default {CHECKPOINTS})")
    parser.add_argument(
        "--repeats", type=int, default=REPEATS, help=f"rounds of simultaneous key presses per N (default {REPEATS})"
    )
    parser.add_argument("--skip-floor", action="store_true", help="leave out the bare Streamlit + Plotly floor")
    parser.add_argument(
        "--page-floor",
        action="store_true",
        help="also measure benchmarks/floor_page_app.py: the Attention page's elements without the app",
    )
    parser.add_argument("--browsers", type=int, default=1, help="Chromium processes to spread the sessions over (default 1)")
    parser.add_argument("--viewport", default="1280x800", help="each session's window, WxH (default 1280x800)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
