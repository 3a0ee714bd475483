"""Small multiples of attention heads (the model view): every head pooled to a thumbnail, drawn as ONE heatmap.

One heatmap trace, not one subplot per head: 72 subplots take seconds to draw, and the
full-resolution weights of 72 heads at 2048 tokens would be over a gigabyte. Each head is
block-max pooled to at most `max_cells` × `max_cells` (`transformer.model.attention.block_max`, in the
model's light pass `api.attention_maps` or from a full trace), and travels as float32, so hovering
a cell shows the exact largest weight of its block (to 9 significant digits, which tell any two
float32 values apart): a 6 × 12 model view is about 1.6 MB whatever the text length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from transformer.model.attention import block_max, pool_blocks
from transformer.model.trace import AttentionMaps, Trace
from viz.figures import LEFT_OUT, WEIGHTS_SCALE, font_size, unchecked, unchecked_figure
from viz.labels import head_labels, plotly_text, raw_note, unique_labels

MAX_CELLS = 64
EXACT = ".9~g"  # hover format: 9 significant digits tell every float32 apart (trailing zeros dropped)
# Colour mappings of the weights (the values never change): 0..1 linear; √ (spreads the small weights
# of diffuse heads); linear from 0 to the 99th percentile of the cells shown, the top colour above it
# (for long texts where nearly every weight is small and a few spikes would set the range).
SCALES = ("linear", "sqrt", "stretch")
STRETCH_QUANTILE = 0.99
COLORBAR_TICKS = {"linear": (0.0, 0.25, 0.5, 0.75, 1.0), "sqrt": (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)}
SCALE_TITLES = {"linear": "weight", "sqrt": "weight (√ colours)", "stretch": "weight (0 to the 99th pct.)"}


def sqrt_colorscale(name: str = WEIGHTS_SCALE, steps: int = 16) -> list[list]:
    """`name` with its colours placed at t² instead of t: colour(w) = name(√w), so 0.01 already shows as 0.1 would."""
    from plotly.colors import get_colorscale, sample_colorscale

    points = np.linspace(0.0, 1.0, steps + 1)
    colours = sample_colorscale(get_colorscale(name), list(points))
    return [[float(p**2), c] for p, c in zip(points, colours)]


def grid_image(pooled: torch.Tensor) -> np.ndarray:
    """(L, H, r, c) pooled weights -> (L·r, H·c) float32 image: layer i's heads side by side in row band i."""
    n_l, n_h, r, c = pooled.shape
    return pooled.permute(0, 2, 1, 3).reshape(n_l * r, n_h * c).float().numpy()


