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
present = ctx.presentation
st.session_state.setdefault("sel_autoplay_seconds", session.AUTOPLAY_SECONDS)
st.session_state.setdefault("sel_tour", session.AUTOPLAY_TOURS[0])

# Presentation mode (sidebar folded away): one row, the kind, autoplay and a ⚙ holding every other option, so that
# the figure keeps the screen's height and no label is cut. Otherwise the kind and autoplay, then the colour options.
if present:
    row = st.columns([6, 2, 1], vertical_alignment="center")
    where = {"kind": row[0], "play": row[1]}
    options = row[2].popover("", icon=":material/settings:", help="Colours, and autoplay's speed and tour")
    where["stretch"] = where["skip"] = options
else:
    first, second = st.columns([5, 2], vertical_alignment="center"), st.columns(2, vertical_alignment="center")
    where = {"kind": first[0], "play": first[1], "stretch": second[0], "skip": second[1]}
with where["kind"]:
    widgets.kind_picker(ctx, "attn_kind", on_touch=session.stop_autoplay, compact=present)
with where["stretch"]:
    stretch = st.toggle(
        "Stretch colours to this head",
        **session.bind(session.STRETCH, "attn_stretch"),
        help="Off: colours span weights 0–1, comparable across heads. On: they span this head's own smallest to largest weight.",
    )
with where["skip"]:
    skip_first = widgets.first_token_switch("attn_skip_first")
first_token = trace.key_tokens(kind)[0]
with where["play"]:
    on_off, settings = st.columns([2.5, 1], vertical_alignment="center") if not present else (st.container(), options)
    autoplay = on_off.toggle(
        "Autoplay",
        key=session.AUTOPLAY,
        on_change=session.autoplay_switched,
        help="Steps through the heads by itself, and pauses when you move the layer, the head or the kind. "
        "The ⚙ sets the speed and the tour.",
    )
    with settings if present else settings.popover("", icon=":material/settings:", help="Autoplay: speed and tour"):
        st.segmented_control(
            "Autoplay: each head stays",
            session.AUTOPLAY_SPEEDS,
            format_func=lambda s: f"{s:g} s",
            **session.bind("sel_autoplay_seconds", "w_autoplay_seconds"),
        )
        st.segmented_control("Autoplay's tour", session.AUTOPLAY_TOURS, **session.bind("sel_tour", "w_tour"))


def stops() -> list[tuple[str, int, int]]:
    """Where autoplay goes: every head of every kind, or only the heads with a job (every head when none has one)."""
    if st.session_state.get("sel_tour") == session.AUTOPLAY_TOURS[1]:
        tour = head_jobs.tour(ctx)
        if tour:
            return tour
        st.caption("No head has a job above the threshold here: autoplay shows every head.")
    cfg = ctx.ckpt.config
    return session.every_head({k: cfg.layers_of(k) for k in cfg.attention_kinds}, cfg.n_heads)


def main_view() -> None:
    """Layer and head selectors and the heatmap of the selected head."""
    n_layers, n_heads = trace.n_layers(kind), ctx.n_heads
    if autoplay and not st.session_state.get(session.AUTOPLAY):  # paused by a touch inside this fragment
        session.rerun_app()  # the switch and the timer are outside this fragment; a late timer's "on" merged in is not taken
    if autoplay and session.advance_autoplay(stops(), ctx.ckpt.config.attention_kinds):
        session.rerun_app()  # another kind: its picker and the page's kind are outside this fragment
    widgets.layer_head_controls(ctx, n_layers, n_heads, "attn", on_touch=session.stop_autoplay, compact=present)
    layer, head = st.session_state["sel_layer"], st.session_state["sel_head"]
    says = head_jobs.says(ctx, kind, layer, head)
    if says:  # what the head does, in one line (plain text: legible on a projector)
        st.markdown(f"**What this head does** — {says}")  # our own words and numbers: no user text in it
    fig = shared_figures.attention_figure(ctx.trace_key, trace, kind, layer, head, present, stretch, skip_first, present)
    if skip_first:
        widgets.first_token_note(fig, first_token)
    widgets.heatmap(
        fig,
        trace.head(kind, layer, head)["weights"],
        trace.query_tokens(kind),
        trace.key_tokens(kind),
        key="attn_heatmap",
        filename=f"weights_{kind.replace(' ', '_')}_L{layer}_H{head}",
        presented=present,
    )
    sharing = kv_sharing(ctx.n_heads, ctx.ckpt.config.kv_heads, head)
    if sharing:
        st.caption(f"{sharing} Its weights are its own: each query head scores the shared keys with its own queries.")
    session.sync_url(ctx)


def layer_view() -> None:
    """Mean over heads and every head of the current layer (follows the selection and autoplay)."""
    layer = st.session_state["sel_layer"]
    st.divider()
    left, right = st.columns(2)
    with left:
        st.subheader("Mean over heads", anchor=False)
        mean = shared_figures.mean_heads_figure(ctx.trace_key, trace, kind, layer, present, stretch, skip_first)
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
                session.stop_autoplay()

        thumbs = shared_figures.layer_grid(ctx.trace_key, trace, kind, layer, st.session_state["sel_head"], present, skip_first)
        if skip_first:
            block = grid.pool_blocks(len(trace.query_tokens(kind)), len(trace.key_tokens(kind)), grid.MAX_CELLS)
            widgets.grid_first_note(thumbs, first_token, block[1])
        widgets.chart(
            thumbs,
            key="attn_layer_grid",
            on_select=_pick_head,
            selection_mode="points",
        )
        rows = head_jobs.layer_rows(ctx, kind, layer)
        if rows is not None:
            st.caption("Head-job scores for this layer (from the analysis functions): click a row to show its head above.")
            if kind == "cross" and head_jobs.note(ctx):
                st.caption(head_jobs.note(ctx))
            shown, heads = rows

            def _pick_row() -> None:
                rows = st.session_state["attn_jobs"].selection.rows
                if rows:
                    session.set_selection(head=heads[rows[0]])
                    session.stop_autoplay()

            st.dataframe(shown, key="attn_jobs", on_select=_pick_row, selection_mode="single-row")


def page() -> None:
    """The whole view below the toggles, rerun on its own (and on a timer while autoplay is on)."""
    main_view()
    layer_view()


session.fragment(page, run_every=session.autoplay_seconds() if autoplay else None)()
