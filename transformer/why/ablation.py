"""Head ablation: knock heads out and measure what changes in the model's output.

A knocked-out head's output (its weights @ v, before the heads are merged and projected by W_O)
is replaced by zeros ("zero" ablation) or by that head's mean output over a reference batch of
the checkpoint's own kind of text ("mean" ablation: `reference_means`). The model runs with
`forward(ablate=HeadAblation(...))`; nothing is stored on it, so one shared model serves every
session. Three things live here:

- `ablate(ckpt, tokens, heads)`: the output before and after knocking out a set of heads, in the
  terms of the model's job (next-token probabilities, the translation, class probabilities, or
  the final hidden states of an encoder without a head).
- `sweep(ckpt, tokens, metric)`: a layers × heads grid per attention kind of the effect of
  knocking out each single head, all heads in one batched forward (batch row r knocks out head r).
- `reference_means(ckpt)`: each head's mean output, computed once per checkpoint.

Heads are named `(kind, layer, head)`, kind "encoder self", "decoder self" or "cross", layers and
heads from 0, as in `Trace.head`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from itertools import product

import torch
import torch.nn.functional as F
from torch import Tensor

from transformer.api import greedy_decode_batch
from transformer.checkpoints.catalog import EXAMPLES_FILE
from transformer.checkpoints.format import Checkpoint
from transformer.model.attention import HeadAblation
from transformer.model.config import ModelConfig
from transformer.model.trace import Stream
from transformer.why.head_jobs import pad_batch

Head = tuple[str, int, int]  # (kind, layer, head), layers and heads from 0
Tokens = tuple[Stream, Stream | None]  # `api.streams(ckpt, text, target)`: source, decoder tokens (start first) or None

MODES = ("zero", "mean")
REFERENCE_SPLIT = "test"  # reference texts come from the held-out split of the checkpoint's task
ROW_BYTES_BUDGET = 256 * 2**20  # about how much memory one chunk of a sweep's batched forward may take

# What each sweep metric is, in the words the page prints. Positions are output positions (see `sweep`).
METRICS = {
    "kl": (
        "KL divergence KL(clean ‖ ablated) in nats between the model's output distribution with all heads "
        "and with the head knocked out, averaged over the counted positions (0 = no change)."
    ),
    "logprob": (
        "Drop in log-probability (nats) of the model's own clean top-1 prediction when the head is knocked "
        "out: log p_clean(top-1) − log p_ablated(top-1), averaged over the counted positions "
        "(positive = the head helped that prediction)."
    ),
    "logprob-next": (
        "Drop in log-probability (nats) of the token that actually comes next (the next input token for a "
        "language model, the next target token or the end token for a translator, teacher-forced): "
        "log p_clean(next) − log p_ablated(next), averaged over the counted positions that have a next token."
    ),
    "cosine": (
        "1 − cosine similarity between each token's final hidden state with all heads and with the head "
        "knocked out, averaged over the counted tokens (the model has no output head, so its final hidden "
        "states are its output; 0 = no change)."
    ),
}


def metrics_for(cfg: ModelConfig) -> tuple[str, ...]:
    """The sweep metrics that apply to a model: distributions for models with a head, hidden states without."""
    if cfg.kind == "encoder" and not cfg.n_classes:
        return ("cosine",)
    if cfg.kind == "encoder":
        return ("kl", "logprob")
    return ("kl", "logprob", "logprob-next")


def all_heads(cfg: ModelConfig) -> tuple[Head, ...]:
    """Every head of the model, kind by kind (display order), layer by layer (an encoder-decoder's decoder kinds: its depth)."""
    return tuple(
        (kind, layer, h) for kind in cfg.attention_kinds for layer in range(cfg.layers_of(kind)) for h in range(cfg.n_heads)
    )


def _check_heads(cfg: ModelConfig, heads: Collection[Head]) -> tuple[Head, ...]:
    known = set(all_heads(cfg))
    out = tuple(sorted({(str(k), int(layer), int(h)) for k, layer, h in heads}))
    for head in out:
        if head not in known:
            depths = ", ".join(f"{cfg.layers_of(kind)} {kind} layers" for kind in cfg.attention_kinds)
            raise ValueError(f"no head {head}: this model has {depths}, {cfg.n_heads} heads each")
    return out


# -- reference means --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceMeans:
    """Each head's mean output over a reference batch: what mean ablation puts in a knocked-out head's place."""

    means: dict[tuple[str, int], Tensor]  # (kind, layer) -> (n_heads, d_head) float32 on the CPU
    reference: str  # which texts the means are over, in words
    n_texts: int
    n_positions: dict[str, int]  # kind -> real query positions averaged over (padding excluded)


def _task_inputs(ckpt: Checkpoint, n: int) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]] | None, str] | None:
    """(sources, decoder inputs or None, description) from the checkpoint's own task, or None if it has none we know."""
    from transformer.data.tasks import get_task  # lazily: the training package is not needed to run a model

    cfg, tok, training = ckpt.config, ckpt.tokenizer, ckpt.training
    try:
        task = get_task(str(training.get("task", "")))
    except ValueError:
        return None
    if task.kind != cfg.kind:
        return None
    data_seed = int(training.get("data_seed", 0))
    plan = training.get("plan") or {}
    try:
        data_kw = json.loads(plan.get("data") or "{}") if isinstance(plan, dict) else {}
        examples = task.examples(REFERENCE_SPLIT, n, data_seed, **data_kw)
    except (TypeError, ValueError):  # a data setting this version does not know: the task's defaults
        data_kw, examples = {}, task.examples(REFERENCE_SPLIT, n, data_seed)
    encoded = [task.encode(tok, ex, cfg.max_len) for ex in examples]
    sources = [e.src[: cfg.max_len] for e in encoded]
    targets = [(*ckpt.decoding.prefix, *e.tgt) for e in encoded] if cfg.kind == "encoder-decoder" else None
    settings = f", data {json.dumps(data_kw, sort_keys=True)}" if data_kw else ""
    return (
        sources,
        targets,
        f"{len(examples)} held-out examples of the checkpoint's task {task.name!r} (data seed {data_seed}{settings})",
    )


