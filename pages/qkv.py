"""Page 2 — Q, K, V: one head's computation, matrix by matrix, and one query row worked with real numbers.

Everything below the kind picker is one fragment: picking a layer, head or query token reruns only
it; the URL still follows, since the fragment writes it.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from server import notices, session, widgets
from transformer.model.describe import kv_sharing, norm_name, rotation
from viz import figures, worked
from viz.labels import unique_labels

ctx = session.context()
trace = session.require_trace(ctx)
notices.coverage(ctx, trace)
kind = ctx.kind
cfg = ctx.ckpt.config

top = st.columns([3, 2], vertical_alignment="center")
with top[0]:
    widgets.kind_picker(ctx, "qkv_kind")
with top[1]:
    skip_first = widgets.first_token_switch("qkv_skip_first")


def relative_bias(cfg, kind: str) -> str:
    """What T5's relative position bias is, for the box above the scores."""
    stack, buckets = "encoder", f"{cfg.rel_buckets // 2} for keys before the query and {cfg.rel_buckets // 2} for keys after it"
    if kind != "encoder self":  # the decoder's buckets cover the past only
        stack, buckets = "decoder", f"{cfg.rel_buckets} for keys at or before the query (it never sees a later one)"
    return (
        "Relative positions (T5): no position is added to the token vectors. Instead each score gets a learned number, "
        "one per head and bucket of the distance between key and query. Buckets: "
        f"{buckets}; a bucket per distance for short distances, then logarithmically wider ones up to "
        f"{cfg.rel_max_distance} tokens, past which all share the last. One table of buckets × heads serves every layer "
        f"of the {stack}: the bias matrix is that table read out for each (query, key) pair. Cross-attention has none."
    )


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
    bias = "bias" in h
    figs = figures.head_figures(trace, kind, layer, head, ctx.presentation, cfg.scale_scores)
    name = f"{kind.replace(' ', '_')}_L{layer}_H{head}"

    st.markdown(
        f"**The computation, in order** (d_head = {d_head}): "
        f"`Q = X W_Q`, `K = X W_K`, `V = X W_V` → `scores = {worked.scores_formula(cfg.scale_scores, bias)}` → mask → "
        "`weights = softmax(scores)` → `output = weights · V`."
    )
    if not cfg.scale_scores:
        st.caption(
            "This model does not divide Q Kᵀ by √d_head: its scores are the dot products themselves "
            "(T5 folds that scale into its trained W_Q instead)."
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

    scores = "Scaled scores" if cfg.scale_scores else "Scores"
    st.subheader(f"2 · {scores}{' with the position bias' if bias else ''} and 3 · the mask", anchor=False)
    if bias:
        st.info(relative_bias(cfg, kind), icon=":material/straighten:")
    cols = st.columns(3 if bias else 2)
    with cols[0]:
        widgets.heatmap(
            figures.highlight_row(figs["scores"], query),
            h["scores"],
            q_tokens,
            k_tokens,
            key="qkv_scores",
            filename=f"scores_{name}",
        )
    if bias:
        with cols[1]:
            widgets.heatmap(
                figures.highlight_row(figs["bias"], query), h["bias"], q_tokens, k_tokens, key="qkv_bias", filename=f"bias_{name}"
            )
    with cols[-1]:
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

    row = worked.worked_row(trace, kind, layer, head, query, cfg.scale_scores)
    st.subheader(f"Query row {query}, worked by hand", anchor=False)
    st.text(f"query token: {row.query_label}")
    if row.rotary:
        st.markdown(f"**q** (the query vector, 1 × {d_head}), before and after rotation by its position {query}:")
        qvec = widgets.matrix_frame(np.stack([row.q_pre, row.q]), [q_tokens[query]] * 2, None)
        st.dataframe(qvec.set_axis(["before rotation", "after rotation (used)"]), key="qkv_qvec")
    else:
        st.markdown(f"**q** (the query vector, 1 × {d_head}):")
        st.dataframe(widgets.matrix_frame(row.q[None, :], [q_tokens[query]], None).set_axis([row.query_label]), key="qkv_qvec")
    if cfg.scale_scores:
        to_score = f"divided by `√{d_head} = {row.scale:.4f}`"
    else:
        to_score = "as it is (this model does not divide by √d_head)"
    if bias:
        to_score += ", plus this head's position bias for that query and key (the bias column)"
    st.markdown(
        f"**Each key:** `q·k` (dot product of q with that key's row of K), {to_score}, gives the score; "
        "keys the mask forbids get weight 0; the softmax turns the allowed scores into weights that sum to 1."
    )
    st.caption(
        "`q·k` is recomputed here from the q above and the rows of K; the score, the mask and the softmax weight "
        + ("(and the bias) " if bias else "")
        + "are the model's own numbers."
        + (
            f" Rotary model: “turned {row.formula}” is recomputed from q and k after rotation, what the model scored "
            "(compare the model's column); “unturned” from q and k before rotation, with no position in them. "
            "At distance i − j = 0 both are turned alike and the two agree; elsewhere the gap comes from the distance."
            if row.rotary
            else ""
        )
    )
    st.dataframe(row.steps_table(), key="qkv_steps")
    st.markdown(
        f"Sum of the weights: `{float(row.weights.sum()):.6f}`. "
        f"The recomputed {'turned ' if row.rotary else ''}`{row.formula}` differs from the model's scores by at most "
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


session.fragment(computation)()
