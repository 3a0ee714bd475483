"""Page 2 — Q, K, V: one head's computation, matrix by matrix, and one query row worked with real numbers.

Everything below the kind picker is one fragment: picking a layer, head or query token reruns only
it; the URL still follows, since the fragment writes it.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from server import session, widgets
from transformer.model.describe import kv_sharing, norm_name, rotation
from viz import figures, worked
from viz.labels import unique_labels

ctx = session.context()
trace = session.require_trace(ctx)
kind = ctx.kind
cfg = ctx.ckpt.config

top = st.columns([3, 2], vertical_alignment="center")
with top[0]:
    widgets.kind_picker(ctx, "qkv_kind")
with top[1]:
    skip_first = widgets.first_token_switch("qkv_skip_first")


def _pick_query() -> None:
    for p in st.session_state["qkv_weights"].selection.points:
        label = str(p.get("y", ""))
        if "·" in label and label.split("·", 1)[0].isdigit():
            st.session_state["sel_query"] = int(label.split("·", 1)[0])
            return


def computation() -> None:
    """Layer/head/query pickers, the matrices in computation order and the worked row (a fragment)."""
    widgets.layer_head_controls(ctx, trace.n_layers(kind), ctx.n_heads, "qkv")
    layer, head = st.session_state["sel_layer"], st.session_state["sel_head"]
    q_tokens, k_tokens = trace.query_tokens(kind), trace.key_tokens(kind)
    q_labels = unique_labels(q_tokens)
    st.selectbox(
        "Query token (or click a row of the weights heatmap)",
        range(len(q_tokens)),
        format_func=q_labels.__getitem__,
        **session.bind("sel_query", "w_query"),
    )
    query = st.session_state["sel_query"]
    h = trace.head(kind, layer, head)
    d_head = h["q"].shape[-1]
    figs = figures.head_figures(trace, kind, layer, head, ctx.presentation)
    name = f"{kind.replace(' ', '_')}_L{layer}_H{head}"

    st.markdown(
        f"**The computation, in order** (d_head = {d_head}): "
        "`Q = X W_Q`, `K = X W_K`, `V = X W_V` → `scores = Q Kᵀ / √d_head` → mask → `weights = softmax(scores)` → `output = weights · V`."
    )
    st.subheader("1 · Queries, keys and values (tokens × d_head)", anchor=False)
    sharing = kv_sharing(ctx.n_heads, cfg.kv_heads, head)
    if sharing:
        kv = trace.attention(kind, layer).kv_head(head)
        st.info(
            f"{sharing} Grouped-query attention: the K and V below are key/value head {kv}'s, the very matrices the "
            "other query heads of its group read; Q (and so the scores and weights) is this query head's own.",
            icon=":material/group_work:",
        )
    rotary = "q_pre" in h
    if rotary:
        st.info(rotation(cfg), icon=":material/rotate_right:")
        cols = st.columns(3)
        for col, part, rows in zip(cols, ("q_pre", "k_pre"), (q_tokens, k_tokens)):
            with col:
                widgets.heatmap(
                    figures.highlight_row(figs[part], query) if part == "q_pre" else figs[part],
                    h[part],
                    rows,
                    None,
                    key=f"qkv_{part}",
                    filename=f"{part.replace('_pre', '_before_rotation')}_{name}",
                )
        with cols[2]:
            normed = f" and normalised per head by {norm_name(cfg)} (q/k norm)" if cfg.qk_norm else ""
            st.markdown(
                f"**Before rotation** (left): `X W_Q` and `X W_K` as projected{normed}, no position turned in yet. "
                "**After rotation** (below): row i turned by angles proportional to i; these are what the scores use. "
                "V is never turned."
            )
    cols = st.columns(3)
    for col, part, rows in zip(cols, ("q", "k", "v"), (q_tokens, k_tokens, k_tokens)):
        with col:
            widgets.heatmap(
                figures.highlight_row(figs[part], query) if part == "q" else figs[part],
                h[part],
                rows,
                None,
                key=f"qkv_{part}",
                filename=f"{part}_{name}",
            )

    st.subheader("2 · Scaled scores and 3 · the mask", anchor=False)
    cols = st.columns(2)
    with cols[0]:
        widgets.heatmap(
            figures.highlight_row(figs["scores"], query),
            h["scores"],
            q_tokens,
            k_tokens,
            key="qkv_scores",
            filename=f"scores_{name}",
        )
    with cols[1]:
        widgets.heatmap(figs["mask"], h["mask"].float(), q_tokens, k_tokens, key="qkv_mask", filename=f"mask_{name}")

    st.subheader("4 · Softmax weights and 5 · the head output", anchor=False)
    cols = st.columns(2)
    with cols[0]:
        fig = widgets.leave_out_first(figs["weights"], k_tokens[0], skip_first)
        clickable = len(q_tokens) * len(k_tokens) <= 4096
        if clickable:
            figures.add_cell_picker(fig)
        figures.highlight_row(fig, query)
        widgets.heatmap(
            fig,
            h["weights"],
            q_tokens,
            k_tokens,
            key="qkv_weights",
            filename=f"weights_{name}",
            **(dict(on_select=_pick_query, selection_mode="points") if clickable else {}),
        )
    with cols[1]:
        widgets.heatmap(
            figures.highlight_row(figs["output"], query), h["output"], q_tokens, None, key="qkv_output", filename=f"output_{name}"
        )

    row = worked.worked_row(trace, kind, layer, head, query)
    st.subheader(f"Query row {query}, worked by hand", anchor=False)
    st.text(f"query token: {row.query_label}")
    if row.rotary:
        st.markdown(f"**q** (the query vector, 1 × {d_head}), before and after rotation by its position {query}:")
        qvec = widgets.matrix_frame(np.stack([row.q_pre, row.q]), [q_tokens[query]] * 2, None)
        st.dataframe(qvec.set_axis(["before rotation", "after rotation (used)"]), key="qkv_qvec")
    else:
        st.markdown(f"**q** (the query vector, 1 × {d_head}):")
        st.dataframe(widgets.matrix_frame(row.q[None, :], [q_tokens[query]], None).set_axis([row.query_label]), key="qkv_qvec")
    st.markdown(
        f"**Each key:** `q·k` (dot product of q with that key's row of K), divided by `√{d_head} = {row.scale:.4f}` gives the score; "
        "keys the mask forbids get weight 0; the softmax turns the allowed scores into weights that sum to 1."
    )
    st.caption(
        "`q·k` is recomputed here from the q above and the rows of K; the score, the mask and the softmax weight "
        "are the model's own numbers."
        + (
            " Rotary model: “turned q·k ÷ √d” is recomputed from q and k after rotation, what the model scored "
            "(compare the model's column); “unturned” from q and k before rotation, with no position in them. "
            "At distance i − j = 0 both are turned alike and the two agree; elsewhere the gap comes from the distance."
            if row.rotary
            else ""
        )
    )
    st.dataframe(row.steps_table(), key="qkv_steps")
    st.markdown(
        f"Sum of the weights: `{float(row.weights.sum()):.6f}`. "
        f"The recomputed {'turned ' if row.rotary else ''}`q·k ÷ √{d_head}` differs from the model's scores by at most "
        f"`{row.score_diff:.1e}`, "
        f"and the softmax recomputed here from the model's scores differs from its weights by at most "
        f"`{row.softmax_diff:.1e}` (float32 rounding: the model adds the same numbers in another order)."
    )
    st.markdown("**The output row** is the weighted sum of the value vectors, `Σⱼ weightⱼ · vⱼ`:")
    st.dataframe(row.sum_table(), key="qkv_sum")
    ok = row.output_matches
    (st.success if ok else st.error)(
        f"Σ weightⱼ · vⱼ {'equals' if ok else 'differs from'} the head output's row {query}: "
        f"largest difference {row.max_abs_diff:.1e}, tolerance {row.tolerance:.1e}."
    )
    st.caption(
        "The tolerance is the most float32 rounding alone can change a sum of n products: "
        f"n · ε · Σⱼ |weightⱼ · vⱼ| (in its largest dimension), with n = {len(row.weights)} keys and ε = 2⁻²³ ≈ 1.2e-7. "
        "It grows with the size of the values, as rounding does."
    )
    session.sync_url(ctx, "qkv")


st.fragment(computation)()
