"""T5 (v1.0, v1.1, Flan-T5) and mT5: a pre-norm RMSNorm encoder-decoder whose positions are a learned bias on the scores.

No position vectors: each stack's block 0 holds a (buckets × heads) table, `relative_attention_bias`, and every
layer of that stack adds the bias of the query–key distance's bucket to its self-attention scores (the encoder's
buckets look both ways, the decoder's only back; cross-attention has none). Scores are q·k without 1/√d_head
(T5's init folds the scale into W_Q). Norms have a weight only and no mean; no linear layer has a bias. The
feed-forward is `feed_forward_proj`: "relu" (v1.0: wi, wo) or "gated-gelu" (v1.1, Flan-T5, mT5: down(gelu_new(wi_0 x)
· wi_1 x)), or another activation, plain or "gated-". One embedding, `shared`, feeds both stacks.

The LM head: transformers 5 ties `lm_head` to `shared` but keeps a file's own `lm_head.weight` where it differs
(v1.1 and Flan-T5 files have one), so the head is the file's lm_head.weight, else shared.weight. Before it, T5
multiplies the decoder's output by d_model^-0.5 when `scale_decoder_outputs` (written by transformers 5; older
configs: unless tie_word_embeddings is false, i.e. v1.0 yes, v1.1 no); mT5 never does. A scaled head is a tied
one, and a file whose lm_head.weight differs there is refused (`check`).

Config fields that change no number we compute: dropout_rate, classifier_dropout, initializer_factor, use_cache,
is_decoder (each stack sets its own), n_positions (only our max_len, below), task_specific_params (pipelines'
prompts). Generation ids (decoder_start_token_id, eos, pad) are read by the loader, with `GENERATION` for absent ones.
T5EncoderModel (no decoder) and the task heads (T5ForSequenceClassification, …) are not registered.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from transformer.checkpoints.format import CheckpointError
from transformer.checkpoints.importers.parts import (
    CONFIG,
    HF_ACTIVATIONS,
    ROPE_MAX_LEN,
    Family,
    Take,
    check_stack_embeddings,
    get,
    linear,
    put,
)
from transformer.model.config import ModelConfig

# transformers' T5Config / MT5Config defaults for the fields a config.json may leave out (t5-small's and mt5-small's shape)
T5_DEFAULTS = {
    "vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_heads": 8,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "relu",
}  # fmt: skip
MT5_DEFAULTS = {
    **T5_DEFAULTS,
    "vocab_size": 250112,
    "d_ff": 1024,
    "num_layers": 8,
    "num_heads": 6,
    "feed_forward_proj": "gated-gelu",
}
# T5 starts the decoder with the pad token; T5Config itself has no decoder_start_token_id (every released config has 0)
GENERATION = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
# T5 reads any length: how much of a text the app reads is a config's n_positions (512 in the released ones), at
# most parts.ROPE_MAX_LEN as for a rotary model
DEFAULT_MAX_LEN = 512


def feed_forward(hf: dict[str, Any]) -> tuple[bool, str]:
    """(gated, transformers' activation name) as T5Config reads them: from feed_forward_proj ("relu", "gated-gelu",
    …; "gated-gelu" means gelu_new), where a saved is_gated_act or dense_act_fn wins over the derived value."""
    proj = get(hf, "feed_forward_proj")
    parts = proj.split("-") if isinstance(proj, str) else []
    if not 1 <= len(parts) <= 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise CheckpointError(f"{CONFIG}: feed_forward_proj must be 'ACT' or 'gated-ACT', got {proj!r}")
    gated = bool(get(hf, "is_gated_act", parts[0] == "gated"))
    name = get(hf, "dense_act_fn", "gelu_new" if proj == "gated-gelu" else parts[-1])
    if name not in HF_ACTIVATIONS:
        raise CheckpointError(
            f"{CONFIG}: unsupported feed_forward_proj={proj!r} (activation {name!r}; supported: "
            f"{', '.join(HF_ACTIVATIONS)}, each plain or 'gated-')"
        )
    return gated, name


def scales_output(hf: dict[str, Any]) -> bool:
    """Whether T5ForConditionalGeneration multiplies the decoder's output by d_model^-0.5 before the head."""
    if hf.get("model_type") == "mt5":
        return False
    if "scale_decoder_outputs" in hf:
        return bool(hf["scale_decoder_outputs"])
    return hf.get("tie_word_embeddings") is not False


def with_defaults(hf: dict[str, Any]) -> dict[str, Any]:
    return {**(MT5_DEFAULTS if hf.get("model_type") == "mt5" else T5_DEFAULTS), **hf}


def config(hf: dict[str, Any]) -> dict[str, Any]:
    hf = with_defaults(hf)
    d, n_heads, d_kv = get(hf, "d_model"), get(hf, "num_heads"), get(hf, "d_kv")
    n_layers = get(hf, "num_layers")
    gated, act = feed_forward(hf)
    return dict(
        kind="encoder-decoder",
        vocab_size=get(hf, "vocab_size"),
        n_layers=n_layers,
        n_decoder_layers=get(hf, "num_decoder_layers", n_layers),
        n_heads=n_heads,
        d_model=d,
        head_dim=0 if d_kv * n_heads == d else d_kv,  # t5-11b: 128 heads of 128 in a 1024 model
        d_ff=get(hf, "d_ff"),
        max_len=min(get(hf, "n_positions", DEFAULT_MAX_LEN), ROPE_MAX_LEN),
        positional="relative",
        rel_buckets=get(hf, "relative_attention_num_buckets"),
        rel_max_distance=get(hf, "relative_attention_max_distance"),
        scale_scores=False,
        scale_embeddings=False,
        norm="rms",
        layer_norm_eps=float(get(hf, "layer_norm_epsilon")),
        norm_first=True,
        final_norm=True,
        embed_norm=False,
        mlp="gated" if gated else "plain",
        activation=HF_ACTIVATIONS[act],
        attn_bias=False,
        attn_out_bias=False,
        mlp_bias=False,
        tie_embeddings=False,  # the head may be the file's own (see above); a file without one is loaded tied
        head_scale=d**-0.5 if scales_output(hf) else 1.0,
    )


