"""Gradient saliency against finite differences, integrated gradients against completeness, and no side effects.

The reference f below is written in the test: the stacks run on token vectors we perturb ourselves,
over the whole (uncut) sequence, anchored to the model's public forward().
"""

from __future__ import annotations

import threading

import pytest
import torch
from numerics import assert_close

from transformer.api import streams
from transformer.checkpoints.format import Checkpoint
from transformer.model.network import causal_mask
from transformer.why.saliency import Attribution, gradient_x_input, integrated_gradients

pytestmark = pytest.mark.numerics

TEXT = "the cat sat on the mat"
TARGET = "the dogs near the cat"
KINDS = {
    "decoder": ("decoder", {}),
    "decoder post-LN": ("decoder", {"norm_first": False}),
    "encoder-decoder": ("encoder-decoder", {}),
    "classifier": ("encoder", {"n_classes": 2}),
}
FD_EPS = 1e-4  # central differences in float64: truncation ~eps², rounding ~1e-16/eps


def float64(ckpt: Checkpoint, std: float | None = None) -> Checkpoint:
    """The same checkpoint in float64; `std`: redraw every matrix with this std so the model is far from linear."""
    model = ckpt.model.double()  # the fixture builds a fresh model per call, so converting in place is fine
    if std is not None:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return Checkpoint(model=model, tokenizer=ckpt.tokenizer, name=ckpt.name)


def tiny(make_checkpoint, name: str, std: float | None = None, **overrides) -> tuple[Checkpoint, tuple]:
    kind, base = KINDS[name]
    ckpt = float64(make_checkpoint(kind, seed=2, **{**base, **overrides}), std)
    return ckpt, streams(ckpt, TEXT, TARGET if kind == "encoder-decoder" else None)


def embeds(ckpt, source, target):
    model = ckpt.model
    src = model.tok_embed(torch.tensor([source.ids]))
    tgt = None if target is None else model.tok_embed(torch.tensor([target.ids]))
    return src, tgt


def reference_f(ckpt, src, tgt, position, index) -> torch.Tensor:
    """(B,) log p(index) from token vectors src (B, Ts, d) / tgt (B, Tt, d), the whole sequence run; a batch of 1 broadcasts."""
    model = ckpt.model
    if tgt is not None and src.shape[0] != tgt.shape[0]:
        B = max(src.shape[0], tgt.shape[0])
        src, tgt = src.expand(B, -1, -1), tgt.expand(B, -1, -1)
    if model.cfg.kind == "encoder":
        hidden, _ = model.encoder(src, None)
        return model.classifier(hidden[:, 0]).log_softmax(-1)[:, index]
    if model.cfg.kind == "decoder":
        hidden, _ = model.decoder(src, causal_mask(src.shape[1], None, src.device))
    else:
        memory, _ = model.encoder(src, None)
        hidden, _ = model.decoder(tgt, causal_mask(tgt.shape[1], None, tgt.device), memory)
    return model.lm_logits(hidden)[:, position].log_softmax(-1)[:, index]


def model_log_prob(ckpt, source, target, position, index) -> float:
    """The same number from the public forward() on token ids."""
    ids = torch.tensor([source.ids])
    if ckpt.model.cfg.kind == "encoder":
        return float(ckpt.model(ids)[0].log_softmax(-1)[0, index])
    if target is None:
        return float(ckpt.model(ids)[0].log_softmax(-1)[0, position, index])
    return float(ckpt.model(ids, torch.tensor([target.ids]))[0].log_softmax(-1)[0, position, index])


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("middle", [False, True])
def test_gradient_x_input_matches_finite_differences(make_checkpoint, name, middle):
    ckpt, (source, target) = tiny(make_checkpoint, name, std=0.2)
    dec = target or source
    position = None if (ckpt.config.kind == "encoder" or not middle) else len(dec.ids) // 2
    result = gradient_x_input(ckpt, source, target, position=position)
    pred = result.prediction
    src, tgt = embeds(ckpt, source, target)
    assert reference_f(ckpt, src, tgt, pred.position, pred.index).item() == pytest.approx(
        model_log_prob(ckpt, source, target, pred.position, pred.index), abs=1e-12
    )
    assert pred.log_prob == pytest.approx(model_log_prob(ckpt, source, target, pred.position, pred.index), abs=1e-12)

    for which, x, scores in (("source", src, result.source), ("target", tgt, result.target)):
        if x is None:
            assert scores is None
            continue
        # d/dε f(e_t (1 + ε)) at 0 = ∇_{e_t} f · e_t: every token scaled up and down, in one batch
        T = x.shape[1]
        scale = torch.ones(2 * T, T, 1, dtype=x.dtype)
        scale[torch.arange(T), torch.arange(T)] += FD_EPS
        scale[T + torch.arange(T), torch.arange(T)] -= FD_EPS
        moved = x * scale  # (2T, T, d_model)
        f = (
            reference_f(ckpt, moved, tgt, pred.position, pred.index)
            if which == "source"
            else (reference_f(ckpt, src, moved, pred.position, pred.index))
        )
        fd = (f[:T] - f[T:]) / (2 * FD_EPS)  # (T,)
        assert torch.allclose(scores.scores, fd, atol=1e-8, rtol=1e-6), which
        if position is not None and which == ("target" if target is not None else "source"):
            assert (scores.scores[pred.position + 1 :] == 0).all()  # causal: later tokens cannot matter


