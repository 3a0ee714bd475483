"""BART, and the encoder-decoders built like it: mBART, Marian and M2M-100 (NLLB is an M2M-100).

One layout: a token embedding (`shared`) read by both stacks, a position table added to it, LayerNorm with
eps 1e-5 (nn.LayerNorm's default: no config field sets it), biases on every projection, a head tied to the
embedding unless tie_word_embeddings is false, and, in the generation classes of BART, mBART and Marian, a
bias on the logits (`final_logits_bias`, stored as (1, vocab)). What differs is fixed by each family's
transformers classes, not by its config:

              positions                                     layers    embeddings
    bart      learned, token t reads row t + 2              post-LN   LayerNorm after
    mbart     learned, token t reads row t + 2              pre-LN    LayerNorm after; a final LayerNorm per stack
    marian    sinusoid [sin | cos], from position 0         post-LN   -
    m2m_100   fairseq's sinusoid, from pad_token_id + 1     pre-LN    a final LayerNorm per stack

transformers 3 computed all four with one class and switches that many config.json files still carry
(normalize_before, add_final_layer_norm, normalize_embedding, static_position_embeddings, extra_pos_embeddings,
add_bias_logits, do_blenderbot_90_layernorm); transformers 5 reads none of them. One that contradicts the
family's layout was written for another network, and is refused by name.

Our model has one n_heads, one d_ff and one token embedding: a config whose encoder and decoder differ in heads
or feed-forward width is refused, and so is a file whose stacks' embed_tokens differ from `shared` (transformers 5
ties them only when tie_word_embeddings is true, and keeps a file's own copy where it differs).

Config fields that change no number we compute: dropout, attention_dropout, activation_dropout,
encoder/decoder_layerdrop (training only), init_std, classifier_dropout, use_cache, num_labels, id2label,
is_decoder (read only by the causal-LM class), and pad_token_id except in M2M-100, whose positions count
from it. Generation ids (decoder_start, bos, eos, pad, forced_bos, forced_eos) are read by the loader, with
each family's `generation` defaults for the absent ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from transformer.checkpoints.format import CheckpointError
from transformer.checkpoints.importers.parts import (
    CONFIG,
    Family,
    Take,
    activation,
    check_stack_embeddings,
    get,
    linear,
    norm,
    put,
    require,
)
from transformer.model.config import ModelConfig

# transformers' BartConfig defaults for the fields a config.json may leave out (bart-large's shape)
BART_DEFAULTS = {
    "vocab_size": 50265, "max_position_embeddings": 1024, "d_model": 1024, "encoder_layers": 12, "decoder_layers": 12,
    "encoder_attention_heads": 16, "decoder_attention_heads": 16, "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096,
    "activation_function": "gelu", "scale_embedding": False, "tie_word_embeddings": True, "pad_token_id": 1,
}  # fmt: skip
# BartConfig's generation ids: decoding starts with </s>, and </s> is forced at the length limit
BART_GENERATION = {
    "decoder_start_token_id": 2, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "forced_eos_token_id": 2,
}  # fmt: skip
LEARNED_OFFSET = 2  # BART's learned tables: max_position_embeddings + 2 rows, token t reads row t + 2


@dataclass(frozen=True)
class Layout:
    """What a family's transformers classes fix, whatever its config.json says."""

    pre_ln: bool  # norm before each sublayer and a final LayerNorm per stack (mBART, M2M-100); else post-LN
    embed_norm: bool  # `layernorm_embedding` after embeddings + positions (BART, mBART)
    positions: str  # "learned" (row t + 2), "split" (Marian's sinusoid from 0), "fairseq" (M2M-100's, from pad + 1)
    base: str  # the class without an LM head (and so without final_logits_bias)
    logits_bias: bool = True  # the generation class adds final_logits_bias to the logits (M2M-100's does not)

    def legacy(self) -> dict[str, Any]:
        """transformers 3's switches, as this layout would set them."""
        fields = {
            "normalize_before": self.pre_ln,
            "add_final_layer_norm": self.pre_ln,
            "normalize_embedding": self.embed_norm,
            "static_position_embeddings": self.positions != "learned",
            "add_bias_logits": False,
            "do_blenderbot_90_layernorm": False,
        }
        if self.positions == "learned":
            fields["extra_pos_embeddings"] = LEARNED_OFFSET
        return fields


