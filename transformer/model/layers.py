"""Encoder and decoder layers: attention and feed-forward sublayers around a residual stream.

A layer is `x + attn(norm x)`, then `+ ff(norm x)` (pre-LN), or the paper's post-LN; GPT-NeoX's parallel
residual adds both sublayers to the same x: `x + attn(norm₁ x) + ff(norm₂ x)`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from transformer.model.attention import MultiHeadAttention
from transformer.model.config import ModelConfig
from transformer.model.norms import make_norm
from transformer.model.trace import LayerTrace

Rope = tuple[Tensor, Tensor]  # (cos, sin), each (T, rotary_dim): `rope.cos_sin`

Knockout = tuple[Tensor, Tensor | None]  # (keep (B or 1, H), mean (H, d_head) or None): one sublayer's `HeadAblation.at`

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


class FeedForward(nn.Module):
    """The position-wise MLP: d_model -> d_ff -> d_model, plain `down(act(up x))` or gated `down(act(gate x) ⊙ up x)`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.mlp_bias)
        self.gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.mlp_bias) if cfg.mlp == "gated" else None
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.mlp_bias)
        self.act = ACTIVATIONS[cfg.activation]
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.act(self.up(x)) if self.gate is None else self.act(self.gate(x)) * self.up(x)  # (B, T, d_ff)
        return self.down(self.dropout(hidden))


class Sublayer(nn.Module):
    """Residual connection + LayerNorm around one sublayer, pre-LN or post-LN.

    pre-LN:  x + f(norm(x))        post-LN (the paper):  norm(x + f(x))
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm = make_norm(cfg)
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
        self.self_attn = MultiHeadAttention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attn_block = Sublayer(cfg)
        self.ff_block = Sublayer(cfg)
        self.parallel = cfg.parallel_residual

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        trace: bool = False,
        pool: int | None = None,
        ablate: Knockout | None = None,
        rope: Rope | None = None,
        bias: Tensor | None = None,
    ) -> tuple[Tensor, LayerTrace | dict | None]:
        """Returns the layer output and a LayerTrace (`trace`), or {"self_attn": pooled weights} (`pool`), or None.

        ablate: the self-attention's heads to knock out (`HeadAblation.at`), None to run them all.
        bias: (1, H, T, T) relative position bias added to the self-attention's scores (T5), None without one.
        """
        x, att, resid_attn = attend_then_feed_forward(
            self, x, lambda h: self.self_attn(h, mask=mask, trace=trace, pool=pool, ablate=ablate, rope=rope, bias=bias)
        )
        if not trace:
            return x, None if pool is None else {"self_attn": att}
        return x, LayerTrace(self_attn=att, resid_attn=resid_attn.detach(), resid_ff=x.detach())


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder's output (if any), feed-forward."""

    def __init__(self, cfg: ModelConfig, cross: bool):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg)
        self.attn_block = Sublayer(cfg)
        if cross:
            self.cross_attn = MultiHeadAttention(cfg, cross=True)
            self.cross_block = Sublayer(cfg)
        else:
            self.cross_attn = None
        self.feed_forward = FeedForward(cfg)
        self.ff_block = Sublayer(cfg)
        self.parallel = cfg.parallel_residual
        assert not (cross and self.parallel), "the parallel residual is a decoder-only layout (GPT-NeoX)"

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
        rope: Rope | None = None,
        bias: Tensor | None = None,
    ) -> tuple[Tensor, LayerTrace | dict | None]:
        """Like EncoderLayer.forward; with `pool`, the dict also holds "cross_attn" when there is cross-attention.

        ablate, cross_ablate: the self- and cross-attention's heads to knock out (`HeadAblation.at`).
        """
        self_attention = lambda h: self.self_attn(  # noqa: E731
            h, mask=self_mask, trace=trace, pool=pool, ablate=ablate, rope=rope, bias=bias
        )
        if self.cross_attn is None:
            x, self_att, resid_attn = attend_then_feed_forward(self, x, self_attention)
            if not trace:
                return x, None if pool is None else {"self_attn": self_att, "cross_attn": None}
            return x, LayerTrace(self_attn=self_att, resid_attn=resid_attn.detach(), resid_ff=x.detach())
        x, self_att = self.attn_block(x, self_attention)
        resid_attn = x
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
            resid_cross=resid_cross.detach(),
        )


Past = tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor] | None]  # a decoder layer's (self k/v, cross k/v) so far


def decoder_layer_step(
    layer: DecoderLayer,
    x: Tensor,
    past: Past | None,
    memory: Tensor,
    cross_mask: Tensor | None,
    bias: Tensor | None,
    ablate: Knockout | None = None,
    cross_ablate: Knockout | None = None,
) -> tuple[Tensor, Past]:
    """`DecoderLayer.forward` for one new position x (B, 1, d_model), reading and extending `past` (None at first)."""
    kept = {}

    def attend(h: Tensor, which: str, **kwargs) -> tuple[Tensor, None]:
        module = layer.self_attn if which == "self" else layer.cross_attn
        y, kept[which] = module.step(h, None if past is None else past[which == "cross"], **kwargs)
        return y, None

    x, _ = layer.attn_block(x, lambda h: attend(h, "self", bias=bias, ablate=ablate))
    x, _ = layer.cross_block(x, lambda h: attend(h, "cross", memory=memory, mask=cross_mask, ablate=cross_ablate))
    x, _ = layer.ff_block(x, lambda h: (layer.feed_forward(h), None))
    return x, (kept["self"], kept["cross"])


def attend_then_feed_forward(layer: EncoderLayer | DecoderLayer, x: Tensor, attend) -> tuple[Tensor, object, Tensor]:
    """A layer without cross-attention: (output, the attention's extra, the stream after attention alone).

    Sequential: x ← x + attn(norm x), then x + ff(norm x). Parallel (GPT-NeoX): both sublayers read the
    same x, x + attn(norm₁ x) + ff(norm₂ x); the stream "after attention" is then x + attn(norm₁ x).
    """
    if not layer.parallel:
        x, att = layer.attn_block(x, attend)
        resid_attn = x
        x, _ = layer.ff_block(x, lambda h: (layer.feed_forward(h), None))
        return x, att, resid_attn
    assert layer.attn_block.norm_first, "the parallel residual is pre-LN"
    update, att = attend(layer.attn_block.norm(x))
    resid_attn = x + layer.attn_block.dropout(update)
    ff = layer.feed_forward(layer.ff_block.norm(x))
    return resid_attn + layer.ff_block.dropout(ff), att, resid_attn
