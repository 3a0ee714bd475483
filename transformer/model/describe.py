"""A model's architecture in words, from its config alone: what the Checkpoint page states above the numbers.

`describe(cfg)` says only what is true of that config, in the order a reader meets the parts: the kind,
the layers, the heads (and how they share keys and values), positions, normalisation, the feed-forward
sublayer, the embeddings, the attention window and the residual layout. For example

    decoder-only, 30 layers of width 576, 9 query heads sharing 3 key/value heads (head width 64),
    RoPE θ = 100 000 on all dims (llama3 scaling ×8), RMSNorm before each sublayer, SwiGLU feed-forward
    (1 536 wide), tied embeddings, sliding window of 4 096 tokens in layers 3–29, ...
"""

from __future__ import annotations

from collections.abc import Sequence

from transformer.model.config import ModelConfig

KIND_WORDS = {"encoder-decoder": "encoder-decoder", "encoder": "encoder-only", "decoder": "decoder-only"}
ACTIVATION_WORDS = {"relu": "ReLU", "gelu": "GELU", "gelu_tanh": "GELU (tanh approximation)", "silu": "SiLU"}
GATED_WORDS = {"relu": "ReGLU", "gelu": "GeGLU", "gelu_tanh": "GeGLU (tanh approximation)", "silu": "SwiGLU"}
SCALING_WORDS = {"linear": "linear", "dynamic": "dynamic NTK", "llama3": "llama3"}


def number(x: float) -> str:
    """A number as a reader writes it: thousands grouped by spaces ("100 000"), no needless ".0"."""
    if float(x).is_integer():
        return f"{int(x):,}".replace(",", " ")
    return f"{x:g}"