def _example_inputs(ckpt: Checkpoint) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]] | None, str]:
    """(sources, decoder inputs or None, description) from the app's example texts (assets/examples.json)."""
    cfg, tok = ckpt.config, ckpt.tokenizer
    data = json.loads(EXAMPLES_FILE.read_text())
    texts = list(dict.fromkeys(e["text"] for key, entries in data.items() if key != "_about" for e in entries))
    sources = [tok.encode(t, max_len=cfg.max_len).ids for t in texts]
    targets = None
    if cfg.kind == "encoder-decoder":
        targets = [(ckpt.decoding.start, *ids) for ids in greedy_batch(ckpt, sources)]
    how = ", decoder fed its own greedy output" if targets is not None else ""
    return sources, targets, f"the {len(texts)} example texts of assets/examples.json (no known task for this checkpoint{how})"


@torch.inference_mode()
def greedy_batch(ckpt: Checkpoint, sources: Sequence[Sequence[int]], ablate: HeadAblation | None = None) -> list[tuple[int, ...]]:
    """`api.greedy_decode_batch` under the checkpoint's own generation rules: row r knocked out by `ablate`'s row r."""
    rows = greedy_decode_batch(ckpt.model, sources, ckpt.decoding, pad_id=ckpt.config.pad_id, ablate=ablate)
    return [tuple(r) for r in rows]


def knockout_translations(
    ckpt: Checkpoint,
    tokens: Tokens,
    rows: Sequence[Collection[Head]],
    mode: str = "zero",
    means: ReferenceMeans | None = None,
) -> list[str]:
    """The greedy translation of `tokens`' source with rows[r]'s heads knocked out, for every r, in one batched decoding."""
    _check_tokens(ckpt, tokens)
    means = _means_for(ckpt, mode, means)
    knockout = head_ablation(ckpt.config, rows, mode, means, ckpt.model.device)
    ids = greedy_batch(ckpt, [tokens[0].ids] * len(rows), knockout)
    return [ckpt.tokenizer.decode(list(r)) for r in ids]


