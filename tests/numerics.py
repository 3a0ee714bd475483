"""How the tests compare float32 numbers: bit for bit only when the same computation is read twice.

Two different computations of the same value (another torch thread count, the fused kernel against
the manual path, a deep copy with zeroed weights, threads against serial, our model against
`transformers`) round differently in the last bits, and by how much depends on the CPU: MKL on an
Intel Xeon returned identical bits for 1 and 2 threads where an AMD EPYC did not. Those comparisons
use `assert_close`, whose tolerance is what float32 rounding alone can move the result.

`assert_same_bits` is kept for the same computation read twice (a figure against the very trace it
was drawn from, a CSV against the figure, a cache hit against the first result) and for what the
product promises bit for bit (ablating nothing is the plain forward). The reference side of those
runs under the app's own thread setting (`app_threads`), so the run is the same computation.

`pytest --reference-threads N` sets the tests' own thread count (1 by default, the app's); `make
test` runs the numerical tests once more with 2, so that an expectation that silently depends on
the thread count fails on this machine too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from transformer.model.device import torch_threads

EPS = float(torch.finfo(torch.float32).eps)  # 2⁻²³: the gap between 1 and the next float32
APP_THREADS = 1  # server.shared.THREADS_PER_RUN; test_server checks the two agree


def rounding_atol(magnitude: float, terms: int, depth: int = 1) -> float:
    """The most float32 rounding alone can move a value between two programs that compute it differently.

    One sum of `terms` products whose absolute values add up to at most `magnitude` lands within
    (terms/2)·ε·magnitude of the exact sum in any order (Higham, "Accuracy and Stability of Numerical
    Algorithms", §3.1), so two programs differ by at most terms·ε·magnitude; `depth` such sums
    stacked (layers, sublayers) add their errors. A real mistake (a wrong weight, a missing term)
    moves a value by the size of the terms themselves, orders of magnitude above this.
    """
    return depth * terms * EPS * magnitude


def longest_sum(cfg, *lengths: int, vocab: bool = False) -> int:
    """`terms` for a model's value: its longest sum, over d_model, d_ff, `lengths` (tokens, keys) or, for a softmax over
    the vocabulary, the vocabulary."""
    return max(cfg.d_model, cfg.d_ff, *lengths, cfg.vocab_size if vocab else 0)


def sublayers(cfg, head: bool = False) -> int:
    """`depth` for a value of the last layer: 2 sublayers a layer (self-attention, feed-forward); an encoder-decoder's
    layer index covers both stacks (2 + 3, with cross-attention); and the output head when `head`."""
    per_layer = {"encoder": 2, "decoder": 2, "encoder-decoder": 2 + 3}[cfg.kind]
    return per_layer * cfg.n_layers + int(head)


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def assert_close(actual, expected, *, terms: int, depth: int = 1, magnitude: float | None = None, why: str) -> None:
    """`actual` equals `expected` within `rounding_atol(magnitude, terms, depth)`; the message says why that tolerance.

    `magnitude` defaults to the largest absolute value on either side, at least 1 (a probability, a
    unit-variance activation): the scale of the terms behind each value.
    """
    a, e = _as_numpy(actual), _as_numpy(expected)
    assert a.shape == e.shape, f"{why}: shapes {a.shape} and {e.shape} differ"
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"{why}: NaN in different places"
    if magnitude is None:
        magnitude = max(1.0, float(np.nanmax(np.abs(e), initial=0.0)), float(np.nanmax(np.abs(a), initial=0.0)))
    atol = rounding_atol(magnitude, terms, depth)
    diff = float(np.nanmax(np.abs(a - e), initial=0.0))
    assert diff <= atol, (
        f"{why}: max |difference| {diff:.3g} > tolerance {atol:.3g} = {depth}·{terms}·ε·{magnitude:.3g}, "
        f"the most float32 rounding of {depth} stacked sum(s) of {terms} terms can differ between two computations"
    )


def assert_same_bits(actual, expected, *, why: str) -> None:
    """Bit-equal: only for the same computation read twice, or one the product promises bit for bit."""
    a, e = _as_numpy(actual), _as_numpy(expected)
    assert a.shape == e.shape, f"{why}: shapes {a.shape} and {e.shape} differ"
    same = (a == e) | (np.isnan(a) & np.isnan(e))
    if not same.all():
        diff = float(np.nanmax(np.abs(a - e)))
        raise AssertionError(
            f"{why}: expected the same bits (the same computation under the same settings), "
            f"{int((~same).sum())} of {same.size} values differ, max |difference| {diff:.3g}"
        )


@contextlib.contextmanager
def app_threads() -> Iterator[None]:
    """Compute a reference the way the app runs its model: on the app's one torch thread."""
    with torch_threads(APP_THREADS):
        yield


def assert_same_greedy(model, decoding, src, got: Sequence[int], expected: Sequence[int], ablate=None, why: str = "") -> None:
    """Two greedy outputs of the same rules from two computations (a batch and one row, a cache and the whole prefix):
    equal, or parted only where the next token was a tie within float32 rounding. Random weights make near ties, and
    two computations round the same sums differently, by how much depending on the CPU."""
    got, expected = tuple(got), tuple(expected)
    if got == expected:
        return
    step = next(i for i in range(min(len(got), len(expected)) + 1) if got[i : i + 1] != expected[i : i + 1])
    prefix = torch.tensor([[decoding.start, *expected[:step]]])
    with torch.no_grad():
        logits, _ = model(torch.tensor([list(src)]), prefix, ablate=ablate)
    scores = decoding.process(prefix, logits[:, -1], decoding.limit(model.cfg.max_len))[0]
    picks = [t[step] if step < len(t) else decoding.end for t in (got, expected)]  # a sequence that stopped picked the end
    gap = float((scores[picks[0]] - scores[picks[1]]).abs())
    assert gap <= 1e-4 * max(1.0, float(scores[picks].abs().max())), f"{why}: parted at step {step} by {gap:.2e}, no tie"
