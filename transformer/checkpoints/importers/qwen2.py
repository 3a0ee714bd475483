"""Qwen2 (and Qwen2.5): Llama with biases on q, k and v (not on o), and an optional sliding window on the upper layers."""

from __future__ import annotations

from typing import Any

from transformer.checkpoints.importers.llama import IGNORABLE, LLAMA_DEFAULTS, decoder_config, facts_of, weights
from transformer.checkpoints.importers.parts import Family, sliding

# transformers' Qwen2Config (and Qwen3Config) defaults for the fields a config.json may leave out
QWEN_DEFAULTS = {
    **LLAMA_DEFAULTS,
    "max_position_embeddings": 32768,
    "num_key_value_heads": 32,
    "use_sliding_window": False,
    "sliding_window": 4096,
    "max_window_layers": 28,
}


def window(hf: dict[str, Any], n_layers: int) -> dict[str, Any]:
    """Qwen2/Qwen3's window: `sliding_window` only when `use_sliding_window`, on the layers `layer_types` calls
    sliding, or else (configs before transformers 5) on layers from `max_window_layers` up."""
    return sliding(hf, n_layers)  # hf carries QWEN_DEFAULTS: an absent use_sliding_window is False, as in transformers


def config(hf: dict[str, Any]) -> dict[str, Any]:
    # Qwen2Attention: q, k, v always with a bias, o without (no attention_bias field); Qwen2MLP: no biases
    return decoder_config({**QWEN_DEFAULTS, **hf}, attn_bias=True, attn_out_bias=False, mlp_bias=False, window=window)


FAMILY = Family(
    "qwen2",
    ("Qwen2ForCausalLM", "Qwen2Model"),
    "model.",
    IGNORABLE,
    config,
    weights,
    facts=facts_of(config, QWEN_DEFAULTS),
)
