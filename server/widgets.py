"""Streamlit pieces shared by the pages: a heatmap with its CSV download, and the layer/head controls."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from server import session
from server.literal import md
from viz.figures import PNG_CONFIG, PRESENTED_MIN_PX, as_array, scale_without_first_column
from viz.labels import shown_tokens, unique_labels


def matrix_frame(z, rows: Sequence[str], cols: Sequence[str] | None) -> pd.DataFrame:
    """The matrix shown, as a table indexed by position·token (columns: key tokens, or dimensions)."""
    z = as_array(z)
    columns = unique_labels(cols) if cols is not None else [f"dim {d}" for d in range(z.shape[1])]
    return pd.DataFrame(z, index=pd.Index(unique_labels(rows), name="query"), columns=columns)


# Presentation mode: the main figure fills the screen's height left under the page's controls (a CSS height on the
# box `chart(presented=True)` puts it in; the figure's own height, `figures.fit_to_screen`, is then its least).
# PRESENTED_TOP_PX is what lies above the figure on the Attention page in presentation mode (navigation bar,
# controls, the head's one line), measured in Chromium (tests/browser/test_presentation.py holds the figure inside
# 1280×720 and 1920×1080 screens).
PRESENTED_TOP_PX = 300
NOTICE_PX = 70  # what the folded out-of-vocabulary notice adds above it in presentation mode (server/notices.py)


def presented_css(top_px: int = PRESENTED_TOP_PX) -> str:
    """The CSS rule that stretches a presented figure's box to the screen's height under `top_px` of page."""
    return f"div:has(> [class*='st-key-presented_']) {{height: max({PRESENTED_MIN_PX}px, calc(100vh - {top_px}px));}}"


PRESENTED_CSS = presented_css()
ABOVE_PX = "_presented_above_px"  # what app.py draws above a page this run (a class's one line), in px


def chart(fig: go.Figure, key: str, presented: bool = False, **kwargs):
    """A Plotly chart with the PNG export button (modebar camera) and a stable key.

    presented: the page's main figure in presentation mode (made by `figures.fit_to_screen`), as tall as the screen
    leaves it (`PRESENTED_CSS`).
    """
    if not presented:
        return st.plotly_chart(fig, key=key, config=PNG_CONFIG, width="stretch", **kwargs)
    with st.container(key=f"presented_{key}"):
        return st.plotly_chart(fig, key=key, config=PNG_CONFIG, width="stretch", height="stretch", **kwargs)


def heatmap(
    fig: go.Figure,
    z,
    rows: Sequence[str],
    cols: Sequence[str] | None,
    key: str,
    filename: str,
    checkpoint: str | None = None,
    texts: tuple | None = None,
    **kwargs,
):
    """Draw a heatmap figure and offer the exact matrix it shows as CSV (values as float32 prints them); the CSV is
    named by `csv_download`."""
    event = chart(fig, key, **kwargs)
    z, rows, cols = as_array(z), tuple(rows), None if cols is None else tuple(cols)
    csv_download(
        lambda: matrix_frame(z, rows, cols).to_csv(), key=f"csv_{key}", filename=filename, checkpoint=checkpoint, texts=texts
    )
    return event


NAME_CHARS = 48  # the most a file name takes from a checkpoint's name (or the view's)


def safe_name(value: str, max_chars: int = NAME_CHARS) -> str:
    """`value` as a piece of a file name: only [A-Za-z0-9._-] (runs of anything else become one "_"), no leading dot, cut."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._")[:max_chars].strip("._")
    return name or "model"


def text_hash(*texts: str | None) -> str:
    """Six hex digits of the text (and target) a view shows: the same text, the same digits, in any session."""
    data = "\x00".join("" if t is None else t for t in texts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:6]


def download_name(checkpoint: str, view: str, *texts: str | None) -> str:
    """A CSV's file name: checkpoint, view and a hash of the text, e.g. translator_weights_cross_L1_H1_3f2a9c.csv.

    Downloads of different checkpoints or texts never share a name; the checkpoint's name (a user's, for an upload
    or a found model) is reduced to safe characters.
    """
    return f"{safe_name(checkpoint)}_{safe_name(view, 2 * NAME_CHARS)}_{text_hash(*texts)}.csv"


