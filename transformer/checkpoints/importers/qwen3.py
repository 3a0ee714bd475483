"""Qwen3: Qwen2's layout with an RMSNorm over head_dim on every head's q and k, an explicit head_dim, and
`attention_bias` (q, k, v and o alike) in place of Qwen2's fixed q/k/v biases."""

from __future__ import annotations

from typing import Any

from transformer.checkpoints.importers.llama import IGNORABLE, decoder_config, facts_of, weights
from transformer.checkpoints.importers.parts import Family, get
from transformer.checkpoints.importers.qwen2 import QWEN_DEFAULTS, window

QWEN3_DEFAULTS = {**QWEN_DEFAULTS, "head_dim": 128}  # transformers' Qwen3Config: head_dim 128 unless given


def config(hf: dict[str, Any]) -> dict[str, Any]:
    hf = {**QWEN3_DEFAULTS, **hf}
    bias = bool(get(hf, "attention_bias", False))
    # q_norm and k_norm use rms_norm_eps, as every other RMSNorm; Qwen3MLP has no biases
    return decoder_config(hf, attn_bias=bias, attn_out_bias=bias, mlp_bias=False, qk_norm=True, window=window)


FAMILY = Family(
    "qwen3",
    ("Qwen3ForCausalLM", "Qwen3Model"),
    "model.",
    IGNORABLE,
    config,
    weights,
    facts=facts_of(config, QWEN3_DEFAULTS),
)
