"""Rotary position embeddings (RoPE): positions enter attention by turning q and k, not by adding a vector.

Each pair of dims (i, i + r/2) of a head's first r = rotary_dim dims is a point in a plane, turned by the
angle pos · θ_i, with θ_i = 1 / rope_theta^(2i/r) (the "rotate half" layout of GPT-NeoX and Llama). A query
at position m and a key at position n then score q·R(m)ᵀR(n)·k = q·R(n − m)·k: the score depends only on
their distance. The remaining head_dim − r dims pass unturned (partial rotary, Pythia and Phi).

Scaling stretches the wavelengths for texts longer than the model was trained on:
  linear   θ_i / factor
  dynamic  rope_theta grows with the text once it is longer than rope_original_max_len (NTK-aware), as a
           freshly loaded Hugging Face model computes it for that text
  llama3   long wavelengths / factor, short ones kept, a smooth blend between (Llama 3.1)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from transformer.model.config import ModelConfig


def inverse_frequencies(cfg: ModelConfig, n_positions: int) -> Tensor:
    """θ_i for i < rotary_dim / 2 (float32), for a text of `n_positions` tokens (only dynamic scaling looks at it)."""
    dim = cfg.rotary_dim
    base = cfg.rope_theta
    if cfg.rope_scaling == "dynamic" and n_positions > cfg.rope_original_max_len:
        factor, original = cfg.rope_factor, cfg.rope_original_max_len
        base = base * ((factor * n_positions / original) - (factor - 1)) ** (dim / (dim - 2))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))  # (dim/2,)
    if cfg.rope_scaling == "linear":
        inv_freq = inv_freq / cfg.rope_factor
    elif cfg.rope_scaling == "llama3":
        factor, original = cfg.rope_factor, cfg.rope_original_max_len
        low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > original / low, inv_freq / factor, inv_freq)  # long wavelengths stretched
        smooth = (original / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < original / high) & ~(wavelen > original / low)
        inv_freq = torch.where(medium, blended, scaled)
    return inv_freq


def cos_sin(cfg: ModelConfig, n_positions: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """cos and sin of every position's angles, each (T, rotary_dim): the angles of dims i and i + r/2 are equal."""
    inv_freq = inverse_frequencies(cfg, n_positions).to(device)
    angles = torch.outer(torch.arange(n_positions, device=device, dtype=torch.float32), inv_freq)  # (T, r/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, r)
    return angles.cos(), angles.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, H, T, d_head) with its first rotary_dim dims turned by each position's angles."""
    r = cos.shape[-1]
    turned, kept = x[..., :r], x[..., r:]
    half = r // 2
    rotated_half = torch.cat((-turned[..., half:], turned[..., :half]), dim=-1)  # the plane's other axis
    out = turned * cos + rotated_half * sin
    return out if kept.shape[-1] == 0 else torch.cat((out, kept), dim=-1)