@torch.inference_mode()
def reference_means(ckpt: Checkpoint, n: int = 64, batch: int = 16) -> ReferenceMeans:
    """Each head's mean output over n reference texts, over every real query position (padding excluded).

    The texts are held-out examples of the checkpoint's own task when its training facts name one
    we can generate (translation, lm, agreement, the algorithmic tasks); otherwise (MiniLM, uploads)
    the app's example texts. `reference` says which. A few traced forwards of `batch` texts each.
    """
    cfg, model, pad = ckpt.config, ckpt.model, ckpt.config.pad_id
    found = _task_inputs(ckpt, n)
    sources, targets, reference = found if found is not None else _example_inputs(ckpt)
    sums: dict[tuple[str, int], Tensor] = {}
    counts: dict[str, int] = {}
    for start in range(0, len(sources), batch):
        src, src_keep = (t.to(model.device) for t in pad_batch(sources[start : start + batch], pad))
        if targets is None:
            _, trace = model(src, attention_mask=src_keep, trace=True)
            query_keep = {cfg.attention_kinds[0]: src_keep}
        else:
            tgt, tgt_keep = (t.to(model.device) for t in pad_batch(targets[start : start + batch], pad))
            _, trace = model(src, tgt, attention_mask=src_keep, decoder_attention_mask=tgt_keep, trace=True)
            query_keep = {"encoder self": src_keep, "decoder self": tgt_keep, "cross": tgt_keep}
        for kind in cfg.attention_kinds:
            real = query_keep[kind][:, None, :, None].to(torch.float32)  # (B, 1, Tq, 1)
            counts[kind] = counts.get(kind, 0) + int(query_keep[kind].sum())
            for layer in range(cfg.layers_of(kind)):
                out = trace.attention(kind, layer).output.float()  # (B, H, Tq, d_head)
                total = (out * real).sum(dim=(0, 2)).cpu()  # (H, d_head)
                sums[kind, layer] = sums[kind, layer] + total if (kind, layer) in sums else total
    means = {key: total / max(counts[key[0]], 1) for key, total in sums.items()}
    return ReferenceMeans(means=means, reference=reference, n_texts=len(sources), n_positions=counts)


# -- building the forward's argument ----------------------------------------------------------------------


def head_ablation(
    cfg: ModelConfig,
    rows: Sequence[Collection[Head]],
    mode: str = "zero",
    means: ReferenceMeans | None = None,
    device: torch.device | str | None = None,
) -> HeadAblation:
    """The `ablate=` argument that knocks out rows[r]'s heads in batch row r (an empty row runs clean).

    Only sublayers with a knocked-out head in some row are listed, so every other sublayer runs its
    ordinary code. mode "mean" needs `means` (from `reference_means`).
    """
    if mode not in MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; choose one of {MODES}")
    if mode == "mean" and means is None:
        raise ValueError("mean ablation needs the heads' reference means (reference_means(ckpt))")
    keep: dict[tuple[str, int], Tensor] = {}
    for r, heads in enumerate(rows):
        for kind, layer, h in _check_heads(cfg, heads):
            if (kind, layer) not in keep:
                keep[kind, layer] = torch.ones(len(rows), cfg.n_heads)
            keep[kind, layer][r, h] = 0.0
    keep = {key: k.to(device) for key, k in keep.items()}
    chosen = {} if mode == "zero" else {key: means.means[key].to(device) for key in keep}
    return HeadAblation(keep=keep, means=chosen)


def _batch_inputs(ckpt: Checkpoint, tokens: Tokens, rows: int) -> tuple[Tensor, ...]:
    """The input tensors of `tokens`, repeated for `rows` batch rows (expanded, not copied)."""
    source, target = tokens
    dev = ckpt.model.device
    src = torch.tensor([source.ids], dtype=torch.long, device=dev).expand(rows, -1)
    if target is None:
        return (src,)
    return src, torch.tensor([target.ids], dtype=torch.long, device=dev).expand(rows, -1)


def _check_tokens(ckpt: Checkpoint, tokens: Tokens) -> None:
    if (tokens[1] is not None) != (ckpt.config.kind == "encoder-decoder"):
        raise ValueError("tokens must be api.streams(ckpt, text, target): a target stream exactly for an encoder-decoder")


def _means_for(ckpt: Checkpoint, mode: str, means: ReferenceMeans | None) -> ReferenceMeans | None:
    if mode not in MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; choose one of {MODES}")
    if mode == "mean" and means is None:
        return reference_means(ckpt)
    return means if mode == "mean" else None


# -- one set of heads: before and after -------------------------------------------------------------------


@dataclass(frozen=True)
class LMAblation:
    """A decoder LM with heads knocked out: next-token predictions at every position, before and after."""

    heads: tuple[Head, ...]
    mode: str  # "zero" or "mean"
    reference: str | None  # which texts the means are over (mean ablation), else None
    tokens: tuple[str, ...]  # the input tokens; position i predicts token i + 1
    probs_before: Tensor  # (T, vocab) next-token distribution at each position, all heads
    probs_after: Tensor  # (T, vocab) the same with the heads knocked out
    kl: Tensor  # (T,) KL(before ‖ after) in nats at each position
    next_ids: tuple[int, ...]  # (T - 1,) the token that actually comes next after positions 0 .. T-2
    p_next_before: Tensor  # (T - 1,) probability of that token, all heads
    p_next_after: Tensor  # (T - 1,) with the heads knocked out
    top_before: tuple[str, ...]  # (T,) most likely next token at each position, all heads
    top_after: tuple[str, ...]  # (T,) with the heads knocked out