def pooled_note(n_queries: int, n_keys: int, block: tuple[int, int] | None = None) -> str:
    """The sentence every pooled map's caption carries ("" when each cell is one weight).

    `block`: the (queries, keys) each cell pools; default: what `MAX_CELLS` gives for this map.
    """
    bq, bk = pool_blocks(n_queries, n_keys, MAX_CELLS) if block is None else block
    if (bq, bk) == (1, 1):
        return ""
    rows, cols = -(-n_queries // bq), -(-n_keys // bk)
    return f"Pooled to {rows} × {cols} cells: each cell is the largest weight of its block of {bq} query × {bk} key tokens."


def layer_maps(trace: Trace, kind: str, layer: int, max_cells: int = MAX_CELLS) -> tuple[torch.Tensor, tuple[int, int]]:
    """(1, H, r, c): one layer's heads from a full trace, pooled as the model view pools them; and the block size."""
    weights = trace.attention(kind, layer).weights[0]  # (H, Tq, Tk)
    block = pool_blocks(*weights.shape[-2:], max_cells)
    return block_max(weights, *block).float()[None], block


def head_grid(
    maps: AttentionMaps,
    kind: str,
    layers: Sequence[int] | None = None,
    selected: tuple[int, int] | None = None,
    presentation: bool = False,
    title: str | None = None,
    scale: str = "linear",
    group_size: int = 1,
    skip_first: bool = False,
) -> go.Figure:
    """Every head of the given layers (default: all) as thumbnails; click a thumbnail's centre to pick that head."""
    layers = list(range(maps.n_layers(kind))) if layers is None else list(layers)
    return pooled_grid(
        maps.maps[kind][layers],
        layers,
        kind,
        maps.block(kind),
        selected,
        presentation,
        title,
        scale,
        group_size,
        skip_first,
        tokens=(maps.query_tokens(kind), maps.key_tokens(kind)),
    )


def without_first_columns(image: np.ndarray, cols: int) -> np.ndarray:
    """The cells of a grid image that are not in a thumbnail's first column (the one holding the first key token)."""
    keep = np.arange(image.shape[1]) % cols != 0
    return image[:, keep]


def colour_range(image: np.ndarray, cols: int, scale: str, skip_first: bool) -> float:
    """The top of the colour scale (the bottom is 0): 1, or the top of the cells counted (all, or all but the first columns).

    "stretch" takes the 99th percentile of the cells counted, the other scales their largest value once the first
    columns are left out (1 otherwise, the same for every view).
    """
    counted = without_first_columns(image, cols) if skip_first and cols > 1 else image
    if scale == "stretch":
        return float(np.quantile(counted, STRETCH_QUANTILE)) if counted.size else 1.0
    if skip_first and cols > 1 and counted.size:
        return float(counted.max())
    return 1.0


HOVER_TOKEN_CHARS = 24  # a token longer than this is cut in the hover ("…"): 4 608 columns at most carry one or two


def block_names(tokens: Sequence[str], block: int, n_cells: int, what: str, plural: str) -> list[str]:
    """Per pooled cell along one axis, the tokens it covers: "key 3·␣cat (raw Ġcat)" or "keys 4·a … 7·b" (Plotly-escaped)."""
    labels, raw = unique_labels(tokens), raw_note(tokens)

    def one(i: int) -> str:
        label = labels[i] + raw[i]
        return label if len(label) <= HOVER_TOKEN_CHARS else label[: HOVER_TOKEN_CHARS - 1] + "…"

    out = []
    for cell in range(n_cells):
        first, last = cell * block, min((cell + 1) * block, len(tokens)) - 1
        out.append(plotly_text(f"{what} {one(first)}" if first == last else f"{plural} {one(first)} … {one(last)}"))
    return out


def token_axes(
    layers: Sequence[int], n_heads: int, r: int, c: int, block: tuple[int, int], tokens: tuple[Sequence[str], Sequence[str]]
) -> tuple[list[str], list[str]]:
    """Category names of the grid image's rows and columns, which the hover shows: tokens, layer and head.

    A row reads "query 4·cat<br>layer 1 · " and a column "head 2<br>key 0·the", so the hover "%{y}%{x}" reads
    "query 4·cat / layer 1 · head 2 / key 0·the". Every name is unique (a category axis merges equal ones).
    (L·r + H·c) short strings: the cells themselves carry no text (L·H·r·c strings would double the figure).
    """
    queries, keys = (
        block_names(tokens[0], block[0], r, "query", "queries"),
        block_names(tokens[1], block[1], c, "key", "keys"),
    )
    rows = [f"{q}<br>layer {layer} · " for layer in layers for q in queries]
    cols = [f"head {h}<br>{k}" for h in range(n_heads) for k in keys]
    return rows, cols


def pooled_grid(
    pooled: torch.Tensor,
    layers: Sequence[int],
    kind: str,
    block: tuple[int, int] = (1, 1),
    selected: tuple[int, int] | None = None,
    presentation: bool = False,
    title: str | None = None,
    scale: str = "linear",
    group_size: int = 1,
    skip_first: bool = False,
    tokens: tuple[Sequence[str], Sequence[str]] | None = None,
) -> go.Figure:
    """The thumbnails of `pooled` (len(layers), H, r, c), whose rows are the model's layers `layers`.

    `block`: how many (queries, keys) each cell pools (1, 1: each cell is one weight).

    Coordinates: x = head index, y = layer index, each thumbnail spanning ±0.5 around its centre.
    `selected` = (layer, head) gets a red frame. `scale`: one of SCALES (the colours change, the values never).
    `group_size` > 1 groups the heads by the key/value head they read (grouped-query attention): heads
    g·k … g·k + k − 1 read key/value head g, so each group is already side by side; the axis names each
    head "H5 · kv1" and a dark line separates the groups. `skip_first`: the first column of every thumbnail
    (the first key token's, with the keys pooled with it) is left out of the colour scale.
    `tokens` = (query tokens, key tokens): hovering a cell then names the tokens of its row and column
    (`token_axes`); the layers must then be consecutive (one row band each, as the category axis places them).
    """
    layers = list(layers)
    image = grid_image(pooled)
    n_heads, r, c = pooled.shape[1:]
    # Cell centres in head/layer units, float32 so they travel as base64 too.
    x = (np.arange(n_heads * c) // c + (np.arange(n_heads * c) % c + 0.5) / c - 0.5).astype(np.float32)
    y_units = np.arange(len(layers) * r) // r
    y = (np.asarray(layers)[y_units] + (np.arange(len(layers) * r) % r + 0.5) / r - 0.5).astype(np.float32)
    size = font_size(presentation)
    pooled_cells = block != (1, 1)
    what = f"largest of {block[0]} × {block[1]} weights" if pooled_cells else "one query, one key"
    zmax = colour_range(image, c, scale, skip_first) or float(image.max()) or 1.0
    ticks = tuple(zmax * t for t in COLORBAR_TICKS.get(scale, (0.0, 0.25, 0.5, 0.75, 1.0)))
    # The colour bar is as tall as the thumbnails: one layer's row (presentation mode's large letters most of all)
    # has room for its two ends only, not for five numbers on top of each other.
    thumb_px = 90 if presentation else 70
    grouped_ticks = group_size > 1 and n_heads > 8
    height = int(max(220, thumb_px * len(layers) + 120))
    bottom = int((6.5 if grouped_ticks else 3.6) * size + 12)
    room = (height - 50 - bottom) // int(1.6 * size)  # tick labels that fit along the bar, 1.6 lines apart
    if len(ticks) > max(room, 2):
        ticks = (ticks[0], ticks[-1])
    capped = scale == "stretch" or (skip_first and c > 1)  # cells above the top colour exist
    bar_title = SCALE_TITLES[scale] + (f"<br>({LEFT_OUT})" if skip_first and c > 1 else "")
    hover_where = "layer %{y:.0f} · head %{x:.0f}"  # %{x:.0f} rounds a cell's x to its thumbnail's head; same for y
    axes: dict = {}
    if tokens is not None:
        assert list(layers) == list(range(layers[0], layers[0] + len(layers))), f"layers not consecutive: {layers}"
        # The image on hidden category axes laid exactly over the numeric ones (cell j at j, the numeric
        # axes' thumbnails at ±0.5 of each head): the cells' names are their tokens, the frames stay numeric.
        y, x = token_axes(layers, n_heads, r, c, block, tokens)
        hover_where = "%{y}%{x}"
        axes = dict(
            xaxis2=dict(type="category", overlaying="x", visible=False, range=[-0.5, n_heads * c - 0.5]),
            yaxis2=dict(type="category", overlaying="y", visible=False, range=[len(layers) * r - 0.5, -0.5]),
        )
    heatmap = unchecked(
        go.Heatmap,
        z=image,
        x=x,
        y=y,
        xaxis="x2" if axes else "x",
        yaxis="y2" if axes else "y",
        zmin=0.0,
        zmax=zmax,
        colorscale=sqrt_colorscale() if scale == "sqrt" else WEIGHTS_SCALE,
        colorbar=dict(
            title=dict(text=bar_title, font=dict(size=size)),
            tickmode="array",
            tickvals=list(ticks),
            ticktext=[f"{t:.3g}" for t in ticks[:-1]] + [("≥ " if capped else "") + f"{ticks[-1]:.3g}"],
            tickfont=dict(size=size),
        ),
        hovertemplate=f"{hover_where}<br>weight %{{z:{EXACT}}} ({what})<extra></extra>",
    )
    # One clickable point per head at its thumbnail's centre (heatmaps have no point selection).
    hh, ll = np.meshgrid(np.arange(n_heads), np.asarray(layers))
    grouped = group_size > 1
    centres = unchecked(
        go.Scatter,
        x=hh.reshape(-1).astype(np.float32),
        y=ll.reshape(-1).astype(np.float32),
        mode="markers",
        marker=dict(size=28, symbol="square", opacity=0),
        customdata=(hh.reshape(-1) // group_size) if grouped else None,
        hovertemplate="layer %{y} · head %{x}"
        + (" · key/value head %{customdata}" if grouped else "")
        + "<br>click to open<extra></extra>",
        showlegend=False,
    )

    def separator(h: int) -> dict:  # between heads h and h + 1: dark and wide between key/value groups
        between_groups = grouped and (h + 1) % group_size == 0
        line = dict(color="#222", width=5) if between_groups else dict(color="white", width=3 if not grouped else 1)
        return dict(type="line", x0=h + 0.5, x1=h + 0.5, y0=layers[0] - 0.5, y1=layers[-1] + 0.5, line=line)

    shapes = [separator(h) for h in range(n_heads - 1)] + [
        dict(type="line", x0=-0.5, x1=n_heads - 0.5, y0=layer + 0.5, y1=layer + 0.5, line=dict(color="white", width=3))
        for layer in layers[:-1]
    ]
    if selected is not None and selected[0] in layers:
        sl, sh = selected
        shapes.append(dict(type="rect", x0=sh - 0.5, x1=sh + 0.5, y0=sl - 0.5, y1=sl + 0.5, line=dict(color="#e4002b", width=3)))
    # One constructor call, unchecked (`figures.unchecked`; update_layout would walk every property again).
    return unchecked_figure(
        data=[heatmap, centres],
        layout=dict(
            title=dict(text=title or f"{kind}: all layers × heads" + (f" (each cell: {what})" if pooled_cells else "")),
            shapes=shapes,
            xaxis=dict(
                title=dict(text="query head · the key/value head it reads" if grouped else "head"),
                tickmode="array",
                tickvals=list(range(n_heads)),
                ticktext=head_labels(n_heads, group_size) if grouped else [str(h) for h in range(n_heads)],
                tickangle=-45 if grouped and n_heads > 8 else 0,
                showgrid=False,
                zeroline=False,
                range=[-0.5, n_heads - 0.5],
                tickfont=dict(size=size),
                automargin=False,  # fixed margins below: automargin would draw the figure twice
            ),
            yaxis=dict(
                title=dict(text="layer"),
                tickmode="array",
                tickvals=layers,
                range=[layers[-1] + 0.5, layers[0] - 0.5],  # reversed: layer 0 at the top
                showgrid=False,
                zeroline=False,
                tickfont=dict(size=size),
                automargin=False,
            ),
            height=height,
            # tick labels + axis title; "H11 · kv3" labels slanted need more room
            margin=dict(l=int(4 * size + 12), r=10, t=50, b=bottom),
            font=dict(size=size),
            clickmode="event+select",
            dragmode=False,
            **axes,
        ),
    )


def pick_from_selection(points: Sequence[dict]) -> tuple[int, int] | None:
    """(layer, head) from a Streamlit plotly selection on a head grid, or None.

    A thumbnail's centre gives numbers (x = head, y = layer); a cell of the token-named image its names
    ("…<br>layer 1 · ", "head 2<br>…", see `token_axes`).
    """
    for p in points:
        if "x" in p and "y" in p:
            x, y = p["x"], p["y"]
            if isinstance(x, str) or isinstance(y, str):
                head, layer = re.match(r"head (\d+)<br>", str(x)), re.search(r"<br>layer (\d+) · $", str(y))
                if head and layer:
                    return int(layer.group(1)), int(head.group(1))
                continue
            return int(round(float(y))), int(round(float(x)))
    return None
