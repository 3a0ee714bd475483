"""DistilBERT: BERT without segment embeddings; its LayerNorm eps is fixed at 1e-12."""

from __future__ import annotations

from typing import Any

from transformer.checkpoints.importers.parts import Family, Take, activation, get, linear, norm, put
from transformer.model.config import ModelConfig


def config(hf: dict[str, Any]) -> dict[str, Any]:
    # sinusoidal_pos_embds=True only changes how the position table is initialised; the table itself is in
    # the file and is loaded as-is, so either value is supported (recorded in the training metadata).
    return dict(
        kind="encoder",
        norm_first=False,  # post-LN: norm(x + f(x))
        embed_norm=True,
        vocab_size=get(hf, "vocab_size"),
        n_layers=get(hf, "n_layers"),
        n_heads=get(hf, "n_heads"),
        d_model=get(hf, "dim"),
        d_ff=get(hf, "hidden_dim"),
        max_len=get(hf, "max_position_embeddings"),
        n_token_types=0,
        activation=activation(hf, "activation", "gelu"),
        layer_norm_eps=1e-12,
    )


def weights(cfg: ModelConfig) -> dict[str, Take]:
    d, f = cfg.d_model, cfg.d_ff
    out = {
        "tok_embed.weight": Take("embeddings.word_embeddings.weight", (cfg.vocab_size, d)),
        "encoder.embed.positions.weight": Take("embeddings.position_embeddings.weight", (cfg.max_len, d)),
    }
    put(out, "encoder.embed.norm", norm("embeddings.LayerNorm", d))
    for i in range(cfg.n_layers):
        ours, hf = f"encoder.layers.{i}", f"transformer.layer.{i}"
        for proj in ("q", "k", "v", "out"):
            put(out, f"{ours}.self_attn.{proj}_proj", linear(f"{hf}.attention.{proj}_lin", d, d))
        put(out, f"{ours}.attn_block.norm", norm(f"{hf}.sa_layer_norm", d))
        put(out, f"{ours}.feed_forward.up", linear(f"{hf}.ffn.lin1", f, d))
        put(out, f"{ours}.feed_forward.down", linear(f"{hf}.ffn.lin2", d, f))
        put(out, f"{ours}.ff_block.norm", norm(f"{hf}.output_layer_norm", d))
    return out


FAMILY = Family(
    "distilbert",
    ("DistilBertModel", "DistilBertForMaskedLM"),
    "distilbert.",
    r"(vocab_transform\..*|vocab_layer_norm\..*|vocab_projector\..*|embeddings\.position_ids)",
    config,
    weights,
    facts=lambda hf: {"sinusoidal_pos_embds": bool(hf.get("sinusoidal_pos_embds", False))},
)