@dataclass(frozen=True)
class TranslationAblation:
    """An encoder-decoder with heads knocked out: its greedy output, and the original translation teacher-forced."""

    heads: tuple[Head, ...]
    mode: str
    reference: str | None
    translation_before: str  # greedy output with all heads
    translation_after: str  # greedy output with the heads knocked out (knocked out at every step)
    tokens_before: tuple[str, ...]  # its tokens (after the start token, a forced BOS or language token included; no end)
    tokens_after: tuple[str, ...]
    target_tokens: tuple[str, ...]  # the decoder stream's tokens after its start token, then the end: what is teacher-forced
    p_target_before: Tensor  # (Tt,) probability of each of those tokens, fed the stream's previous tokens, all heads
    p_target_after: Tensor  # (Tt,) the same with the heads knocked out
    kl: Tensor  # (Tt,) KL(before ‖ after) in nats of the next-token distribution at each decoder position

    @property
    def changed(self) -> bool:
        return self.translation_before != self.translation_after


@dataclass(frozen=True)
class ClassifierAblation:
    """An encoder classifier with heads knocked out: class probabilities before and after."""

    heads: tuple[Head, ...]
    mode: str
    reference: str | None
    class_names: tuple[str, ...]
    probs_before: Tensor  # (n_classes,)
    probs_after: Tensor  # (n_classes,)
    kl: float  # KL(before ‖ after) in nats

    @property
    def predicted_before(self) -> str:
        return self.class_names[int(self.probs_before.argmax())]

    @property
    def predicted_after(self) -> str:
        return self.class_names[int(self.probs_after.argmax())]


@dataclass(frozen=True)
class HiddenAblation:
    """An encoder without an output head (e.g. MiniLM): its output IS the final hidden states, so the
    change is measured there, token by token."""

    heads: tuple[Head, ...]
    mode: str
    reference: str | None
    tokens: tuple[str, ...]
    cosine: Tensor  # (T,) cosine similarity of each token's final hidden state before and after (1 = same direction)
    relative_change: Tensor  # (T,) ‖after − before‖ / ‖before‖ per token


Ablation = LMAblation | TranslationAblation | ClassifierAblation | HiddenAblation


def kl_divergence(logp: Tensor, logq: Tensor) -> Tensor:
    """KL(p ‖ q) = Σ p (log p − log q) over the last dim, from log-probabilities; 0·log 0 counts as 0."""
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)


