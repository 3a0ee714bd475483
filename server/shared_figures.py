"""Figures built once and shared by every session, so stepping back and forth through heads redraws at once.

Keyed by the trace's cache key (checkpoint identity, text, target: the same key always means the same
numbers) plus what the figure shows. One process-wide LRU bounded by bytes holds them (a 2048-token
heatmap is 16 MB of float32). Callers only draw these figures, never modify them (Streamlit
serialises a copy).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from server.lru import ByteLRU
from transformer.model.trace import Trace
from viz import figures, grid

FIGURE_BUDGET_BYTES = 256 * 1024**2


def figure_nbytes(fig: go.Figure) -> int:
    """Roughly what a figure holds: the bytes of its traces' z arrays, plus a little for the rest."""
    return sum(np.asarray(t.z).nbytes for t in fig.data if getattr(t, "z", None) is not None) + 50_000


@st.cache_resource
def figure_cache() -> ByteLRU[go.Figure]:
    return ByteLRU(FIGURE_BUDGET_BYTES, figure_nbytes)


def _cached(key: tuple, build: Callable[[], go.Figure]) -> go.Figure:
    return figure_cache().get_or_create(key, build)


def _first_left_out(fig: go.Figure, skip_first: bool) -> go.Figure:
    return figures.scale_without_first_column(fig) if skip_first else fig


def attention_figure(
    key: tuple,
    trace: Trace,
    kind: str,
    layer: int,
    head: int,
    presentation: bool,
    stretch: bool,
    skip_first: bool = False,
    presented: bool = False,
) -> go.Figure:
    """`figures.attention_figure` (first token out of the colour scale when `skip_first`; made to stretch to the
    screen, `figures.fit_to_screen`, when `presented`), once per its settings."""

    def build() -> go.Figure:
        fig = _first_left_out(figures.attention_figure(trace, kind, layer, head, presentation, stretch), skip_first)
        return figures.fit_to_screen(fig) if presented else fig

    return _cached((key, "attention", kind, layer, head, presentation, stretch, skip_first, presented), build)


def mean_heads_figure(
    key: tuple, trace: Trace, kind: str, layer: int, presentation: bool, stretch: bool, skip_first: bool = False
) -> go.Figure:
    """`figures.mean_heads_figure` (first token out of the colour scale when `skip_first`), once per its settings."""
    return _cached(
        (key, "mean", kind, layer, presentation, stretch, skip_first),
        lambda: _first_left_out(figures.mean_heads_figure(trace, kind, layer, presentation, stretch), skip_first),
    )


def layer_grid(
    key: tuple, trace: Trace, kind: str, layer: int, head: int, presentation: bool, skip_first: bool = False
) -> go.Figure:
    """All heads of one layer as thumbnails with `head` framed (grouped by key/value head under grouped-query
    attention), once per (trace, kind, layer, head, presentation, skip_first)."""
    return _cached(
        (key, "grid", kind, layer, head, presentation, skip_first),
        lambda: _layer_grid(trace, kind, layer, head, presentation, skip_first),
    )


def _layer_grid(trace: Trace, kind: str, layer: int, head: int, presentation: bool, skip_first: bool) -> go.Figure:
    pooled, block = grid.layer_maps(trace, kind, layer)
    group = trace.attention(kind, layer).group_size
    return grid.pooled_grid(
        pooled, [layer], kind, block, (layer, head), presentation, " ", group_size=group, skip_first=skip_first
    )
