"""Phi-3 (mini, medium): a Llama-shaped decoder whose q|k|v and gate|up projections are each one fused matrix.

RMSNorm, a gated SiLU MLP, no biases, partial rotary (`partial_rotary_factor`), and when `sliding_window` is set
the window applies to every layer (transformers builds the sliding mask for the whole model). The 128k models'
"longrope" scaling (`short_factor`/`long_factor` per frequency, switched at `original_max_position_embeddings`) is
not computed here, and transformers accepts no other scaling type for Phi-3: only unscaled rotary is imported.

Config fields that do not change inference numbers: resid_pdrop, embd_pdrop, attention_dropout (dropouts),
initializer_range, use_cache, bos/eos/pad_token_id, and original_max_position_embeddings (read by longrope only).

"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from transformer.checkpoints.format import CheckpointError
from transformer.checkpoints.importers.parts import (
    CONFIG,
    Family,
    Take,
    activation,
    context,
    get,
    rope,
    rotary_facts,
    sliding,
    without,
)
from transformer.model.config import ModelConfig

# transformers' Phi3Config defaults for the fields a config.json may leave out
PHI3_DEFAULTS = {"hidden_act": "silu", "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}


def rows(start: int, stop: int) -> Callable[[Tensor], Tensor]:
    """A Take conversion that cuts rows [start, stop) (output features) out of a fused nn.Linear weight."""
    return lambda t: t[start:stop].clone()


def rope_type(hf: dict[str, Any]) -> str:
    """The rotary scaling type a config names (either layout), "default" when none; parts.rope checks the rest."""
    params, scaling = hf.get("rope_parameters") or {}, hf.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        return "default"  # parts.rope refuses it by name
    merged = {**scaling, **params}
    return merged.get("rope_type", merged.get("type", "default"))


def config(hf: dict[str, Any]) -> dict[str, Any]:
    hf = {**PHI3_DEFAULTS, **hf}
    kind = rope_type(hf)
    if kind != "default":  # transformers maps the older "su" and "yarn" to longrope and refuses every other type
        raise CheckpointError(
            f"{CONFIG}: unsupported rope_scaling type {kind!r} (supported for Phi-3: unscaled rotary; "
            "longrope, the 128k models' per-frequency scaling, is not implemented)"
        )
    n_layers, n_heads = get(hf, "num_hidden_layers"), get(hf, "num_attention_heads")
    return dict(
        kind="decoder",
        norm_first=True,
        final_norm=True,
        embed_norm=False,
        vocab_size=get(hf, "vocab_size"),
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=get(hf, "num_key_value_heads", n_heads),
        head_dim=get(hf, "head_dim", 0),  # not a Phi3Config field, but its attention reads one when the config has it
        d_model=get(hf, "hidden_size"),
        d_ff=get(hf, "intermediate_size"),
        norm="rms",
        layer_norm_eps=float(get(hf, "rms_norm_eps")),
        mlp="gated",
        activation=activation(hf, "hidden_act"),
        attn_bias=False,
        attn_out_bias=False,
        mlp_bias=False,
        tie_embeddings=bool(get(hf, "tie_word_embeddings")),
        max_len=context(hf),  # Phi-3 takes no dynamic scaling
        # Phi-3 reads rope_theta and partial_rotary_factor, never GPT-NeoX's names for them
        **rope(without(hf, "rotary_pct", "rotary_emb_base")),
        # every layer: Phi-3's model has no layer_types, max_window_layers or use_sliding_window
        **sliding({"sliding_window": hf.get("sliding_window")}, n_layers),
    )


def weights(cfg: ModelConfig) -> dict[str, Take]:
    d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
    q, kv = cfg.n_heads * cfg.d_head, cfg.kv_heads * cfg.d_head
    out = {"tok_embed.weight": Take("embed_tokens.weight", (v, d))}
    for i in range(cfg.n_layers):
        ours, theirs = f"decoder.layers.{i}", f"layers.{i}"
        qkv = f"{theirs}.self_attn.qkv_proj.weight"  # rows: q (n_heads·head_dim) | k (n_kv·head_dim) | v (n_kv·head_dim)
        for proj, start, stop in (("q", 0, q), ("k", q, q + kv), ("v", q + kv, q + 2 * kv)):
            out[f"{ours}.self_attn.{proj}_proj.weight"] = Take(qkv, (q + 2 * kv, d), rows(start, stop))
        out[f"{ours}.self_attn.out_proj.weight"] = Take(f"{theirs}.self_attn.o_proj.weight", (d, q))
        gate_up = f"{theirs}.mlp.gate_up_proj.weight"  # rows: gate | up (transformers' chunk(2) takes gate first)
        out[f"{ours}.feed_forward.gate.weight"] = Take(gate_up, (2 * f, d), rows(0, f))
        out[f"{ours}.feed_forward.up.weight"] = Take(gate_up, (2 * f, d), rows(f, 2 * f))
        out[f"{ours}.feed_forward.down.weight"] = Take(f"{theirs}.mlp.down_proj.weight", (d, f))
        out[f"{ours}.attn_block.norm.weight"] = Take(f"{theirs}.input_layernorm.weight", (d,))
        out[f"{ours}.ff_block.norm.weight"] = Take(f"{theirs}.post_attention_layernorm.weight", (d,))
    out["decoder.final_norm.weight"] = Take("norm.weight", (d,))
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = Take("lm_head.weight", (v, d))
    return out


FAMILY = Family(
    "phi3",
    ("Phi3ForCausalLM", "Phi3Model"),
    "model.",
    # rotary buffers of 4.x checkpoints; the LM head of a tied model (transformers uses the embedding instead)
    r"((layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq|lm_head\.weight)",
    config,
    weights,
    facts=lambda hf: rotary_facts(hf, config(hf), PHI3_DEFAULTS),
)