@torch.inference_mode()
def ablate(
    ckpt: Checkpoint, tokens: Tokens, heads: Collection[Head], mode: str = "zero", means: ReferenceMeans | None = None
) -> Ablation:
    """The model's output on `tokens` with all heads and with `heads` knocked out, in the terms of its job.

    tokens: `api.streams(ckpt, text, target)`. heads: (kind, layer, head) triples; none = the
    plain forward twice. mode "zero" replaces a knocked-out head's output by zeros, "mean" by its
    mean output (`means`, computed here if not given). Returns an LMAblation (decoder LM),
    TranslationAblation (encoder-decoder), ClassifierAblation (encoder with a head) or
    HiddenAblation (encoder without one).
    """
    _check_tokens(ckpt, tokens)
    cfg, model, tok = ckpt.config, ckpt.model, ckpt.tokenizer
    chosen = _check_heads(cfg, heads)
    means = _means_for(ckpt, mode, means)
    knockout = head_ablation(cfg, [chosen], mode, means, model.device) if chosen else None
    inputs = _batch_inputs(ckpt, tokens, 1)
    before, _ = model(*inputs)
    after, _ = model(*inputs, ablate=knockout)
    common = dict(heads=chosen, mode=mode, reference=None if means is None else means.reference)
    source, target = tokens
    if cfg.kind == "encoder" and not cfg.n_classes:
        b, a = before[0].float().cpu(), after[0].float().cpu()  # (T, d_model)
        return HiddenAblation(
            **common,
            tokens=source.tokens,
            cosine=F.cosine_similarity(b, a, dim=-1),
            relative_change=(a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-12),
        )
    logp_b, logp_a = (x[0].float().log_softmax(-1).cpu() for x in (before, after))
    if cfg.kind == "encoder":
        names = tuple(str(n) for n in cfg.class_names) or tuple(f"class {i}" for i in range(cfg.n_classes))
        return ClassifierAblation(
            **common,
            class_names=names,
            probs_before=logp_b.exp(),
            probs_after=logp_a.exp(),
            kl=float(kl_divergence(logp_b, logp_a)),
        )
    if cfg.kind == "decoder":
        nxt = torch.tensor(source.ids[1:], dtype=torch.long)
        rows = torch.arange(len(nxt))
        return LMAblation(
            **common,
            tokens=source.tokens,
            probs_before=logp_b.exp(),
            probs_after=logp_a.exp(),
            kl=kl_divergence(logp_b, logp_a),
            next_ids=source.ids[1:],
            p_next_before=logp_b[rows, nxt].exp(),
            p_next_after=logp_a[rows, nxt].exp(),
            top_before=tuple(tok.id_to_token(int(i)) for i in logp_b.argmax(-1)),
            top_after=tuple(tok.id_to_token(int(i)) for i in logp_a.argmax(-1)),
        )
    forced = torch.tensor([*target.ids[1:], ckpt.decoding.end], dtype=torch.long)  # what each decoder position should predict
    rows = torch.arange(len(forced))
    both = head_ablation(cfg, [(), chosen], mode, means, model.device) if chosen else None  # row 0 clean, row 1 knocked out
    ids_b, ids_a = greedy_batch(ckpt, [source.ids] * 2, both)
    return TranslationAblation(
        **common,
        translation_before=tok.decode(ids_b),
        translation_after=tok.decode(ids_a),
        tokens_before=tuple(tok.id_to_token(i) for i in ids_b),
        tokens_after=tuple(tok.id_to_token(i) for i in ids_a),
        target_tokens=tuple(tok.id_to_token(int(i)) for i in forced),
        p_target_before=logp_b[rows, forced].exp(),
        p_target_after=logp_a[rows, forced].exp(),
        kl=kl_divergence(logp_b, logp_a),
    )


# -- every single head: the sweep -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """The effect of knocking out each single head, as a layers × heads grid per attention kind."""

    grids: dict[str, Tensor]  # kind -> (layers of that kind, n_heads) float32: the metric with that one head knocked out
    metric: str  # a key of METRICS
    description: str  # exactly what each number is (METRICS[metric])
    mode: str  # "zero" or "mean"
    reference: str | None  # which texts the means are over (mean ablation), else None
    positions: tuple[int, ...]  # the output positions that counted
    baseline: float | None  # logprob metrics: the clean mean log-probability of the scored tokens; else None

    def top(self, k: int = 5) -> list[tuple[Head, float]]:
        """The k heads with the largest effect, largest first."""
        cells = [
            ((kind, layer, h), float(g[layer, h]))
            for kind, g in self.grids.items()
            for layer, h in product(range(g.shape[0]), range(g.shape[1]))
        ]
        return sorted(cells, key=lambda c: -c[1])[:k]


def _positions(cfg: ModelConfig, tokens: Tokens, metric: str, positions: Collection[int] | None) -> tuple[int, ...]:
    """Output positions that count: given ones in range (and, for logprob-next, with a next token)."""
    source, target = tokens
    if cfg.kind == "encoder" and cfg.n_classes:
        return (0,)  # one output: the class distribution
    n = len(source.ids) if target is None else len(target.ids)
    has_next = n - 1 if (metric == "logprob-next" and cfg.kind == "decoder") else n
    chosen = range(n) if positions is None else sorted({int(p) for p in positions})
    out = tuple(p for p in chosen if 0 <= p < has_next)
    if not out:
        raise ValueError(f"no position to score: positions {positions} of {n} output positions")
    return out