def checkpoint_name(ctx: session.Context | None) -> str:
    """The checkpoint's name for a file name: the catalogue name, or an upload's file names."""
    if ctx is None:
        return "model"
    return ctx.label.removeprefix("Uploaded: ") if ctx.name == session.UPLOAD else ctx.name


def csv_download(make_csv, key: str, filename: str, checkpoint: str | None = None, texts: tuple | None = None) -> None:
    """A "Download CSV" button whose data `make_csv()` builds only when clicked (a 512×512 CSV is megabytes).

    `filename` names the view; the file is named after the checkpoint and the text too (`download_name`): this
    session's, unless `checkpoint` or `texts` name others (the Compare page's B).
    """
    ctx = st.session_state.get("_ctx")
    if checkpoint is None:
        checkpoint = checkpoint_name(ctx)
    if texts is None:
        texts = (None, None) if ctx is None else (ctx.text, ctx.target)
    st.download_button(
        "Download CSV",
        make_csv,
        file_name=download_name(checkpoint, filename, *texts),
        mime="text/csv",
        key=key,
        icon=":material/download:",
        # No script rerun on the click: it would redraw the page for nothing, and its start can drop the
        # deferred CSV before the browser fetches it (the button then spins forever, seen under load).
        on_click="ignore",
    )


