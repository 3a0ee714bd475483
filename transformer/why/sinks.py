"""Attention sinks: how much of each head's attention lands on the first token.

Trained models often send a large share of attention to the first token, whatever that token is
(Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks"). A head's weights must
sum to 1 over the keys, so a head with nothing relevant to read for this query still has to put its
attention somewhere: it parks it on a token every query can see, whose value vector it has learned to
keep small, so that attending there changes little.

    sink score of a head = mean over the counted query rows of weight[q, 0]

Counted rows are those that may attend to the first token and to at least one other key: a causal
query 0 sees only token 0 (weight 1 by necessity) and, under a sliding window, a query the window has
moved past token 0 gives it weight 0 by necessity; neither says anything about the head. A head with no
counted row (a one-token text) scores NaN.

- From a `Trace` (`trace_sink_scores`): exact, from the trace's own weights and mask.
- From `AttentionMaps` (`maps_sink_scores`): exact only when the maps are not pooled (each cell one
  weight, `maps.block(kind) == (1, 1)`); the mask is then rebuilt from the config (causal, window).
  A pooled map's first column is a block max over several keys and queries, not the share on token
  0, so it raises ValueError there: use a trace.
"""

from __future__ import annotations

import torch
from torch import Tensor

from transformer.model.config import ModelConfig
from transformer.model.trace import AttentionMaps, Trace

EXPLANATION = (
    "An attention sink is a token (usually the first) that takes a large share of a head's attention whatever the "
    "text says. Each row of weights must sum to 1, so a head with nothing relevant to read for a query parks its "
    "attention there, on a token every query can see and whose value the model keeps small: attending to it then "
    "changes little. Score: the mean weight on the first token over the queries that may look at it and at some "
    "other token (so a causal model's query 0, which can only look at token 0, is left out)."
)


def counted_rows(mask: Tensor) -> Tensor:
    """(…, Tq, Tk) bool mask -> (…, Tq): the rows that may attend to key 0 and to at least one other key."""
    return mask[..., 0] & mask[..., 1:].any(-1)


def sink_scores(weights: Tensor, mask: Tensor) -> Tensor:
    """(…, H, Tq, Tk) weights, (…, 1 or H, Tq, Tk) mask -> (…, H) float32: the mean weight on key 0 over counted rows."""
    rows = counted_rows(mask).expand(weights.shape[:-1]).to(torch.float64)  # (…, H, Tq)
    on_first = weights[..., 0].to(torch.float64)  # (…, H, Tq)
    total = (on_first * rows).sum(-1)
    n = rows.sum(-1)
    return torch.where(n > 0, total / n.clamp(min=1), torch.full_like(total, float("nan"))).float()


def trace_sink_scores(trace: Trace, kind: str, item: int = 0) -> Tensor:
    """(n_layers, n_heads) sink scores of attention `kind` for batch item `item`: exact, from the trace's weights and mask."""
    out = []
    for layer in range(trace.n_layers(kind)):
        att = trace.attention(kind, layer)
        out.append(sink_scores(att.weights[item].cpu(), att.mask[item].cpu()))  # (H,)
    return torch.stack(out)


def structural_mask(cfg: ModelConfig, kind: str, layer: int, n_queries: int, n_keys: int) -> Tensor:
    """(1, Tq, Tk) bool: where attention `kind` may look in `layer` for one unpadded text (causal, sliding window)."""
    mask = torch.ones(n_queries, n_keys, dtype=torch.bool)
    if kind == "decoder self":
        mask = mask.tril()
        window = cfg.window_of(layer)
        if window:
            i = torch.arange(n_queries)
            mask &= i[:, None] - torch.arange(n_keys)[None, :] < window
    return mask[None]


def maps_sink_scores(maps: AttentionMaps, kind: str, cfg: ModelConfig) -> Tensor:
    """(n_layers, n_heads) sink scores from unpooled `AttentionMaps` (exact); ValueError for pooled ones (see above)."""
    if maps.block(kind) != (1, 1):
        bq, bk = maps.block(kind)
        raise ValueError(
            f"these {kind} maps are pooled ({bq} × {bk} weights a cell, block max): the share on the first token "
            "cannot be read from them; use the full trace"
        )
    weights = maps.maps[kind]  # (L, H, Tq, Tk)
    n_q, n_k = weights.shape[-2:]
    return torch.stack(
        [sink_scores(weights[layer], structural_mask(cfg, kind, layer, n_q, n_k)) for layer in range(len(weights))]
    )


__all__ = ["EXPLANATION", "counted_rows", "maps_sink_scores", "sink_scores", "structural_mask", "trace_sink_scores"]
