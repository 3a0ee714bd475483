"""Page 3 — Model view: every layer and head of one attention kind at once; click one to open it."""

from __future__ import annotations

import streamlit as st

from viz import grid, state, ui

ctx = state.context()
trace = state.require_trace(ctx)
kind = ctx.kind
ui.kind_picker(ctx, "mv_kind")
n_layers, n_heads = trace.n_layers(kind), ctx.n_heads


def _open(layer: int, head: int) -> None:
    state.set_selection(kind=kind, layer=layer, head=head)
    st.session_state["_goto"] = "attention"


def _on_click() -> None:
    picked = grid.pick_from_selection(st.session_state["mv_grid"].selection.points)
    if picked is not None:
        _open(*picked)


fig = grid.head_grid(trace, kind, selected=(ctx.layer, ctx.head), presentation=ctx.presentation)
n_tokens = len(trace.query_tokens(kind))
st.caption(
    f"{n_layers} layers × {n_heads} heads, {n_tokens} query tokens. Each thumbnail is that head's weights "
    f"(block max when longer than {grid.MAX_CELLS} tokens). Click a thumbnail's centre to open it on the Attention page."
)
ui.chart(fig, key="mv_grid", on_select=_on_click, selection_mode="points")

pairs = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
choice = c1.selectbox(
    "Or pick a head",
    pairs,
    index=pairs.index((ctx.layer, ctx.head)),
    format_func=lambda p: f"layer {p[0]} · head {p[1]}",
    key="mv_pick",
)
c2.button("Open on the Attention page", key="mv_open", on_click=_open, args=choice, type="primary", width="stretch")
