"""The attention-sink grid: one cell per layer and head, the share of its attention on the first token (no Streamlit here).

The scores come from `transformer.why.sinks`; this only draws them, on a fixed 0–1 scale (a share), each
cell printed, and a clickable point per head as in the other layers × heads grids (`grid.pick_from_selection`
reads a click: x = head, y = layer).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures import WEIGHTS_SCALE, as_array, font_size
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
    hh, ll = np.meshgrid(np.arange(n_heads), np.arange(n_layers))
    shapes = []
    if selected is not None and 0 <= selected[0] < n_layers and 0 <= selected[1] < n_heads:
        sl, sh = selected
        shapes.append(dict(type="rect", x0=sh - 0.5, x1=sh + 0.5, y0=sl - 0.5, y1=sl + 0.5, line=dict(color="#e4002b", width=3)))
    grouped = group_size > 1
    return go.Figure(
        data=[
            go.Heatmap(
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
            ),
            go.Scatter(  # one clickable point per head (heatmaps have no point selection)
                x=hh.reshape(-1),
                y=ll.reshape(-1),
                mode="markers",
                marker=dict(size=30, symbol="square", opacity=0),
                customdata=z.reshape(-1),
                text=[f" · key/value head {h // group_size}" if grouped else "" for h in hh.reshape(-1)],
                hovertemplate="layer %{y} · head %{x}%{text}"
                "<br>mean weight on the first token: %{customdata:.4f}<br>click to open this head<extra></extra>",
                showlegend=False,
            ),
        ],
        layout=dict(
            title=dict(
                text=f"{kind}: share of attention on the first token ({plotly_text(first_token)})", font=dict(size=size + 2)
            ),
            xaxis=dict(
                title="query head · the key/value head it reads" if grouped else "head",
                tickmode="array",
                tickvals=list(range(n_heads)),
                ticktext=head_labels(n_heads, group_size) if grouped else [str(h) for h in range(n_heads)],
                showgrid=False,
                zeroline=False,
            ),
            yaxis=dict(
                title="layer",
                tickmode="array",
                tickvals=list(range(n_layers)),
                autorange="reversed",
                showgrid=False,
                zeroline=False,
            ),
            shapes=shapes,
            height=int(max(240, (60 if presentation else 44) * n_layers + 140)),
            margin=dict(l=int(4 * size + 12), r=10, t=50, b=int(3.6 * size + 12)),
            font=dict(size=size),
            hoverlabel=dict(font=dict(size=size)),
            clickmode="event+select",
            dragmode=False,
        ),
    )
