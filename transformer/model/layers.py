"""Encoder and decoder layers: attention and feed-forward sublayers around a residual stream."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from transformer.model.attention import MultiHeadAttention
from transformer.model.config import ModelConfig
from transformer.model.trace import LayerTrace

Knockout = tuple[Tensor, Tensor | None]  # (keep (B or 1, H), mean (H, d_head) or None): one sublayer's `HeadAblation.at`

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class FeedForward(nn.Module):
    """The position-wise MLP: d_model -> d_ff -> d_model."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model)
        self.act = ACTIVATIONS[cfg.activation]
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(self.act(self.up(x))))


class Sublayer(nn.Module):
    """Residual connection + LayerNorm around one sublayer, pre-LN or post-LN.

    pre-LN:  x + f(norm(x))        post-LN (the paper):  norm(x + f(x))
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.norm_first = cfg.norm_first

    def forward(self, x: Tensor, f) -> tuple[Tensor, object]:
        """f maps the (maybe normalised) stream to (update, extra); returns (new stream, extra)."""
        if self.norm_first:
            update, extra = f(self.norm(x))
            return x + self.dropout(update), extra
        update, extra = f(x)
        return self.norm(x + self.dropout(update)), extra


class EncoderLayer(nn.Module):
    """Self-attention over the whole sequence, then the feed-forward sublayer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.feed_forward = FeedForward(cfg)
        self.attn_block = Sublayer(cfg)
        self.ff_block = Sublayer(cfg)

    def forward(
        self, x: Tensor, mask: Tensor | None, trace: bool = False, pool: int | None = None, ablate: Knockout | None = None
    ) -> tuple[Tensor, LayerTrace | dict | None]:
        """Returns the layer output and a LayerTrace (`trace`), or {"self_attn": pooled weights} (`pool`), or None.

        ablate: the self-attention's heads to knock out (`HeadAblation.at`), None to run them all.
        """
        x, att = self.attn_block(x, lambda h: self.self_attn(h, mask=mask, trace=trace, pool=pool, ablate=ablate))
        resid_attn = x
        x, _ = self.ff_block(x, lambda h: (self.feed_forward(h), None))
        if not trace:
            return x, None if pool is None else {"self_attn": att}
        return x, LayerTrace(self_attn=att, resid_attn=resid_attn.detach(), resid_ff=x.detach())


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder's output (if any), feed-forward."""

    def __init__(self, cfg: ModelConfig, cross: bool):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
        self.attn_block = Sublayer(cfg)
        if cross:
            self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.dropout)
            self.cross_block = Sublayer(cfg)
        else:
            self.cross_attn = None
        self.feed_forward = FeedForward(cfg)
        self.ff_block = Sublayer(cfg)

    def forward(
        self,
        x: Tensor,
        self_mask: Tensor | None,
        memory: Tensor | None = None,
        cross_mask: Tensor | None = None,
        trace: bool = False,
        pool: int | None = None,
        ablate: Knockout | None = None,
        cross_ablate: Knockout | None = None,
    ) -> tuple[Tensor, LayerTrace | dict | None]:
        """Like EncoderLayer.forward; with `pool`, the dict also holds "cross_attn" when there is cross-attention.

        ablate, cross_ablate: the self- and cross-attention's heads to knock out (`HeadAblation.at`).
        """
        x, self_att = self.attn_block(x, lambda h: self.self_attn(h, mask=self_mask, trace=trace, pool=pool, ablate=ablate))
        resid_attn = x
        cross_att = resid_cross = None
        if self.cross_attn is not None:
            assert memory is not None, "an encoder-decoder's decoder layer needs the encoder output"
            x, cross_att = self.cross_block(
                x,
                lambda h: self.cross_attn(h, memory=memory, mask=cross_mask, trace=trace, pool=pool, ablate=cross_ablate),
            )
            resid_cross = x
        x, _ = self.ff_block(x, lambda h: (self.feed_forward(h), None))
        if not trace:
            return x, None if pool is None else {"self_attn": self_att, "cross_attn": cross_att}
        return x, LayerTrace(
            self_attn=self_att,
            resid_attn=resid_attn.detach(),
            resid_ff=x.detach(),
            cross_attn=cross_att,
            resid_cross=None if resid_cross is None else resid_cross.detach(),
        )
