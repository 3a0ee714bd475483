"""Two attention maps of the same layer and head side by side, and their difference (no Streamlit here).

What is compared (two texts, two checkpoints, two snapshots) is the page's business; here a panel is
a trace plus a label, and the difference exists only when both panels have as many tokens on each axis
(position i of A against position i of B; where the tokens differ the axis says "a→b"). Otherwise `mismatch` says plainly why not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from transformer.model.trace import Trace
from viz.figures import as_array, token_heatmap

DIFF_SCALE = "RdBu_r"  # diverging, white at 0: red where B attends more, blue where A does

EXPLANATION = (
    "Each panel shows the same layer and head: row i is how much query token i takes from each key token "
    "(softmax weights, 0–1). Below, B − A cell by cell, when both panels have as many tokens (positions line up)."
)


SAME_TEXT = "A and B are the same text: nothing differs. Change a word in text B to see what moves."
NOTHING_DIFFERS = "B − A is 0 in every cell: nothing differs for this head."


def has_head(trace: Trace, kind: str, layer: int, head: int) -> str | None:
    """None when the trace has this kind, layer and head; otherwise what is missing, in words."""
    if kind not in trace.kinds:
        return f"has no {kind} attention"
    if layer >= trace.n_layers(kind):
        return f"has {trace.n_layers(kind)} layers (no layer {layer})"
    n_heads = trace.attention(kind, layer).weights.shape[1]
    if head >= n_heads:
        return f"has {n_heads} heads per layer (no head {head})"
    return None


def mismatch(a: Trace, b: Trace, kind: str) -> str | None:
    """None when A and B have as many query tokens and as many key tokens (their weights subtract cell by cell); else why not."""
    for axis, na, nb in (
        ("query", len(a.query_tokens(kind)), len(b.query_tokens(kind))),
        ("key", len(a.key_tokens(kind)), len(b.key_tokens(kind))),
    ):
        if na != nb:
            return (
                f"A has {na} {axis} tokens and B has {nb}: the positions do not line up, so their weights "
                "cannot be subtracted cell by cell. Two texts with the same number of tokens (change one word "
                "for another) can be."
            )
    return None


def kinds_differ(missing: str, kinds_a: Sequence[str], kinds_b: Sequence[str], same_kind_elsewhere: bool) -> str:
    """Why checkpoint B cannot show the selected attention: what each checkpoint computes, and what to do instead."""
    what = f"B {missing}: A computes {_listed(kinds_a)} attention; B computes {_listed(kinds_b)}."
    if same_kind_elsewhere:
        then = "Pick as B a checkpoint that computes what A does, or a kind both have,"
    else:
        then = "No other checkpoint here computes what A does: pick a kind both have,"
    return f"{what} {then} or compare two texts on this checkpoint (“Two texts, this checkpoint” above)."


def _listed(words: Sequence[str]) -> str:
    """Names joined as in a sentence: "a", "a and b", "a, b and c"."""
    words = list(words)
    return " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1]


def order_partners(kinds_a: Sequence[str], kinds: dict[str, Sequence[str] | None], selected: str) -> list[str]:
    """The names of `kinds` (checkpoint -> its attention kinds, None when unknown) in the order to offer them as B.

    A checkpoint computing the same attention kinds as A first (a Translator beside a Translator, not beside a
    language model that has no encoder), then one computing the selected kind, then those not known yet, then
    the rest; the catalogue's order within each.
    """

    def rank(name: str) -> int:
        known = kinds[name]
        if known is None:
            return 2
        if tuple(known) == tuple(kinds_a):
            return 0
        return 1 if selected in known else 3

    return sorted(kinds, key=rank)


def aligned_tokens(ta: Sequence[str], tb: Sequence[str]) -> tuple[list[str], list[int]]:
    """Axis labels for B − A: the token where both agree, "a→b" where they differ; and the differing positions."""
    labels, differ = [], []
    for i, (x, y) in enumerate(zip(ta, tb)):
        labels.append(x if x == y else f"{x}→{y}")
        if x != y:
            differ.append(i)
    return labels, differ


def difference(a: Trace, b: Trace, kind: str, layer: int, head: int) -> np.ndarray:
    """B − A of the head's weights, (Tq, Tk) float32; only call when `mismatch` is None."""
    return as_array(b.head(kind, layer, head)["weights"]) - as_array(a.head(kind, layer, head)["weights"])


def difference_figure(
    diff: np.ndarray, rows: Sequence[str], cols: Sequence[str], kind: str, layer: int, head: int, presentation: bool = False
) -> go.Figure:
    """B − A on a diverging scale centred on 0 and symmetric, so equal weights are white whatever the range."""
    largest = float(np.abs(diff).max()) if diff.size else 0.0
    # Identical maps: all white on the widest range two weights can differ by (±1), not a scale of millionths.
    bound = largest if largest > 0 else 1.0
    return token_heatmap(
        diff,
        rows,
        cols,
        title=f"B − A · {kind} · layer {layer} · head {head} (largest difference {largest:.3g})",
        value_name="B − A",
        colorscale=DIFF_SCALE,
        zmin=-bound,
        zmax=bound,
        fmt="+.6f",
        presentation=presentation,
    )
