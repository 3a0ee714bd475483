"""Figures of the "Ask why" pages (no Streamlit here): a layers × heads effect grid, the logit lens grid,
and per-token scores side by side (attention, rollout, saliency).

Each builder takes plain arrays and labels, so the pages decide what to compute and the tests read the
numbers back from the figure JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from viz.figures import as_array, font_size, layers_by_heads
from viz.labels import SEP, looks_byte_level, plotly_text, raw_note, shown_token, text_px, unique_labels

EFFECT_SCALE = "Reds"  # 0 (no effect) is white, bigger effects darker
# Dark enough on white to read as thin bars on a projector (contrast ≥ 4.5:1): no light yellow at the end.
SCORE_COLOURS = ("#3b528b", "#1b6f6b", "#c0002a", "#5b2a86")
# Values as small as 3e-7 (a saliency, a far rollout weight): powers of ten, not SI prefixes ("300n", "2µ").
EXPONENT_FORMAT = "power"


def head_effect_figure(
    effect, kind: str, what: str, selected: tuple[int, int] | None = None, presentation: bool = False
) -> go.Figure:
    """A (layers, heads) grid of one number per head (e.g. the effect of knocking it out); click a cell to pick a head
    (`grid.pick_from_selection` reads the click: x = head, y = layer, as in the model view's grid).

    Signed values (a knock-out can help) get a diverging scale centred on 0; non-negative ones white-to-red.
    """
    z = as_array(effect)
    n_layers, n_heads = z.shape
    size = font_size(presentation)
    signed = bool((z < 0).any())
    bound = float(np.abs(z).max()) or 1.0
    heatmap = go.Heatmap(
        z=z,
        x=np.arange(n_heads),
        y=np.arange(n_layers),
        colorscale="RdBu_r" if signed else EFFECT_SCALE,
        zmin=-bound if signed else 0.0,
        zmax=bound,
        colorbar=dict(title=dict(text=plotly_text(what), font=dict(size=size)), tickfont=dict(size=size)),
        text=[[f"{v:.3g}" for v in row] for row in z],
        texttemplate="%{text}" if z.size <= 144 else None,
        textfont=dict(size=size - 1),
        hoverinfo="skip",
    )
    return layers_by_heads(
        heatmap,
        z,
        f"layer %{{y}} · head %{{x}}<br>{plotly_text(what)}: %{{customdata:.6g}}<br>click to open this head<extra></extra>",
        f"{kind}: knock out one head at a time",
        selected,
        presentation,
        box_color="#111",
        row_height=(48, 60),
        extra_height=130,
    )


LENS_PLOT_PX = {False: 560, True: 880}  # the logit lens's plot width on a 1280-px screen: (normal, presentation)


def lens_figure(
    rows: Sequence[str],
    positions: Sequence[str],
    top_tokens: Sequence[Sequence[Sequence[str]]],
    top_probs,
    title: str,
    presentation: bool = False,
    columns: Sequence[int] | None = None,
) -> go.Figure:
    """The logit lens: one cell per (row of the residual stream, position), coloured by the top-1 probability,
    labelled with the top-1 token; the hover lists the top 5 with their probabilities.

    rows: e.g. "embed", "L0 self-attn", …; positions: the input tokens; top_tokens[r][t][k], top_probs (R, T, k).
    columns: the position of each column in the text (default 0, 1, …: every position).
    """
    probs = as_array(top_probs)
    n_rows, n_pos, k = probs.shape
    size = font_size(presentation)
    columns = range(len(positions)) if columns is None else columns
    # A byte-level tokenizer's tokens with visible spaces ("␣cat"), the tokenizer's own text in the hover too.
    byte_level = looks_byte_level(positions)

    def shown(token: str) -> str:
        return shown_token(token) if byte_level else token

    def with_raw(token: str) -> str:
        return plotly_text(shown(token) + (f" (raw {token})" if shown(token) != token else ""))

    x = [plotly_text(f"{p}{SEP}{shown(t)}") for p, t in zip(columns, positions)]
    y = [plotly_text(r) for r in rows]
    hover = [
        ["<br>".join(f"{with_raw(top_tokens[r][t][i])}: {probs[r, t, i]:.4f}" for i in range(k)) for t in range(n_pos)]
        for r in range(n_rows)
    ]
    # A cell's token cut to what its width holds (hover names it whole): the plot is about LENS_PLOT_PX wide on a
    # 1280-px screen (beside the sidebar, or without it in presentation mode), a letter about 0.6 of the font size.
    text_size = max(9, size - 3)
    fits = int(LENS_PLOT_PX[presentation] / max(n_pos, 1) / (0.6 * text_size))

    def clipped(token: str) -> str:
        return token if len(token) <= fits else token[: max(fits - 1, 1)] + "…"

    cell_text = [[plotly_text(clipped(shown(top_tokens[r][t][0]))) for t in range(n_pos)] for r in range(n_rows)]
    widest = max((text_px(str(t), size) for t in positions), default=0.0)
    return go.Figure(
        data=[
            go.Heatmap(
                z=probs[:, :, 0],
                x=x,
                y=y,
                zmin=0.0,
                zmax=1.0,
                colorscale="Blues",
                colorbar=dict(title=dict(text="top-1 probability", font=dict(size=size)), tickfont=dict(size=size)),
                text=cell_text,
                texttemplate="%{text}" if n_pos * n_rows <= 1200 and fits >= 2 else None,
                textfont=dict(size=text_size),
                customdata=hover,
                hovertemplate="%{y} · after %{x}<br>%{customdata}<extra></extra>",
                xgap=1,
                ygap=1,
            )
        ],
        layout=dict(
            title=dict(text=title, font=dict(size=size + 2)),
            xaxis=dict(
                title="position (the token read there)",
                type="category",
                tickangle=-60,
                tickfont=dict(size=size),
                automargin=False,
            ),
            yaxis=dict(type="category", autorange="reversed", tickfont=dict(size=size), automargin=False),
            height=int(min(1400, max(300, (44 if presentation else 34) * n_rows + 200))),
            margin=dict(l=int(9 * size + 20), r=10, t=60, b=int(min(220, widest) * 0.87 + 3.5 * size + 20)),
            font=dict(size=size),
            hoverlabel=dict(font=dict(size=size)),
        ),
    )


def token_scores_figure(tokens: Sequence[str], series: Mapping[str, object], title: str, presentation: bool = False) -> go.Figure:
    """Several per-token scores over the same input tokens, one bar chart each, stacked with a shared token axis.

    series: name -> (n_tokens,) values (e.g. "attention of L1 H2", "rollout", "gradient × input"). Each panel
    has its own scale (the quantities have different units); the hover gives the exact value.
    """
    from plotly.subplots import make_subplots

    size = font_size(presentation)
    x = [plotly_text(t) for t in unique_labels(tokens)]
    raw = [plotly_text(note) for note in raw_note(tokens)]  # the tokenizer's own text where the label shows another
    names = list(series)
    fig = make_subplots(
        rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.06, subplot_titles=[plotly_text(n) for n in names]
    )
    for i, name in enumerate(names, start=1):
        values = as_array(series[name]).reshape(-1)
        fig.add_trace(
            go.Bar(
                x=x,
                y=values,
                marker_color=SCORE_COLOURS[(i - 1) % len(SCORE_COLOURS)],
                name=plotly_text(name),
                customdata=raw,
                hovertemplate=f"{plotly_text(name)}<br>%{{x}}%{{customdata}}: %{{y:.6~g}}<extra></extra>",
                showlegend=False,
            ),
            row=i,
            col=1,
        )
    widest = max((text_px(str(t), size) for t in tokens), default=0.0)
    fig.update_xaxes(type="category", tickangle=-60, tickfont=dict(size=size))
    fig.update_yaxes(exponentformat=EXPONENT_FORMAT, showexponent="all", tickfont=dict(size=size))
    fig.update_annotations(font=dict(size=size))
    fig.update_layout(
        title=dict(text=title, font=dict(size=size + 2)),
        height=int((190 if presentation else 160) * len(names) + min(220, widest) * 0.87 + 120),
        margin=dict(l=10, r=10, t=80, b=10),
        font=dict(size=size),
        hoverlabel=dict(font=dict(size=size)),
        bargap=0.15,
    )
    return fig


def before_after_figure(
    labels: Sequence[str], before, after, what: str, title: str, presentation: bool = False, y_range: tuple | None = (0, 1)
) -> go.Figure:
    """Two bars per label: a quantity before and after an intervention (e.g. the probability of each next token).

    y_range: the value axis (probabilities: 0-1); None lets Plotly fit it (a cosine may be negative).
    """
    size = font_size(presentation)
    x = [plotly_text(t) for t in unique_labels(labels)]
    b, a = as_array(before).reshape(-1), as_array(after).reshape(-1)
    widest = max((text_px(str(t), size) for t in labels), default=0.0)
    return go.Figure(
        data=[
            go.Bar(x=x, y=b, name="before", marker_color="#3b528b", hovertemplate="%{x}<br>before: %{y:.6f}<extra></extra>"),
            go.Bar(x=x, y=a, name="after", marker_color="#e4002b", hovertemplate="%{x}<br>after: %{y:.6f}<extra></extra>"),
        ],
        layout=dict(
            title=dict(text=title, font=dict(size=size + 2)),
            barmode="group",
            xaxis=dict(type="category", tickangle=-60, tickfont=dict(size=size)),
            yaxis=dict(title=plotly_text(what), range=None if y_range is None else list(y_range), tickfont=dict(size=size)),
            height=int(320 + min(220, widest) * 0.87),
            margin=dict(l=10, r=10, t=60, b=10),
            font=dict(size=size),
            legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"),
        ),
    )
