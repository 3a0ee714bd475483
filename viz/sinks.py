"""The attention-sink grid: one cell per layer and head, the share of its attention on the first token (no Streamlit here).

The scores come from `transformer.why.sinks`; this only draws them, on a fixed 0–1 scale (a share), each
cell printed, and a clickable point per head as in the other layers × heads grids (`grid.pick_from_selection`
reads a click: x = head, y = layer).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures import WEIGHTS_SCALE, as_array, font_size, layers_by_heads
from viz.labels import head_labels, plotly_text


def sink_figure(
    scores,
    kind: str,
    first_token: str,
    group_size: int = 1,
    selected: tuple[int, int] | None = None,
    presentation: bool = False,
) -> go.Figure:
    """(n_layers, n_heads) sink scores as a heatmap with every value written in its cell; NaN cells stay empty.

    `first_token` (the text's, shown literally) goes into the title; `group_size` > 1 names each head "H5 · kv1".
    """
    z = as_array(scores)
    n_layers, n_heads = z.shape
    size = font_size(presentation)
    grouped = group_size > 1
    heatmap = go.Heatmap(
        z=z,
        x=np.arange(n_heads),
        y=np.arange(n_layers),
        colorscale=WEIGHTS_SCALE,
        zmin=0.0,
        zmax=1.0,
        colorbar=dict(title=dict(text="share on<br>first token", font=dict(size=size)), tickfont=dict(size=size)),
        text=[["" if np.isnan(v) else f"{v:.2f}" for v in row] for row in z],
        texttemplate="%{text}" if z.size <= 400 else None,
        textfont=dict(size=size - 1),
        hoverinfo="skip",
    )
    heads = np.arange(z.size) % n_heads  # the clickable points' heads, row by row
    return layers_by_heads(
        heatmap,
        z,
        "layer %{y} · head %{x}%{text}<br>mean weight on the first token: %{customdata:.4f}<br>click to open this head<extra></extra>",
        f"{kind}: share of attention on the first token ({plotly_text(first_token)})",
        selected,
        presentation,
        box_color="#e4002b",
        row_height=(44, 60),
        extra_height=140,
        xaxis=dict(
            title="query head · the key/value head it reads" if grouped else "head",
            ticktext=head_labels(n_heads, group_size) if grouped else [str(h) for h in range(n_heads)],
        ),
        hover_text=[f" · key/value head {h // group_size}" if grouped else "" for h in heads],
    )
