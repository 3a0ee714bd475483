"""What the logit lens and gradient saliency cost next to the forward pass they explain.

Run: `.venv/bin/python -m benchmarks.lens_saliency [--gpt2]` (a printed table, not a test; `--gpt2` adds a
randomly initialised GPT-2-small-sized decoder, about 5 minutes more on 2 cores, most of it integrated
gradients). One torch thread, as the app runs each session's model call (`server.shared.model_slot`);
the last table repeats the random 4-layer model at 128 tokens with 2 threads. Every ratio is measured in the same process, the two sides alternating (see
`benchmarks.core.paired_seconds`), so load from other processes mostly cancels; the absolute times
still move with it.

Targets: the lens at 128 tokens ≤ 0.3 s; gradient × input ≤ 3 × an untraced forward.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.core import machine, median_seconds, paired_seconds
from transformer.api import build_model
from transformer.checkpoints.format import Checkpoint, load_checkpoint
from transformer.model.config import ModelConfig
from transformer.model.trace import Stream, Trace
from transformer.why.lens import logit_lens
from transformer.why.saliency import gradient_x_input, integrated_gradients


class NumberedTokens:
    """A stand-in tokenizer for random models: token i is written <i>."""

    def id_to_token(self, i: int) -> str:
        return f"<{i}>"


def random_checkpoint(name: str, **config) -> Checkpoint:
    model = build_model(ModelConfig(kind="decoder", **config), seed=0).eval().requires_grad_(False)
    return Checkpoint(model=model, tokenizer=NumberedTokens(), name=name)


def stream_of(ckpt: Checkpoint, T: int) -> Stream:
    ids = torch.randint(6, ckpt.model.cfg.vocab_size, (T,), generator=torch.Generator().manual_seed(T)).tolist()
    tok = ckpt.tokenizer
    return Stream(text="", ids=tuple(ids), tokens=tuple(tok.id_to_token(i) for i in ids), offsets=((0, 0),) * T)


@torch.inference_mode()
def traced(ckpt: Checkpoint, stream: Stream) -> Trace:
    """What trace_text does after tokenizing: a traced forward, the trace on the CPU, the stream attached."""
    _, trace = ckpt.model(torch.tensor([stream.ids], device=ckpt.model.device), trace=True)
    return Trace(encoder=None, decoder=trace.decoder, logits=trace.logits, probs=trace.probs, source=stream)


@torch.inference_mode()
def untraced(ckpt: Checkpoint, stream: Stream) -> None:
    ckpt.model(torch.tensor([stream.ids], device=ckpt.model.device))


def measure(ckpt: Checkpoint, T: int, repeats: int, ig_repeats: int) -> dict[str, float]:
    stream = stream_of(ckpt, T)
    trace = traced(ckpt, stream)
    forward, traced_s, _ = paired_seconds(lambda: untraced(ckpt, stream), lambda: traced(ckpt, stream), repeats, warmup=1)
    _, lens_s, lens_ratio = paired_seconds(lambda: traced(ckpt, stream), lambda: logit_lens(ckpt, trace), repeats, warmup=1)
    _, gxi_s, gxi_ratio = paired_seconds(
        lambda: untraced(ckpt, stream), lambda: gradient_x_input(ckpt, stream), repeats, warmup=1
    )
    ig = integrated_gradients(ckpt, stream)
    ig_s = median_seconds(lambda: integrated_gradients(ckpt, stream), ig_repeats)
    return {
        "forward": forward,
        "traced": traced_s,
        "lens": lens_s,
        "lens÷traced": lens_ratio,
        "gxi": gxi_s,
        "gxi÷forward": gxi_ratio,
        "ig": ig_s,
        "ig÷forward": ig_s / forward,
        "ig steps": ig.steps,
        "ig gap": ig.completeness_gap,
        "ig change": ig.prediction.log_prob - ig.baseline_log_prob,
    }


HEADER = (
    f"{'model':<34} {'T':>4} {'fwd ms':>8} {'traced ms':>10} {'lens ms':>9} {'lens÷tr':>8} {'g×i ms':>8}"
    f" {'g×i÷fwd':>8} {'IG ms':>9} {'IG÷fwd':>7} {'IG gap / Δf':>16}"
)


def row(name: str, T: int, m: dict[str, float]) -> str:
    return (
        f"{name:<34} {T:>4} {m['forward'] * 1e3:>8.1f} {m['traced'] * 1e3:>10.1f} {m['lens'] * 1e3:>9.1f}"
        f" {m['lens÷traced']:>7.2f}x {m['gxi'] * 1e3:>8.1f} {m['gxi÷forward']:>7.2f}x {m['ig'] * 1e3:>9.0f}"
        f" {m['ig÷forward']:>6.0f}x {m['ig gap']:>+7.3f}/{m['ig change']:<+8.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpt2", action="store_true", help="also a random GPT-2-small-sized decoder (minutes)")
    args = parser.parse_args()
    t_start = time.perf_counter()
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    print("batch 1; lens = top-5 and next-token probability for every row (embed + each sublayer) × position;")
    print("g×i = gradient × input (one forward + one backward); IG = integrated gradients at the default 64 steps\n")
    lm = load_checkpoint("assets/lm.safetensors")
    lm_cfg = lm.model.cfg
    small = random_checkpoint("random", vocab_size=8000, n_layers=4, n_heads=4, d_model=256, d_ff=1024, max_len=512)
    models = [
        (f"shipped lm ({lm_cfg.n_layers}L d{lm_cfg.d_model} V{lm_cfg.vocab_size})", lm, (lm_cfg.max_len,)),
        ("random 4L d256 V8000", small, (128, 512)),
    ]
    if args.gpt2:
        gpt2 = random_checkpoint(
            "gpt2-sized",
            vocab_size=50257,
            n_layers=12,
            n_heads=12,
            d_model=768,
            d_ff=3072,
            max_len=1024,
            positional="learned",
            activation="gelu_tanh",
            scale_embeddings=False,
            final_norm=True,
        )
        models.append(("random GPT-2-small-sized 12L d768", gpt2, (128,)))

    print("1 torch thread (the app's setting)")
    print(HEADER)
    for name, ckpt, lengths in models:
        for T in lengths:
            big = ckpt.model.cfg.d_model >= 768 or T >= 512
            print(row(name, T, measure(ckpt, T, repeats=3 if big else 10, ig_repeats=1 if big else 3)), flush=True)
    if args.gpt2:
        gpt2_stream = stream_of(gpt2, 128)
        trace = traced(gpt2, gpt2_stream)
        window = median_seconds(lambda: logit_lens(gpt2, trace, positions=range(120, 128)), 3)
        print(f"GPT-2-sized lens, a window of 8 of the 128 positions: {window * 1e3:.0f} ms")

    torch.set_num_threads(2)
    print("\n2 torch threads, 128 tokens")
    print(HEADER)
    name, ckpt, _ = models[1]
    print(row(name, 128, measure(ckpt, 128, repeats=10, ig_repeats=3)), flush=True)
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
