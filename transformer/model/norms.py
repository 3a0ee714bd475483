"""The normalisations a layer may use: LayerNorm (the paper, BERT, GPT-2) or RMSNorm (Llama, Gemma, Qwen)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transformer.model.config import ModelConfig


class RMSNorm(nn.Module):
    """x / √(mean(x²) + eps) · w, no mean subtracted and no bias; Gemma's form scales by (1 + w) instead."""

    def __init__(self, dim: int, eps: float, plus_one: bool = False):
        super().__init__()
        # Gemma stores w around 0 (scale 1 + w), the others around 1
        self.weight = nn.Parameter(torch.zeros(dim) if plus_one else torch.ones(dim))
        self.eps = eps
        self.plus_one = plus_one

    def forward(self, x: Tensor) -> Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * (1.0 + self.weight) if self.plus_one else self.weight * x


def make_norm(cfg: ModelConfig, dim: int | None = None) -> nn.Module:
    """The config's normalisation over `dim` features (default d_model)."""
    dim = cfg.d_model if dim is None else dim
    if cfg.norm == "layer":
        return nn.LayerNorm(dim, eps=cfg.layer_norm_eps, bias=cfg.norm_bias)
    return RMSNorm(dim, cfg.layer_norm_eps, plus_one=cfg.norm == "rms_plus_one")
