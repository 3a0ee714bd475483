"""Heatmaps of attention and of the matrices behind it, as pure functions `trace → go.Figure` (no Streamlit)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
import plotly.graph_objects as go

from transformer.model.trace import Trace
from viz.labels import plotly_text, shown_tokens, text_px, tick_step, unique_labels
from viz.worked import scores_formula

WEIGHTS_SCALE = "Viridis"  # perceptually uniform; attention weights in [0, 1]
SIGNED_SCALE = "Cividis"  # perceptually uniform and colour-blind safe; Q, K, V, scores, projection weights
PNG_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}  # modebar "download as PNG"


@cache
def named_scale(name: str) -> tuple[tuple[float, str], ...]:
    """A named colour scale ("Viridis") as the ((t, colour), ...) that Plotly's validation makes of it: `unchecked`
    traces keep what they are given, and plotly.js's own scale of the same name has other colours."""
    return go.Heatmap(colorscale=name).colorscale  # validated once


def unchecked(trace: type, **props):
    """A trace of our own making built without Plotly's per-property validation (`_validate=False`, Plotly's own
    switch, which its templates use): the hot path's heatmaps are new for every text every session types, and
    validating them took ~3/4 of building them. The figure's JSON is the same as a validated one's (tested), given
    explicit colour scales (`named_scale`)."""
    if isinstance(props.get("colorscale"), str):
        props["colorscale"] = named_scale(props["colorscale"])
    return trace(_validate=False, **props)


def unchecked_figure(data: list, layout: dict) -> go.Figure:
    """A figure of `unchecked` traces and our own layout, built without validation (see `unchecked`)."""
    return go.Figure(data=data, layout=layout, _validate=False)


def font_size(presentation: bool) -> int:
    """Base font size: larger for a projector."""
    return 20 if presentation else 13


def layers_by_heads(
    heatmap: go.Heatmap,
    z: np.ndarray,
    hovertemplate: str,
    title: str,
    selected: tuple[int, int] | None,
    presentation: bool,
    box_color: str,
    row_height: tuple[int, int],
    extra_height: int,
    xaxis: dict | None = None,
    hover_text: list[str] | None = None,
) -> go.Figure:
    """A layers × heads grid of one number per head (ablation effects, sink scores): `heatmap` over z (n_layers, n_heads),
    an invisible clickable point per head (heatmaps have no point selection; `grid.pick_from_selection` reads a
    click: x = head, y = layer), a box around the `selected` (layer, head), layer 0 at the top.

    row_height: pixels a layer, (normal, presentation); xaxis: the head axis's own settings over the plain one.
    """
    n_layers, n_heads = z.shape
    size = font_size(presentation)
    hh, ll = np.meshgrid(np.arange(n_heads), np.arange(n_layers))
    shapes = []
    if selected is not None and 0 <= selected[0] < n_layers and 0 <= selected[1] < n_heads:
        sl, sh = selected
        shapes.append(dict(type="rect", x0=sh - 0.5, x1=sh + 0.5, y0=sl - 0.5, y1=sl + 0.5, line=dict(color=box_color, width=3)))
    points = go.Scatter(
        x=hh.reshape(-1),
        y=ll.reshape(-1),
        mode="markers",
        marker=dict(size=30, symbol="square", opacity=0),
        customdata=z.reshape(-1),
        hovertemplate=hovertemplate,
        showlegend=False,
    )
    if hover_text is not None:
        points.text = hover_text
    head_axis = dict(title="head", tickmode="array", tickvals=list(range(n_heads)), showgrid=False, zeroline=False)
    return go.Figure(
        data=[heatmap, points],
        layout=dict(
            title=dict(text=title, font=dict(size=size + 2)),
            xaxis={**head_axis, **(xaxis or {})},
            yaxis=dict(
                title="layer",
                tickmode="array",
                tickvals=list(range(n_layers)),
                autorange="reversed",
                showgrid=False,
                zeroline=False,
            ),
            shapes=shapes,
            height=int(max(240, row_height[int(presentation)] * n_layers + extra_height)),
            margin=dict(l=int(4 * size + 12), r=10, t=50, b=int(3.6 * size + 12)),
            font=dict(size=size),
            hoverlabel=dict(font=dict(size=size)),
            clickmode="event+select",
            dragmode=False,
        ),
    )


