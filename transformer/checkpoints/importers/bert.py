"""BERT (and MiniLM, which is a small BERT): post-LN, embedding LayerNorm, segment embeddings."""

from __future__ import annotations

from typing import Any

from transformer.checkpoints.importers.parts import Family, Take, activation, get, linear, norm, put, require
from transformer.model.config import ModelConfig


def config(hf: dict[str, Any]) -> dict[str, Any]:
    require(hf, "position_embedding_type", ("absolute",), "absolute")
    require(hf, "is_decoder", (False,), False)
    require(hf, "add_cross_attention", (False,), False)
    return dict(
        kind="encoder",
        norm_first=False,  # post-LN: norm(x + f(x))
        embed_norm=True,
        vocab_size=get(hf, "vocab_size"),
        n_layers=get(hf, "num_hidden_layers"),
        n_heads=get(hf, "num_attention_heads"),
        d_model=get(hf, "hidden_size"),
        d_ff=get(hf, "intermediate_size"),
        max_len=get(hf, "max_position_embeddings"),
        n_token_types=get(hf, "type_vocab_size", 2),
        activation=activation(hf, "hidden_act", "gelu"),
        layer_norm_eps=float(get(hf, "layer_norm_eps", 1e-12)),
    )


def weights(cfg: ModelConfig) -> dict[str, Take]:
    d, f = cfg.d_model, cfg.d_ff
    out = {
        "tok_embed.weight": Take("embeddings.word_embeddings.weight", (cfg.vocab_size, d)),
        "encoder.embed.positions.weight": Take("embeddings.position_embeddings.weight", (cfg.max_len, d)),
        "encoder.embed.token_types.weight": Take("embeddings.token_type_embeddings.weight", (cfg.n_token_types, d)),
    }
    put(out, "encoder.embed.norm", norm("embeddings.LayerNorm", d))
    for i in range(cfg.n_layers):
        ours, hf = f"encoder.layers.{i}", f"encoder.layer.{i}"
        for proj, name in (("q", "query"), ("k", "key"), ("v", "value")):
            put(out, f"{ours}.self_attn.{proj}_proj", linear(f"{hf}.attention.self.{name}", d, d))
        put(out, f"{ours}.self_attn.out_proj", linear(f"{hf}.attention.output.dense", d, d))
        put(out, f"{ours}.attn_block.norm", norm(f"{hf}.attention.output.LayerNorm", d))
        put(out, f"{ours}.feed_forward.up", linear(f"{hf}.intermediate.dense", f, d))
        put(out, f"{ours}.feed_forward.down", linear(f"{hf}.output.dense", d, f))
        put(out, f"{ours}.ff_block.norm", norm(f"{hf}.output.LayerNorm", d))
    return out


FAMILY = Family(
    "bert",
    ("BertModel", "BertForMaskedLM", "BertForPreTraining"),
    "bert.",
    r"(pooler\..*|cls\..*|embeddings\.position_ids)",
    config,
    weights,
)
