"""One query row of one head worked through by hand: q·k, ÷√d_head, mask, softmax, Σ weight·v — with the trace's numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from transformer.trace import Trace

from .labels import unique_labels


@dataclass(frozen=True)
class WorkedRow:
    """Every step of `output[i] = softmax(mask(q_i · Kᵀ / √d_head)) · V`, for one query position i."""

    query: int
    query_label: str
    key_labels: tuple[str, ...]
    d_head: int
    q: np.ndarray  # (d_head,) the query vector, from the trace
    k: np.ndarray  # (Tk, d_head)
    v: np.ndarray  # (Tk, d_head)
    dots: np.ndarray  # (Tk,) q · k_j, recomputed here from the trace's q and k (float32)
    scaled: np.ndarray  # (Tk,) dots / √d_head
    trace_scores: np.ndarray  # (Tk,) the trace's scores row (what the model computed)
    allowed: np.ndarray  # (Tk,) bool, the mask row
    weights: np.ndarray  # (Tk,) the trace's softmax weights row
    softmax_check: np.ndarray  # (Tk,) softmax of the masked trace scores, recomputed here
    output: np.ndarray  # (d_head,) Σ_j weights_j · v_j, recomputed here
    trace_output: np.ndarray  # (d_head,) the trace's head-output row

    @property
    def scale(self) -> float:
        return math.sqrt(self.d_head)

    @property
    def max_abs_diff(self) -> float:
        """Largest difference between the recomputed output row and the trace's (float32 rounding only)."""
        return float(np.abs(self.output - self.trace_output).max())

    def steps_table(self) -> pd.DataFrame:
        """One row per key: q·k, ÷√d_head, mask, exp-normalised weight, as a table."""
        return pd.DataFrame(
            {
                "key": self.key_labels,
                "q·k": self.dots,
                f"÷ √{self.d_head} = score": self.trace_scores,
                "may attend": self.allowed,
                "softmax weight": self.weights,
            }
        ).set_index("key")

    def sum_table(self) -> pd.DataFrame:
        """The weighted value vectors weight_j · v_j (rows) whose column sums give the output row."""
        contrib = self.weights[:, None] * self.v
        frame = pd.DataFrame(contrib, index=[f"{w:.4f} × v[{lab}]" for w, lab in zip(self.weights, self.key_labels)])
        frame.loc["Σ = output row (recomputed)"] = self.output
        frame.loc["head output row (trace)"] = self.trace_output
        frame.columns = [f"dim {d}" for d in range(self.d_head)]
        return frame


def worked_row(trace: Trace, kind: str, layer: int, head: int, query: int) -> WorkedRow:
    """Work query row `query` of one head from the trace's own q, k, v, scores, mask and weights."""
    h = {name: t.detach().cpu().numpy() for name, t in trace.head(kind, layer, head).items()}
    n_q = h["q"].shape[0]
    if not 0 <= query < n_q:
        raise IndexError(f"query {query} out of range: there are {n_q} query tokens")
    d_head = h["q"].shape[1]
    q, k, v = h["q"][query], h["k"], h["v"]
    dots = (k @ q).astype(np.float32)
    scaled = (dots / np.float32(math.sqrt(d_head))).astype(np.float32)
    allowed = h["mask"][query].astype(bool)
    masked = np.where(allowed, h["scores"][query].astype(np.float64), -np.inf)
    e = np.exp(masked - masked.max())
    weights = h["weights"][query]
    return WorkedRow(
        query=query,
        query_label=unique_labels(trace.query_tokens(kind))[query],
        key_labels=tuple(unique_labels(trace.key_tokens(kind))),
        d_head=d_head,
        q=q,
        k=k,
        v=v,
        dots=dots,
        scaled=scaled,
        trace_scores=h["scores"][query],
        allowed=allowed,
        weights=weights,
        softmax_check=(e / e.sum()).astype(np.float32),
        output=(weights[None, :] @ v)[0].astype(np.float32),
        trace_output=h["output"][query],
    )
