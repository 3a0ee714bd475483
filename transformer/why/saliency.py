"""Gradient saliency: how much each input token's embedding contributed to one prediction.

The number explained, f, is the log-probability of one prediction (not the logit: the page shows
probabilities, and a log-prob also counts what the competing tokens did):
- decoder LM: log p(token | the text up to `position`), read at `position`; default the last
  position and the model's top-1 next token;
- encoder-decoder: the same at a position of the decoder's input (the target, its start token first), given the
  source; attributions go to the source tokens and to the decoder's input tokens;
- encoder with a classification head: log p(class); default the predicted class;
- encoder without a head (e.g. an imported MiniLM): not supported (ValueError): there is no
  prediction to explain, and any scalar we chose (a norm) would be ours, not the model's.

e_t is the token's vector straight from the embedding table, `tok_embed(ids)`, *before* positions
are added (and before the √d_model scaling): the position vector is the same whatever token sits
there, so attributing to it would not say which word mattered. As the scaling is linear, gradient
× input comes out the same before or after it.

Gradient × input: score_t = Σ_d ∂f/∂e_t[d] · e_t[d], from one forward and one backward (only the
input gets a gradient: parameters keep requires_grad False and never get a .grad). Also returned,
free from the same backward: ‖∂f/∂e_t‖₂.

Integrated gradients (Sundararajan et al. 2017): the baseline is the zero token vector at every
position (positions and segment embeddings stay, so the baseline is "these positions, no words");
zero rather than the PAD token's embedding, which no shipped model was trained to read. The path
integral is a midpoint Riemann sum, α_k = (k + ½)/m for k = 0..m−1, all steps batched (chunked
to bound memory). Completeness: Σ_t score_t ≈ f(input) − f(baseline); the gap is returned.
For an encoder-decoder, source and decoder tokens fade in together along one path, so
completeness holds for the sum over both. The default is 64 steps: with ReLU (every shipped model)
the integrand jumps at each kink and the sum converges only as 1/m, not 1/m²; on the shipped lm at
64 random tokens the gap was −3.2 (32 steps), −0.34 (64), −0.019 (128), 0.007 (512) for
f(x) − f(baseline) = 3.06. Show the gap beside the scores; more steps cost proportionally more.

The decoder is causal, so tokens after `position` cannot move the prediction: they are not run,
and their scores are exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from transformer.checkpoints.format import Checkpoint
from transformer.model.config import ModelConfig
from transformer.model.network import TransformerModel, causal_mask
from transformer.model.trace import Stream

GRADIENT_X_INPUT_EXPLANATION = (
    "Each token's score is the gradient of the prediction's log-probability with respect to that token's "
    "embedding, times the embedding itself: to first order, how much the log-probability would drop if "
    "that token's embedding were set to zero (positive: the token supports the prediction)."
)
INTEGRATED_GRADIENTS_EXPLANATION = (
    "Each token's score is its share of the change in the prediction's log-probability as every token's "
    "embedding fades in together from zero (positions kept) to its real value; the scores add up to "
    "that change, up to the gap shown."
)
BATCH_BYTES = 512 * 2**20  # rough activation memory per integrated-gradients chunk


@dataclass(frozen=True)
class Prediction:
    """The number being explained: log p(`label`), read at decoder `position` (None for a classifier)."""

    position: int | None  # decoder input position whose next-token distribution is read; None: a classifier
    index: int  # the token id (decoder) or the class index (classifier)
    label: str  # the token as the tokenizer writes it, or the class name
    log_prob: float  # f(input): log p(label) for the real input


@dataclass(frozen=True)
class TokenScores:
    """One input sequence's attribution: a score per token."""

    tokens: tuple[str, ...]
    scores: Tensor  # (T,) attribution of each token's embedding; > 0 pushes the log-prob up
    grad_norm: Tensor | None = None  # (T,) ‖∂f/∂e_t‖₂ (gradient × input only)


@dataclass(frozen=True)
class Attribution:
    """Saliency of one prediction over the input tokens (the source, and the decoder's input if any)."""

    method: str  # "gradient × input" | "integrated gradients"
    prediction: Prediction
    source: TokenScores  # the encoder's input, or a decoder LM's text
    target: TokenScores | None  # the decoder's input tokens of an encoder-decoder (start token first)
    baseline_log_prob: float | None = None  # integrated gradients: f(zero token vectors)
    completeness_gap: float | None = None  # integrated gradients: Σ scores − (f(input) − f(baseline))
    steps: int | None = None  # integrated gradients: m, the number of Riemann (midpoint) steps

    @property
    def explanation(self) -> str:
        """One sentence for the page."""
        return GRADIENT_X_INPUT_EXPLANATION if self.method == "gradient × input" else INTEGRATED_GRADIENTS_EXPLANATION


