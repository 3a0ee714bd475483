"""Where a token is: the absolute position tables added to the embeddings, and T5's relative position bias.

Sinusoidal tables, in the three layouts real checkpoints use (each pairs sin(pos·w_i) with cos(pos·w_i)):
  interleaved  PE[pos, 2i] = sin, PE[pos, 2i+1] = cos, w_i = 10000^(−2i/d)       (Vaswani et al.; our models)
  split        PE[pos, :d/2] = sin, PE[pos, d/2:] = cos, the same w_i             (Marian)
  fairseq      the split layout with w_i = exp(−i · ln 10000 / (d/2 − 1))        (M2M-100, NLLB)
`position_offset` shifts which row the first token reads (BART's learned table starts at row 2, M2M-100's
sinusoid at pad_id + 1): the table here holds the rows from the offset on.

T5 adds no vector: each head's score of query i for key j gets a learned bias b[h, bucket(j − i)]. Distances
below half the buckets (per direction in the encoder) get a bucket each; longer ones share logarithmically
wider buckets up to rel_max_distance, beyond which all share the last. The decoder sees only the past, so
its buckets cover distances j − i ≤ 0 only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.model.config import ModelConfig


def sinusoidal_table(n_positions: int, d_model: int, layout: str = "interleaved", offset: int = 0) -> Tensor:
    """(n_positions, d_model) float32: the rows of positions offset … offset + n_positions − 1 in `layout`."""
    half = d_model // 2
    pos = torch.arange(offset, offset + n_positions, dtype=torch.float32)[:, None]
    if layout == "interleaved":  # float32, as our checkpoints were trained with it
        inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        table = torch.zeros(n_positions, d_model)
        table[:, 0::2] = torch.sin(pos * inv_freq)
        table[:, 1::2] = torch.cos(pos * inv_freq)[:, :half]
        return table
    if layout == "fairseq":  # float32, as fairseq and transformers compute it
        angles = pos * torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
        table = torch.zeros(n_positions, d_model)
        table[:, :half], table[:, half : 2 * half] = torch.sin(angles), torch.cos(angles)  # odd d_model: last column 0
        return table
    # split (Marian): in float64, rounded once, as transformers computes it; an odd width gives sin the extra column
    angles = pos.double() / torch.pow(10000.0, torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.zeros(n_positions, d_model, dtype=torch.float64)
    table[:, : d_model - half], table[:, d_model - half :] = torch.sin(angles), torch.cos(angles)[:, :half]
    return table.float()


def relative_buckets(distance: Tensor, bidirectional: bool, n_buckets: int, max_distance: int) -> Tensor:
    """T5's bucket of each relative distance (key position − query position), long, in [0, n_buckets)."""
    buckets = torch.zeros_like(distance)
    if bidirectional:
        n_buckets //= 2
        buckets += (distance > 0).long() * n_buckets  # keys after the query use the upper half
        distance = distance.abs()
    else:
        distance = (-distance).clamp(min=0)  # only the past: how far back
    exact = n_buckets // 2
    far = (
        exact + (torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (n_buckets - exact)).long()
    )  # clamp(min=1): log(0) would be −inf; those distances take the exact branch anyway
    return buckets + torch.where(distance < exact, distance, far.clamp(max=n_buckets - 1))


class RelativeBias(nn.Module):
    """One stack's relative position bias: a learned value per (bucket, head), shared by every layer of the stack."""

    def __init__(self, cfg: ModelConfig, bidirectional: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cfg.rel_buckets, cfg.n_heads) * 0.02)  # (bucket, head)
        self.bidirectional = bidirectional
        self.n_buckets, self.max_distance = cfg.rel_buckets, cfg.rel_max_distance

    def forward(self, n_queries: int, n_keys: int, first_query: int = 0) -> Tensor:
        """(1, H, Tq, Tk): the bias each head adds to the score of query i (at position first_query + i) for key j."""
        device = self.weight.device
        queries = torch.arange(first_query, first_query + n_queries, device=device)
        distance = torch.arange(n_keys, device=device)[None, :] - queries[:, None]
        buckets = relative_buckets(distance, self.bidirectional, self.n_buckets, self.max_distance)
        return F.embedding(buckets, self.weight).permute(2, 0, 1)[None]