def as_array(x) -> np.ndarray:
    """A float32 numpy copy of a tensor or array (Plotly 7 sends float32 arrays as compact base64)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


# Presentation mode stretches the main heatmap to the screen's height (server/widgets.PRESENTED_CSS): its own height
# is then its least, and a 1280×720 screen leaves its rows about 260 px, room for 14 labels of 20 px letters.
PRESENTED_MIN_PX = 300
PRESENTED_ROW_LABELS = 10


def fit_to_screen(fig: go.Figure, min_height: int = PRESENTED_MIN_PX, max_rows: int = PRESENTED_ROW_LABELS) -> go.Figure:
    """`fig` (a token heatmap, changed in place) made to stretch to the screen in presentation mode: `min_height`
    its least height, and at most about `max_rows` row labels (every k-th token, the first always; hover names every
    row), so that no two labels overlap on a 1280×720 screen."""
    fig.update_layout(height=min_height)
    y = fig.layout.yaxis
    if y.tickvals is not None and len(y.tickvals) > max_rows:
        # Plotly picks every k-th row for the height the screen gives (its "auto" ticks on a category axis); the
        # labels are then the rows' own names, position·token.
        fig.update_yaxes(tickmode="auto", tickvals=None, ticktext=None)
    return fig


MAX_LABEL_PX = 220  # margins never grow past this for one very long token (its label is then clipped)
MAX_TICKS = 64  # token labels along a full-width axis, at most
# ... along a half-width one (the mean over heads beside the thumbnails: 256 px of plot in a 1400 px window), where
# 33 labels slanted by 60° overlapped into a smear: every 2nd token from 15, every 3rd from 29, ...
HALF_WIDTH_TICKS = 14


def _token_axis(tokens: Sequence[str], title: str, size: int, max_ticks: int = MAX_TICKS) -> tuple[list[str], dict, float]:
    """Unique category values for an axis of tokens, axis settings whose tick labels are the bare tokens (every k-th
    one past `max_ticks`, the first always), and the widest tick label's estimated width in pixels."""
    values = [plotly_text(label) for label in unique_labels(tokens)]
    step = tick_step(len(tokens), max_ticks)
    shown = shown_tokens(tokens)[::step]  # a byte-level tokenizer's "Ġb" is ticked "␣b", as the hover says
    axis = dict(
        title=dict(text=title, font=dict(size=size)),
        type="category",
        tickmode="array",
        tickvals=values[::step],
        ticktext=[plotly_text(t) for t in shown],
        tickfont=dict(size=size),
        showgrid=False,
        automargin=False,  # margins are set from the labels' estimated size (see text_px)
    )
    return values, axis, min(MAX_LABEL_PX, max((text_px(t, size) for t in shown), default=0.0))


def token_heatmap(
    z,
    row_tokens: Sequence[str],
    col_tokens: Sequence[str] | None,
    *,
    title: str,
    value_name: str = "weight",
    row_name: str = "query",
    col_name: str = "key",
    colorscale: str = WEIGHTS_SCALE,
    zmin: float | None = None,
    zmax: float | None = None,
    fmt: str = ".6f",
    presentation: bool = False,
    max_col_ticks: int = MAX_TICKS,
) -> go.Figure:
    """A heatmap with tokens down the rows (top to bottom, in order) and tokens, or vector dimensions, across.

    `col_tokens=None` means the columns are dimensions 0..n-1 of a vector (Q, K, V, head output). `max_col_ticks`:
    the most column labels (every k-th token past it; hover names every column).
    """
    z = as_array(z)
    size = font_size(presentation)
    y, yaxis, y_label_px = _token_axis(row_tokens, row_name, size)
    yaxis["autorange"] = "reversed"  # first token at the top, like reading the sentence
    if col_tokens is None:
        x = list(range(z.shape[1]))
        xaxis = dict(title=dict(text=col_name, font=dict(size=size)), tickfont=dict(size=size), showgrid=False, automargin=False)
        hover_x = f"{col_name} %{{x}}"
        x_label_px = 1.2 * size  # numbers, horizontal: one line of text
    else:
        x, xaxis, x_label_px = _token_axis(col_tokens, col_name, size, max_col_ticks)
        xaxis["tickangle"] = -60
        x_label_px = x_label_px * 0.87 + 0.5 * size  # rotated by 60°: sin 60° of the width, plus the line height
        hover_x = f"{col_name}: %{{x}}"
    rows = z.shape[0]
    # Data and layout go to the constructor in one piece, unchecked: a later `update_layout` would walk every
    # property path again (15 ms a heatmap), and validation alone took 1.1 of 1.5 ms.
    fig = unchecked_figure(
        data=[
            unchecked(
                go.Heatmap,
                z=z,
                x=x,
                y=y,
                colorscale=colorscale,
                zmin=zmin,
                zmax=zmax,
                colorbar=dict(title=dict(text=value_name, font=dict(size=size)), tickfont=dict(size=size)),
                hovertemplate=f"{row_name}: %{{y}}<br>{hover_x}<br>{value_name}: %{{z:{fmt}}}<extra></extra>",
                hoverongaps=False,
            )
        ],
        layout=dict(
            title=dict(text=title, font=dict(size=size + 2)),
            xaxis=xaxis,
            yaxis=yaxis,
            height=int(min(900, max(320, (30 if presentation else 22) * rows + 170))),
            # Room for the tick labels and the axis title (2 em), computed rather than Plotly's automargin.
            margin=dict(l=int(y_label_px + 2.6 * size + 12), r=10, t=60 if title else 20, b=int(x_label_px + 2.6 * size + 12)),
            font=dict(size=size),
            hoverlabel=dict(font=dict(size=size)),
        ),
    )
    return fig


