"""Numbers about a checkpoint and a trace for tables: parameter counts, per-head projections, entropy, top-k."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import torch

from transformer.model.network import TransformerModel
from transformer.model.trace import KIND_PATHS, Trace
from viz.labels import unique_labels


def parameter_table(model: TransformerModel) -> pd.DataFrame:
    """Parameter counts per module (layer numbers kept, weight/bias merged), in model order, with a total."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        module = name.rsplit(".", 1)[0]
        counts[module] = counts.get(module, 0) + p.numel()
    frame = pd.DataFrame({"module": list(counts), "parameters": list(counts.values())})
    frame.loc[len(frame)] = ["total", sum(counts.values())]
    return frame.set_index("module")


def stack_totals(model: TransformerModel) -> pd.DataFrame:
    """Parameter counts per top-level part and per layer (encoder.layers.0, ...)."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        m = re.match(r"((?:encoder|decoder)\.layers\.\d+|[^.]+(?:\.[^.]+)?)", name)
        key = m.group(1) if m else name
        counts[key] = counts.get(key, 0) + p.numel()
    return pd.DataFrame({"part": list(counts), "parameters": list(counts.values())}).set_index("part")


def head_projections(model: TransformerModel, kind: str, layer: int, head: int) -> dict[str, np.ndarray]:
    """W_Q, W_K, W_V as (d_model, d_head) and W_O as (d_head, d_model) for one head (x @ W conventions)."""
    stack_name, sub = KIND_PATHS[kind]
    attn = getattr(getattr(model, stack_name).layers[layer], sub)
    d_head = model.cfg.d_head
    rows = slice(head * d_head, (head + 1) * d_head)
    # nn.Linear stores (out, in): the head's slice of the output features, transposed to (in, out).
    out = {name: getattr(attn, proj).weight[rows].T for name, proj in (("W_Q", "q_proj"), ("W_K", "k_proj"), ("W_V", "v_proj"))}
    out["W_O"] = attn.out_proj.weight[:, rows].T  # (d_head, d_model): the head's slice of the input features
    return {k: v.detach().float().cpu().numpy() for k, v in out.items()}


def attention_entropy(trace: Trace, kind: str) -> np.ndarray:
    """(n_layers, n_heads) mean entropy in bits of each head's weight rows (0 = always one key; log2 Tk = uniform)."""
    out = []
    for layer in range(trace.n_layers(kind)):
        w = trace.attention(kind, layer).weights[0].double()  # (H, Tq, Tk)
        ent = -(torch.where(w > 0, w * torch.log2(w), torch.zeros_like(w))).sum(-1)  # (H, Tq)
        out.append(ent.mean(-1).numpy())
    return np.stack(out).astype(np.float32)


def top_k_table(trace: Trace, id_to_token, k: int = 5) -> pd.DataFrame:
    """For each decoder position: its token and the k most likely next tokens with probabilities."""
    probs = trace.probs[0]  # (T, vocab)
    tokens = trace.target.tokens if trace.target is not None else trace.source.tokens
    p, idx = probs.topk(min(k, probs.shape[-1]), dim=-1)
    rows = {}
    for i, label in enumerate(unique_labels(tokens)):
        rows[label] = {f"#{j + 1}": f"{id_to_token(int(idx[i, j]))}  ({float(p[i, j]):.3f})" for j in range(p.shape[1])}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "after token"
    return frame


def cosine_similarity(hidden: torch.Tensor) -> np.ndarray:
    """(T, T) cosine similarity between the rows of a (T, d_model) tensor."""
    x = torch.nn.functional.normalize(hidden.float(), dim=-1)
    return (x @ x.T).numpy().astype(np.float32)