def _rows_per_chunk(cfg: ModelConfig, tokens: Tokens) -> int:
    """Batch rows a chunk of the sweep may hold: about ROW_BYTES_BUDGET over one row's largest activations."""
    source, target = tokens
    T = max(len(source.ids), 0 if target is None else len(target.ids))
    vocab = cfg.vocab_size if cfg.has_decoder else 0
    row = 4 * (2 * cfg.n_heads * T * T + T * (6 * cfg.d_model + cfg.d_ff) + 2 * T * vocab)  # scores, activations, logits
    return max(1, ROW_BYTES_BUDGET // row)


@torch.inference_mode()
def sweep(
    ckpt: Checkpoint,
    tokens: Tokens,
    metric: str = "kl",
    mode: str = "zero",
    means: ReferenceMeans | None = None,
    positions: Collection[int] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    max_rows: int | None = None,
) -> Sweep:
    """Knock out every head on its own and measure `metric` (a key of METRICS; `metrics_for(cfg)` lists those that apply).

    All heads run in one batched forward, batch row r knocking out head r, plus a clean row: in
    chunks of at most `max_rows` rows (default: what fits ROW_BYTES_BUDGET), each with its own clean
    row, calling on_progress(heads done, heads in all) after each chunk.

    Output positions, which `positions` selects among (default: all): a decoder LM's position i is
    its prediction at token i (of token i + 1); an encoder-decoder's decoder position j predicts
    target token j + 1 (the end token at the last); an encoder without a head scores each token's final
    hidden state; a classifier has one output (its class distribution) and ignores `positions`.
    """
    _check_tokens(ckpt, tokens)
    cfg, model = ckpt.config, ckpt.model
    if metric not in metrics_for(cfg):
        raise ValueError(f"metric {metric!r} does not apply to this {cfg.kind} model; choose one of {metrics_for(cfg)}")
    means = _means_for(ckpt, mode, means)
    counted = torch.tensor(_positions(cfg, tokens, metric, positions), dtype=torch.long)
    next_ids = _next_ids(ckpt, tokens, counted) if metric == "logprob-next" else None
    heads = all_heads(cfg)
    per_chunk = max(1, (max_rows or _rows_per_chunk(cfg, tokens)) - 1)  # one row of each chunk runs clean
    effects, baseline = [], None
    for start in range(0, len(heads), per_chunk):
        chunk = heads[start : start + per_chunk]
        knockout = head_ablation(cfg, [(), *((h,) for h in chunk)], mode, means, model.device)
        out, _ = model(*_batch_inputs(ckpt, tokens, len(chunk) + 1), ablate=knockout)
        effect, baseline = _effect(metric, out.float(), counted, next_ids)
        effects.append(effect.cpu())
        if on_progress is not None:
            on_progress(start + len(chunk), len(heads))
    flat = torch.cat(effects)  # (n heads,) in all_heads order: kind by kind, each layers_of(kind) × n_heads
    sizes = [cfg.layers_of(kind) * cfg.n_heads for kind in cfg.attention_kinds]
    grids = {kind: part.reshape(cfg.layers_of(kind), cfg.n_heads) for kind, part in zip(cfg.attention_kinds, flat.split(sizes))}
    return Sweep(
        grids=grids,
        metric=metric,
        description=METRICS[metric],
        mode=mode,
        reference=None if means is None else means.reference,
        positions=tuple(counted.tolist()),
        baseline=baseline,
    )


def _next_ids(ckpt: Checkpoint, tokens: Tokens, counted: Tensor) -> Tensor:
    """(P,) the token that actually comes next after each counted position (a translator's last: its end token)."""
    source, target = tokens
    following = source.ids[1:] if target is None else (*target.ids[1:], ckpt.decoding.end)
    return torch.tensor([following[int(p)] for p in counted], dtype=torch.long)


def _effect(metric: str, out: Tensor, counted: Tensor, next_ids: Tensor | None) -> tuple[Tensor, float | None]:
    """(R - 1,) the metric of rows 1.. against row 0 (clean), over the counted positions; and the clean baseline.

    out: (R, T, vocab) logits, (R, n_classes) class logits or (R, T, d_model) hidden states.
    """
    if metric == "cosine":
        h = out[:, counted]  # (R, P, d_model)
        return (1 - F.cosine_similarity(h[:1], h[1:], dim=-1)).mean(-1), None
    logp = out.log_softmax(-1)  # (R, C) or (R, T, vocab)
    logp = logp[:, None] if logp.dim() == 2 else logp[:, counted]  # (R, P, C)
    clean, ablated = logp[:1], logp[1:]
    if metric == "kl":
        return kl_divergence(clean, ablated).mean(-1), None
    target = clean[0].argmax(-1) if metric == "logprob" else next_ids.to(logp.device)  # (P,)
    picked = logp.gather(-1, target[None, :, None].expand(logp.shape[0], -1, 1))[..., 0]  # (R, P)
    return (picked[:1] - picked[1:]).mean(-1), float(picked[0].mean())
