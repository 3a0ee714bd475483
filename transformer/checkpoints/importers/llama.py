"""Llama (Llama 2 and 3, TinyLlama, SmolLM): a pre-norm RMSNorm decoder with rotary positions, SwiGLU and GQA.

Mistral, Qwen2 and Qwen3 are this network with a few switches (a sliding window, q/k/v biases, q/k norms):
their files take `decoder_config`, `weights` and `facts_of` from here.

Config fields that change no number we compute, so they are not read: attention_dropout (training only),
initializer_range, use_cache, bos/eos/pad_token_id (pad_token_id only sets the embedding's padding_idx,
which matters for gradients), dtype/torch_dtype (we compute in float32), attn_implementation (eager, sdpa
and flash compute the same attention), and Llama's pretraining_tp: transformers 4.x cut the projections
into pretraining_tp slices and added the partial products back up (the same sums in another order), and
transformers 5 ignores it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformer.checkpoints.format import CheckpointError
from transformer.checkpoints.importers.parts import (
    CONFIG,
    Family,
    Take,
    activation,
    context,
    get,
    linear,
    put,
    require,
    rope,
    rotary_facts,
)
from transformer.model.config import ModelConfig

# transformers' LlamaConfig defaults for the fields a config.json may leave out
LLAMA_DEFAULTS = {
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
}


def rotary(hf: dict[str, Any]) -> dict[str, Any]:
    """The rotary fields and max_len, as these families' rotary embedding computes them."""
    fields = rope(hf)
    if fields["rotary_fraction"] != 1.0:  # Llama's default rope ignores it, its scaled ropes break on it
        raise CheckpointError(f"{CONFIG}: unsupported partial_rotary_factor={fields['rotary_fraction']} (supported: 1.0)")
    if fields["rope_scaling"] == "llama3" and "original_max_position_embeddings" in hf:  # transformers: this one wins
        fields["rope_original_max_len"] = int(hf["original_max_position_embeddings"])
    return {**fields, "max_len": context(hf, fields)}


def decoder_config(
    hf: dict[str, Any],
    *,
    attn_bias: bool,
    attn_out_bias: bool,
    mlp_bias: bool,
    qk_norm: bool = False,
    window: Callable[[dict[str, Any], int], dict[str, Any]] = lambda hf, n_layers: {},
) -> dict[str, Any]:
    """ModelConfig fields of a Llama-shaped decoder, from a config whose absent fields the family filled with
    transformers' defaults (a field written as null keeps transformers' fallback: head_dim, num_key_value_heads)."""
    require(hf, "is_causal", (True,), True)  # False makes transformers' masks bidirectional
    if hf.get("quantization_config"):
        method = hf["quantization_config"].get("quant_method", "?") if isinstance(hf["quantization_config"], dict) else "?"
        raise CheckpointError(f"{CONFIG}: quantized weights (quantization_config, {method}) are not supported")
    d, n_heads, n_layers = get(hf, "hidden_size"), get(hf, "num_attention_heads"), get(hf, "num_hidden_layers")
    head_dim = get(hf, "head_dim", d // n_heads if n_heads else 0)  # n_heads 0: ModelConfig says why
    return dict(
        kind="decoder",
        vocab_size=get(hf, "vocab_size"),
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=get(hf, "num_key_value_heads", n_heads),
        d_model=d,
        head_dim=0 if head_dim * n_heads == d else head_dim,
        d_ff=get(hf, "intermediate_size"),
        norm="rms",
        layer_norm_eps=float(get(hf, "rms_norm_eps")),  # every RMSNorm's eps, q/k norms included
        norm_first=True,
        final_norm=True,
        embed_norm=False,
        mlp="gated",  # down(act(gate x) · up x)
        activation=activation(hf, "hidden_act"),
        attn_bias=attn_bias,
        attn_out_bias=attn_out_bias,
        mlp_bias=mlp_bias,
        qk_norm=qk_norm,
        tie_embeddings=bool(get(hf, "tie_word_embeddings", False)),
        **rotary(hf),
        **window(hf, n_layers),
    )


def config(hf: dict[str, Any]) -> dict[str, Any]:
    hf = {**LLAMA_DEFAULTS, **hf}
    # attention_bias covers q, k, v and o alike; Llama has no sliding window (a sliding_window field is not read)
    bias = bool(get(hf, "attention_bias", False))
    return decoder_config(hf, attn_bias=bias, attn_out_bias=bias, mlp_bias=bool(get(hf, "mlp_bias", False)))


def weights(cfg: ModelConfig) -> dict[str, Take]:
    """The plan for every Llama-shaped family (Gemma's too): the switches (biases, q/k norms, tied head) are in `cfg`."""
    d, f, h = cfg.d_model, cfg.d_ff, cfg.d_head
    q_width, kv_width = cfg.n_heads * h, cfg.kv_heads * h
    out = {"tok_embed.weight": Take("embed_tokens.weight", (cfg.vocab_size, d))}
    for i in range(cfg.n_layers):
        ours, attn, mlp = f"decoder.layers.{i}", f"layers.{i}.self_attn", f"layers.{i}.mlp"
        for proj, width in (("q", q_width), ("k", kv_width), ("v", kv_width)):
            put(out, f"{ours}.self_attn.{proj}_proj", linear(f"{attn}.{proj}_proj", width, d, cfg.attn_bias))
        put(out, f"{ours}.self_attn.out_proj", linear(f"{attn}.o_proj", d, q_width, cfg.attn_out_bias))
        if cfg.qk_norm:  # one RMSNorm over head_dim, shared by all heads
            out[f"{ours}.self_attn.q_norm.weight"] = Take(f"{attn}.q_norm.weight", (h,))
            out[f"{ours}.self_attn.k_norm.weight"] = Take(f"{attn}.k_norm.weight", (h,))
        out[f"{ours}.attn_block.norm.weight"] = Take(f"layers.{i}.input_layernorm.weight", (d,))
        out[f"{ours}.ff_block.norm.weight"] = Take(f"layers.{i}.post_attention_layernorm.weight", (d,))
        put(out, f"{ours}.feed_forward.gate", linear(f"{mlp}.gate_proj", f, d, cfg.mlp_bias))
        put(out, f"{ours}.feed_forward.up", linear(f"{mlp}.up_proj", f, d, cfg.mlp_bias))
        put(out, f"{ours}.feed_forward.down", linear(f"{mlp}.down_proj", d, f, cfg.mlp_bias))
    out["decoder.final_norm.weight"] = Take("norm.weight", (d,))
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = Take("lm_head.weight", (cfg.vocab_size, d))
    return out


# The head of a tied model (transformers ties it to embed_tokens, whatever the file holds); the rotary
# frequencies that transformers 4.x saved as buffers (computed again from the config).
IGNORABLE = r"(lm_head\.weight|rotary_emb\.inv_freq|layers\.\d+\.self_attn\.rotary_emb\.inv_freq)"


def facts_of(
    config: Callable[[dict[str, Any]], dict[str, Any]], defaults: dict[str, Any]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A family's facts for the Checkpoint page (`parts.rotary_facts`), from its config function and defaults."""
    return lambda hf: rotary_facts(hf, config(hf), defaults)


FAMILY = Family(
    "llama",
    ("LlamaForCausalLM", "LlamaModel"),
    "model.",
    IGNORABLE,
    config,
    weights,
    facts=facts_of(config, LLAMA_DEFAULTS),
)