def pooled_frame(
    pooled,
    layers: Sequence[int],
    n_queries: int,
    n_keys: int,
    block: tuple[int, int],
    query_tokens: Sequence[str] | None = None,
    key_tokens: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Thumbnails (L, H, r, c) as a long table: layer, head, the query and key positions each cell covers (and their
    tokens, when given: one token, or the block's tokens joined by spaces), weight."""
    z = as_array(pooled)
    n_l, n_h, r, c = z.shape
    bq, bk = block
    li, hi, ri, ci = (
        a.reshape(-1) for a in np.meshgrid(np.arange(n_l), np.arange(n_h), np.arange(r), np.arange(c), indexing="ij")
    )
    table = {
        "layer": np.asarray(layers)[li],
        "head": hi,
        "query_from": ri * bq,
        "query_to": np.minimum((ri + 1) * bq, n_queries) - 1,
        "key_from": ci * bk,
        "key_to": np.minimum((ci + 1) * bk, n_keys) - 1,
    }
    for side, tokens, rows, size, n in (("query", query_tokens, ri, bq, n_queries), ("key", key_tokens, ci, bk, n_keys)):
        if tokens is not None:  # one label per block, then looked up per cell
            tokens = shown_tokens(tokens)  # a byte-level tokenizer's "Ġb" as "␣b", as the figures show it
            labels = np.array([" ".join(tokens[b * size : min((b + 1) * size, n)]) for b in range(-(-n // size))], dtype=object)
            table[f"{side}_tokens"] = labels[rows]
    table["weight"] = z.reshape(-1)  # the largest weight of the block (the weight itself when a block is one cell)
    return pd.DataFrame(table)


def layer_head_controls(
    ctx: session.Context, n_layers: int, n_heads: int, prefix: str, on_touch=None, compact: bool | None = None
) -> None:
    """Sliders plus previous/next buttons for layer and head (all editing the canonical selection).

    on_touch: called (no arguments) whenever one of them is used (the Attention page pauses autoplay).
    compact: one row, the buttons as arrows beside their slider (default: in presentation mode, where the figures
    keep the screen's height).
    """
    compact = ctx.presentation if compact is None else compact

    def stepped(name: str, delta: int, n: int) -> None:
        session.step(name, delta, n)
        if on_touch is not None:
            on_touch()

    if compact:
        cells = st.columns([4, 1, 1, 4, 1, 1], vertical_alignment="bottom")
        places = ((cells[0], cells[1], cells[2]), (cells[3], cells[4], cells[5]))
    else:
        halves = st.columns(2)
        places = []
        for col in halves:
            with col:
                slot = st.container()
                b1, b2 = st.columns(2)
            places.append((slot, b1, b2))
    for (slot, b1, b2), name, n, what in zip(places, ("sel_layer", "sel_head"), (n_layers, n_heads), ("layer", "head")):
        if n > 1:
            slot.slider(what.capitalize(), 0, n - 1, **session.bind(name, f"{prefix}_{what}", on_touch))
        else:
            slot.markdown(f"**{what.capitalize()}:** 0 (the only one)")
        prev, nxt = ("◀", "▶") if compact else (f"◀ Previous {what}", f"Next {what} ▶")
        # No help tooltip: Streamlit draws a second, hidden copy of a button that has one (tests would find two).
        b1.button(prev, key=f"{prefix}_prev_{what}", on_click=stepped, args=(name, -1, n), width="stretch")
        b2.button(nxt, key=f"{prefix}_next_{what}", on_click=stepped, args=(name, 1, n), width="stretch")


def kind_picker(ctx: session.Context, key: str, on_touch=None, compact: bool | None = None) -> None:
    """Choose the attention kind (only when the model has more than one); `on_touch()` runs when it is used.

    compact: no label line above the choices (default: in presentation mode, where the figures keep the height; their
    titles name the kind)."""
    compact = ctx.presentation if compact is None else compact
    kinds = list(ctx.ckpt.config.attention_kinds)
    if len(kinds) > 1:
        visibility = "collapsed" if compact else "visible"
        st.radio("Attention kind", kinds, horizontal=True, label_visibility=visibility, **session.bind("sel_kind", key, on_touch))
    else:
        st.markdown(f"**Attention kind:** {kinds[0]} (the only one in this model)")


SKIP_FIRST = "sel_skip_first"  # one setting for every attention heatmap of this session (pages share it)


def first_token_switch(key: str) -> bool:
    """The "Leave the first token out of the colour scale" switch (the same setting on every page that draws attention)."""
    st.session_state.setdefault(SKIP_FIRST, False)
    st.toggle(
        "Leave the first token out of the colour scale",
        help="Many models park most attention on the first token (an attention sink), which squeezes every other "
        "weight into the darkest colours. On: the colours span the other key columns only; the first column's cells "
        "keep their real numbers (hover), and take the top colour where they are above the range.",
        **session.bind(SKIP_FIRST, key),
    )
    return bool(st.session_state[SKIP_FIRST])


def leave_out_first(fig: go.Figure, first_token: str, skip: bool, top: float | None = None) -> go.Figure:
    """When `skip`: `fig`'s colours scaled to its other columns (in place; up to `top` if given), and the caption
    saying so; else `fig` as is."""
    if skip:
        first_token_note(scale_without_first_column(fig, top), first_token)
    return fig


def first_token_note(fig: go.Figure, first_token: str) -> None:
    """The caption under a heatmap whose first column is out of the colour scale: what was left out, and the range."""
    hm = fig.data[0]
    z = np.asarray(hm.z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2 or hm.zmax is None:  # one key column: nothing was left out
        return
    st.caption(
        f"Colours: the first token's column ({md(first_token, 40)}, values up to {float(np.nanmax(z[:, 0])):.3g}) is left "
        f"out of the colour scale, which spans {hm.zmin:.3g} to {hm.zmax:.3g} over the other columns; its cells above "
        "that take the top colour. Hover shows every cell's real number."
    )


def grid_first_note(fig: go.Figure, first_token: str, keys_per_cell: int = 1) -> None:
    """The caption under thumbnails whose first columns are out of the colour scale (`grid.pooled_grid(skip_first=True)`)."""
    hm = fig.data[0]
    pooled = f", pooled with the next {keys_per_cell - 1} keys" if keys_per_cell > 1 else ""
    st.caption(
        f"Colours: the first column of every thumbnail (the first token {md(first_token, 40)}{pooled}) is left out of the "
        f"colour scale, which spans 0 to {hm.zmax:.3g} over the other cells; cells above that take the top colour. "
        "Hover shows every cell's real number."
    )