@pytest.mark.parametrize("name", ["decoder", "encoder-decoder", "classifier"])
def test_gradient_norm_matches_finite_differences(make_checkpoint, name):
    ckpt, (source, target) = tiny(make_checkpoint, name, std=0.2)
    result = gradient_x_input(ckpt, source, target)
    pred = result.prediction
    src, tgt = embeds(ckpt, source, target)
    x = src if target is None else tgt  # the decoder's input, or the classifier's
    # every coordinate of every token nudged up and down, in one batch
    n = x[0].numel()
    nudges = torch.eye(n, dtype=x.dtype).reshape(n, *x.shape[1:]) * FD_EPS  # (T·d, T, d_model)
    moved = torch.cat([x + nudges, x - nudges])
    f = (
        reference_f(ckpt, moved, tgt, pred.position, pred.index)
        if target is None
        else (reference_f(ckpt, src, moved, pred.position, pred.index))
    )
    grad = ((f[:n] - f[n:]) / (2 * FD_EPS)).reshape(x.shape[1:])  # (T, d_model)
    got = (result.source if target is None else result.target).grad_norm
    assert torch.allclose(got, grad.norm(dim=-1), atol=1e-8, rtol=1e-6)


def test_default_prediction_is_the_top_1_at_the_last_position(make_checkpoint):
    ckpt, (source, _) = tiny(make_checkpoint, "decoder")
    result = gradient_x_input(ckpt, source)
    logits = ckpt.model(torch.tensor([source.ids]))[0][0, -1]
    assert result.prediction.position == len(source.ids) - 1
    assert result.prediction.index == int(logits.argmax())
    assert result.prediction.label == ckpt.tokenizer.id_to_token(int(logits.argmax()))
    ckpt, (source, _) = tiny(make_checkpoint, "classifier")
    result = gradient_x_input(ckpt, source)
    assert result.prediction.position is None
    assert result.prediction.index == int(ckpt.model(torch.tensor([source.ids]))[0].argmax())


@pytest.mark.parametrize("name", KINDS)
def test_integrated_gradients_completeness(make_checkpoint, name):
    # GELU and weights of std 0.3: f changes by O(1) along a curved path, and the integrand is smooth,
    # so the midpoint sum converges as 1/m² (ReLU's kinks make it 1/m: see transformer/why/saliency.py).
    ckpt, (source, target) = tiny(make_checkpoint, name, std=0.3, activation="gelu")
    result = integrated_gradients(ckpt, source, target, steps=64)
    change = result.prediction.log_prob - result.baseline_log_prob
    total = result.source.scores.sum() + (0 if result.target is None else result.target.scores.sum())
    assert abs(change) > 1e-2  # a path on which completeness means something
    assert abs(total - change) <= 1e-3 * abs(change)
    assert result.completeness_gap == pytest.approx(float(total) - change, abs=1e-12)
    src, tgt = embeds(ckpt, source, target)
    pred = result.prediction
    baseline = reference_f(ckpt, 0 * src, None if tgt is None else 0 * tgt, pred.position, pred.index)
    assert result.baseline_log_prob == pytest.approx(baseline.item(), abs=1e-12)


