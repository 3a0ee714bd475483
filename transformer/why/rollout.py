"""Attention rollout and attention flow (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

One layer's attention says which tokens of the layer below each token reads; these two methods
follow that through every layer down to the input tokens. Both start from the same per-layer
matrix: average the heads' weights (or pick one head), then add the residual connection,
Â = 0.5·A + 0.5·I, and renormalise each row to sum to 1.

- Rollout multiplies them: R_l = Â_l · R_{l-1}, R_1 = Â_1. Row i of R_l is how much output token i
  of layer l draws from each input token; rows sum to 1.
- Flow treats Â as edge capacities in the layered graph (nodes: every token at layers 0..L; an edge
  from token j at layer l-1 to token i at layer l with capacity Â_l[i, j]) and takes the maximum
  flow from each input token to each output token. Rows are then normalised to sum to 1, as the
  paper's code does.

Encoder-decoder. "encoder self" rolls out over the source and "decoder self" over the target (each
on its own self-attention only). "cross" relates each target token to the source tokens on the
joint graph of both: the encoder's layers mix the source, and in every decoder layer the
self-attention step mixes the target (Â as above), then the cross-attention step keeps half of each
target token and takes half from the encoder's output tokens (0.5·I on the target, 0.5·A_cross on
the source), so each target row is split between the target prefix and the source, summing to 1.
Cross-attention flow runs max flow on that same joint graph.

`heads` ("mean", "max", "min" or a head index) applies the same choice to every layer and kind.

Pure functions over tensors and traces: nothing is stored, one model serves every session.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import torch
from torch import Tensor

from transformer.model.trace import Trace

HEADS = ("mean", "max", "min")  # how the heads of one layer are reduced; an int picks one head
# Attention flow solves one max-flow problem per (input token, output token) pair. Through one or two
# steps it has a closed form (cheap, vectorised); through more it runs networkx's preflow-push in
# Python, about n_steps · T⁴ work, slowest on near-uniform attention (untrained models). At the limits one
# flow map takes about 1.2 s of one core, 3-4 s of wall time when our 2-core server is busy
# (benchmarks/rollout.py measures them): see flow_max_tokens.
FLOW_MAX_STEPS = 6  # attention steps: layers (for cross-attention: encoder layers + 2 per decoder layer)
FLOW_MAX_TOKENS = 16  # nodes per layer (source + target for cross-attention) through 3 steps; fewer through more
FLOW_MAX_TOKENS_SHALLOW = 512  # nodes per layer through 1 or 2 steps (the closed form)
_FLOW_WORK = 6 * 14**4  # n_steps · T⁴ allowed through 3+ steps
_SCALE = 2**40  # flow capacities as integers: exact arithmetic, no rounding residue in the solver


# One sentence each, for the page beside the heatmaps.
EXPLANATIONS = {
    "rollout": (
        "Attention rollout follows attention down through the layers: each layer's attention, averaged over heads and "
        "with half of every token kept for the residual connection, is multiplied by the layers below it, so each row "
        "shows how much of a token after that layer comes from each input token (rows sum to 1)."
    ),
    "flow": (
        "Attention flow treats the same residual-mixed attention as pipes between the tokens of consecutive layers, "
        "with the weights as their capacities, and measures the most that can flow from each input token to each "
        "output token (a maximum-flow problem); each row is rescaled to sum to 1."
    ),
    "cross": (
        "For cross-attention, each decoder layer keeps half of a target token (the residual) and takes half through "
        "cross-attention from the encoder's output tokens, themselves rolled out over the source; a row shows the part "
        "of the target token that comes from each source token, and the rest comes from the target tokens before it."
    ),
}


class FlowTooLong(ValueError):
    """The attention graph is too big for max flow in reasonable time."""


def reduce_heads(weights: Tensor, heads: str | int = "mean") -> Tensor:
    """One (…, Tq, Tk) map from (…, H, Tq, Tk) weights: the heads' mean (the paper's choice), max, min, or head `heads`."""
    if isinstance(heads, int) and not isinstance(heads, bool):
        n_heads = weights.shape[-3]
        if not 0 <= heads < n_heads:
            raise IndexError(f"head {heads} out of range: there are {n_heads} heads")
        return weights[..., heads, :, :]
    if heads == "mean":
        return weights.mean(-3)
    if heads == "max":
        return weights.amax(-3)
    if heads == "min":
        return weights.amin(-3)
    raise ValueError(f"heads must be one of {HEADS} or a head index, got {heads!r}")


def add_residual(attn: Tensor) -> Tensor:
    """Â = 0.5·A + 0.5·I with rows renormalised to sum to 1: attention plus the residual connection. (…, T, T)."""
    T = attn.shape[-1]
    assert attn.shape[-2] == T, f"the residual needs square (T, T) attention, got {tuple(attn.shape)}"
    aug = 0.5 * attn  # a fresh tensor: the caller's weights are never written
    aug.diagonal(dim1=-2, dim2=-1).add_(0.5)
    return aug.div_(aug.sum(-1, keepdim=True))  # every row holds at least the 0.5 on its diagonal


def _layers(weights: Tensor | Sequence[Tensor], heads: str | int, dtype: torch.dtype) -> Tensor:
    """Per-layer weights, (L, H, T, T) or L × (H, T, T), to the residual-augmented (L, T, T) in `dtype`."""
    return torch.stack([add_residual(reduce_heads(w, heads).to(dtype)) for w in weights])


def rollout(weights: Tensor | Sequence[Tensor], heads: str | int = "mean") -> Tensor:
    """Attention rollout up to every layer: (L, T, T), entry [l, i, j] = how much token i after layer l draws from input token j.

    `weights`: each layer's attention weights, (L, H, T, T) or a sequence of (H, T, T). Rows sum to 1 (to
    ~1e-6: float32, which halves the memory and time of float64 at 2048 tokens, far below what a heatmap shows).
    """
    aug = _layers(weights, heads, torch.float32)  # (L, T, T)
    out = torch.empty_like(aug)
    out[0] = aug[0]
    for layer in range(1, len(aug)):
        torch.matmul(aug[layer], out[layer - 1], out=out[layer])  # R_l = Â_l · R_{l-1}
    return out


def cross_rollout(
    encoder: Tensor | Sequence[Tensor],
    decoder: Tensor | Sequence[Tensor],
    cross: Tensor | Sequence[Tensor],
    heads: str | int = "mean",
) -> Tensor:
    """Rollout of an encoder-decoder on the joint graph: (L_dec, T, S + T), source columns first, then the target's.

    Entry [l, i, :S] = how much target token i after decoder layer l draws from each source token (through
    the cross-attention of layers 0..l, each composed with the full encoder rollout); [l, i, S:] = from each
    target token. Each row sums to 1. Per decoder layer: self step D, C ← Â_self·D, Â_self·C; cross step
    D ← 0.5·D, C ← 0.5·C + 0.5·A_cross·R_enc (R_enc: the encoder's rollout after its last layer).
    """
    r_enc = rollout(encoder, heads)[-1].double()  # (S, S)
    self_aug = _layers(decoder, heads, torch.float64)  # (L, T, T)
    cross_avg = torch.stack([reduce_heads(w, heads).double() for w in cross])  # (L, T, S)
    L, T, S = cross_avg.shape
    d = torch.eye(T, dtype=torch.float64)  # target → target, before the first layer
    c = torch.zeros(T, S, dtype=torch.float64)  # target → source
    out = torch.empty(L, T, S + T, dtype=torch.float64)
    for layer in range(L):
        d, c = self_aug[layer] @ d, self_aug[layer] @ c
        d, c = 0.5 * d, 0.5 * c + 0.5 * cross_avg[layer] @ r_enc
        out[layer, :, :S], out[layer, :, S:] = c, d
    return out.float()


def _stack_weights(trace: Trace, kind: str, item: int) -> list[Tensor]:
    return [trace.attention(kind, layer).weights[item] for layer in range(trace.n_layers(kind))]  # each (H, Tq, Tk)


def rollout_trace(trace: Trace, kind: str, heads: str | int = "mean", item: int = 0) -> Tensor:
    """Rollout of attention `kind` in `trace`, up to every layer: (n_layers, Tq, Tk).

    "encoder self" / "decoder self": `rollout` of that stack's self-attention (its tokens on both axes).
    "cross": the source columns of `cross_rollout`, (L_dec, T, S); each row sums to the share of the
    target token that came from the source (the rest came from the target prefix).
    """
    if kind == "cross":
        joint = cross_rollout(
            _stack_weights(trace, "encoder self", item),
            _stack_weights(trace, "decoder self", item),
            _stack_weights(trace, "cross", item),
            heads,
        )
        return joint[..., : len(trace.key_tokens("cross"))]
    return rollout(_stack_weights(trace, kind, item), heads)


# --- attention flow ------------------------------------------------------------------------------


def flow_max_tokens(n_steps: int) -> int:
    """The most tokens (nodes per layer) attention flow takes through `n_steps` steps: 512 through 1-2; 16, 15, 14, 14 through 3, 4, 5, 6; 0 past 6."""
    if n_steps <= 2:
        return FLOW_MAX_TOKENS_SHALLOW
    if n_steps > FLOW_MAX_STEPS:
        return 0
    return min(FLOW_MAX_TOKENS, int((_FLOW_WORK / n_steps) ** 0.25 + 1e-9))


def check_flow_size(n_tokens: int, n_steps: int) -> None:
    """Raise FlowTooLong if max flow over `n_steps` attention steps of `n_tokens` nodes would take too long."""
    if n_steps > FLOW_MAX_STEPS:
        raise FlowTooLong(
            f"attention flow is limited to {FLOW_MAX_STEPS} attention steps, this graph has {n_steps}; "
            "use rollout, or flow up to an earlier layer"
        )
    limit = flow_max_tokens(n_steps)
    if n_tokens > limit:
        raise FlowTooLong(
            f"attention flow through {n_steps} attention steps is limited to {limit} tokens, this input has {n_tokens}; "
            "use rollout for longer inputs"
        )


def max_flows(steps: Tensor, sources: Sequence[int] | None = None, sinks: Sequence[int] | None = None) -> Tensor:
    """Max-flow value from each input node to each output node of a layered graph: (len(sinks), len(sources)).

    `steps`: (L, N, N) capacities; node j at layer l-1 → node i at layer l has capacity steps[l-1][i, j].
    Not normalised. One step: the capacities themselves. Two steps: Σ_k min(steps[1][i, k], steps[0][k, j]),
    exact because every path j → k → i is the only one through k. More: networkx's preflow-push, one
    graph per sink (only what can reach it), its residual network reused for every source.
    """
    L, N, _ = steps.shape
    sources = list(range(N)) if sources is None else list(sources)
    sinks = list(range(N)) if sinks is None else list(sinks)
    steps = steps.double().cpu()
    if L == 1:
        return steps[0][sinks][:, sources]
    if L == 2:  # sinks a block at a time: the (block, N, len(sources)) minimum stays ≤ 2^24 numbers
        first, last = steps[0][:, sources], steps[1][sinks]  # (N, sources), (sinks, N)
        block = max(1, 2**24 // (N * len(sources)))
        return torch.cat([torch.minimum(last[b : b + block, :, None], first).sum(1) for b in range(0, len(sinks), block)])
    caps = (steps * _SCALE).round().long()
    out = torch.zeros(len(sinks), len(sources), dtype=torch.float64)
    for row, sink in enumerate(sinks):
        graph, reach = _graph_to(caps, sink)
        residual = nx.algorithms.flow.build_residual_network(graph, "capacity")
        for col, source in enumerate(sources):
            if source in reach:  # else no path: the flow is 0
                value = nx.maximum_flow_value(
                    graph, (0, source), (L, sink), flow_func=nx.algorithms.flow.preflow_push, residual=residual
                )
                out[row, col] = value / _SCALE
    return out


def _graph_to(caps: Tensor, sink: int) -> tuple[nx.DiGraph, set[int]]:
    """The layered graph of nodes (layer, token) that reach node `sink` of the last layer, and the input tokens among them."""
    L = caps.shape[0]
    graph = nx.DiGraph()
    graph.add_node((L, sink))
    frontier = [sink]
    for layer in range(L, 0, -1):  # from the sink down to the inputs, keeping positive edges only
        cap = caps[layer - 1][frontier]  # (len(frontier), N)
        below = sorted(set(cap.nonzero()[:, 1].tolist()))
        rows = cap.tolist()
        for i, row in zip(frontier, rows):
            graph.add_edges_from(((layer - 1, j), (layer, i), {"capacity": row[j]}) for j in below if row[j] > 0)
        frontier = below
    return graph, set(frontier)


def attention_flow(weights: Tensor | Sequence[Tensor], heads: str | int = "mean", normalize: bool = True) -> Tensor:
    """Attention flow from every input token to every token after the last layer: (T, T), [i, j] = input j → output i.

    `weights`: (L, H, T, T) or L × (H, T, T); pass the first l layers for "flow up to layer l". Raw
    values are ≤ 1 (capacities into an output token sum to 1); `normalize` divides each row by its sum.
    Raises FlowTooLong past `flow_max_tokens(L)` tokens or FLOW_MAX_STEPS layers.
    """
    aug = _layers(weights, heads, torch.float64)
    check_flow_size(aug.shape[-1], aug.shape[0])
    flows = max_flows(aug)
    return _normalized(flows, normalize).float()


def cross_flow(
    encoder: Tensor | Sequence[Tensor],
    decoder: Tensor | Sequence[Tensor],
    cross: Tensor | Sequence[Tensor],
    heads: str | int = "mean",
    normalize: bool = True,
) -> Tensor:
    """Attention flow on `cross_rollout`'s joint graph: (T, S + T), source columns first, from each input to each target token.

    The graph has S + T nodes per step: each encoder layer mixes the source (the target waits, capacity 1),
    each decoder layer is a self step (the source waits) and a cross step (0.5 to the target token itself,
    0.5·A_cross from the source). `normalize` divides each row by its sum over all S + T inputs.
    """
    joint, S = _joint_steps(encoder, decoder, cross, heads)
    check_flow_size(joint.shape[-1], joint.shape[0])
    flows = max_flows(joint, sinks=range(S, joint.shape[-1]))
    return _normalized(flows, normalize).float()


def _joint_steps(encoder, decoder, cross, heads) -> tuple[Tensor, int]:
    """The joint graph's steps over S + T nodes (source first), (L_enc + 2·L_dec, S + T, S + T), and S."""
    enc = _layers(encoder, heads, torch.float64)  # (Le, S, S)
    dec = _layers(decoder, heads, torch.float64)  # (Ld, T, T)
    crs = torch.stack([reduce_heads(w, heads).double() for w in cross])  # (Ld, T, S)
    S, T = enc.shape[-1], dec.shape[-1]
    steps = []
    for a in enc:
        step = torch.eye(S + T, dtype=torch.float64)
        step[:S, :S] = a
        steps.append(step)
    for a, c in zip(dec, crs):
        step = torch.eye(S + T, dtype=torch.float64)
        step[S:, S:] = a
        steps.append(step)
        step = torch.eye(S + T, dtype=torch.float64)
        step[S:, S:] *= 0.5
        step[S:, :S] = 0.5 * c
        steps.append(step)
    return torch.stack(steps), S


def _normalized(flows: Tensor, normalize: bool) -> Tensor:
    if not normalize:
        return flows
    return flows / flows.sum(-1, keepdim=True).clamp_min(torch.finfo(flows.dtype).tiny)


def flow_trace(trace: Trace, kind: str, heads: str | int = "mean", layer: int | None = None, item: int = 0) -> Tensor:
    """Attention flow of `kind` in `trace` through layers 0..`layer` (default: all), rows normalised: (Tq, Tk).

    "cross": the source columns of `cross_flow` through decoder layers 0..`layer`, (T, S); rows sum to the
    source's share of each target token's flow. Raises FlowTooLong on graphs past the limits.
    """
    last = trace.n_layers(kind) if layer is None else layer + 1
    if kind == "cross":
        flows = cross_flow(
            _stack_weights(trace, "encoder self", item),
            _stack_weights(trace, "decoder self", item)[:last],
            _stack_weights(trace, "cross", item)[:last],
            heads,
        )
        return flows[:, : len(trace.key_tokens("cross"))]
    return attention_flow(_stack_weights(trace, kind, item)[:last], heads)


__all__ = [
    "EXPLANATIONS",
    "FLOW_MAX_STEPS",
    "FLOW_MAX_TOKENS",
    "FLOW_MAX_TOKENS_SHALLOW",
    "HEADS",
    "FlowTooLong",
    "add_residual",
    "attention_flow",
    "check_flow_size",
    "flow_max_tokens",
    "cross_flow",
    "cross_rollout",
    "flow_trace",
    "max_flows",
    "reduce_heads",
    "rollout",
    "rollout_trace",
]