def log_probs(model: TransformerModel, src_x: Tensor, tgt_x: Tensor | None, position: int | None) -> Tensor:
    """(B, vocab or classes) log-probabilities of the prediction, from raw token vectors (B, T, d_model).

    src_x / tgt_x are `tok_embed` outputs (positions not yet added); the stacks add them.
    """
    kind = model.cfg.kind
    if kind == "encoder":
        hidden, _ = model.encoder(src_x, None)
        logits = model.classifier(hidden[:, 0])  # (B, C) from the first token, as forward() does
    elif kind == "decoder":
        hidden, _ = model.decoder(src_x, causal_mask(src_x.shape[1], None, src_x.device))
        logits = model.lm_logits(hidden[:, position])  # (B, vocab)
    else:
        memory, _ = model.encoder(src_x, None)
        hidden, _ = model.decoder(tgt_x, causal_mask(tgt_x.shape[1], None, tgt_x.device), memory, None)
        logits = model.lm_logits(hidden[:, position])  # (B, vocab)
    return logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)


def _inputs(ckpt: Checkpoint, source: Stream, target: Stream | None, position: int | None):
    """Check the request; returns (src e (1, Ts, d), tgt e (1, Tt', d) or None, position); the decoder input cut after `position`."""
    model, cfg = ckpt.model, ckpt.model.cfg
    if cfg.kind == "encoder" and not cfg.n_classes:
        raise ValueError("saliency needs a prediction to explain: this encoder has no classification head")
    if cfg.kind == "encoder-decoder" and target is None:
        raise ValueError("an encoder-decoder needs the decoder's input tokens (the target, its start token first)")
    if cfg.kind == "encoder":
        if position is not None:
            raise ValueError("a classifier has one prediction, from the first token: leave position as None")
        dec = None
    else:
        dec = source if cfg.kind == "decoder" else target
        T = len(dec.ids)
        position = T - 1 if position is None else position
        if not 0 <= position < T:
            raise IndexError(f"position {position} out of range: the decoder has {T} input tokens")
    device = model.device

    def embed(ids) -> Tensor:
        with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, even under a caller's inference mode
            return model.tok_embed(torch.tensor([ids], dtype=torch.long, device=device))  # (1, T, d_model)

    # Causal decoder: tokens after `position` cannot reach it, so they are not run (their scores are 0).
    if cfg.kind == "decoder":
        return embed(source.ids[: position + 1]), None, position
    src = embed(source.ids)
    return src, (None if dec is None else embed(dec.ids[: position + 1])), position


def _prediction(ckpt: Checkpoint, lp: Tensor, position: int | None, index: int | None) -> Prediction:
    """lp: (n,) log-probs of the real input; index None picks the top-1."""
    cfg = ckpt.model.cfg
    index = int(lp.argmax()) if index is None else int(index)
    if not 0 <= index < lp.shape[0]:
        raise IndexError(f"index {index} out of range: there are {lp.shape[0]} {'classes' if position is None else 'tokens'}")
    if position is None:
        label = cfg.class_names[index] if cfg.class_names else f"class {index}"
    else:
        label = ckpt.tokenizer.id_to_token(index)
    return Prediction(position=position, index=index, label=label, log_prob=float(lp[index]))


def _scores(tokens: tuple[str, ...], x: Tensor, grad: Tensor, n: int, with_norm: bool) -> TokenScores:
    """x, grad: (T', d_model) for the first T' of n tokens; later tokens score exactly 0."""
    scores = x.new_zeros(n)
    scores[: x.shape[0]] = (grad * x).sum(-1)
    norm = None
    if with_norm:
        norm = x.new_zeros(n)
        norm[: x.shape[0]] = grad.norm(dim=-1)
    return TokenScores(tokens=tokens, scores=scores.cpu(), grad_norm=None if norm is None else norm.cpu())


