"""One query row of one head worked through by hand: q·k, its scaling and position bias, mask, softmax, Σ weight·v —
with the trace's numbers.

What the model computed (scores, weights, output, a position bias) comes from the trace; what is recomputed here
(q·k, the score from it, the softmax, Σ weight·v) is compared with it, within the rounding float32 arithmetic allows.
The score is what this model computes: q·k ÷ √d_head in most models, q·k alone where the config says
`scale_scores=False` (T5), plus the trace's position bias where the model has one (T5's relative positions).
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


def score_formula(d_head: int, scale_scores: bool = True, bias: bool = False) -> str:
    """A model's score of one query and one key, as the page prints it: "q·k ÷ √64", "q·k + bias", …"""
    return "q·k" + (f" ÷ √{d_head}" if scale_scores else "") + (" + bias" if bias else "")


def scores_formula(scale_scores: bool = True, bias: bool = False, d_head: str = "d_head") -> str:
    """The same for the whole matrix: "Q Kᵀ / √d_head", "Q Kᵀ + bias", …"""
    return "Q Kᵀ" + (f" / √{d_head}" if scale_scores else "") + (" + bias" if bias else "")


@dataclass(frozen=True)
class WorkedRow:
    """Every step of `output[i] = softmax(mask(score_i)) · V`, for one query position i, where score_i is
    q_i · Kᵀ ÷ √d_head, or q_i · Kᵀ unscaled (`scale_scores` False), plus the position bias row when the model has one."""

    query: int
    query_label: str
    key_labels: tuple[str, ...]
    d_head: int
    q: np.ndarray  # (d_head,) the query vector, from the trace
    k: np.ndarray  # (Tk, d_head)
    v: np.ndarray  # (Tk, d_head)
    dots: np.ndarray  # (Tk,) q · k_j, recomputed here from the trace's q and k (float32)
    scaled: np.ndarray  # (Tk,) the score recomputed here: dots ÷ √d_head (or dots), + bias
    trace_scores: np.ndarray  # (Tk,) the trace's scores row (what the model computed)
    allowed: np.ndarray  # (Tk,) bool, the mask row
    weights: np.ndarray  # (Tk,) the trace's softmax weights row
    softmax_check: np.ndarray  # (Tk,) softmax of the masked trace scores, recomputed here
    output: np.ndarray  # (d_head,) Σ_j weights_j · v_j, recomputed here
    trace_output: np.ndarray  # (d_head,) the trace's head-output row
    q_pre: np.ndarray | None = None  # (d_head,) rotary models: the query vector before rotation
    unturned: np.ndarray | None = None  # (Tk,) the score from q_pre and k_pre (no rotation), recomputed here
    scale_scores: bool = True  # the model divides q·k by √d_head (False: T5, whose init folds the scale into W_Q)
    bias: np.ndarray | None = None  # (Tk,) the trace's position bias row (T5's relative positions), None without one

    @property
    def scale(self) -> float:
        """What q·k is divided by: √d_head, or 1 for a model that does not scale its scores."""
        return math.sqrt(self.d_head) if self.scale_scores else 1.0

    @property
    def formula(self) -> str:
        """This model's score of one key, e.g. "q·k ÷ √16" or "q·k + bias"."""
        return score_formula(self.d_head, self.scale_scores, self.bias is not None)

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
        """Largest difference between the score recomputed here (`formula`) and the trace's scores (float32 rounding)."""
        return float(np.abs(self.scaled - self.trace_scores).max(initial=0.0))

    @property
    def softmax_diff(self) -> float:
        """Largest difference between the softmax recomputed here from the trace's scores and the trace's weights."""
        return float(np.abs(self.softmax_check - self.weights).max(initial=0.0))

    @property
    def rotary(self) -> bool:
        return self.unturned is not None

    def steps_table(self) -> pd.DataFrame:
        """One row per key: q·k (recomputed here), the model's position bias if it has one, then the model's own
        score, mask and softmax weight.

        A model with a position bias: beside its score, q·k + bias recomputed here (the sum the score is).
        Rotary models: beside the model's score, the score recomputed from the turned q and k (what the model
        used) and from the unturned ones, and the distance query − key that the turn encodes.
        """
        columns = {"key": self.key_labels, "q·k (recomputed)": self.dots}
        if self.bias is not None:
            columns["bias (model)"] = self.bias
        columns[f"score = {self.formula} (model)"] = self.trace_scores
        if self.rotary:
            columns[f"turned {self.formula}"] = self.scaled  # recomputed here, like q·k
            columns[f"unturned {self.formula}"] = self.unturned
            columns["distance i − j"] = self.query - np.arange(len(self.key_labels))
        elif self.bias is not None:
            columns[f"{self.formula} (recomputed)"] = self.scaled
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


def worked_row(trace: Trace, kind: str, layer: int, head: int, query: int, scale_scores: bool = True) -> WorkedRow:
    """Work query row `query` of one head from the trace's own q, k, v, scores, mask, weights (and position bias).

    `scale_scores`: whether the model divides q·k by √d_head (its config's `scale_scores`; the trace does not say).
    """
    h = {name: t.detach().cpu().numpy() for name, t in trace.head(kind, layer, head).items()}
    n_q = h["q"].shape[0]
    if not 0 <= query < n_q:
        raise IndexError(f"query {query} out of range: there are {n_q} query tokens")
    d_head = h["q"].shape[1]
    q, k, v = h["q"][query], h["k"], h["v"]
    bias = h["bias"][query] if "bias" in h else None
    scale = np.float32(math.sqrt(d_head) if scale_scores else 1.0)

    def score(dots: np.ndarray) -> np.ndarray:  # as the model computes it, in float32: (q·k ÷ scale) + bias
        return ((dots / scale).astype(np.float32) + (0 if bias is None else bias)).astype(np.float32)

    dots = (k @ q).astype(np.float32)
    allowed = h["mask"][query].astype(bool)
    masked = np.where(allowed, h["scores"][query].astype(np.float64), -np.inf)
    e = np.exp(masked - masked.max())
    weights = h["weights"][query]
    q_pre = h["q_pre"][query] if "q_pre" in h else None
    unturned = None if q_pre is None else score((h["k_pre"] @ q_pre).astype(np.float32))
    return WorkedRow(
        query=query,
        query_label=unique_labels(trace.query_tokens(kind))[query],
        key_labels=tuple(unique_labels(trace.key_tokens(kind))),
        d_head=d_head,
        q=q,
        k=k,
        v=v,
        dots=dots,
        scaled=score(dots),
        trace_scores=h["scores"][query],
        allowed=allowed,
        weights=weights,
        softmax_check=(e / e.sum()).astype(np.float32),
        output=(weights[None, :] @ v)[0].astype(np.float32),
        trace_output=h["output"][query],
        q_pre=q_pre,
        unturned=unturned,
        scale_scores=scale_scores,
        bias=bias,
    )
