"""Marian (the Helsinki-NLP opus-mt models): a post-LN BART without `layernorm_embedding`, whose positions are a
fixed sinusoid in Marian's layout, [sin(p·w_i) | cos(p·w_i)] with w_i = 10000^(−2i/d), from position 0.

The released configs scale the token embeddings by √d_model (scale_embedding: true; MarianConfig's default is
false) and start decoding with the pad token. transformers computes the sinusoid itself and saves no table; a
file that holds one (older conversions did) must hold that same table, since transformers would use the file's.
A model with a separate target vocabulary (share_encoder_decoder_embeddings: false, or a decoder_vocab_size of
its own) is refused: ours has one vocabulary.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from transformer.checkpoints.format import CheckpointError
from transformer.checkpoints.importers.bart import IGNORABLE, Layout, check_embeddings, facts_of, seq2seq_config, weights
from transformer.checkpoints.importers.parts import CONFIG, Family, get, require
from transformer.model.config import ModelConfig
from transformer.model.positions import sinusoidal_table

# transformers' MarianConfig defaults for the fields a config.json may leave out
MARIAN_DEFAULTS = {
    "vocab_size": 58101, "max_position_embeddings": 1024, "d_model": 1024, "encoder_layers": 12, "decoder_layers": 12,
    "encoder_attention_heads": 16, "decoder_attention_heads": 16, "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096,
    "activation_function": "gelu", "scale_embedding": False, "tie_word_embeddings": True, "pad_token_id": 58100,
    "share_encoder_decoder_embeddings": True,
}  # fmt: skip
# MarianConfig's generation ids: decoding starts with the pad token, </s> (0) ends it and is forced at the limit
MARIAN_GENERATION = {"decoder_start_token_id": 58100, "pad_token_id": 58100, "eos_token_id": 0, "forced_eos_token_id": 0}
MARIAN = Layout(pre_ln=False, embed_norm=False, positions="split", base="MarianModel")


def config(hf: dict[str, Any]) -> dict[str, Any]:
    hf = {**MARIAN_DEFAULTS, **hf}
    require(hf, "share_encoder_decoder_embeddings", (True,), True)
    vocab, target_vocab = get(hf, "vocab_size"), get(hf, "decoder_vocab_size", hf.get("vocab_size"))
    if target_vocab != vocab:
        raise CheckpointError(
            f"{CONFIG}: unsupported decoder_vocab_size={target_vocab!r} beside vocab_size={vocab!r} (our model has one vocabulary)"
        )
    return seq2seq_config(hf, MARIAN)


def check(cfg: ModelConfig, tensors: dict[str, Tensor], source: str) -> None:
    """`check_embeddings`, and a saved position table must be the sinusoid we compute (to the file's float rounding)."""
    check_embeddings(cfg, tensors, source)
    ours = sinusoidal_table(cfg.max_len, cfg.d_model, cfg.sinusoidal_layout, cfg.position_offset)
    for stack in ("encoder", "decoder"):
        table = tensors.get(f"{stack}.embed_positions.weight")
        if table is None:
            continue
        tol = torch.finfo(table.dtype).eps if table.is_floating_point() else 0.0
        if table.shape != ours.shape or not torch.allclose(table.float(), ours, rtol=0.0, atol=tol):
            raise CheckpointError(
                f"{source}: {stack}.embed_positions.weight is not Marian's sinusoid of {cfg.max_len} positions "
                "(transformers would use the file's table; we compute the sinusoid)"
            )


FAMILY = Family(
    "marian",
    ("MarianMTModel", MARIAN.base),
    "model.",
    rf"({IGNORABLE}|(encoder|decoder)\.embed_positions\.weight)",
    config,
    weights,
    facts=facts_of(config, MARIAN),
    generation=MARIAN_GENERATION,
    check=check,
)
