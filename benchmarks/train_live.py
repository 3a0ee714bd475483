"""Train in the browser, measured: the reverse preset's time and accuracy, typing while a job trains, snapshot latency.

Run: `.venv/bin/python -m benchmarks.train_live` (a printed report, not a test; progress on stderr; a few
minutes). `--no-browser` runs only the first part.

1. The "reverse in under a minute" preset through the job runner (`transformer/train/jobs.py`), as the
   app starts it: its own process, one torch thread, lower priority. Wall time from submitting to the
   final status (the process start, data, tokenizer, training, the held-out evaluation and the
   checkpoint included); exact match on the trainer's held-out split (500 sequences), and again on
   2000 sequences from a seed no job uses.
2. `streamlit run app.py` and two Chromium sessions on the same 2 cores: one watches the Training
   page, the other types Toy English texts on the Attention page (translator), each different, and
   presses Ctrl+Enter. Seconds from the key press to its new heatmap, timed in the page as
   benchmarks/browser.py does: first with no job, then while the watcher's reverse preset trains
   (same server, same run).
3. In the same run: for every snapshot, the time from the job writing it (its status records when
   the file was in place) to the watcher's page drawing one more panel in the snapshot strip (the
   page notes `Date.now()` when it sees the panel; one clock, one machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from benchmarks.browser import toy_texts
from benchmarks.core import machine
from tests.browser import (
    VIEWPORT,
    arm_action,
    exceptions,
    launch_chromium,
    seconds_since_action,
    serve,
    signature,
    type_text,
    wait_changed,
    wait_idle,
    wait_plot,
)
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint
from transformer.data.algorithmic import reverse_examples
from transformer.data.tasks import get_task
from transformer.train import jobs
from transformer.train.metrics import exact_match

PRESET = "reverse in under a minute"
FRESH_SEED = 987_654_321  # a held-out seed no job uses (jobs use data seeds 0..2^31 through split_seed)

# The watcher page notes when the snapshot strip first shows each number of panels.
SNAPSHOT_WATCH_JS = """() => {
  window.__snapSeen = {};
  setInterval(() => {
    const g = document.querySelector('.st-key-tj_strip .js-plotly-plot');
    const n = g && g.data ? g.data.length : 0;
    if (n && !(n in window.__snapSeen)) window.__snapSeen[n] = Date.now();
  }, 10);
}"""


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def reverse_preset() -> dict:
    """Part 1: the preset through a job runner of this process."""
    runner = jobs.JobRunner(jobs.Limits(), threads=1)
    try:
        spec = jobs.make_spec(jobs.PRESETS[PRESET])
        t0 = time.perf_counter()
        job = runner.wait(runner.submit(spec).id, 600)
        wall = time.perf_counter() - t0
        if job.state != "done":
            raise RuntimeError(f"the preset's job {job.state}: {job.reason}")
        ckpt = load_checkpoint(job.checkpoint, device="cpu")
        fresh = exact_match(ckpt.model, ckpt.tokenizer, get_task("reverse"), reverse_examples(2000, FRESH_SEED))
        return {
            "spec": spec.describe(),
            "wall_s": wall,
            "training_s": job.elapsed_s,
            "steps_per_s": job.steps_per_s,
            "cpu_s": job.cpu_s,
            "exact_match": job.metrics["exact_match"],
            "n": job.metrics["n"],
            "fresh_exact_match": fresh["exact_match"],
            "fresh_n": fresh["n"],
        }
    finally:
        runner.close()


def job_status(server_pid: int) -> dict:
    """The first job's status.json in the server's private folder (this benchmark runs as the same user)."""
    for folder in Path("/tmp").glob(f"{jobs.JOBS_PREFIX}{server_pid}-*"):
        return jobs.read_json(folder / "job-0001" / "status.json")
    return {}


def browser_part(rounds: int) -> dict:
    """Parts 2 and 3: one server, a watcher and a typist."""
    from playwright.sync_api import sync_playwright

    translator = load_checkpoint(catalog.available()["translator"].path, device="cpu")
    texts = toy_texts(translator.tokenizer, [12, 20, 28, 16, 24, 10, 30, 18, 22, 14, 26, 8][: 2 * rounds + 1] * 1, seed=11)
    env = {catalog.NO_MINILM_ENV: "1", catalog.ASSETS_ENV: ""}
    with serve("app.py", env, log=Path("/tmp/attnviz-train-live-bench.log")) as (base, proc), sync_playwright() as pw:
        browser = launch_chromium(pw)
        watcher = browser.new_context(viewport=VIEWPORT).new_page()
        typist = browser.new_context(viewport=VIEWPORT).new_page()
        for pg in (watcher, typist):
            pg.set_default_timeout(180_000)
        watcher.goto(base + "/training?checkpoint=translator")
        watcher.wait_for_selector(".st-key-tj_train button")
        wait_idle(watcher)
        typist.goto(base + "/attention?checkpoint=translator")
        wait_plot(typist, "attn_heatmap")
        wait_idle(typist)

        def typed(text: str) -> float:
            before = signature(typist, "attn_heatmap")
            arm_action(typist, "keydown", "Enter")
            type_text(typist, text)
            wait_changed(typist, "attn_heatmap", before, timeout_ms=120_000)
            seconds = seconds_since_action(typist)
            wait_idle(typist)
            return seconds

        typed(texts[0])  # warm-up: the first run of a page pays for imports and figure code
        idle = []
        for text in texts[1 : rounds + 1]:
            idle.append(typed(text))
            note(f"idle: {idle[-1]:.2f} s")
            time.sleep(0.5)

        watcher.evaluate(SNAPSHOT_WATCH_JS)
        t0 = time.perf_counter()
        watcher.locator(".st-key-tj_train button").click()
        while job_status(proc.pid).get("step", 0) < 1:  # training has begun (not the process start or data)
            time.sleep(0.1)
        busy = []
        for text in texts[rounds + 1 :]:
            if job_status(proc.pid).get("state") != "running":
                break
            busy.append(typed(text))
            note(f"while training: {busy[-1]:.2f} s (job at step {job_status(proc.pid).get('step')})")
            time.sleep(0.5)
        while job_status(proc.pid).get("state") in ("queued", "running", None):
            time.sleep(0.2)
        status = job_status(proc.pid)
        wall = time.perf_counter() - t0
        watcher.wait_for_selector("text=Open it in the sidebar", timeout=60_000)
        time.sleep(1.0)
        seen = {int(k): v / 1000 for k, v in watcher.evaluate("() => window.__snapSeen").items()}
        written = status.get("snapshot_times", [])
        latency = [seen[n] - written[n - 1] for n in range(1, len(written) + 1) if n in seen]
        problems = exceptions(watcher) + exceptions(typist)
        browser.close()
    return {
        "idle": idle,
        "busy": busy,
        "app_job_wall_s": wall,
        "app_job_state": status.get("state"),
        "app_job_exact_match": status.get("metrics", {}).get("exact_match"),
        "app_job_steps_per_s": status.get("steps_per_s"),
        "snapshot_latency": latency,
        "snapshots": len(written),
        "problems": problems,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_live", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="texts typed idle, and (at most) while training")
    p.add_argument("--no-browser", action="store_true", help="only the preset's time and accuracy")
    args = p.parse_args()
    print(f"machine: {machine()}")
    note("part 1: the reverse preset through the job runner…")
    r = reverse_preset()
    print(
        f"reverse preset ({r['spec']}): {r['wall_s']:.1f} s wall from submit to done (process start to final status "
        f"{r['training_s']:.1f} s, of which {r['cpu_s']:.1f} s on the CPU; {r['steps_per_s']:.1f} steps/s); held-out exact match {r['exact_match']:.3f} "
        f"(n={r['n']}), on {r['fresh_n']} fresh sequences {r['fresh_exact_match']:.3f}; "
        f"target ≤ 60 s and ≥ 0.99: {'met' if r['wall_s'] <= 60 and r['exact_match'] >= 0.99 else 'MISSED'}"
    )
    if args.no_browser:
        return
    note("parts 2 and 3: the app, a watcher and a typist…")
    b = browser_part(args.rounds)
    idle, busy = statistics.median(b["idle"]), statistics.median(b["busy"]) if b["busy"] else float("nan")
    print(
        f"typing → heatmap (translator, Attention page): idle median {idle:.2f} s (max {max(b['idle']):.2f}), "
        f"while training median {busy:.2f} s (max {max(b['busy'], default=float('nan')):.2f}, {len(b['busy'])} texts); "
        f"ratio {busy / idle:.2f}, target ≤ 2: {'met' if busy <= 2 * idle else 'MISSED'}"
    )
    lat = b["snapshot_latency"]
    print(
        f"snapshot written → drawn on the watcher's page: {len(lat)} of {b['snapshots']} snapshots, median "
        f"{statistics.median(lat) if lat else float('nan'):.2f} s, max {max(lat, default=float('nan')):.2f} s; "
        f"target ≤ 1 s: {'met' if lat and max(lat) <= 1 else 'MISSED'} (each: {', '.join(f'{x:.2f}' for x in lat)})"
    )
    print(
        f"the preset started from the page: {b['app_job_state']} in {b['app_job_wall_s']:.1f} s from the click "
        f"({b['app_job_steps_per_s'] or 0:.1f} steps/s, with two browsers on the same cores), exact match "
        f"{b['app_job_exact_match']}"
    )
    if b["problems"]:
        print("exceptions on the pages:", json.dumps(b["problems"])[:500])


if __name__ == "__main__":
    main()
