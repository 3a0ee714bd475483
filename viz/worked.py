"""One query row of one head worked through by hand: q·k, ÷√d_head, mask, softmax, Σ weight·v — with the trace's numbers.

What the model computed (scores, weights, output) comes from the trace; what is recomputed here
(q·k, the softmax, Σ weight·v) is compared with it, within the rounding float32 arithmetic allows.
For a rotary model the row also gives the score q and k would have had unturned (the trace's q_pre and
k_pre): the turned one is what the model used, the unturned one what the same vectors score without positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from transformer.model.trace import Trace
from viz.labels import unique_labels

EPS = float(np.finfo(np.float32).eps)  # 2⁻²³: the gap between 1 and the next float32


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
    q_pre: np.ndarray | None = None  # (d_head,) rotary models: the query vector before rotation
    unturned: np.ndarray | None = None  # (Tk,) q_pre · k_pre_j / √d_head: the scores without rotation, recomputed here

    @property
    def scale(self) -> float:
        return math.sqrt(self.d_head)

    @property
    def max_abs_diff(self) -> float:
        """Largest difference between the recomputed output row and the trace's (float32 rounding only)."""
        return float(np.abs(self.output - self.trace_output).max())

    @property
    def tolerance(self) -> float:
        """The largest difference float32 rounding alone can make in the output row: n · ε · max_d Σ_j |w_j · v_j,d|.

        Two programs that add the same n products in different orders (the model's matmul, numpy's
        here) each land within (n/2)·ε·Σ|terms| of the exact sum (Higham, "Accuracy and Stability of
        Numerical Algorithms", §3.1), so they differ by at most n·ε·Σ|terms|. Relative to the
        magnitudes, so large-valued models (GPT-2, MiniLM) pass on rounding alone and a real
        mistake (a wrong weight or value, of the size of the terms themselves) does not.
        """
        magnitude = float((np.abs(self.weights)[:, None].astype(np.float64) * np.abs(self.v)).sum(0).max(initial=0.0))
        return len(self.weights) * EPS * magnitude

    @property
    def output_matches(self) -> bool:
        """Σ weight_j · v_j recomputed here equals the trace's output row, within `tolerance`."""
        return self.max_abs_diff <= self.tolerance

    @property
    def score_diff(self) -> float:
        """Largest difference between q·k/√d_head recomputed here and the trace's scores (float32 rounding)."""
        return float(np.abs(self.scaled - self.trace_scores).max(initial=0.0))

    @property
    def softmax_diff(self) -> float:
        """Largest difference between the softmax recomputed here from the trace's scores and the trace's weights."""
        return float(np.abs(self.softmax_check - self.weights).max(initial=0.0))

    @property
    def rotary(self) -> bool:
        return self.unturned is not None

    def steps_table(self) -> pd.DataFrame:
        """One row per key: q·k (recomputed here), then the model's own score, mask and softmax weight.

        Rotary models: beside the model's score, the score recomputed from the turned q and k (what the model
        used) and from the unturned ones, and the distance query − key that the turn encodes.
        """
        columns = {"key": self.key_labels, "q·k (recomputed)": self.dots}
        columns[f"score = q·k ÷ √{self.d_head} (model)"] = self.trace_scores
        if self.rotary:
            columns[f"turned q·k ÷ √{self.d_head}"] = self.scaled  # recomputed here, like q·k
            columns[f"unturned q·k ÷ √{self.d_head}"] = self.unturned
            columns["distance i − j"] = self.query - np.arange(len(self.key_labels))
        columns["may attend"] = self.allowed
        columns["softmax weight"] = self.weights
        return pd.DataFrame(columns).set_index("key")

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
    q_pre = h["q_pre"][query] if "q_pre" in h else None
    unturned = (
        None if q_pre is None else ((h["k_pre"] @ q_pre).astype(np.float32) / np.float32(math.sqrt(d_head))).astype(np.float32)
    )
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
        q_pre=q_pre,
        unturned=unturned,
    )