def spans(values: Sequence[int]) -> str:
    """Sorted integers as runs: [3, 4, 5, 9] -> "3–5, 9"."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}–{b}" if b > a + 1 else f"{a}, {b}" for a, b in runs)


def norm_name(cfg: ModelConfig) -> str:
    """The normalisation's name: "LayerNorm" (without bias, when it has none), "RMSNorm", or Gemma's "RMSNorm (scale 1 + w)"."""
    if cfg.norm == "layer":
        return "LayerNorm" if cfg.norm_bias else "LayerNorm without bias"
    return "RMSNorm" if cfg.norm == "rms" else "RMSNorm (scale 1 + w)"


def heads(cfg: ModelConfig) -> str:
    """ "12 heads (head width 64)", or under grouped-query attention "9 query heads sharing 3 key/value heads (...)"."""
    width = f"(head width {cfg.d_head})"
    if cfg.kv_heads == cfg.n_heads:
        return f"{cfg.n_heads} head{'s' if cfg.n_heads > 1 else ''} {width}"
    if cfg.kv_heads == 1:
        return f"{cfg.n_heads} query heads sharing one key/value head (multi-query) {width}"
    return f"{cfg.n_heads} query heads sharing {cfg.kv_heads} key/value heads, {cfg.group_size} each {width}"


def positions(cfg: ModelConfig) -> str:
    """How positions enter: added vectors (sinusoidal, learned: their layout and first row), T5's relative bias, or
    rotary (RoPE, with its base, dims and scaling)."""
    if cfg.positional == "relative":
        return (
            f"relative position bias ({cfg.rel_buckets} buckets up to distance {number(cfg.rel_max_distance)}, "
            "shared by the layers of each stack)"
        )
    if cfg.positional != "rope":
        layout = {"split": ", sin and cos halves (Marian)", "fairseq": ", fairseq layout"}.get(cfg.sinusoidal_layout, "")
        first = f", the first token at position {cfg.position_offset}" if cfg.position_offset else ""
        return f"{cfg.positional} positions{layout if cfg.positional == 'sinusoidal' else ''}{first}"
    dims = "all dims" if cfg.rotary_dim == cfg.d_head else f"{cfg.rotary_dim} of {cfg.d_head} dims"
    text = f"RoPE θ = {number(cfg.rope_theta)} on {dims}"
    if cfg.rope_scaling != "default":
        text += f" ({SCALING_WORDS[cfg.rope_scaling]} scaling ×{number(cfg.rope_factor)})"
    return text


def normalisation(cfg: ModelConfig) -> str:
    """Which norm, where: before each sublayer (pre-norm) or after it (the paper's post-LN)."""
    name = norm_name(cfg)
    text = f"{name} before each sublayer (pre-norm)" if cfg.norm_first else f"{name} after each sublayer (post-LN)"
    if cfg.qk_norm:
        text += f", {name} on each head's q and k"
    if cfg.embed_norm:
        text += f", {name} on the embeddings"
    if cfg.norm_first and not cfg.has_final_norm:
        text += ", no final norm"
    elif not cfg.norm_first and cfg.has_final_norm:
        text += f", a final {name}"
    return text


def feed_forward(cfg: ModelConfig) -> str:
    """ "GELU feed-forward (3 072 wide)", or gated: "SwiGLU feed-forward (1 536 wide)"."""
    words = GATED_WORDS if cfg.mlp == "gated" else ACTIVATION_WORDS
    return f"{words[cfg.activation]} feed-forward ({number(cfg.d_ff)} wide)"


def biases(cfg: ModelConfig) -> str | None:
    """Which projections have biases, said only when some do not (every one has, in the paper's model)."""
    flags = {"q, k, v": cfg.attn_bias, "attention output": cfg.attn_out_bias, "feed-forward": cfg.mlp_bias}
    if all(flags.values()):
        return None
    if not any(flags.values()):
        return "no biases"
    return "biases on " + " and ".join(name for name, on in flags.items() if on) + " only"


def window(cfg: ModelConfig) -> str | None:
    """ "sliding window of 4 096 tokens in layers 3–29" (or "in every layer"); None without a window."""
    if not cfg.sliding_window:
        return None
    windowed = [layer for layer in range(cfg.n_layers) if cfg.window_of(layer)]
    if not windowed:
        return None
    where = "every layer" if len(windowed) == cfg.n_layers else f"layer{'s' if len(windowed) > 1 else ''} {spans(windowed)}"
    return f"sliding window of {number(cfg.sliding_window)} tokens in {where}"


def describe(cfg: ModelConfig) -> str:
    """The architecture of `cfg` in one line of words: only what is true for this config."""
    layers = (
        f"{cfg.n_layers} encoder and {cfg.dec_layers} decoder layers"
        if cfg.kind == "encoder-decoder"
        else f"{cfg.n_layers} layers"
    )
    parts = [KIND_WORDS[cfg.kind], f"{layers} of width {cfg.d_model}", heads(cfg), positions(cfg), normalisation(cfg)]
    if not cfg.scale_scores:
        parts.append("scores not divided by √d_head")
    parts.append(feed_forward(cfg))
    parts.append(biases(cfg))
    if cfg.has_decoder:
        parts.append("tied embeddings" if cfg.tie_embeddings else "a separate output matrix (untied embeddings)")
    if cfg.head_scale != 1.0:
        parts.append(f"the decoder's output scaled by {cfg.head_scale:.4g} before the output matrix")
    if cfg.logits_bias:
        parts.append("a bias on the output logits")
    if cfg.scale_embeddings:
        parts.append("embeddings scaled by √d_model")
    if cfg.n_token_types:
        parts.append(f"{cfg.n_token_types} segment embeddings")
    if cfg.n_classes:
        parts.append(f"a classification head ({cfg.n_classes} classes)")
    parts.append(window(cfg))
    if cfg.parallel_residual:
        parts.append("parallel attention and feed-forward (one residual step)")
    parts.append(f"vocabulary of {number(cfg.vocab_size)} tokens, at most {number(cfg.max_len)} tokens a text")
    return ", ".join(p for p in parts if p)


def kv_sharing(n_heads: int, kv_heads: int, head: int) -> str:
    """Which key/value head query head `head` reads and which query heads share it ("" without grouped-query attention).

    "Query head 5 reads key/value head 1, shared by query heads 3, 4 and 5." (heads numbered from 0, as the app does)
    """
    if kv_heads == n_heads:
        return ""
    group = n_heads // kv_heads
    g = head // group
    if kv_heads == 1:
        return f"Query head {head} reads the model's only key/value head (0), shared by all {n_heads} query heads."
    members = [str(h) for h in range(g * group, (g + 1) * group)]
    listed = ", ".join(members[:-1]) + " and " + members[-1]
    return f"Query head {head} reads key/value head {g}, shared by query heads {listed}."


def rotation(cfg: ModelConfig) -> str:
    """What rotary positions do, in two sentences ("" for a model whose positions are added vectors)."""
    if cfg.positional != "rope":
        return ""
    dims = (
        ""
        if cfg.rotary_dim == cfg.d_head
        else f" (the first {cfg.rotary_dim} of each head's {cfg.d_head} dims; the rest pass unturned)"
    )
    return (
        "Rotary positions (RoPE): no position vector is added to the tokens; instead q and k are turned, pair of dims by "
        f"pair of dims{dims}, by angles proportional to their token's position. A turned query at position i and a turned "
        "key at position j then score by how far apart they are (i − j), not by where they are."
    )


__all__ = ["describe", "kv_sharing", "norm_name", "number", "rotation", "spans"]
