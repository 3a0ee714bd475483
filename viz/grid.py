"""Small multiples of attention heads (the model view): every head pooled to a thumbnail, drawn as ONE heatmap.

One heatmap trace of uint16 weights, not one subplot per head: 72 subplots take seconds to draw
and the full-resolution weights of 72 heads at 2048 tokens would be over a gigabyte. Each head is
block-max pooled to at most `max_cells` × `max_cells`, and each weight w travels as round(w · 65535)
(steps of 1.5e-5, so diffuse attention over 2048 keys, ~5e-4 a key, is not rounded away), so a
6 × 12 model view is about 0.8 MB whatever the text length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F

from transformer.trace import Trace

from .figures import WEIGHTS_SCALE, font_size

MAX_CELLS = 64
COLORBAR_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
LEVELS = 65535  # a weight w is sent as round(w * LEVELS), uint16 (Plotly.js has no float16 typed array)


def pool(weights: torch.Tensor, max_cells: int = MAX_CELLS) -> torch.Tensor:
    """Block-max pool (..., Tq, Tk) so neither side exceeds `max_cells` (a sharp one-token pattern stays visible)."""
    tq, tk = weights.shape[-2:]
    bq, bk = -(-tq // max_cells), -(-tk // max_cells)  # ceil: block sizes
    if bq == 1 and bk == 1:
        return weights
    lead = weights.shape[:-2]
    x = weights.reshape(-1, 1, tq, tk).float()
    x = F.max_pool2d(x, kernel_size=(bq, bk), stride=(bq, bk), ceil_mode=True)
    return x.reshape(*lead, *x.shape[-2:])


def grid_image(trace: Trace, kind: str, layers: Sequence[int], max_cells: int = MAX_CELLS) -> np.ndarray:
    """(len(layers)·rows, n_heads·cols) uint16 image of pooled weights × LEVELS; layer i's heads side by side."""
    blocks = [pool(trace.attention(kind, layer).weights[0], max_cells) for layer in layers]  # each (H, r, c)
    stacked = torch.stack(blocks)  # (L, H, r, c)
    n_l, n_h, r, c = stacked.shape
    image = stacked.permute(0, 2, 1, 3).reshape(n_l * r, n_h * c)  # rows: layer then query; cols: head then key
    return torch.round(image.float().clamp(0, 1) * LEVELS).to(torch.int32).numpy().astype(np.uint16)


def head_grid(
    trace: Trace,
    kind: str,
    layers: Sequence[int] | None = None,
    selected: tuple[int, int] | None = None,
    max_cells: int = MAX_CELLS,
    presentation: bool = False,
    title: str | None = None,
) -> go.Figure:
    """Every head of the given layers (default: all) as thumbnails; click a thumbnail's centre to pick that head.

    Coordinates: x = head index, y = layer index, each thumbnail spanning ±0.5 around its centre.
    `selected` = (layer, head) gets a red frame.
    """
    layers = list(range(trace.n_layers(kind))) if layers is None else list(layers)
    image = grid_image(trace, kind, layers, max_cells)
    n_heads = trace.attention(kind, layers[0]).weights.shape[1]
    r = image.shape[0] // len(layers)
    c = image.shape[1] // n_heads
    # Cell centres in head/layer units, float32 so they travel as base64 too.
    x = (np.arange(n_heads * c) // c + (np.arange(n_heads * c) % c + 0.5) / c - 0.5).astype(np.float32)
    y_units = np.arange(len(layers) * r) // r
    y = (np.asarray(layers)[y_units] + (np.arange(len(layers) * r) % r + 0.5) / r - 0.5).astype(np.float32)
    size = font_size(presentation)
    fig = go.Figure(
        go.Heatmap(
            z=image,
            x=x,
            y=y,
            zmin=0,
            zmax=LEVELS,
            colorscale=WEIGHTS_SCALE,
            colorbar=dict(  # labelled in weights (0..1), though z counts 1/LEVELS steps
                title=dict(text="weight", font=dict(size=size)),
                tickmode="array",
                tickvals=[t * LEVELS for t in COLORBAR_TICKS],
                ticktext=[f"{t:g}" for t in COLORBAR_TICKS],
                tickfont=dict(size=size),
            ),
            hoverinfo="skip",
        )
    )
    # One clickable point per head at its thumbnail's centre (heatmaps have no point selection).
    hh, ll = np.meshgrid(np.arange(n_heads), np.asarray(layers))
    fig.add_trace(
        go.Scatter(
            x=hh.reshape(-1).astype(np.float32),
            y=ll.reshape(-1).astype(np.float32),
            mode="markers",
            marker=dict(size=28, symbol="square", opacity=0),
            hovertemplate="layer %{y} · head %{x}<br>click to open<extra></extra>",
            showlegend=False,
        )
    )
    shapes = [
        dict(type="line", x0=h + 0.5, x1=h + 0.5, y0=layers[0] - 0.5, y1=layers[-1] + 0.5, line=dict(color="white", width=3))
        for h in range(n_heads - 1)
    ] + [
        dict(type="line", x0=-0.5, x1=n_heads - 0.5, y0=layer + 0.5, y1=layer + 0.5, line=dict(color="white", width=3))
        for layer in layers[:-1]
    ]
    if selected is not None and selected[0] in layers:
        sl, sh = selected
        shapes.append(dict(type="rect", x0=sh - 0.5, x1=sh + 0.5, y0=sl - 0.5, y1=sl + 0.5, line=dict(color="#e4002b", width=3)))
    thumb_px = 90 if presentation else 70
    fig.update_layout(
        title=dict(text=title or f"{kind} — all layers × heads (each thumbnail: block max, ≤ {max_cells}×{max_cells})"),
        shapes=shapes,
        xaxis=dict(
            title="head",
            tickmode="array",
            tickvals=list(range(n_heads)),
            showgrid=False,
            zeroline=False,
            range=[-0.5, n_heads - 0.5],
            tickfont=dict(size=size),
        ),
        yaxis=dict(
            title="layer",
            tickmode="array",
            tickvals=layers,
            autorange="reversed",
            showgrid=False,
            zeroline=False,
            tickfont=dict(size=size),
        ),
        height=int(max(220, thumb_px * len(layers) + 120)),
        margin=dict(l=10, r=10, t=50, b=10),
        font=dict(size=size),
        clickmode="event+select",
        dragmode=False,
    )
    return fig


def pick_from_selection(points: Sequence[dict]) -> tuple[int, int] | None:
    """(layer, head) from a Streamlit plotly selection on a head grid, or None."""
    for p in points:
        if "x" in p and "y" in p:
            return int(round(float(p["y"]))), int(round(float(p["x"])))
    return None
