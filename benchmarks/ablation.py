"""What head ablation costs: one ablated rerun against a traced forward, and the full single-head sweep.

Run: `.venv/bin/python -m benchmarks.ablation` (a printed table, not a test). The shipped lm and
translator and, if installed, MiniLM; each measured with torch on 1 thread (what the app gives a
session) and on 2. Times are medians of several repeats after warm-up; traced and ablated
forwards run alternately, so a burst of load from another process hits both alike. On a shared,
busy machine the absolute numbers are noisy; the ratios less so.

Columns: a traced forward; the same forward rerun with one head knocked out (untraced, the fused
path) and its ratio; `ablation.ablate()` whole (clean and ablated forwards, and for the translator a
batched greedy decoding of both); the full single-head sweep (`ablation.sweep`, first metric).

Targets: an ablation rerun <= 2x a traced forward; a full sweep <= 1 s for lm and translator at
32 tokens, <= 5 s for MiniLM (6 layers x 12 heads = 72 heads) at 64 tokens.
"""

from __future__ import annotations

import time

import torch

from benchmarks.core import machine, median_seconds, paired_seconds
from transformer.api import streams
from transformer.checkpoints import catalog
from transformer.checkpoints.format import Checkpoint, load_checkpoint
from transformer.data import VOCABULARY
from transformer.why import ablation

SWEEP_TARGETS = {"lm": (32, 1.0), "translator": (32, 1.0), "minilm": (64, 5.0)}  # name -> (tokens, target seconds)
RERUN_TARGET = 2.0  # ablated rerun / traced forward


def load(name: str) -> Checkpoint | None:
    entry = catalog.available().get(name)
    if entry is None:
        return None
    if entry.hf_dir:
        from transformer.checkpoints import importers

        return importers.load_any(entry.path)
    return load_checkpoint(entry.path)


def text_of(ckpt: Checkpoint, n_tokens: int) -> str:
    """Toy English words (real words for MiniLM too) until the text is n_tokens long with specials."""
    words, i = [], 0
    while True:
        candidate = " ".join([*words, VOCABULARY[(7 * i) % len(VOCABULARY)]])
        if len(ckpt.tokenizer.encode(candidate).ids) > n_tokens:
            return " ".join(words)
        words.append(VOCABULARY[(7 * i) % len(VOCABULARY)])
        i += 1


@torch.inference_mode()
def measure(name: str, ckpt: Checkpoint) -> dict:
    n_tokens, target = SWEEP_TARGETS[name]
    text = text_of(ckpt, n_tokens)
    tokens = streams(ckpt, text, text if ckpt.config.kind == "encoder-decoder" else None)
    n_src = len(tokens[0].ids)
    source, target_stream = tokens
    inputs = (torch.tensor([source.ids]),) + (() if target_stream is None else (torch.tensor([target_stream.ids]),))
    heads = ablation.all_heads(ckpt.config)
    middle = heads[len(heads) // 2]
    knock = ablation.head_ablation(ckpt.config, [[middle]])
    traced, ablated, ratio = paired_seconds(
        lambda: ckpt.model(*inputs, trace=True), lambda: ckpt.model(*inputs, ablate=knock), repeats=15
    )
    # The page's whole call: before and after (and for a translator two greedy decodings, batched).
    full = median_seconds(lambda: ablation.ablate(ckpt, tokens, [middle]), repeats=5)
    metric = ablation.metrics_for(ckpt.config)[0]
    sweep = median_seconds(lambda: ablation.sweep(ckpt, tokens, metric), repeats=5)
    return dict(
        tokens=n_src,
        heads=len(heads),
        traced=traced,
        ablated=ablated,
        ratio=ratio,
        full=full,
        metric=metric,
        sweep=sweep,
        target=target,
    )


def main() -> None:
    t_start = time.perf_counter()
    print(f"machine: {machine()}")
    print("noisy: other processes share this machine; medians of repeats, rerun for firmer numbers")
    loaded = {name: ckpt for name in SWEEP_TARGETS if (ckpt := load(name)) is not None}
    missing = [name for name in SWEEP_TARGETS if name not in loaded]
    if missing:
        print(f"not installed, skipped: {', '.join(missing)}")
    print(
        f"\n{'model':>10} {'threads':>7} {'tokens':>6} {'heads':>5} {'traced ms':>9} {'ablated ms':>10}"
        f" {'ratio':>6} (<= {RERUN_TARGET:.0f}x) {'ablate() ms':>11} {'sweep s':>8} {'target':>6} {'metric':>7}"
    )
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, ckpt in loaded.items():
            r = measure(name, ckpt)
            ok_rerun = "ok" if r["ratio"] <= RERUN_TARGET else "MISSED"
            ok_sweep = "ok" if r["sweep"] <= r["target"] else "MISSED"
            print(
                f"{name:>10} {threads:>7} {r['tokens']:>6} {r['heads']:>5} {r['traced'] * 1e3:>9.2f} {r['ablated'] * 1e3:>10.2f}"
                f" {r['ratio']:>5.2f}x {ok_rerun:>7} {r['full'] * 1e3:>11.1f} {r['sweep']:>8.3f} {r['target']:>5.1f}s {ok_sweep:>6} {r['metric']:>7}"
            )
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
