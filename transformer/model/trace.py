"""What one forward pass computed, returned by `forward(trace=True)` as frozen dataclasses.

Nothing here is ever stored on a module: a trace belongs to the call that made it, so one
shared model can serve many browser sessions at once. Attention tensors use one order
throughout: (batch, head, query_pos, key_pos).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

# The attention kinds, named as the app names them, and where each lives in the model.
KIND_PATHS = {
    "encoder self": ("encoder", "self_attn"),
    "decoder self": ("decoder", "self_attn"),
    "cross": ("decoder", "cross_attn"),
}


@dataclass(frozen=True)
class AttentionTrace:
    """Every intermediate of one multi-head attention sublayer, for all heads."""

    q: Tensor  # (B, H, Tq, d_head)  queries as the scores use them: projected, split, (normed, rotated)
    k: Tensor  # (B, H_kv, Tk, d_head)  one per key/value head: H_kv < H under grouped-query attention
    v: Tensor  # (B, H_kv, Tk, d_head)
    scores: Tensor  # (B, H, Tq, Tk)  Q Kᵀ / √d_head (+ bias), before the mask; T5: Q Kᵀ + bias, unscaled
    mask: Tensor  # (B, 1, Tq, Tk)  bool, True where the query may attend to the key
    weights: Tensor  # (B, H, Tq, Tk)  softmax of the masked scores; rows sum to 1
    output: Tensor  # (B, H, Tq, d_head)  weights @ v, before heads are merged and projected
    q_pre: Tensor | None = None  # (B, H, Tq, d_head)  rotary models: q before the rotation (None otherwise)
    k_pre: Tensor | None = None  # (B, H_kv, Tk, d_head)  k before the rotation
    bias: Tensor | None = None  # (1, H, Tq, Tk)  the position bias the scores include (T5's relative positions)

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 unless grouped-query attention)."""
        return self.q.shape[1] // self.k.shape[1]

    def kv_head(self, head: int) -> int:
        """The key/value head query head `head` reads."""
        return head // self.group_size


@dataclass(frozen=True)
class LayerTrace:
    """One encoder or decoder layer: its attention sublayers and the residual stream after each."""

    self_attn: AttentionTrace
    resid_attn: Tensor  # (B, T, d_model) residual stream after the self-attention sublayer
    resid_ff: Tensor  # (B, T, d_model) after the feed-forward sublayer (the layer's output)
    cross_attn: AttentionTrace | None = None  # decoder layers of an encoder-decoder only
    resid_cross: Tensor | None = None  # (B, T, d_model) after the cross-attention sublayer


@dataclass(frozen=True)
class StackTrace:
    """An encoder or a decoder: its input embeddings, every layer, and its final output."""

    embed: Tensor  # (B, T, d_model) token + position embeddings, the input to layer 0
    layers: tuple[LayerTrace, ...]
    final: Tensor  # (B, T, d_model) after the last layer (and the final LayerNorm, if any)


@dataclass(frozen=True)
class Stream:
    """The tokens of one input sequence, as the tokenizer split it."""

    text: str
    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]  # character span of each token in `text`; (0, 0) for specials
    truncated: int = 0  # tokens cut off because the text was longer than the model's max_len


