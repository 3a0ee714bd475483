"""Multi-head attention, written out step by step: the math the Q, K, V page shows.

    scores  = Q Kᵀ / √d_head  (+ bias)             (before the mask; Q and K turned first under RoPE;
                                                    T5: Q Kᵀ + its relative position bias, unscaled)
    weights = softmax(scores, masked where the query may not look)
    output  = weights · V                          (per head), then heads merged and projected by W_O

Two paths compute the same thing: the manual one below (which also returns every intermediate)
and PyTorch's fused `scaled_dot_product_attention`, used when nothing is traced. A third,
`pooled_attention`, is the manual path a block of queries at a time, keeping only block-max
pooled weights: what the model view draws, without ever holding a (Tq, Tk) matrix per head.

Head ablation (`forward(ablate=...)`) knocks heads out after attention, before the merge: a
knocked-out head's output is replaced by zeros or by its mean output (`knock_out`, `HeadAblation`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.model.config import ModelConfig
from transformer.model.norms import make_norm
from transformer.model.rope import rotate
from transformer.model.trace import AttentionTrace, pool_blocks  # pool_blocks: the geometry of AttentionMaps


def attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: bool = True, bias: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Scaled dot-product attention, the manual path. Returns (output, weights, scores).

    q: (B, H, Tq, d_head); k, v: (B, H_kv, Tk, d_head), where each key/value head serves H / H_kv
    query heads in a row (grouped-query attention; H_kv = H is plain multi-head, 1 is multi-query);
    mask: (B, 1, Tq, Tk) bool, True = may attend. scale: divide q·k by √d_head (T5 does not);
    bias: (1, H, Tq, Tk) added to the scores before the mask (T5's relative positions).
    """
    B, H, Tq, d_head = q.shape
    H_kv, Tk = k.shape[1], k.shape[2]
    assert H % H_kv == 0, f"{H} query heads cannot share {H_kv} key/value heads evenly"
    # A group's query rows stacked, so each key/value head is read once, never copied per query head
    grouped = q.reshape(B, H_kv, (H // H_kv) * Tq, d_head)
    scores = (grouped @ k.transpose(-2, -1)).view(B, H, Tq, Tk)
    if scale:
        scores /= math.sqrt(d_head)  # in place: a second (Tq, Tk) buffer per head costs more than this division
    if bias is not None:
        scores += bias
    masked = scores if mask is None else scores.masked_fill(~mask, float("-inf"))
    weights = masked.softmax(dim=-1)  # (B, H, Tq, Tk)
    return weighted_sum(weights, v), weights, scores  # output: (B, H, Tq, d_head)


def fused_bias(bias: Tensor, mask: Tensor | None) -> Tensor:
    """The position bias with −inf where the mask forbids: one float attn_mask for the fused kernel."""
    return bias if mask is None else bias.masked_fill(~mask, float("-inf"))


def weighted_sum(weights: Tensor, v: Tensor) -> Tensor:
    """weights (B, H, Tq, Tk) @ v (B, H_kv, Tk, d_head) -> (B, H, Tq, d_head), each head reading its group's values."""
    B, H, Tq, Tk = weights.shape
    H_kv = v.shape[1]
    return (weights.reshape(B, H_kv, (H // H_kv) * Tq, Tk) @ v).view(B, H, Tq, v.shape[-1])


@dataclass(frozen=True)
class HeadAblation:
    """Which heads to knock out, batch row by batch row: the `ablate=` argument of the model's forward.

    A knocked-out head's output (weights @ v, before heads are merged and projected by W_O) is
    replaced by zeros (zero ablation) or by `means[kind, layer][h]` (mean ablation). Zeroing head h's
    output is the same as zeroing its d_head columns of W_O. Each batch row has its own keep row, so
    one forward with batch = number of heads runs every single-head knockout at once.
    """

    # (kind, layer) -> (B or 1, n_heads) float: 1 keeps the head's output, 0 replaces it (values in
    # between mix the two); kind is "encoder self", "decoder self" or "cross", layers from 0.
    # A sublayer not listed runs untouched.
    keep: Mapping[tuple[str, int], Tensor]
    # (kind, layer) -> (n_heads, d_head): what a knocked-out head outputs instead; absent: zeros.
    means: Mapping[tuple[str, int], Tensor] = field(default_factory=dict)

    def at(self, kind: str, layer: int) -> tuple[Tensor, Tensor | None] | None:
        """(keep (B or 1, H), mean (H, d_head) or None) for one attention sublayer; None when untouched."""
        keep = self.keep.get((kind, layer))
        return None if keep is None else (keep, self.means.get((kind, layer)))


def knock_out(out: Tensor, keep: Tensor, mean: Tensor | None = None) -> Tensor:
    """Heads' outputs with the knocked-out ones replaced: out · keep + mean · (1 − keep), per row and head.

    out: (B, H, Tq, d_head); keep: (B or 1, H); mean: (H, d_head), None for zeros. A kept head
    (keep = 1) comes back bit for bit.
    """
    B, H = out.shape[:2]
    assert keep.shape[-1] == H and keep.shape[0] in (1, B), f"keep is {tuple(keep.shape)}, expected ({B} or 1, {H})"
    k = keep.to(out.dtype)[:, :, None, None]  # (B, H, 1, 1)
    if mean is None:
        return out * k
    return out * k + (1 - k) * mean.to(out.dtype)[None, :, None, :]  # mean: (1, H, 1, d_head)


QUERY_BLOCK = 128  # queries per block in pooled_attention: 12 heads × 128 × 2048 keys is 12 MB of scores


def query_block_rows(n_queries: int, n_keys: int, max_cells: int) -> int:
    """Queries per block in pooled_attention: about QUERY_BLOCK, a whole number of pooling blocks."""
    bq, _ = pool_blocks(n_queries, n_keys, max_cells)
    return bq * max(1, QUERY_BLOCK // bq)


def block_max(weights: Tensor, block_q: int, block_k: int) -> Tensor:
    """Max over (block_q × block_k) blocks of the last two dims (a partial last block counts too).

    Max, not mean: one sharp weight (a head that looks at one token) stays visible in a thumbnail.
    """
    if block_q == 1 and block_k == 1:
        return weights
    lead, (tq, tk) = weights.shape[:-2], weights.shape[-2:]
    x = F.max_pool2d(weights.reshape(-1, 1, tq, tk), kernel_size=(block_q, block_k), ceil_mode=True)
    return x.reshape(*lead, *x.shape[-2:])


def pooled_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, max_cells: int, scale: bool = True, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """`attention`, a block of queries at a time, keeping only the weights block-max pooled to ≤ max_cells².

    Returns (output (B, H, Tq, d_head), pooled weights (B, H, ⌈Tq/bq⌉, ⌈Tk/bk⌉)). Each query row is
    computed by the same operations as in `attention`, so the output and the pooled weights equal
    `attention`'s output and `block_max` of its weights up to float rounding (tested against the
    rounding bound): often bit for bit on the CPU, but BLAS may pick another kernel for a block of
    another shape, and which it picks depends on the CPU.
    """
    n_q, n_k = q.shape[-2], k.shape[-2]
    bq, bk = pool_blocks(n_q, n_k, max_cells)
    rows = query_block_rows(n_q, n_k, max_cells)
    n_cols = -(-n_k // bk)
    outputs, pooled = [], []
    for start in range(0, n_q, rows):
        block_mask = None if mask is None else mask[:, :, start : start + rows]
        keys = n_k if block_mask is None else _keys_seen(block_mask, bk)
        if keys < n_k:  # a causal block: the keys after its last query get weight 0, not worth scoring
            block_mask = block_mask[..., :keys]
        block_bias = None if bias is None else bias[:, :, start : start + rows, :keys]
        out, weights, _ = attention(q[:, :, start : start + rows], k[:, :, :keys], v[:, :, :keys], block_mask, scale, block_bias)
        outputs.append(out)
        # the unscored keys' pooled cells: exactly 0, the block max of weights that are all 0
        pooled.append(F.pad(block_max(weights, bq, bk), (0, n_cols - (-(-keys // bk)))))
    return torch.cat(outputs, dim=2), torch.cat(pooled, dim=2)


def _keys_seen(block_mask: Tensor, bk: int) -> int:
    """How many leading keys a block of queries must score: up to the last one any of them may see, in whole
    pooling blocks of bk keys (every key when none is visible, so a fully masked row stays what it was)."""
    seen = block_mask.any(dim=(0, 1, 2)).nonzero()
    n_k = block_mask.shape[-1]
    return n_k if seen.numel() == 0 else min(n_k, -(-(int(seen.max()) + 1) // bk) * bk)


class MultiHeadAttention(nn.Module):
    """Projections into query/key/value spaces, attention per head, and the output projection W_O.

    n_heads query heads of width d_head; n_kv_heads key/value heads (fewer under grouped-query
    attention), optionally RMS-normalised per head (q/k norm) and turned by rotary positions.
    """

    def __init__(self, cfg: ModelConfig, cross: bool = False):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.d_head = cfg.n_heads, cfg.kv_heads, cfg.d_head
        inner, kv_inner = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        self.q_proj = nn.Linear(cfg.d_model, inner, bias=cfg.attn_bias)  # W_Q for all heads, stacked
        self.k_proj = nn.Linear(cfg.d_model, kv_inner, bias=cfg.attn_bias)
        self.v_proj = nn.Linear(cfg.d_model, kv_inner, bias=cfg.attn_bias)
        self.out_proj = nn.Linear(inner, cfg.d_model, bias=cfg.attn_out_bias)  # W_O
        self.q_norm = make_norm(cfg, self.d_head) if cfg.qk_norm else None
        self.k_norm = make_norm(cfg, self.d_head) if cfg.qk_norm else None
        self.rotary = cfg.positional == "rope" and not cross  # positions turn q and k of self-attention
        self.scale = cfg.scale_scores
        self.dropout = cfg.dropout

    def step(
        self,
        x: Tensor,
        past: tuple[Tensor, Tensor] | None,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        bias: Tensor | None = None,
        ablate: tuple[Tensor, Tensor | None] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One new decoder position: x (B, 1, d_model). Returns the sublayer output and the keys/values to keep.

        Self-attention: past holds the earlier positions' (k, v), each (B, H_kv, t, d_head), and the new one's are
        appended. Cross-attention (memory given): the memory's (k, v) are computed once, then passed back as past.
        mask: (B, 1, 1, Tk) for padded memory; bias: (1, H, 1, Tk), the new query's position bias. Rotary models
        (decoder-only) have no step: greedy decoding is for encoder-decoders.
        """
        assert not self.rotary, "incremental decoding is for encoder-decoders, which have no rotary positions"
        q = self._split(self.q_proj(x), self.n_heads)
        if memory is not None and past is not None:
            k, v = past
        else:
            source = x if memory is None else memory
            k, v = self._split(self.k_proj(source), self.n_kv_heads), self._split(self.v_proj(source), self.n_kv_heads)
            if self.k_norm is not None:
                k = self.k_norm(k)
            if memory is None and past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if self.q_norm is not None:
            q = self.q_norm(q)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask if bias is None else fused_bias(bias, mask),
            scale=None if self.scale else 1.0,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )
        if ablate is not None:
            out = knock_out(out, *ablate)
        B, H, _, d_head = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, 1, H * d_head)), (k, v)

    def _split(self, x: Tensor, n_heads: int) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, n_heads, self.d_head).transpose(1, 2)  # (B, H, T, d_head)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        trace: bool = False,
        pool: int | None = None,
        ablate: tuple[Tensor, Tensor | None] | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        bias: Tensor | None = None,
    ) -> tuple[Tensor, AttentionTrace | Tensor | None]:
        """x: (B, Tq, d_model) queries; memory: (B, Tk, d_model) keys/values (None: self-attention).

        mask: (B, 1, Tq, Tk) bool, True where attending is allowed (None: everything allowed).
        Returns the sublayer output (B, Tq, d_model) and, when `trace`, an AttentionTrace; when
        `pool` (and not `trace`), the weights block-max pooled to at most pool × pool per head.
        ablate: (keep (B or 1, H), mean (H, d_head) or None) from `HeadAblation.at`: heads' outputs
        are replaced (`knock_out`) before the merge; the trace then shows the replaced output.
        rope: (cos, sin) of every position, each (T, rotary_dim), for a rotary model's self-attention.
        bias: (1, H, Tq, Tk) position bias added to the scores (T5's relative positions), None without one.
        """
        kv = x if memory is None else memory
        q = self._split(self.q_proj(x), self.n_heads)  # (B, H, Tq, d_head)
        k = self._split(self.k_proj(kv), self.n_kv_heads)  # (B, H_kv, Tk, d_head)
        v = self._split(self.v_proj(kv), self.n_kv_heads)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q_pre = k_pre = None
        if self.rotary:
            assert rope is not None, "a rotary model's self-attention needs the positions' (cos, sin)"
            q_pre, k_pre = q, k
            q, k = rotate(q, *rope), rotate(k, *rope)
        dropout_p = self.dropout if self.training else 0.0
        pooled = None
        if pool is not None and not trace:
            if dropout_p > 0.0:
                raise ValueError("pooled attention maps are for inference: call model.eval() first")
            out, pooled = pooled_attention(q, k, v, mask, pool, self.scale, bias)
        elif trace or dropout_p > 0.0:
            out, weights, scores = attention(q, k, v, mask, self.scale, bias)
            if dropout_p > 0.0:
                out = weighted_sum(F.dropout(weights, dropout_p, training=True), v)
        else:
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask if bias is None else fused_bias(bias, mask),
                scale=None if self.scale else 1.0,
                enable_gqa=self.n_kv_heads != self.n_heads,
            )
        if ablate is not None:
            out = knock_out(out, *ablate)
        B, H, Tq, d_head = out.shape
        merged = out.transpose(1, 2).reshape(B, Tq, H * d_head)  # (B, Tq, H · d_head)
        y = self.out_proj(merged)
        if not trace:
            return y, pooled
        full_mask = (
            torch.ones(B, 1, Tq, k.shape[2], dtype=torch.bool, device=x.device)
            if mask is None
            else mask.expand(B, 1, Tq, k.shape[2])
        )
        return y, AttentionTrace(
            q=q.detach(),
            k=k.detach(),
            v=v.detach(),
            scores=scores.detach(),
            mask=full_mask.detach(),
            weights=weights.detach(),
            output=out.detach(),
            q_pre=None if q_pre is None else q_pre.detach(),
            k_pre=None if k_pre is None else k_pre.detach(),
            bias=None if bias is None else bias.detach(),
        )