@pytest.mark.parametrize("name", ["decoder", "encoder-decoder"])
def test_integrated_gradients_equals_a_step_by_step_reference(make_checkpoint, name):
    ckpt, (source, target) = tiny(make_checkpoint, name, std=0.2)
    steps = 8
    result = integrated_gradients(ckpt, source, target, steps=steps, batch=3)  # chunks of 3, 3 and 2 steps
    pred = result.prediction
    src, tgt = embeds(ckpt, source, target)
    total_src, total_tgt = torch.zeros_like(src), None if tgt is None else torch.zeros_like(tgt)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        a_src = (alpha * src).requires_grad_(True)
        a_tgt = None if tgt is None else (alpha * tgt).requires_grad_(True)
        leaves = [a_src] if a_tgt is None else [a_src, a_tgt]
        grads = torch.autograd.grad(reference_f(ckpt, a_src, a_tgt, pred.position, pred.index).sum(), leaves)
        total_src += grads[0]
        if a_tgt is not None:
            total_tgt += grads[1]
    assert torch.allclose(result.source.scores, (src * total_src / steps).sum(-1)[0], atol=1e-12, rtol=1e-9)
    if tgt is not None:
        assert torch.allclose(result.target.scores, (tgt * total_tgt / steps).sum(-1)[0], atol=1e-12, rtol=1e-9)


def test_parameters_get_no_gradient_and_inference_mode_is_fine(make_checkpoint):
    ckpt = make_checkpoint("encoder-decoder")
    source, target = streams(ckpt, TEXT, TARGET)
    with torch.inference_mode():  # e.g. called from code that traced under inference mode
        a = gradient_x_input(ckpt, source, target)
        b = integrated_gradients(ckpt, source, target, steps=4)
    assert isinstance(a, Attribution) and isinstance(b, Attribution)
    assert torch.isfinite(a.source.scores).all() and torch.isfinite(b.target.scores).all()
    for name, p in ckpt.model.named_parameters():
        assert not p.requires_grad, name
        assert p.grad is None, name
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()  # the caller's modes are restored
    with torch.no_grad():
        gradient_x_input(ckpt, source, target)
        assert not torch.is_grad_enabled()


def test_two_threads_at_once_get_the_serial_results(make_checkpoint):
    ckpt = make_checkpoint("decoder", d_model=32, n_layers=3)
    jobs = [streams(ckpt, TEXT)[0], streams(ckpt, "two small dogs run across the green field")[0]]
    serial = [(gradient_x_input(ckpt, s), integrated_gradients(ckpt, s, steps=16)) for s in jobs]
    results: dict[int, list] = {0: [], 1: []}
    start = threading.Barrier(2)

    def work(i: int) -> None:
        start.wait()
        for _ in range(5):
            results[i].append((gradient_x_input(ckpt, jobs[i]), integrated_gradients(ckpt, jobs[i], steps=16)))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Two threads at once against one at a time is another computation (torch may split a sum otherwise when another
    # thread is busy), so the float32 numbers agree to rounding: the forward's stacked sums (2 per layer, 1 for the head),
    # twice that for a gradient (forward, then back from ∂log p/∂logits = onehot − p, of magnitude 1), and one more sum
    # for integrated gradients' 16 steps.
    cfg = ckpt.config
    depth = 2 * cfg.n_layers + 1
    terms = max(cfg.d_model, cfg.d_ff, 16, *(len(s.ids) for s in jobs))
    for i in (0, 1):
        assert len(results[i]) == 5
        for gxi, ig in results[i]:
            got, want = gxi.prediction, serial[i][0].prediction
            assert (got.position, got.index, got.label) == (want.position, want.index, want.label)
            why = "log p of the prediction, threads vs serial"
            assert_close(got.log_prob, want.log_prob, terms=terms, depth=depth, why=why)
            why = "gradient × input, threads vs serial"
            assert_close(gxi.source.scores, serial[i][0].source.scores, terms=terms, depth=2 * depth, why=why)
            why = "integrated gradients, threads vs serial"
            assert_close(ig.source.scores, serial[i][1].source.scores, terms=terms, depth=2 * depth + 1, why=why)


def test_requests_that_cannot_be_answered(make_checkpoint):
    ckpt = make_checkpoint("encoder")  # no classification head
    with pytest.raises(ValueError, match="no classification head"):
        gradient_x_input(ckpt, streams(ckpt, TEXT)[0])
    ckpt = make_checkpoint("encoder", n_classes=2)
    with pytest.raises(ValueError, match="leave position as None"):
        gradient_x_input(ckpt, streams(ckpt, TEXT)[0], position=1)
    ckpt = make_checkpoint("decoder")
    source = streams(ckpt, TEXT)[0]
    with pytest.raises(IndexError, match="out of range"):
        gradient_x_input(ckpt, source, position=len(source.ids))
    with pytest.raises(IndexError, match="out of range"):
        integrated_gradients(ckpt, source, index=ckpt.config.vocab_size)
    ckpt = make_checkpoint("encoder-decoder")
    with pytest.raises(ValueError, match="decoder's input tokens"):
        gradient_x_input(ckpt, streams(ckpt, TEXT, TARGET)[0])
