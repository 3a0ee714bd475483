"""How long the head-job scores take per shipped checkpoint: the Attention page's table waits for them once per model.

Run: `.venv/bin/python -m benchmarks.head_scores` (a printed table, not a test). Median of 3 runs after a
warm-up, torch on one thread as the app runs a session. Target: under 2 s a checkpoint (it was a timed
test once; on these shared machines timing belongs here).
"""

from __future__ import annotations

import torch

from benchmarks.core import machine, median_seconds
from transformer.checkpoints import catalog
from transformer.checkpoints.format import load_checkpoint
from transformer.why.head_jobs import head_scores

TARGET_S = 2.0


def main() -> None:
    torch.set_num_threads(1)
    print(machine())
    print(f"{'checkpoint':>12} {'seconds':>8}  target ≤ {TARGET_S:g} s")
    for name, entry in catalog.available().items():
        if entry.hf_dir:
            from transformer.checkpoints import importers  # MiniLM, when installed

            ckpt = importers.load_any(entry.path, device="cpu")
        else:
            ckpt = load_checkpoint(entry.path, device="cpu")
        seconds = median_seconds(lambda: head_scores(ckpt), repeats=3)
        print(f"{name:>12} {seconds:8.2f}  {'met' if seconds <= TARGET_S else 'MISSED'}")


if __name__ == "__main__":
    main()
