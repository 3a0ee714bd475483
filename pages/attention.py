"""Page 1 — Attention: one head's weights as a heatmap, stepping through layers and heads.

Everything below the toggles is one fragment: a layer or head change reruns only it (not the
sidebar, the model or the rest of the app); the URL still follows, since the fragment writes it.
"""

from __future__ import annotations

import streamlit as st

from server import head_jobs, notices, session, shared_figures, widgets
from transformer.model.describe import kv_sharing
from viz import grid

ctx = session.context()
trace = session.require_trace(ctx)
notices.coverage(ctx, trace)
kind = ctx.kind

top = st.columns([3, 3, 4, 1.5], vertical_alignment="center")
with top[0]:
    widgets.kind_picker(ctx, "attn_kind")
with top[1]:
    stretch = st.toggle(
        "Stretch colours to this head",
        key="attn_stretch",
        help="Off: colours span weights 0–1, comparable across heads. On: they span this head's own smallest to largest weight.",
    )
with top[2]:
    skip_first = widgets.first_token_switch("attn_skip_first")
first_token = trace.key_tokens(kind)[0]
with top[3]:
    autoplay = st.toggle(
        "Autoplay",
        key="autoplay",
        help=f"Steps through every layer and head, one head every {session.AUTOPLAY_SECONDS:g} s.",
    )


def main_view() -> None:
    """Layer and head selectors and the heatmap of the selected head."""
    n_layers, n_heads = trace.n_layers(kind), ctx.n_heads
    if autoplay:
        session.advance_autoplay(n_layers, n_heads)
    widgets.layer_head_controls(ctx, n_layers, n_heads, "attn")
    layer, head = st.session_state["sel_layer"], st.session_state["sel_head"]
    fig = shared_figures.attention_figure(ctx.trace_key, trace, kind, layer, head, ctx.presentation, stretch, skip_first)
    if skip_first:
        widgets.first_token_note(fig, first_token)
    widgets.heatmap(
        fig,
        trace.head(kind, layer, head)["weights"],
        trace.query_tokens(kind),
        trace.key_tokens(kind),
        key="attn_heatmap",
        filename=f"weights_{kind.replace(' ', '_')}_L{layer}_H{head}",
    )
    sharing = kv_sharing(ctx.n_heads, ctx.ckpt.config.kv_heads, head)
    if sharing:
        st.caption(f"{sharing} Its weights are its own: each query head scores the shared keys with its own queries.")
    label = head_jobs.label(ctx, kind, layer, head)
    if label:
        st.caption(f"Head job (from the analysis): {label}")
    session.sync_url(ctx)


def layer_view() -> None:
    """Mean over heads and every head of the current layer (follows the selection and autoplay)."""
    layer = st.session_state["sel_layer"]
    st.divider()
    left, right = st.columns(2)
    with left:
        st.subheader("Mean over heads", anchor=False)
        mean = shared_figures.mean_heads_figure(ctx.trace_key, trace, kind, layer, ctx.presentation, stretch, skip_first)
        if skip_first:
            widgets.first_token_note(mean, first_token)
        widgets.heatmap(
            mean,
            trace.attention(kind, layer).weights[0].mean(0),  # the CSV, built only when clicked
            trace.query_tokens(kind),
            trace.key_tokens(kind),
            key="attn_mean",
            filename=f"mean_weights_{kind.replace(' ', '_')}_L{layer}",
        )
    with right:
        st.subheader("All heads of this layer", anchor=False)
        pooled = grid.pooled_note(len(trace.query_tokens(kind)), len(trace.key_tokens(kind)))
        st.caption(f"{pooled} Click a thumbnail to show that head above.".lstrip())

        def _pick_head() -> None:
            picked = grid.pick_from_selection(st.session_state["attn_layer_grid"].selection.points)
            if picked is not None:
                session.set_selection(head=picked[1])

        thumbs = shared_figures.layer_grid(
            ctx.trace_key, trace, kind, layer, st.session_state["sel_head"], ctx.presentation, skip_first
        )
        if skip_first:
            block = grid.pool_blocks(len(trace.query_tokens(kind)), len(trace.key_tokens(kind)), grid.MAX_CELLS)
            widgets.grid_first_note(thumbs, first_token, block[1])
        widgets.chart(
            thumbs,
            key="attn_layer_grid",
            on_select=_pick_head,
            selection_mode="points",
        )
        table = head_jobs.table(ctx, kind)
        if table is not None:
            st.caption("Head-job scores for this layer (from the analysis functions)")
            if kind == "cross" and head_jobs.note(ctx):
                st.caption(head_jobs.note(ctx))
            st.dataframe(table[table.index.get_level_values(0) == layer] if table.index.nlevels > 1 else table)


def page() -> None:
    """The whole view below the toggles, rerun on its own (and on a timer while autoplay is on)."""
    main_view()
    layer_view()


st.fragment(page, run_every=session.AUTOPLAY_SECONDS if autoplay else None)()
