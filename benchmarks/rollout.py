"""How long attention rollout and attention flow take, beside the traced forward that made their weights.

Run: `.venv/bin/python -m benchmarks.rollout` (a printed table, not a test). Models are random
(MiniLM-sized: 6 layers × 12 heads, d_model 384): rollout's time depends only on the shapes, and flow
is slowest on the near-uniform attention of an untrained model, so its times are a worst case.
Targets: rollout at 512 tokens ≤ 0.5 s; flow at its limits (transformer.why.rollout.flow_max_tokens) ≤ ~2-3 s.
Timed on one torch thread, as the app runs every model call.
`--long` adds rollout at 2048 tokens (a 2048-token trace of this model holds ~2.5 GB; we time rollout on
random weights of the same shape, 4 heads, instead).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from benchmarks.core import machine
from transformer import ModelConfig, build_model
from transformer.why.rollout import FLOW_MAX_STEPS, attention_flow, cross_flow, flow_max_tokens, rollout

N_LAYERS, N_HEADS, D_MODEL, D_FF, VOCAB = 6, 12, 384, 1536, 1000


def seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn` over `repeats` runs."""
    return timed(fn, repeats, warmup)[0]


def timed(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median wall and CPU seconds of `fn` over `repeats` runs.

    On one thread, CPU time is what the wall time would be on an idle core: it shows the cost apart from
    whatever else shares the machine (our 2-core server often runs several jobs at once).
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def model(kind: str = "encoder", n_layers: int = N_LAYERS, max_len: int = 512):
    cfg = ModelConfig(
        kind=kind, vocab_size=VOCAB, n_layers=n_layers, n_heads=N_HEADS, d_model=D_MODEL, d_ff=D_FF, max_len=max_len
    )
    return build_model(cfg, seed=0).eval().requires_grad_(False)


def ids_of(T: int) -> torch.Tensor:
    return torch.randint(6, VOCAB, (1, T), generator=torch.Generator().manual_seed(T))


def stack_weights(stack, sub: str = "self_attn") -> list[torch.Tensor]:
    return [getattr(layer, sub).weights[0] for layer in stack.layers]  # each (H, T, T)


@torch.inference_mode()
def main() -> None:
    t_start = time.perf_counter()
    torch.set_num_threads(1)  # as the app runs every model call (server/shared.py: one torch thread per session run)
    print(f"machine: {machine()}")
    print(f"model: random encoder, n_layers={N_LAYERS}, n_heads={N_HEADS}, d_model={D_MODEL}, d_ff={D_FF}, batch 1")

    print("\nrollout (mean over heads, all layers) vs the traced forward of the same input (target: <= 0.5 s at 512)")
    print(f"{'tokens':>8} {'traced forward':>15} {'rollout':>10} {'rollout cpu':>12} {'rollout/forward':>16}")
    m = model()
    for T in (16, 128, 512):
        ids = ids_of(T)
        n = {16: 20, 128: 10}.get(T, 5)
        forward = seconds(lambda: m(ids, trace=True), n)
        weights = stack_weights(m(ids, trace=True)[1].encoder)
        roll, cpu = timed(lambda: rollout(weights), n)
        print(f"{T:>8} {forward * 1e3:>13.1f}ms {roll * 1e3:>8.1f}ms {cpu * 1e3:>10.1f}ms {roll / forward:>15.2f}x")
    if "--long" in sys.argv[1:]:
        weights = torch.rand(N_LAYERS, 4, 2048, 2048, generator=torch.Generator().manual_seed(0))
        weights /= weights.sum(-1, keepdim=True)
        print(f"{2048:>8} {'(not traced)':>15} {seconds(lambda: rollout(weights), 2) * 1e3:>8.1f}ms   (4 heads)")
        del weights

    print("\nattention flow at its limits (networkx preflow-push past 2 layers; a closed form through 1-2)")
    print(f"{'graph':>34} {'traced forward':>15} {'flow':>10} {'flow cpu':>10}")
    cases = [(L, flow_max_tokens(L)) for L in range(FLOW_MAX_STEPS, 1, -1)]
    for L, T in cases:
        m = model(n_layers=L)
        ids = ids_of(T)
        forward = seconds(lambda: m(ids, trace=True), 3)
        weights = stack_weights(m(ids, trace=True)[1].encoder)
        flow, cpu = timed(lambda: attention_flow(weights), 1, warmup=0)
        print(f"{f'{L} layers × {T} tokens':>34} {forward * 1e3:>13.1f}ms {flow:>9.2f}s {cpu:>9.2f}s")

    # cross: 2 encoder layers + 2 decoder layers = 6 steps on the joint graph of source + target tokens
    m = model("encoder-decoder", n_layers=2, max_len=64)
    N = flow_max_tokens(6)
    S, T = N - N // 2, N // 2
    src, tgt = ids_of(S), ids_of(T)
    forward = seconds(lambda: m(src, tgt, trace=True), 3)
    trace = m(src, tgt, trace=True)[1]
    enc, dec, crs = stack_weights(trace.encoder), stack_weights(trace.decoder), stack_weights(trace.decoder, "cross_attn")
    flow, cpu = timed(lambda: cross_flow(enc, dec, crs), 1, warmup=0)
    print(f"{f'cross, 2+2 layers, {S}+{T} tokens':>34} {forward * 1e3:>13.1f}ms {flow:>9.2f}s {cpu:>9.2f}s")

    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
