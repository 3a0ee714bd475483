"""The logit lens: what the decoder would predict if it stopped after each layer and sublayer.

The explanation the page shows (`EXPLANATION`): each row reads the residual stream at that point
through the model's own output end (its final norm, if it has one, then the unembedding),
so the last row is exactly the model's prediction and earlier rows show how that prediction
forms layer by layer.

What is applied before the unembedding is the decoder's `final_norm` when the stack has one
(pre-LN models, GPT-2 imports). A post-LN model without a final norm gets nothing extra: there
the residual stream after every post-LN sublayer is already LayerNorm-ed, `norm(x + f(x))`, and
the model's own head reads it as it is; only the `embed` row is then un-normalised. The head itself
is the model's `lm_logits`, with whatever it adds: T5's scale before the unembedding (`head_scale`),
BART's bias on the logits (`logits_bias`).

Works from a `Trace` (no new forward). The (rows × positions × vocab) logits are never held at
once: a block of cells at a time is unembedded and reduced to its top-k, the log-sum-exp and the
actual next token's logit and rank. The unembedding is most of the cost: rows × positions × d_model ×
vocab multiply-adds, ~0.2 s for 4 layers, d_model 256, vocab 8000 at 128 tokens on one CPU thread, but
~7 s for a GPT-2-small-sized model (25 rows × 128 positions, ~250 GFLOP); there, read a window of
`positions` (8 positions: ~0.3 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from transformer.checkpoints.format import Checkpoint
from transformer.model.config import ModelConfig
from transformer.model.describe import norm_name
from transformer.model.trace import StackTrace, Trace

EXPLANATION = (
    "Each row reads the residual stream at that point through the model's own output end "
    "(its final norm, if it has one, then its head), so the last row is exactly "
    "the model's prediction and earlier rows show how that prediction forms layer by layer."
)
# Cells (row, position) unembedded at once: enough that the unembedding matrix is read from memory
# rarely, few enough that each block's logits stay near the cache for the passes that follow.
BLOCK_FLOATS = 2**20  # logits per block (4 MiB in float32) ...
MIN_CELLS = 128  # ... but at least this many cells per block


@dataclass(frozen=True)
class LogitLens:
    """The decoder's next-token prediction read off the residual stream after each layer and sublayer."""

    labels: tuple[str, ...]  # one per row: "embed", "L0 self-attn", ["L0 cross-attn",] "L0 feed-forward", ...
    positions: tuple[int, ...]  # the decoder input position of each column (all of them unless asked for fewer)
    tokens: tuple[str, ...]  # the decoder's input token at each column
    top_ids: Tensor  # (rows, columns, k) int64: the k most likely next tokens at each cell, most likely first
    top_tokens: tuple[tuple[tuple[str, ...], ...], ...]  # [row][column][j]: top_ids as token strings
    top_probs: Tensor  # (rows, columns, k) float32 probabilities of top_ids
    next_ids: tuple[int | None, ...]  # the token that actually comes next at each column; None after the last token
    next_probs: Tensor  # (rows, columns) float32 probability of next_ids[c] in each cell; NaN where unknown
    next_ranks: Tensor  # (rows, columns) int64 rank of next_ids[c] (0 = top-1); -1 where unknown
    norm: str  # what is applied before the unembedding, in words

    def row(self, label: str) -> int:
        """Index of the row named `label` (e.g. "L1 feed-forward")."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise KeyError(f"no row {label!r}; rows are {self.labels}") from None


def output_end(cfg: ModelConfig, final_norm: bool) -> str:
    """What the lens (and the model's own head) applies to a residual vector to get next-token scores, in words."""
    name = norm_name(cfg)
    if final_norm:
        steps = [f"the final {name}"]
    elif cfg.norm_first:
        steps = [f"no final norm (this pre-LN model has no final {name})"]
    else:
        steps = [f"no final norm (after each post-LN sublayer the residual stream is already {name}-ed)"]
    if cfg.head_scale != 1.0:
        steps.append(f"× {cfg.head_scale:.4g} (the scale this model's head applies)")
    steps.append("the unembedding" + (" and its bias on the logits" if cfg.logits_bias else ""))
    return ", then ".join(steps)


def lens_rows(stack: StackTrace) -> tuple[tuple[str, ...], list[Tensor]]:
    """Row labels and the residual stream (B, T, d_model) at each: embed, then every sublayer of every layer."""
    labels, resids = ["embed"], [stack.embed]
    for i, layer in enumerate(stack.layers):
        labels.append(f"L{i} self-attn")
        resids.append(layer.resid_attn)
        if layer.resid_cross is not None:
            labels.append(f"L{i} cross-attn")
            resids.append(layer.resid_cross)
        labels.append(f"L{i} feed-forward")
        resids.append(layer.resid_ff)
    return tuple(labels), resids


@torch.inference_mode()
def logit_lens(ckpt: Checkpoint, trace: Trace, k: int = 5, positions: Sequence[int] | None = None, item: int = 0) -> LogitLens:
    """The logit lens of batch item `item` of `trace` (from `trace_text`): top-k per cell and the next token's probability.

    Columns are the decoder's input tokens: the text for a decoder LM, the target (its start token first)
    for an encoder-decoder; `positions` keeps only those columns (the cost is rows × columns ×
    vocab × d_model, so a GPT-2-sized model at 128 tokens is best read a window at a time on a CPU).
    Raises ValueError for a model without a decoder.
    """
    model, tok = ckpt.model, ckpt.tokenizer
    if not model.cfg.has_decoder or trace.decoder is None:
        raise ValueError("the logit lens needs a decoder with an unembedding; this model is encoder-only")
    stream = trace.target if model.cfg.kind == "encoder-decoder" else trace.source
    labels, resids = lens_rows(trace.decoder)
    weight = model.tok_embed.weight  # the device and dtype the model computes in
    n_positions, V = resids[0].shape[1], model.cfg.vocab_size
    cols = tuple(range(n_positions)) if positions is None else tuple(int(p) for p in positions)
    if not all(0 <= p < n_positions for p in cols):
        raise IndexError(f"positions {cols} out of range: the decoder has {n_positions} input tokens")
    T, k = len(cols), min(k, V)
    col_index = torch.tensor(cols, dtype=torch.long)
    final_norm = model.decoder.final_norm
    ids = None if stream is None else stream.ids
    next_ids = tuple(ids[p + 1] if ids is not None and p + 1 < len(ids) else None for p in cols)
    next_index = torch.tensor([i if i is not None else 0 for i in next_ids], device=weight.device)  # (T,)
    known = torch.tensor([i is not None for i in next_ids], device=weight.device)  # (T,)

    # Every (row, column) cell as one vector: (rows · T, d_model), unembedded a block of cells at a time.
    cells = torch.cat([r[item, col_index] for r in resids]).to(device=weight.device, dtype=weight.dtype)
    cell_next = next_index.repeat(len(resids))  # (rows · T,)
    per_block = max(MIN_CELLS, BLOCK_FLOATS // V)
    top_ids, top_probs, next_probs, next_ranks = [], [], [], []
    for start in range(0, cells.shape[0], per_block):
        h = cells[start : start + per_block]  # (n, d_model)
        if final_norm is not None:
            h = final_norm(h)
        logits = model.lm_logits(h).float()  # (n, V)
        values, indices = logits.topk(k, dim=-1)  # (n, k), the largest first
        target = logits.gather(-1, cell_next[start : start + per_block, None])  # (n, 1)
        next_ranks.append(torch.gt(logits, target).sum(-1, dtype=torch.int32))
        top = values[:, :1]  # (n, 1) the max, for a stable log-sum-exp, computed in place
        lse = top + logits.sub_(top).exp_().sum(-1, keepdim=True).log()  # (n, 1)
        top_ids.append(indices)
        top_probs.append((values - lse).exp())
        next_probs.append((target - lse).exp()[:, 0])
        del logits

    rows = len(resids)
    top_ids_t = torch.cat(top_ids).reshape(rows, T, k).cpu()
    names = {i: tok.id_to_token(i) for i in top_ids_t.unique().tolist()}
    top_tokens = tuple(tuple(tuple(names[i] for i in cell) for cell in row) for row in top_ids_t.tolist())
    next_probs_t = torch.cat(next_probs).reshape(rows, T).masked_fill(~known, float("nan")).cpu()
    next_ranks_t = torch.cat(next_ranks).reshape(rows, T).long().masked_fill(~known, -1).cpu()
    return LogitLens(
        labels=labels,
        positions=cols,
        tokens=() if stream is None else tuple(stream.tokens[p] for p in cols),
        top_ids=top_ids_t,
        top_tokens=top_tokens,
        top_probs=torch.cat(top_probs).reshape(rows, T, k).cpu(),
        next_ids=next_ids,
        next_probs=next_probs_t,
        next_ranks=next_ranks_t,
        norm=output_end(model.cfg, final_norm is not None),
    )


__all__ = ["EXPLANATION", "LogitLens", "lens_rows", "logit_lens", "output_end"]
