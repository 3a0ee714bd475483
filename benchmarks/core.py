"""How much tracing costs, how we compare with PyTorch's own encoder, and how big a trace is.

Run: `.venv/bin/python -m benchmarks.core` (a printed table, not a test). Every ratio is measured
in the same process, with warm-up and the median of several repeats, so machine noise mostly cancels.

Most of what tracing costs at short lengths is not arithmetic but fresh memory: a trace keeps
~1.8 MiB per layer at 128 tokens, and glibc hands freed blocks back to the kernel, so every traced
call page-faults its trace in again. The last table repeats the overhead measurement in a child
process whose allocator keeps freed memory (MALLOC_* variables below) to show that split.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from transformer.model.config import ModelConfig
from transformer.model.network import TransformerModel

N_LAYERS, N_HEADS, D_MODEL, D_FF, MAX_LEN, VOCAB = 6, 8, 256, 1024, 2048, 1000
LENGTHS = (16, 128, 512, 2048)
# glibc: serve blocks up to 32 MiB from the heap and never trim it, so freed traces are reused.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def machine() -> str:
    """CPU model, core count and torch version, for the table's first line."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def paired_seconds(a, b, repeats: int, warmup: int = 2) -> tuple[float, float, float]:
    """Median seconds of `a` and of `b`, and the median of the per-repeat ratio b/a.

    The two run alternately, so a burst of load from another process hits both sides alike.
    """
    for _ in range(warmup):
        a()
        b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((a, times_a), (b, times_b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    ratio = statistics.median(tb / ta for ta, tb in zip(times_a, times_b))
    return statistics.median(times_a), statistics.median(times_b), ratio


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def repeats_for(T: int) -> int:
    return {16: 30, 128: 15, 512: 7}.get(T, 3)


def build(norm_first: bool = True) -> TransformerModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        kind="encoder",
        vocab_size=VOCAB,
        n_layers=N_LAYERS,
        n_heads=N_HEADS,
        d_model=D_MODEL,
        d_ff=D_FF,
        max_len=MAX_LEN,
        norm_first=norm_first,
    )
    return TransformerModel(cfg).eval().requires_grad_(False)


def reference_encoder(norm_first: bool) -> nn.TransformerEncoder:
    """PyTorch's encoder of the same size (its fused fast path is on: eval mode, no grad)."""
    layer = nn.TransformerEncoderLayer(D_MODEL, N_HEADS, D_FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    norm = nn.LayerNorm(D_MODEL) if norm_first else None  # our pre-LN encoder ends with a LayerNorm too
    return nn.TransformerEncoder(layer, N_LAYERS, norm=norm, enable_nested_tensor=False).eval().requires_grad_(False)


def ids_of(T: int) -> torch.Tensor:
    return torch.randint(6, VOCAB, (1, T), generator=torch.Generator().manual_seed(T))


@torch.inference_mode()
def trace_overhead(model: TransformerModel, lengths=LENGTHS) -> list[tuple[int, float, float, float]]:
    rows = []
    for T in lengths:
        ids = ids_of(T)
        n = repeats_for(T)
        rows.append((T, *paired_seconds(lambda: model(ids), lambda: model(ids, trace=True), n)))
    return rows


@torch.inference_mode()
def versus_reference(norm_first: bool) -> list[tuple[int, float, float, float]]:
    model = build(norm_first)
    ref = reference_encoder(norm_first)
    rows = []
    for T in (128, 512):
        ids = ids_of(T)
        n = repeats_for(T)
        # The reference gets the same embedded input; the lookup itself is a few microseconds.
        x = model.encoder.embed(model.tok_embed(ids))
        theirs, ours, ratio = paired_seconds(lambda: ref(x), lambda: model(ids), n)
        rows.append((T, ours, theirs, ratio))
    return rows


@torch.inference_mode()
def trace_sizes(model: TransformerModel) -> list[tuple[int, int, int, int]]:
    rows = []
    for T in (128, 2048):
        _, trace = model(ids_of(T), trace=True)
        full = trace.nbytes()
        half = trace.map_tensors(lambda t: t.half() if t.is_floating_point() else t).nbytes()
        one_layer = sum(t.numel() * t.element_size() for name, t in trace.named_tensors().items() if ".layers.0." in name)
        rows.append((T, full, half, one_layer))
    return rows


@torch.inference_mode()
def light_pass(model: TransformerModel) -> list[tuple[int, float, float, float, float, int, int]]:
    """The model view's light pass (forward(pool=64)) against the untraced and the fully traced forward."""
    rows = []
    for T in (512, 2048):
        ids = ids_of(T)
        n = repeats_for(T)
        plain, pooled, ratio_plain = paired_seconds(lambda: model(ids), lambda: model(ids, pool=64), n)
        traced, pooled_again, ratio_traced = paired_seconds(lambda: model(ids, trace=True), lambda: model(ids, pool=64), n)
        maps = model(ids, pool=64)[1]
        kept = sum(m.numel() * m.element_size() for m in maps.values())
        full = model(ids, trace=True)[1].nbytes()
        rows.append((T, plain, traced, statistics.median([pooled, pooled_again]), ratio_plain, ratio_traced, kept, full))
    return rows


def mib(n: int) -> str:
    return f"{n / 2**20:8.1f} MiB"


def print_overhead(model: TransformerModel, lengths=LENGTHS) -> None:
    print(f"{'tokens':>8} {'untraced ms':>12} {'traced ms':>10} {'ratio':>7}")
    for T, plain, traced, ratio in trace_overhead(model, lengths):
        print(f"{T:>8} {plain * 1e3:>12.2f} {traced * 1e3:>10.2f} {ratio:>6.2f}x")


def main() -> None:
    if sys.argv[1:] == ["--overhead-only"]:  # the child process of the last table
        print_overhead(build(), (128, 512))
        return
    t_start = time.perf_counter()
    print(f"machine: {machine()}")
    print(f"model: encoder, n_layers={N_LAYERS}, n_heads={N_HEADS}, d_model={D_MODEL}, d_ff={D_FF}, max_len={MAX_LEN}, batch 1")
    model = build()

    print("\ntraced vs untraced forward (target: <= 1.30x at 128 tokens)")
    print_overhead(model)

    print("\nours (untraced) vs torch.nn.TransformerEncoder of the same size (target: <= 1.00x)")
    print(f"{'norm':>8} {'tokens':>8} {'ours ms':>9} {'torch ms':>9} {'ratio':>7}")
    for norm_first in (True, False):
        for T, ours, theirs, ratio in versus_reference(norm_first):
            label = "pre-LN" if norm_first else "post-LN"
            print(f"{label:>8} {T:>8} {ours * 1e3:>9.2f} {theirs * 1e3:>9.2f} {ratio:>6.2f}x")

    print("\nbytes of one full trace (trace.nbytes())")
    print(f"{'tokens':>8} {'float32':>13} {'float16':>13} {'layer 0 only':>13}")
    for T, full, half, one in trace_sizes(model):
        print(f"{T:>8} {mib(full):>13} {mib(half):>13} {mib(one):>13}")

    print("\nthe model view's light pass: forward(pool=64) keeps only block-max pooled weights")
    print(
        f"{'tokens':>8} {'untraced':>10} {'traced':>10} {'pooled':>10} {'÷untraced':>10} {'÷traced':>8} {'kept':>13} {'trace':>13}"
    )
    for T, plain, traced, pooled, r_plain, r_traced, kept, full in light_pass(model):
        print(
            f"{T:>8} {plain * 1e3:>8.1f}ms {traced * 1e3:>8.1f}ms {pooled * 1e3:>8.1f}ms {r_plain:>9.2f}x {r_traced:>7.2f}x"
            f" {mib(kept):>13} {mib(full):>13}"
        )

    settings = " ".join(f"{k}={v}" for k, v in KEEP_FREED_MEMORY.items())
    print(f"\ntraced vs untraced again, allocator keeping freed memory ({settings})")
    sys.stdout.flush()
    subprocess.run(
        [sys.executable, "-m", "benchmarks.core", "--overhead-only"], env={**os.environ, **KEEP_FREED_MEMORY}, check=True
    )
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