def attention(out: dict[str, Take], ours: str, theirs: str, cfg: ModelConfig) -> None:
    inner = cfg.n_heads * cfg.d_head
    for proj in ("q", "k", "v"):
        put(out, f"{ours}.{proj}_proj", linear(f"{theirs}.{proj}", inner, cfg.d_model, bias=False))
    put(out, f"{ours}.out_proj", linear(f"{theirs}.o", cfg.d_model, inner, bias=False))


def weights(cfg: ModelConfig) -> dict[str, Take]:
    d, f, v = cfg.d_model, cfg.d_ff, cfg.vocab_size
    out = {"tok_embed.weight": Take("shared.weight", (v, d))}
    if not cfg.tie_embeddings:  # the loader ties a model whose file holds no lm_head.weight (`_tie_when_no_head`)
        out["lm_head.weight"] = Take("lm_head.weight", (v, d), fallback="shared.weight")
    for stack, n_layers in (("encoder", cfg.n_layers), ("decoder", cfg.dec_layers)):
        rel = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"  # block 0's, used by every block
        out[f"{stack}.rel_bias.weight"] = Take(rel, (cfg.rel_buckets, cfg.n_heads))
        for i in range(n_layers):
            ours, sub = f"{stack}.layers.{i}", f"{stack}.block.{i}.layer"  # sub.0 self-attention, (sub.1 cross), feed-forward
            attention(out, f"{ours}.self_attn", f"{sub}.0.SelfAttention", cfg)
            out[f"{ours}.attn_block.norm.weight"] = Take(f"{sub}.0.layer_norm.weight", (d,))
            ff = f"{sub}.1"
            if stack == "decoder":
                attention(out, f"{ours}.cross_attn", f"{sub}.1.EncDecAttention", cfg)
                out[f"{ours}.cross_block.norm.weight"] = Take(f"{sub}.1.layer_norm.weight", (d,))
                ff = f"{sub}.2"
            out[f"{ours}.ff_block.norm.weight"] = Take(f"{ff}.layer_norm.weight", (d,))
            mlp = f"{ff}.DenseReluDense"
            if cfg.mlp == "gated":
                put(out, f"{ours}.feed_forward.gate", linear(f"{mlp}.wi_0", f, d, bias=False))
                put(out, f"{ours}.feed_forward.up", linear(f"{mlp}.wi_1", f, d, bias=False))
            else:
                put(out, f"{ours}.feed_forward.up", linear(f"{mlp}.wi", f, d, bias=False))
            put(out, f"{ours}.feed_forward.down", linear(f"{mlp}.wo", d, f, bias=False))
        out[f"{stack}.final_norm.weight"] = Take(f"{stack}.final_layer_norm.weight", (d,))
    return out


# The stacks' copies of shared.weight (checked equal by `check`); a cross-attention bias table that
# transformers builds no module for and drops on load.
IGNORABLE = (
    r"((encoder|decoder)\.embed_tokens\.weight|decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight)"
)


def check(cfg: ModelConfig, tensors: dict[str, Tensor], source: str) -> None:
    """Refuse what transformers versions read differently, or what one embedding cannot hold: a stack's embed_tokens
    that is not shared.weight (transformers keeps it for that stack), and a tied, scaled head (v1.0's) whose file
    holds another lm_head.weight (transformers 4 used shared.weight, transformers 5 uses the file's head)."""
    check_stack_embeddings(tensors, source)
    shared = tensors["shared.weight"]
    head = tensors.get("lm_head.weight")
    if cfg.head_scale != 1.0 and head is not None and not torch.equal(head, shared):
        raise CheckpointError(
            f"{source}: {CONFIG} ties the head to shared.weight and scales its input (T5 v1.0), but the file's "
            "lm_head.weight differs (transformers 4 would use shared.weight, transformers 5 the file's head): set "
            "tie_word_embeddings (and scale_decoder_outputs) to the one you mean"
        )


def facts(hf: dict[str, Any]) -> dict[str, Any]:
    """What the Checkpoint page shows beside a T5: how far positions read, the buckets, the feed-forward, the head."""
    fields = config(hf)
    gated, act = feed_forward(with_defaults(hf))
    return {
        "context": f"any length (relative positions); the app reads at most {fields['max_len']:,} tokens",
        "relative_buckets": fields["rel_buckets"],
        "relative_max_distance": fields["rel_max_distance"],
        "feed_forward": f"gated {act}" if gated else act,
        "scaled_head": fields["head_scale"] != 1.0,
    }


FAMILY = Family(
    "t5",
    ("T5ForConditionalGeneration", "T5Model", "T5WithLMHeadModel"),  # the last: transformers 2's name of the first
    "",
    IGNORABLE,
    config,
    weights,
    facts=facts,
    generation=GENERATION,
    check=check,
)
# The same network (transformers' MT5 classes are T5's, copied; they never scale the decoder's output).
MT5 = Family(
    "mt5",
    ("MT5ForConditionalGeneration", "MT5Model"),
    "",
    IGNORABLE,
    config,
    weights,
    facts=facts,
    generation=GENERATION,
    check=check,
)