def _layer_head_title(kind: str, layer: int, head: int | None, what: str) -> str:
    where = f"{kind} · layer {layer}" + ("" if head is None else f" · head {head}")
    return f"{where} — {what}"


def attention_figure(
    trace: Trace, kind: str, layer: int, head: int, presentation: bool = False, stretch: bool = False, label: str | None = None
) -> go.Figure:
    """The softmax attention weights of one head: row i says how much query token i takes from each key token.

    Colours span 0..1 so heads compare at a glance; `stretch` spans this head's own min..max instead.
    `label` goes before the title (a snapshot's step, a comparison's side), shown literally.
    """
    w = trace.head(kind, layer, head)["weights"]
    fig = token_heatmap(
        w,
        trace.query_tokens(kind),
        trace.key_tokens(kind),
        # a label on a line of its own: side-by-side panels are narrow, and one long line ran past their edge
        title=(f"{plotly_text(label)}<br>" if label else "") + _layer_head_title(kind, layer, head, "attention weights"),
        zmin=None if stretch else 0.0,
        zmax=None if stretch else 1.0,
        presentation=presentation,
    )
    if label:
        fig.update_layout(margin_t=fig.layout.margin.t + font_size(presentation) + 10)
    return fig


def mean_heads_figure(trace: Trace, kind: str, layer: int, presentation: bool = False, stretch: bool = False) -> go.Figure:
    """The attention weights averaged over all heads of a layer."""
    w = trace.attention(kind, layer).weights[0].mean(0)  # (Tq, Tk)
    return token_heatmap(
        w,
        trace.query_tokens(kind),
        trace.key_tokens(kind),
        title=_layer_head_title(kind, layer, None, "mean weight over heads"),
        value_name="mean weight",
        zmin=None if stretch else 0.0,
        zmax=None if stretch else 1.0,
        presentation=presentation,
        max_col_ticks=HALF_WIDTH_TICKS,  # drawn in half the page's width
    )


