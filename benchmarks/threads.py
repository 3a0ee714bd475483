"""How model runs from many sessions should share the cores: torch threads per run × runs at once.

Run: `.venv/bin/python -m benchmarks.threads` (a printed table, about a minute; no browser, no Streamlit).

Each "session" is a Python thread, as Streamlit runs each session's script in a thread of its own.
Two loads, each under three policies:
- a class: N sessions at once, each tracing its own Toy English sentence on the shipped lm (what 30
  students pressing Ctrl+Enter together ask of the model);
- a long run and a class: one session traces a 1024-token text on a random 6-layer × 8-head encoder
  while the others trace short sentences: how long does a short run wait behind a long one?
Policies: torch's default (a thread per core in every run, any number of runs at once); one torch
thread per run with at most one run per core (what the app does: `server.shared.model_slot`); two torch
threads per run, one run at a time. Printed: p50 and max seconds per short run, and the wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import torch

from benchmarks.core import machine
from transformer.api import build_model, trace_text
from transformer.checkpoints import catalog
from transformer.checkpoints.format import Checkpoint, load_checkpoint
from transformer.checkpoints.tokenizer import train_tokenizer
from transformer.data.toy_english import generate_corpus
from transformer.model.config import ModelConfig

CORES = len(os.sched_getaffinity(0))
POLICIES = {
    "torch default, no limit": (CORES, None),
    f"1 torch thread, ≤ {CORES} runs at once (the app)": (1, CORES),
    f"{CORES} torch threads, 1 run at a time": (CORES, 1),
}


def long_model() -> tuple[Checkpoint, str]:
    texts = [s.text for s in generate_corpus(300, 0)]
    tok = train_tokenizer(texts, "encoder", vocab_size=300, min_frequency=1)
    cfg = ModelConfig(kind="encoder", vocab_size=tok.vocab_size, n_layers=6, n_heads=8, d_model=256, d_ff=1024, max_len=1024)
    model = build_model(cfg, seed=0).eval().requires_grad_(False)
    return Checkpoint(model=model, tokenizer=tok, name="long"), " ".join(s.text for s in generate_corpus(200, 5))


def run(policy: tuple[int, int | None], short: Checkpoint, texts: list[str], long: tuple[Checkpoint, str] | None):
    """Start every session at once; returns (seconds of each short run, wall seconds)."""
    threads, limit = policy
    torch.set_num_threads(threads)
    slots = threading.BoundedSemaphore(limit) if limit else None
    start = threading.Barrier(len(texts) + (1 if long else 0))
    times: list[float] = []
    lock = threading.Lock()

    def session(ckpt: Checkpoint, text: str, record: bool) -> None:
        start.wait()
        t0 = time.perf_counter()
        if slots:
            with slots:
                trace_text(ckpt, text)
        else:
            trace_text(ckpt, text)
        if record:
            with lock:
                times.append(time.perf_counter() - t0)

    workers = [threading.Thread(target=session, args=(short, t, True)) for t in texts]
    if long:
        workers.insert(0, threading.Thread(target=session, args=(*long, False)))
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return times, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    short = load_checkpoint(catalog.available()["lm"].path, device="cpu")
    sentences = [s.text for s in generate_corpus(args.sessions * args.repeats, 11)]
    long = long_model()
    print(machine())
    print(
        f"{args.sessions} sessions at once, {args.repeats} rounds; seconds per short run (p50 / max) and wall seconds a round\n"
    )
    print("| policy | a class: p50 / max, wall | a 1024-token run and a class: p50 / max, wall |")
    print("|---|---|---|")
    for name, policy in POLICIES.items():
        cells = []
        for with_long in (None, long):
            times, walls = [], []
            for r in range(args.repeats):
                texts = sentences[r * args.sessions : (r + 1) * args.sessions]
                t, wall = run(policy, short, texts, with_long)
                times += t
                walls.append(wall)
            cells.append(f"{statistics.median(times):.3f} / {max(times):.3f}, {statistics.median(walls):.2f}")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