@dataclass(frozen=True)
class Trace:
    """A whole forward pass: every layer and head of every attention kind, and the outputs."""

    encoder: StackTrace | None
    decoder: StackTrace | None
    logits: Tensor  # (B, T, vocab) for LM heads, (B, n_classes) for a classifier, or hidden states
    probs: Tensor  # softmax of logits over the last dimension
    source: Stream | None = None  # filled in by the API for single texts
    target: Stream | None = None  # decoder tokens of an encoder-decoder

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k, (stack, sub) in KIND_PATHS.items() if self._stack(stack) is not None and self._has(stack, sub))

    def _stack(self, name: str) -> StackTrace | None:
        return self.encoder if name == "encoder" else self.decoder

    def _has(self, stack: str, sub: str) -> bool:
        s = self._stack(stack)
        return s is not None and bool(s.layers) and getattr(s.layers[0], sub) is not None

    def attention(self, kind: str, layer: int) -> AttentionTrace:
        """The trace of attention `kind` ("encoder self", "decoder self", "cross") in `layer`."""
        if kind not in KIND_PATHS:
            raise KeyError(f"unknown attention kind {kind!r}; expected one of {tuple(KIND_PATHS)}")
        stack_name, sub = KIND_PATHS[kind]
        stack = self._stack(stack_name)
        if stack is None or not self._has(stack_name, sub):
            raise KeyError(f"this model has no {kind!r} attention; it has {self.kinds}")
        if not 0 <= layer < len(stack.layers):
            raise IndexError(f"layer {layer} out of range: the {stack_name} has {len(stack.layers)} layers")
        return getattr(stack.layers[layer], sub)

    def n_layers(self, kind: str) -> int:
        stack = self._stack(KIND_PATHS[kind][0])
        return 0 if stack is None else len(stack.layers)

    def head(self, kind: str, layer: int, head: int, item: int = 0) -> dict[str, Tensor]:
        """One head's q, k, v, scores, mask, weights and output for batch item `item`, batch dim dropped.

        k and v are the key/value head this query head reads; a rotary model adds q_pre and k_pre (before rotation),
        a model with a relative position bias adds "bias" (the term its scores include).
        """
        att = self.attention(kind, layer)
        n_heads = att.weights.shape[1]
        if not 0 <= head < n_heads:
            raise IndexError(f"head {head} out of range: there are {n_heads} heads")
        g = att.kv_head(head)  # under grouped-query attention, the shared key/value head
        out = {
            "q": att.q[item, head],  # (Tq, d_head)
            "k": att.k[item, g],  # (Tk, d_head)
            "v": att.v[item, g],  # (Tk, d_head)
            "scores": att.scores[item, head],  # (Tq, Tk)
            "mask": att.mask[item, 0],  # (Tq, Tk)
            "weights": att.weights[item, head],  # (Tq, Tk)
            "output": att.output[item, head],  # (Tq, d_head)
        }
        if att.q_pre is not None:  # rotary: q and k before they were turned
            out["q_pre"], out["k_pre"] = att.q_pre[item, head], att.k_pre[item, g]
        if att.bias is not None:  # T5: the relative position bias in the scores
            out["bias"] = att.bias[0, head]  # (Tq, Tk), the same for every batch item
        return out

    def query_tokens(self, kind: str) -> tuple[str, ...]:
        """Tokens along the query axis of attention `kind`."""
        return query_tokens(kind, self.source, self.target, self.encoder is not None)

    def key_tokens(self, kind: str) -> tuple[str, ...]:
        """Tokens along the key axis of attention `kind` (the source, for cross-attention)."""
        return self.query_tokens("encoder self" if kind == "cross" else kind)

    def named_tensors(self) -> dict[str, Tensor]:
        """Every tensor under a stable dotted name, e.g. `decoder.layers.1.cross_attn.weights`."""
        out: dict[str, Tensor] = {}
        for stack_name in ("encoder", "decoder"):
            stack = self._stack(stack_name)
            if stack is None:
                continue
            out[f"{stack_name}.embed"] = stack.embed
            for i, layer in enumerate(stack.layers):
                prefix = f"{stack_name}.layers.{i}"
                for sub in ("self_attn", "cross_attn"):
                    att = getattr(layer, sub)
                    if att is not None:
                        for f in dataclasses.fields(att):
                            if getattr(att, f.name) is not None:
                                out[f"{prefix}.{sub}.{f.name}"] = getattr(att, f.name)
                for resid in ("resid_attn", "resid_cross", "resid_ff"):
                    value = getattr(layer, resid)
                    if value is not None:
                        out[f"{prefix}.{resid}"] = value
            out[f"{stack_name}.final"] = stack.final
        out["logits"] = self.logits
        out["probs"] = self.probs
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.named_tensors().values())

    def map_tensors(self, fn: Callable[[Tensor], Tensor]) -> Trace:
        """A copy with `fn` applied to every tensor (e.g. `.cpu()` or `.half()`)."""
        return _map(self, fn)


def query_tokens(kind: str, source: Stream | None, target: Stream | None, has_encoder: bool) -> tuple[str, ...]:
    """Tokens along the query axis of attention `kind`: the source for the encoder (or a decoder-only model), else the target."""
    stream = source if kind == "encoder self" or (kind == "decoder self" and not has_encoder) else target
    return () if stream is None else stream.tokens


def pool_blocks(n_queries: int, n_keys: int, max_cells: int) -> tuple[int, int]:
    """Block sizes (queries, keys) that pool a (n_queries, n_keys) map to at most max_cells × max_cells.

    The geometry of `AttentionMaps`; `attention.pooled_attention` pools with it (and imports it from here).
    """
    return -(-n_queries // max_cells), -(-n_keys // max_cells)  # ceil


@dataclass(frozen=True)
class AttentionMaps:
    """Every head's attention weights block-max pooled to at most max_cells × max_cells: what the model view draws.

    Made by `api.attention_maps` (a light pass that never holds a full map) or `api.pool_trace`
    (from a full trace); both give the same numbers.
    """

    maps: dict[str, Tensor]  # kind -> (n_layers, n_heads, rows, cols), float32 on the CPU
    max_cells: int
    source: Stream | None = None
    target: Stream | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.maps)

    def n_layers(self, kind: str) -> int:
        return self.maps[kind].shape[0]

    def query_tokens(self, kind: str) -> tuple[str, ...]:
        return query_tokens(kind, self.source, self.target, "encoder self" in self.maps)

    def key_tokens(self, kind: str) -> tuple[str, ...]:
        return self.query_tokens("encoder self" if kind == "cross" else kind)

    def block(self, kind: str) -> tuple[int, int]:
        """How many (queries, keys) each cell of `kind`'s maps pools; (1, 1) when each cell is one weight."""
        return pool_blocks(len(self.query_tokens(kind)), len(self.key_tokens(kind)), self.max_cells)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.maps.values())


def _map(obj, fn):
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        return tuple(_map(x, fn) for x in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if isinstance(obj, Stream):
            return obj
        return dataclasses.replace(obj, **{f.name: _map(getattr(obj, f.name), fn) for f in dataclasses.fields(obj)})
    return obj


def to_cpu(trace: Trace) -> Trace:
    return trace.map_tensors(lambda t: t.detach().cpu())


__all__ = [
    "AttentionMaps",
    "AttentionTrace",
    "LayerTrace",
    "StackTrace",
    "Stream",
    "Trace",
    "KIND_PATHS",
    "pool_blocks",
    "query_tokens",
    "to_cpu",
]