def training_strip(
    traces: Sequence[Trace], labels: Sequence[str], kind: str, layer: int, head: int, presentation: bool = False
) -> go.Figure:
    """One head's weights at each training snapshot, side by side (same colours 0..1), hover with tokens and value."""
    from plotly.subplots import make_subplots

    size = font_size(presentation)
    fig = make_subplots(
        rows=1, cols=len(traces), subplot_titles=[plotly_text(label) for label in labels], horizontal_spacing=0.012
    )
    for i, (trace, label) in enumerate(zip(traces, labels), start=1):
        queries = [plotly_text(t) for t in unique_labels(trace.query_tokens(kind))]
        keys = [plotly_text(t) for t in unique_labels(trace.key_tokens(kind))]
        fig.add_trace(
            go.Heatmap(
                z=as_array(trace.head(kind, layer, head)["weights"]),
                x=keys,
                y=queries,
                zmin=0.0,
                zmax=1.0,
                colorscale=WEIGHTS_SCALE,
                showscale=i == len(traces),
                colorbar=dict(title=dict(text="weight", font=dict(size=size)), tickfont=dict(size=size)),
                hovertemplate=f"{plotly_text(label)}<br>query: %{{y}}<br>key: %{{x}}<br>weight: %{{z:.6f}}<extra></extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_xaxes(showticklabels=False, ticks="", automargin=False, row=1, col=i)
        fig.update_yaxes(showticklabels=False, ticks="", automargin=False, autorange="reversed", row=1, col=i)
    fig.update_annotations(font=dict(size=size))
    fig.update_layout(
        title=dict(text=_layer_head_title(kind, layer, head, "weights at each snapshot"), font=dict(size=size + 2)),
        height=230 if not presentation else 280,
        margin=dict(l=10, r=10, t=80, b=10),
        font=dict(size=size),
    )
    return fig


LEFT_OUT = "first token left out of the scale"


def scale_without_first_column(fig: go.Figure, top: float | None = None) -> go.Figure:
    """Colours of a token heatmap spanning its other columns: the first key column (the first token) is left out of the scale.

    The values never change, so hovering a first-column cell still shows its real number; where it lies above the
    range it takes the top colour. The range starts where it did (0 for weights), else at the other columns' least
    value; a scale centred on 0 (a difference) stays centred. `top`: the top of the range instead of this figure's
    own (two panels drawn on one scale). One key column only: the figure is left as it is.
    """
    hm = fig.data[0]
    z = np.asarray(hm.z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        return fig
    rest = z[:, 1:][np.isfinite(z[:, 1:])]
    if rest.size == 0:
        return fig
    if hm.zmin is not None and hm.zmax is not None and hm.zmin == -hm.zmax:  # diverging, centred on 0
        bound = (float(np.abs(rest).max()) if top is None else top) or 1e-6
        lo, hi = -bound, bound
    else:
        lo = float(hm.zmin) if hm.zmin is not None and hm.zmin == 0 else float(rest.min())
        hi = float(rest.max()) if top is None else top
        hi = hi if hi > lo else lo + 1e-6
    title = hm.colorbar.title.text or ""
    hm.update(zmin=lo, zmax=hi, colorbar=dict(title=dict(text=f"{title}<br>({LEFT_OUT})" if title else LEFT_OUT)))
    return fig


def top_without_first_column(*zs) -> float:
    """The largest value outside the first column over several matrices: one colour scale for panels side by side."""
    return max(float(np.nanmax(as_array(z)[:, 1:], initial=0.0)) for z in zs)


def add_cell_picker(fig: go.Figure) -> go.Figure:
    """Overlay invisible, clickable points on every cell of a token heatmap (Plotly heatmaps have no point selection).

    The points carry the cell's value as their colour, so their hover shows the same numbers as the heatmap's.
    """
    hm = fig.data[0]
    z = np.asarray(hm.z)
    xs = np.tile(np.asarray(hm.x, dtype=object), z.shape[0])
    ys = np.repeat(np.asarray(hm.y, dtype=object), z.shape[1])
    fig.add_trace(
        go.Scatter(
            x=list(xs),
            y=list(ys),
            mode="markers",
            marker=dict(size=14, symbol="square", opacity=0, color=z.reshape(-1)),
            hovertemplate=hm.hovertemplate.replace("%{z", "%{marker.color"),
            showlegend=False,
        )
    )
    fig.data[0].hoverinfo = "skip"
    fig.update_layout(clickmode="event+select", dragmode=False)
    return fig


def highlight_row(fig: go.Figure, row: int, color: str = "#e4002b") -> go.Figure:
    """Frame row `row` of a token heatmap (category axes place row i at i ± 0.5)."""
    n_cols = len(fig.data[0].x)
    fig.add_shape(type="rect", x0=-0.5, x1=n_cols - 0.5, y0=row - 0.5, y1=row + 0.5, line=dict(color=color, width=3))
    return fig


def head_figures(
    trace: Trace, kind: str, layer: int, head: int, presentation: bool = False, scale_scores: bool = True
) -> dict[str, go.Figure]:
    """The Q, K, V page's matrices in computation order: q, k, v, scores, mask, weights, output.

    K and V are those of the key/value head this query head reads (its own, unless grouped-query attention
    shares one among several query heads: the titles then say which). A rotary model adds "q_pre" and "k_pre",
    q and k before rotation; "q" and "k" are then after it, what the scores use. A model with a position bias
    (T5) adds "bias", the term its scores include. `scale_scores`: the model's config's (the scores' title says
    whether q·k was divided by √d_head).
    """
    h = trace.head(kind, layer, head)
    att = trace.attention(kind, layer)
    qt, kt = trace.query_tokens(kind), trace.key_tokens(kind)
    d = h["q"].shape[-1]
    where = f"{kind} · layer {layer} · head {head}"
    kv = f" of key/value head {att.kv_head(head)}" if att.group_size > 1 else ""
    rotary = "q_pre" in h
    turned = " after rotation" if rotary else ""
    common = dict(presentation=presentation)
    signed = dict(colorscale=SIGNED_SCALE, fmt=".5g", **common)
    kdims = dict(row_name="key", col_name="dim", **signed)
    figs = {
        "q": token_heatmap(
            h["q"],
            qt,
            None,
            title=f"Q{turned}  ({len(qt)} × {d})<br>{where}",
            value_name="q",
            col_name="dim",
            **signed,
        ),
        "k": token_heatmap(h["k"], kt, None, title=f"K{kv}{turned}  ({len(kt)} × {d})", value_name="k", **kdims),
        "v": token_heatmap(h["v"], kt, None, title=f"V{kv}  ({len(kt)} × {d})", value_name="v", **kdims),
        "scores": token_heatmap(
            h["scores"],
            qt,
            kt,
            title=f"scores = {scores_formula(scale_scores, 'bias' in h, str(d))}  ({len(qt)} × {len(kt)}), before the mask",
            value_name="score",
            **signed,
        ),
        "mask": token_heatmap(
            h["mask"].float(),
            qt,
            kt,
            title=f"mask  ({len(qt)} × {len(kt)}): 1 = may attend",
            value_name="may attend",
            colorscale=SIGNED_SCALE,
            zmin=0.0,
            zmax=1.0,
            fmt=".0f",
            **common,
        ),
        "weights": token_heatmap(
            h["weights"],
            qt,
            kt,
            title=f"weights = softmax(masked scores)  ({len(qt)} × {len(kt)}), rows sum to 1",
            zmin=0.0,
            zmax=1.0,
            **common,
        ),
        "output": token_heatmap(
            h["output"], qt, None, title=f"output = weights · V  ({len(qt)} × {d})", value_name="output", col_name="dim", **signed
        ),
    }
    if "bias" in h:
        figs["bias"] = token_heatmap(
            h["bias"],
            qt,
            kt,
            title=f"bias  ({len(qt)} × {len(kt)}): this head's relative position bias, added to Q Kᵀ",
            value_name="bias",
            **signed,
        )
    if rotary:
        figs["q_pre"] = token_heatmap(
            h["q_pre"],
            qt,
            None,
            title=f"Q before rotation  ({len(qt)} × {d})<br>{where}",
            value_name="q",
            col_name="dim",
            **signed,
        )
        figs["k_pre"] = token_heatmap(
            h["k_pre"], kt, None, title=f"K{kv} before rotation  ({len(kt)} × {d})", value_name="k", **kdims
        )
    return figs


MAX_CLASS_CHARS = 60  # a class name longer than this (from an uploaded checkpoint) is cut on the axis


def class_probabilities_figure(probs, names: Sequence[str], presentation: bool = False) -> go.Figure:
    """One horizontal bar per class, top to bottom in class order; names come from the checkpoint, shown literally.

    Bars sit at positions 0..n-1 with the names as tick labels, so two classes with the same name stay
    two bars; the hover reads the name from `customdata`, never from the template itself.
    """
    probs = as_array(probs)
    size = font_size(presentation)
    shown = [plotly_text(name if len(name) <= MAX_CLASS_CHARS else name[:MAX_CLASS_CHARS] + "…") for name in map(str, names)]
    return go.Figure(
        data=[
            go.Bar(
                x=probs,
                y=list(range(len(probs))),
                orientation="h",
                marker_color="#3b528b",
                customdata=shown,
                hovertemplate="%{customdata}: %{x:.6f}<extra></extra>",
                text=[f"{p:.3f}" for p in probs],
                textposition="auto",
            )
        ],
        layout=dict(
            yaxis=dict(
                autorange="reversed", tickmode="array", tickvals=list(range(len(probs))), ticktext=shown, tickfont=dict(size=size)
            ),
            xaxis=dict(range=[0, 1], title="probability", tickfont=dict(size=size)),
            height=120 + 50 * len(probs),
            font=dict(size=size),
            margin=dict(l=10, r=10, t=20, b=10),
        ),
    )
