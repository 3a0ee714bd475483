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
    """W_Q, W_K, W_V as (d_model, d_head) and W_O as (d_head, d_model) for one query head (x @ W conventions).

    W_K and W_V are those of the key/value head the query head reads (shared with its group under grouped-query attention).
    """
    stack_name, sub = KIND_PATHS[kind]
    attn = getattr(getattr(model, stack_name).layers[layer], sub)
    cfg = model.cfg
    d_head = cfg.d_head
    kv = head // cfg.group_size
    rows = slice(head * d_head, (head + 1) * d_head)
    kv_rows = slice(kv * d_head, (kv + 1) * d_head)
    # nn.Linear stores (out, in): the head's slice of the output features, transposed to (in, out).
    out = {"W_Q": attn.q_proj.weight[rows].T, "W_K": attn.k_proj.weight[kv_rows].T, "W_V": attn.v_proj.weight[kv_rows].T}
    out["W_O"] = attn.out_proj.weight[:, rows].T  # (d_head, d_model): the head's slice of the input features
    return {k: v.detach().float().cpu().numpy() for k, v in out.items()}


PARITY_FIELDS = ("max_attention_diff", "max_output_diff", "output", "texts", "tokens", "transformers", "torch", "date")


def _num(value, fmt: str) -> str:
    """A number from a file, formatted; anything else shown as it is (the file says what it says)."""
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return str(value)


def parity_sentence(parity: dict) -> str:
    """ "Checked against transformers 5.23.0 on 2026-12-03: attention weights differ by at most 3e-07, next-token
    probabilities by 1e-08, on 3 texts / 40 tokens." (values from the file or from `verify.compare`, as they are)"""
    p = {k: parity.get(k, "?") for k in PARITY_FIELDS}
    return (
        f"Checked against transformers {p['transformers']} (torch {p['torch']}) on {p['date']}: attention weights differ by "
        f"at most {_num(p['max_attention_diff'], '.1g')}, {p['output']} by {_num(p['max_output_diff'], '.1g')}, "
        f"on {p['texts']} texts / {p['tokens']} tokens."
    )


def parity_frame(parity: dict) -> pd.DataFrame:
    """The parity check as a two-column table: what was compared, and the largest difference or the setting."""
    rows = [
        ("attention weights, largest |difference|", _num(parity.get("max_attention_diff", "?"), ".3g")),
        (f"{parity.get('output', 'output')}, largest |difference|", _num(parity.get("max_output_diff", "?"), ".3g")),
        ("texts / tokens", f"{parity.get('texts', '?')} / {parity.get('tokens', '?')}"),
        ("transformers / torch", f"{parity.get('transformers', '?')} / {parity.get('torch', '?')}"),
        ("date", str(parity.get("date", "?"))),
    ]
    rows += [(str(k), str(v)) for k, v in parity.items() if k not in PARITY_FIELDS]  # anything else the file holds
    return pd.DataFrame(rows, columns=["checked", "value"])


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
