"""Gemma (the first generation: 2B, 7B): a Llama-shaped decoder with Gemma's own choices.

RMSNorm scales by (1 + w) (its weights are stored around 0); token embeddings are multiplied by √hidden_size
(transformers keeps the factor as a float32 tensor, as our float32 product does); the MLP is GeGLU with the tanh
GELU; each head is `head_dim` wide whatever hidden_size / num_attention_heads is (7B: 16 heads of 256 in a 3072
model); 2B shares one key/value head among all query heads; the LM head is the token embedding. Gemma 2 and 3
(model_type gemma2, gemma3: soft-capping, extra norms, local layers) are other families, not registered here.

Config fields that do not change inference numbers: attention_dropout, initializer_range, use_cache,
bos/eos/pad_token_id (the pad id only zeroes that embedding's gradient).
"""

from __future__ import annotations

from typing import Any

from transformer.checkpoints.format import CheckpointError
from transformer.checkpoints.importers.llama import weights  # the Llama plan: the switches that differ are in the config
from transformer.checkpoints.importers.parts import (
    CONFIG,
    HF_ACTIVATIONS,
    Family,
    activation,
    context,
    get,
    require,
    rope,
    rotary_facts,
    without,
)

# transformers' GemmaConfig defaults for the fields a config.json may leave out (Gemma 7B's shape)
GEMMA_DEFAULTS = {
    "num_key_value_heads": 16,
    "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh",
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "attention_bias": False,
}


def gemma_activation(hf: dict[str, Any]) -> str:
    """The MLP's activation as transformers 5 computes it, refusing a config older versions read otherwise.

    The released configs say hidden_act="gelu" but were trained with the tanh GELU: transformers rewrites that
    "gelu" to "gelu_pytorch_tanh". transformers 4.x read `hidden_activation` first (its "gelu" the exact one);
    a config where the two fields disagree was computed differently by different versions: refused.
    """
    name = get(hf, "hidden_act")
    ours = activation({"hidden_act": "gelu_pytorch_tanh" if name == "gelu" else name}, "hidden_act")
    legacy = hf.get("hidden_activation")
    if legacy is not None and HF_ACTIVATIONS.get(legacy) != ours:
        raise CheckpointError(
            f"{CONFIG}: unsupported hidden_activation={legacy!r} beside hidden_act={name!r} (transformers 4 used "
            f"hidden_activation, transformers 5 uses hidden_act; they must name the same function)"
        )
    return ours


def config(hf: dict[str, Any]) -> dict[str, Any]:
    hf = {**GEMMA_DEFAULTS, **hf}
    require(hf, "use_bidirectional_attention", (False, None), None)  # True: every token sees the whole text
    rotary = rope(without(hf, "rotary_pct", "rotary_emb_base"))  # GPT-NeoX's names mean nothing to Gemma
    if rotary["rotary_fraction"] != 1.0:  # Gemma's default rope ignores it, its scaled ropes break on it
        raise CheckpointError(
            f"{CONFIG}: unsupported partial_rotary_factor={rotary['rotary_fraction']!r} (supported for Gemma: 1.0)"
        )
    bias = bool(get(hf, "attention_bias"))  # q, k, v and o together
    return dict(
        kind="decoder",
        norm_first=True,
        final_norm=True,
        embed_norm=False,
        scale_embeddings=True,  # × √hidden_size
        vocab_size=get(hf, "vocab_size"),
        n_layers=get(hf, "num_hidden_layers"),
        n_heads=get(hf, "num_attention_heads"),
        n_kv_heads=get(hf, "num_key_value_heads"),
        head_dim=get(hf, "head_dim"),
        d_model=get(hf, "hidden_size"),
        d_ff=get(hf, "intermediate_size"),
        max_len=context(hf, rotary),
        norm="rms_plus_one",
        layer_norm_eps=float(get(hf, "rms_norm_eps")),
        mlp="gated",
        activation=gemma_activation(hf),
        attn_bias=bias,
        attn_out_bias=bias,
        mlp_bias=False,
        tie_embeddings=bool(get(hf, "tie_word_embeddings")),
        **rotary,
    )


FAMILY = Family(
    "gemma",
    ("GemmaForCausalLM", "GemmaModel"),
    "model.",
    # rotary buffers of 4.x checkpoints; the LM head of a tied model (transformers uses the embedding instead)
    r"((layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq|lm_head\.weight)",
    config,
    weights,
    facts=lambda hf: rotary_facts(hf, config(hf), GEMMA_DEFAULTS),
)