def same(hf: dict[str, Any], encoder_key: str, decoder_key: str, ours: str) -> int:
    """A width both stacks must share, since our config has one `ours`."""
    enc, dec = get(hf, encoder_key), get(hf, decoder_key)
    if enc != dec:
        raise CheckpointError(
            f"{CONFIG}: unsupported {encoder_key}={enc!r} with {decoder_key}={dec!r} (our model has one {ours} for both stacks)"
        )
    return enc


def seq2seq_config(hf: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """ModelConfig fields of a BART-shaped model, from a config whose absent fields the family filled with
    transformers' defaults."""
    for key, value in layout.legacy().items():
        require(hf, key, (value,), value)
    require(hf, "is_encoder_decoder", (True,), True)
    saved_as = (hf.get("architectures") or [None])[0]  # the loader refuses a class not in the family's architectures
    if hf.get("quantization_config"):
        raise CheckpointError(f"{CONFIG}: quantized weights (quantization_config) are not supported")
    n_decoder_layers = get(hf, "decoder_layers")
    if not isinstance(n_decoder_layers, int) or isinstance(n_decoder_layers, bool) or n_decoder_layers < 1:
        raise CheckpointError(f"{CONFIG}: decoder_layers must be a positive integer, got {n_decoder_layers!r}")
    if layout.positions == "fairseq":  # M2M-100 counts positions from pad_token_id + 1
        pad = get(hf, "pad_token_id")
        if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
            raise CheckpointError(f"{CONFIG}: pad_token_id must be a non-negative integer, got {pad!r}")
        positions = dict(positional="sinusoidal", sinusoidal_layout="fairseq", position_offset=pad + 1)
    elif layout.positions == "split":
        positions = dict(positional="sinusoidal", sinusoidal_layout="split", position_offset=0)
    else:
        positions = dict(positional="learned", position_offset=LEARNED_OFFSET)
    return dict(
        kind="encoder-decoder",
        vocab_size=get(hf, "vocab_size"),
        n_layers=get(hf, "encoder_layers"),
        n_decoder_layers=n_decoder_layers,
        n_heads=same(hf, "encoder_attention_heads", "decoder_attention_heads", "n_heads"),
        d_model=get(hf, "d_model"),
        d_ff=same(hf, "encoder_ffn_dim", "decoder_ffn_dim", "d_ff"),
        max_len=get(hf, "max_position_embeddings"),
        activation=activation(hf, "activation_function"),
        layer_norm_eps=1e-5,
        norm_first=layout.pre_ln,
        final_norm=layout.pre_ln,
        embed_norm=layout.embed_norm,
        scale_embeddings=bool(get(hf, "scale_embedding")),  # × √d_model
        tie_embeddings=bool(get(hf, "tie_word_embeddings")),
        logits_bias=layout.logits_bias and saved_as != layout.base,
        **positions,
    )


def attention(out: dict[str, Take], ours: str, theirs: str, d: int) -> None:
    for proj in ("q", "k", "v", "out"):
        put(out, f"{ours}.{proj}_proj", linear(f"{theirs}.{proj}_proj", d, d))


def weights(cfg: ModelConfig) -> dict[str, Take]:
    """The plan of every family here: the switches that differ (norms, positions, head, bias) are in `cfg`."""
    d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
    out = {"tok_embed.weight": Take("shared.weight", (v, d))}
    rows = cfg.max_len + cfg.position_offset  # a learned table's rows: the offset ones are never read
    for stack, n_layers in (("encoder", cfg.n_layers), ("decoder", cfg.dec_layers)):
        if cfg.positional == "learned":
            out[f"{stack}.embed.positions.weight"] = Take(f"{stack}.embed_positions.weight", (rows, d))
        if cfg.embed_norm:
            put(out, f"{stack}.embed.norm", norm(f"{stack}.layernorm_embedding", d))
        for i in range(n_layers):
            layer = f"{stack}.layers.{i}"  # the same name in both models
            attention(out, f"{layer}.self_attn", f"{layer}.self_attn", d)
            put(out, f"{layer}.attn_block.norm", norm(f"{layer}.self_attn_layer_norm", d))
            if stack == "decoder":
                attention(out, f"{layer}.cross_attn", f"{layer}.encoder_attn", d)
                put(out, f"{layer}.cross_block.norm", norm(f"{layer}.encoder_attn_layer_norm", d))
            put(out, f"{layer}.feed_forward.up", linear(f"{layer}.fc1", f, d))
            put(out, f"{layer}.feed_forward.down", linear(f"{layer}.fc2", d, f))
            put(out, f"{layer}.ff_block.norm", norm(f"{layer}.final_layer_norm", d))
        if cfg.has_final_norm:
            put(out, f"{stack}.final_norm", norm(f"{stack}.layer_norm", d))
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = Take("lm_head.weight", (v, d))
    if cfg.logits_bias:
        out["logits_bias"] = Take("final_logits_bias", (1, v), lambda t: t.reshape(v).clone())
    return out


# The stacks' copies of shared.weight and the head of a tied model (checked equal by `check`); fairseq's
# version counters, which transformers drops on load.
IGNORABLE = r"((encoder|decoder)\.embed_tokens\.weight|lm_head\.weight|(encoder|decoder)\.version)"


def check_embeddings(cfg: ModelConfig, tensors: dict[str, Tensor], source: str) -> None:
    """Refuse a stack embedding or a tied head that is not shared.weight: transformers 5 would use the file's own
    tensor there (it ties them only when they agree), and our model has one token embedding."""
    check_stack_embeddings(tensors, source)
    shared = tensors["shared.weight"]
    head = tensors.get("lm_head.weight")
    if cfg.tie_embeddings and head is not None and not torch.equal(head, shared):
        raise CheckpointError(
            f"{source}: {CONFIG} says tie_word_embeddings=true, but the file's lm_head.weight differs from shared.weight "
            "(transformers 4 would use the embedding, transformers 5 the file's head): set tie_word_embeddings to the one "
            "you mean"
        )


POSITIONS = {
    "learned": "learned; token t reads row t + 2",
    "split": "sinusoidal, [sin | cos] halves (Marian), from position 0",
    "fairseq": "sinusoidal, fairseq's [sin | cos] halves, from position {offset} (pad_token_id + 1)",
}


def facts_of(config: Callable[[dict[str, Any]], dict[str, Any]], layout: Layout) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A family's facts for the Checkpoint page: where positions start, where the norms sit, the embedding scale,
    whether the logits have a bias."""

    def facts(hf: dict[str, Any]) -> dict[str, Any]:
        fields = config(hf)
        return {
            "positions": POSITIONS[layout.positions].format(offset=fields["position_offset"]),
            "layer_norm": "pre-LN, a final LayerNorm per stack" if layout.pre_ln else "post-LN (after each residual add)",
            "embedding_norm": layout.embed_norm,
            "embedding_scale": math.sqrt(fields["d_model"]) if fields["scale_embeddings"] else 1.0,
            "logits_bias": fields["logits_bias"],
        }

    return facts


BART = Layout(pre_ln=False, embed_norm=True, positions="learned", base="BartModel")


def config(hf: dict[str, Any]) -> dict[str, Any]:
    return seq2seq_config({**BART_DEFAULTS, **hf}, BART)


FAMILY = Family(
    "bart",
    ("BartForConditionalGeneration", BART.base),
    "model.",
    IGNORABLE,
    config,
    weights,
    facts=facts_of(config, BART),
    generation=BART_GENERATION,
    check=check_embeddings,
)