def gradient_x_input(
    ckpt: Checkpoint, source: Stream, target: Stream | None = None, position: int | None = None, index: int | None = None
) -> Attribution:
    """Gradient × input of log p(prediction) for each token, and ‖gradient‖₂: one forward and one backward.

    source/target: `api.streams(ckpt, text, target)` (or `trace.source`, `trace.target`).
    position: the decoder input position whose prediction is explained (default the last);
    index: the token id or class index (default the model's top-1).
    """
    model = ckpt.model
    src, tgt, position = _inputs(ckpt, source, target, position)
    # Our own graph on leaf copies of the inputs, even if the caller is in inference mode; nothing touches the parameters.
    with torch.inference_mode(False), torch.enable_grad():
        src = src.clone().requires_grad_(True)
        tgt = None if tgt is None else tgt.clone().requires_grad_(True)
        lp = log_probs(model, src, tgt, position)[0]  # (n,)
        prediction = _prediction(ckpt, lp.detach(), position, index)
        leaves = [src] if tgt is None else [src, tgt]
        grads = torch.autograd.grad(lp[prediction.index], leaves)
    return Attribution(
        method="gradient × input",
        prediction=prediction,
        source=_scores(source.tokens, src.detach()[0], grads[0][0], len(source.ids), with_norm=True),
        target=None if tgt is None else _scores(target.tokens, tgt.detach()[0], grads[1][0], len(target.ids), with_norm=True),
    )


def chunk_size(cfg: ModelConfig, n_tokens: int, budget: int = BATCH_BYTES) -> int:
    """How many interpolation steps to run in one batch: a rough count of the activations autograd keeps."""
    per_token_layer = 12 * cfg.d_model + 2 * cfg.d_ff + 3 * cfg.n_heads * n_tokens  # floats, roughly
    layers = cfg.n_layers + (cfg.dec_layers if cfg.kind == "encoder-decoder" else 0)
    per_step = 4 * n_tokens * layers * per_token_layer
    return max(1, budget // per_step)


def integrated_gradients(
    ckpt: Checkpoint,
    source: Stream,
    target: Stream | None = None,
    position: int | None = None,
    index: int | None = None,
    steps: int = 64,
    batch: int | None = None,
) -> Attribution:
    """Integrated gradients of log p(prediction) from the zero-embedding baseline, midpoint rule with `steps` steps.

    All steps run as one batch, or chunks of `batch` (default: as many as fit `BATCH_BYTES`).
    Arguments as in `gradient_x_input`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    model = ckpt.model
    src, tgt, position = _inputs(ckpt, source, target, position)
    n_tokens = src.shape[1] + (0 if tgt is None else tgt.shape[1])
    batch = batch or chunk_size(model.cfg, n_tokens)
    with torch.inference_mode(False), torch.no_grad():
        # f(input) and f(baseline) in one batch of two.
        pair = log_probs(
            model,
            torch.cat([src, torch.zeros_like(src)]),
            None if tgt is None else torch.cat([tgt, torch.zeros_like(tgt)]),
            position,
        )
    prediction = _prediction(ckpt, pair[0], position, index)
    baseline = float(pair[1, prediction.index])

    leaves_in = [src] if tgt is None else [src, tgt]
    with torch.inference_mode(False), torch.enable_grad():
        alphas = (torch.arange(steps, dtype=src.dtype, device=src.device) + 0.5) / steps  # midpoint Riemann sum
        total = [torch.zeros_like(x[0]) for x in leaves_in]  # Σ_k ∂f/∂x over the steps, (T, d_model) per input
        for a in alphas.split(batch):
            # baseline + α (x − baseline) with a zero baseline: α x
            leaves = [(a[:, None, None] * x).requires_grad_(True) for x in leaves_in]  # (b, T, d_model) each
            lp = log_probs(model, leaves[0], leaves[1] if tgt is not None else None, position)  # (b, n)
            grads = torch.autograd.grad(lp[:, prediction.index].sum(), leaves)  # steps are independent rows
            for t, g in zip(total, grads):
                t += g.sum(0)
    src_scores = _scores(source.tokens, src[0], total[0] / steps, len(source.ids), with_norm=False)
    tgt_scores = None if tgt is None else _scores(target.tokens, tgt[0], total[1] / steps, len(target.ids), with_norm=False)
    attributed = float(src_scores.scores.sum()) + (0.0 if tgt_scores is None else float(tgt_scores.scores.sum()))
    return Attribution(
        method="integrated gradients",
        prediction=prediction,
        source=src_scores,
        target=tgt_scores,
        baseline_log_prob=baseline,
        completeness_gap=attributed - (prediction.log_prob - baseline),
        steps=steps,
    )


__all__ = [
    "Attribution",
    "GRADIENT_X_INPUT_EXPLANATION",
    "INTEGRATED_GRADIENTS_EXPLANATION",
    "Prediction",
    "TokenScores",
    "chunk_size",
    "gradient_x_input",
    "integrated_gradients",
    "log_probs",
]
