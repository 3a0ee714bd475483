"""Figures of a question to the class: the row a student answers on (weights hidden), and the reveal.

Pure functions: choices and numbers in, `go.Figure` out. Choices are tokens (the model's, or a text's): every label
goes through `plotly_text`, so a token that looks like HTML is drawn as typed.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from viz.labels import plotly_text, shown_tokens

HIDDEN = "#d0d4da"  # every cell the same grey: nothing to read before the reveal
CLASS_COLOUR = "#f28e2b"
RIGHT_COLOUR = "#59a14f"  # the class's answers on the model's own top choice
MODEL_COLOUR = "#4e79a7"


def _labels(options: Sequence[str]) -> list[str]:
    """One label per choice, apart even when two tokens are the same ("2·the", "5·the")."""
    return [f"{i}·{plotly_text(t)}" for i, t in enumerate(shown_tokens(options))]


def hidden_row(options: Sequence[str], query: str, presentation: bool = False) -> go.Figure:
    """The query's row of a head's heatmap with its weights hidden: one grey cell per key token, each clickable."""
    labels, size = _labels(options), 18 if presentation else 13
    n = len(labels)
    cells = go.Heatmap(
        z=[[0.0] * n],
        x=list(range(n)),
        y=[0],
        colorscale=[[0, HIDDEN], [1, HIDDEN]],
        showscale=False,
        xgap=3,
        hoverinfo="skip",
    )
    # Heatmaps have no point selection: one invisible point per cell takes the click.
    points = go.Scatter(
        x=list(range(n)),
        y=[0] * n,
        mode="markers+text",
        text=[plotly_text(t) for t in shown_tokens(options)],
        textfont=dict(size=size + 2, color="#111"),
        marker=dict(size=40, symbol="square", opacity=0),
        customdata=list(range(n)),
        hovertemplate="%{text}<br>click to answer<extra></extra>",
        showlegend=False,
    )
    return go.Figure(
        data=[cells, points],
        layout=dict(
            height=150 if presentation else 120,
            margin=dict(l=10, r=10, t=40, b=10),
            title=dict(text=f"from {plotly_text(query)}: which key? (weights hidden)", font=dict(size=size)),
            xaxis=dict(showticklabels=False, showgrid=False, zeroline=False, range=[-0.5, n - 0.5], fixedrange=True),
            yaxis=dict(showticklabels=False, showgrid=False, zeroline=False, fixedrange=True),
            clickmode="event+select",
            dragmode=False,
        ),
    )


def picked(points: Sequence[dict], n: int) -> int | None:
    """The choice a click on `hidden_row` picked (a Streamlit plotly selection), or None."""
    for p in points:
        x = p.get("x")
        if isinstance(x, int | float) and 0 <= round(x) < n:
            return int(round(x))
    return None


def reveal(
    options: Sequence[str], model: Sequence[float], counts: Sequence[int], model_name: str, presentation: bool = False
) -> go.Figure:
    """The class's answers (how many chose each) above the model's own numbers for the same choices."""
    labels, size = _labels(options), 18 if presentation else 13
    total = sum(counts)
    best = max(range(len(model)), key=lambda i: float(model[i])) if len(model) else -1
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.16,
        subplot_titles=(
            f"the class: {total} answer{'s' if total != 1 else ''} (green: on the model's top choice)",
            f"the model: {plotly_text(model_name)}",
        ),
    )
    fig.add_trace(
        go.Bar(
            x=labels,
            y=list(counts),
            marker_color=[RIGHT_COLOUR if i == best else CLASS_COLOUR for i in range(len(counts))],
            name="answers",
            text=[str(c) if c else "" for c in counts],
            textposition="outside",
            hovertemplate="%{x}<br>%{y} answered<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=labels,
            y=[float(v) for v in model],
            marker_color=MODEL_COLOUR,
            name=model_name,
            text=[f"{float(v):.2f}" for v in model],
            textposition="outside",
            hovertemplate="%{x}<br>%{y:.4f}<extra></extra>",
        ),
        row=2,
        col=1,
    )
    top = max([float(v) for v in model] + [1e-9])
    fig.update_yaxes(range=[0, max(counts + [1]) * 1.3], row=1, col=1, title_text="answers")
    fig.update_yaxes(range=[0, top * 1.3], row=2, col=1, title_text=model_name)
    fig.update_layout(
        height=460 if presentation else 380,
        margin=dict(l=10, r=10, t=40, b=10),
        showlegend=False,
        font=dict(size=size),
    )
    return fig
