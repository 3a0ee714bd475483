"""GPT-2: pre-LN decoder with a final LayerNorm, Conv1D weights, fused q|k|v, tied LM head."""

from __future__ import annotations

from typing import Any

from transformer.checkpoints.importers.parts import Family, Take, activation, conv1d, get, norm, put, require
from transformer.model.config import ModelConfig


def config(hf: dict[str, Any]) -> dict[str, Any]:
    require(hf, "scale_attn_weights", (True,), True)
    require(hf, "scale_attn_by_inverse_layer_idx", (False,), False)
    require(hf, "reorder_and_upcast_attn", (False,), False)
    require(hf, "add_cross_attention", (False,), False)
    d = get(hf, "n_embd")
    return dict(
        kind="decoder",
        embed_norm=False,
        vocab_size=get(hf, "vocab_size"),
        n_layers=get(hf, "n_layer"),
        n_heads=get(hf, "n_head"),
        d_model=d,
        d_ff=get(hf, "n_inner", 4 * d),
        max_len=get(hf, "n_positions"),
        activation=activation(hf, "activation_function", "gelu_new"),
        layer_norm_eps=float(get(hf, "layer_norm_epsilon", 1e-5)),
        norm_first=True,
        final_norm=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
    )


def weights(cfg: ModelConfig) -> dict[str, Take]:
    d, f = cfg.d_model, cfg.d_ff
    out = {
        "tok_embed.weight": Take("wte.weight", (cfg.vocab_size, d)),
        "decoder.embed.positions.weight": Take("wpe.weight", (cfg.max_len, d)),
    }
    for i in range(cfg.n_layers):
        ours, hf = f"decoder.layers.{i}", f"h.{i}"
        for part, proj in enumerate(("q", "k", "v")):
            put(out, f"{ours}.self_attn.{proj}_proj", conv1d(f"{hf}.attn.c_attn", d, 3 * d, part, 3))
        put(out, f"{ours}.self_attn.out_proj", conv1d(f"{hf}.attn.c_proj", d, d))
        put(out, f"{ours}.attn_block.norm", norm(f"{hf}.ln_1", d))
        put(out, f"{ours}.feed_forward.up", conv1d(f"{hf}.mlp.c_fc", d, f))
        put(out, f"{ours}.feed_forward.down", conv1d(f"{hf}.mlp.c_proj", f, d))
        put(out, f"{ours}.ff_block.norm", norm(f"{hf}.ln_2", d))
    put(out, "decoder.final_norm", norm("ln_f", d))
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = Take("lm_head.weight", (cfg.vocab_size, d))
    return out


FAMILY = Family(
    "gpt2",
    ("GPT2Model", "GPT2LMHeadModel"),
    "transformer.",
    r"(h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight)",  # causal-mask buffers; the head tied to wte
    config,
    weights,
)
