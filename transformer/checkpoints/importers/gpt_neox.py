"""GPT-NeoX and Pythia: LayerNorm with biases, a fused q|k|v laid out head by head, partial rotary, parallel residual.

`query_key_value` is one nn.Linear(d, 3·d) whose output transformers views as (n_heads, 3·head_size) and cuts
into q | k | v inside each head, so its rows go head 0's q, k, v, then head 1's: each of our q, k, v weights
takes every third head_size-block of rows. Rotary turns the first `rotary_pct` (Pythia: 0.25) of each head's
dims. `use_parallel_residual` (Pythia: True) adds attention and MLP to the same x: x + attn(ln₁ x) + mlp(ln₂ x).
The LM head is `embed_out`, not tied to `embed_in` unless tie_word_embeddings says so.

Config fields that do not change inference numbers: attention_dropout, hidden_dropout, classifier_dropout,
initializer_range, use_cache, bos/eos/pad_token_id, is_decoder (the attention is causal either way).
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
    linear,
    norm,
    put,
    rope,
    rotary_facts,
    without,
)
from transformer.model.config import ModelConfig

# transformers' GPTNeoXConfig defaults for the fields a config.json may leave out (rotary: see neox_rope)
NEOX_DEFAULTS = {
    "hidden_act": "gelu",
    "max_position_embeddings": 2048,
    "layer_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "use_parallel_residual": True,
    "attention_bias": True,
}


def neox_rope(hf: dict[str, Any]) -> dict[str, Any]:
    """Rotary fields as transformers reads GPT-NeoX: rope_parameters / rope_scaling first, then rotary_emb_base
    (default 10000) and rotary_pct (default 0.25); a top-level rope_theta or partial_rotary_factor is not read,
    so one that disagrees with what is used is refused rather than guessed between."""
    neox = without(hf, "rope_theta", "partial_rotary_factor")
    if neox.get("rotary_pct") is None:
        neox["rotary_pct"] = 0.25
    fields = rope(neox)
    for key, ours in (("rope_theta", "rope_theta"), ("partial_rotary_factor", "rotary_fraction")):
        if hf.get(key) is not None and float(hf[key]) != fields[ours]:
            raise CheckpointError(
                f"{CONFIG}: unsupported {key}={hf[key]!r}: GPT-NeoX reads {fields[ours]!r} from rope_parameters, "
                "rotary_emb_base or rotary_pct, and the two disagree"
            )
    return fields


def config(hf: dict[str, Any]) -> dict[str, Any]:
    hf = {**NEOX_DEFAULTS, **hf}
    rotary = neox_rope(hf)
    bias = bool(get(hf, "attention_bias"))  # query_key_value and dense together
    return dict(
        kind="decoder",
        norm_first=True,
        final_norm=True,
        embed_norm=False,
        vocab_size=get(hf, "vocab_size"),
        n_layers=get(hf, "num_hidden_layers"),
        n_heads=get(hf, "num_attention_heads"),
        d_model=get(hf, "hidden_size"),
        d_ff=get(hf, "intermediate_size"),
        max_len=context(hf, rotary),
        norm="layer",
        norm_bias=True,
        layer_norm_eps=float(get(hf, "layer_norm_eps")),
        mlp="plain",
        activation=activation(hf, "hidden_act"),
        attn_bias=bias,
        attn_out_bias=bias,
        mlp_bias=True,
        parallel_residual=bool(get(hf, "use_parallel_residual")),
        tie_embeddings=bool(get(hf, "tie_word_embeddings")),
        **rotary,
    )


def per_head(part: int, n_heads: int, head_size: int) -> Callable[[Tensor], Tensor]:
    """A Take conversion: q (part 0), k (1) or v (2) of a fused weight (3·d, d) or bias (3·d,) laid out
    [q₀ k₀ v₀ | q₁ k₁ v₁ | …], head_size rows each."""
    return lambda t: t.unflatten(0, (n_heads, 3, head_size))[:, part].flatten(0, 1).clone()  # (d, …)


def weights(cfg: ModelConfig) -> dict[str, Take]:
    d, f, v, h = cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.n_heads
    out = {"tok_embed.weight": Take("embed_in.weight", (v, d))}
    for i in range(cfg.n_layers):
        ours, theirs = f"decoder.layers.{i}", f"layers.{i}"
        fused = f"{theirs}.attention.query_key_value"
        for part, proj in enumerate(("q", "k", "v")):
            convert = per_head(part, h, cfg.d_head)
            out[f"{ours}.self_attn.{proj}_proj.weight"] = Take(f"{fused}.weight", (3 * d, d), convert)
            if cfg.attn_bias:
                out[f"{ours}.self_attn.{proj}_proj.bias"] = Take(f"{fused}.bias", (3 * d,), convert)
        put(out, f"{ours}.self_attn.out_proj", linear(f"{theirs}.attention.dense", d, d, cfg.attn_out_bias))
        put(out, f"{ours}.attn_block.norm", norm(f"{theirs}.input_layernorm", d))
        put(out, f"{ours}.feed_forward.up", linear(f"{theirs}.mlp.dense_h_to_4h", f, d))
        put(out, f"{ours}.feed_forward.down", linear(f"{theirs}.mlp.dense_4h_to_h", d, f))
        put(out, f"{ours}.ff_block.norm", norm(f"{theirs}.post_attention_layernorm", d))
    put(out, "decoder.final_norm", norm("final_layer_norm", d))
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = Take("embed_out.weight", (v, d))
    return out


FAMILY = Family(
    "gpt_neox",
    ("GPTNeoXForCausalLM", "GPTNeoXModel"),
    "gpt_neox.",
    # 4.x buffers (causal mask, its fill value, rotary frequencies); the LM head of a tied model
    r"(layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)|rotary_emb\.inv_freq|embed_out\.weight|lm_head\.weight)",
    config,
    weights,
    facts=lambda hf: rotary_facts(hf, config(hf), NEOX_DEFAULTS),
)
