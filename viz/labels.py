"""Token labels for figures and tables: unique per position, and never interpreted as HTML by Plotly."""

from __future__ import annotations

import html
import unicodedata

SEP = "·"  # between position and token in a unique label: "3·the"


def unique_labels(tokens: tuple[str, ...] | list[str]) -> list[str]:
    """One label per position ("0·the", "1·cat", ...), so repeated tokens never merge on a categorical axis."""
    return [f"{i}{SEP}{tok}" for i, tok in enumerate(tokens)]


def head_labels(n_heads: int, group_size: int = 1) -> list[str]:
    """Head names for an axis: "H5", or under grouped-query attention "H5 · kv1" (the key/value head it reads)."""
    if group_size <= 1:
        return [f"H{h}" for h in range(n_heads)]
    return [f"H{h} {SEP} kv{h // group_size}" for h in range(n_heads)]


def plotly_text(text: object) -> str:
    """Text shown literally by Plotly, wherever it goes: labels, titles, hover values.

    Plotly renders a subset of HTML (<b>, <br>, <a href>, &amp;), so `<`, `>` and `&` become entities.
    `%` and `$` become numeric entities too: "%{x}" inside a hover template would be filled in, and a
    label between two `$` would be handed to MathJax. Plotly turns every entity back into the literal
    character on screen, after it has looked for templates and maths.
    """
    return html.escape(str(text), quote=False).replace("%", "&#37;").replace("$", "&#36;")


def text_px(text: str, size: int) -> float:
    """Estimated width in pixels of `text` at font `size`: ~0.6 em a character, 1.1 em for wide (CJK, emoji) ones.

    Used to size figure margins up front: Plotly's automargin measures the labels after a first
    draw and then draws again, which doubles the cost of every heatmap redraw.
    """
    return size * sum(1.1 if unicodedata.east_asian_width(c) in "WF" else 0.6 for c in text)


def tick_step(n: int, max_ticks: int = 64) -> int:
    """Show every k-th tick so that at most about `max_ticks` labels share an axis."""
    return max(1, -(-n // max_ticks))
