"""One shared model, many browser sessions: concurrent traces must not see each other's numbers."""

from __future__ import annotations

import random
import threading

import pytest
import torch
from numerics import assert_close

from transformer.api import trace_text

pytestmark = pytest.mark.numerics

N_THREADS = 16
WORDS = "the a cat cats dog dogs bird sat sleep sings near on table book teacher wrote green field happy".split()


def texts() -> list[str]:
    """16 different texts, 3 to 18 words long."""
    out = [" ".join(random.Random(i).choices(WORDS, k=3 + i)) for i in range(N_THREADS)]
    assert len(set(out)) == N_THREADS
    return out


@pytest.mark.parametrize("kind", ["encoder-decoder", "encoder", "decoder"])
def test_concurrent_traces_equal_sequential_ones(make_checkpoint, kind):
    ckpt = make_checkpoint(kind, seed=5)
    before = {k: v.clone() for k, v in ckpt.model.state_dict().items()}
    inputs = texts()
    # The decoder text of an encoder-decoder is given, so every trace does the same amount of work.
    targets = [" ".join(t.split()[::-1]) if kind == "encoder-decoder" else None for t in inputs]
    expected = [trace_text(ckpt, text, target) for text, target in zip(inputs, targets)]

    results: list = [None] * N_THREADS
    errors: list = []
    start = threading.Barrier(N_THREADS)

    def work(i: int) -> None:
        try:
            start.wait(timeout=30)
            results[i] = trace_text(ckpt, inputs[i], targets[i])
        except Exception as e:  # surfaced below with the thread's index
            errors.append((i, e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert all(not t.is_alive() for t in threads)

    # 16 traces at once against one at a time is another computation (torch may split a sum otherwise when other threads
    # are busy): equal to float32 rounding through the whole forward, 2 sublayers per encoder layer, 2 or 3 (with
    # cross-attention) per decoder layer, and the unembedding.
    cfg = ckpt.config
    depth = 2 * cfg.n_layers if cfg.has_encoder else 0
    if cfg.has_decoder:
        depth += (3 if cfg.has_encoder else 2) * cfg.n_layers + 1
    for i, (got, want) in enumerate(zip(results, expected)):
        assert got.source.text == inputs[i]
        own = ckpt.tokenizer.encode(inputs[i], max_len=ckpt.config.max_len)
        assert got.source.ids == want.source.ids == own.ids
        assert got.source.tokens == own.tokens
        assert got.target == want.target
        got_named, want_named = got.named_tensors(), want.named_tensors()
        assert list(got_named) == list(want_named)
        terms = max(cfg.d_model, cfg.d_ff, len(own.ids), len(got.target.ids) if got.target else 0)
        for name, tensor in want_named.items():
            assert got_named[name].shape == tensor.shape, f"text {i}: {name}"
            assert_close(got_named[name], tensor, terms=terms, depth=depth, why=f"text {i}: {name}, threads vs one at a time")
    # Every text tokenizes differently, so matching its own sequential trace means no trace is another thread's.
    assert len({r.source.ids for r in results}) == N_THREADS
    after = ckpt.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
