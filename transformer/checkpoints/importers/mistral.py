"""Mistral: Llama with a sliding window on every layer (`sliding_window`; null: full attention) and no biases."""

from __future__ import annotations

from typing import Any

from transformer.checkpoints.importers.llama import IGNORABLE, LLAMA_DEFAULTS, decoder_config, facts_of, weights
from transformer.checkpoints.importers.parts import Family, sliding

# transformers' MistralConfig defaults for the fields a config.json may leave out (an absent sliding_window is
# 4096, a null one is none)
MISTRAL_DEFAULTS = {
    **LLAMA_DEFAULTS,
    "max_position_embeddings": 4096 * 32,
    "num_key_value_heads": 8,
    "sliding_window": 4096,
}


def window(hf: dict[str, Any], n_layers: int) -> dict[str, Any]:
    # MistralModel masks every layer with config.sliding_window: it reads no layer_types (transformers warns and
    # ignores them) nor Qwen2's use_sliding_window / max_window_layers, so neither do we.
    return sliding({"sliding_window": hf.get("sliding_window")}, n_layers)


def config(hf: dict[str, Any]) -> dict[str, Any]:
    # MistralAttention and MistralMLP have no biases (attention_bias / mlp_bias fields are not read)
    return decoder_config({**MISTRAL_DEFAULTS, **hf}, attn_bias=False, attn_out_bias=False, mlp_bias=False, window=window)


FAMILY = Family(
    "mistral",
    ("MistralForCausalLM", "MistralModel"),
    "model.",
    IGNORABLE,
    config,
    weights,
    facts=facts_of(config, MISTRAL_DEFAULTS),
)
