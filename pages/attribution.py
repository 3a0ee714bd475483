"""Rollout & saliency — where attention flows through all the layers, and which input tokens the prediction
depends on, beside the raw weights of the selected head: where attention and attribution agree, and where not.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from server import notices, session, shared_analyses, urlstate, widgets
from server.literal import md
from transformer.why import rollout
from viz import figures, why
from viz.figures import as_array
from viz.labels import unique_labels

FLOW_LIMITS = (
    f" Max flow is costly: up to {rollout.FLOW_MAX_TOKENS_SHALLOW} tokens through one or two layers, "
    f"{rollout.flow_max_tokens(3)} through three, {rollout.flow_max_tokens(rollout.FLOW_MAX_STEPS)} through "
    f"{rollout.FLOW_MAX_STEPS}, and no more than {rollout.FLOW_MAX_STEPS} layers (cross-attention counts each decoder layer twice)."
)

ctx = session.require_text(session.context())
trace = ctx.trace
notices.coverage(ctx, trace)
cfg = ctx.ckpt.config

top = st.columns([3, 3], vertical_alignment="center")
with top[0]:
    widgets.kind_picker(ctx, "attr_kind")
kind = ctx.kind
widgets.layer_head_controls(ctx, trace.n_layers(kind), ctx.n_heads, "attr")
layer, head = st.session_state["sel_layer"], st.session_state["sel_head"]
q_tokens, k_tokens = trace.query_tokens(kind), trace.key_tokens(kind)
q_labels = unique_labels(q_tokens)
st.selectbox(
    "Query token (the row compared below)",
    range(len(q_tokens)),
    format_func=q_labels.__getitem__,
    **session.bind("sel_query", "attr_query"),  # clamped to this kind's queries by the sidebar (ctx.query)
)
query = st.session_state["sel_query"]

# -- rollout and flow: attention composed through the layers ------------------------------------------------
roll = shared_analyses.rollout_maps(ctx.trace_key, trace, kind)  # (n_layers, Tq, Tk)
st.caption(rollout.EXPLANATIONS["rollout"] + (" " + rollout.EXPLANATIONS["cross"] if kind == "cross" else ""))
left, right = st.columns(2)
with left:
    fig = figures.attention_figure(trace, kind, layer, head, ctx.presentation)
    widgets.heatmap(
        figures.highlight_row(fig, query),
        trace.head(kind, layer, head)["weights"],
        q_tokens,
        k_tokens,
        key="attr_raw",
        filename=f"weights_{kind.replace(' ', '_')}_L{layer}_H{head}",
    )


def draw_through_layers(matrix, what: str, key: str) -> None:
    """A (queries × keys) map composed through layers 0..layer (rollout, flow), its query row framed, with its CSV."""
    fig = figures.token_heatmap(
        matrix,
        q_tokens,
        k_tokens,
        title=f"{what.replace('_', ' ')} through layers 0–{layer} ({kind})",
        value_name=what.split("_")[-1],
        zmin=0.0,
        zmax=1.0,
        presentation=ctx.presentation,
    )
    filename = f"{what}_{kind.replace(' ', '_')}_to_L{layer}"
    widgets.heatmap(figures.highlight_row(fig, query), matrix, q_tokens, k_tokens, key=key, filename=filename)


with right:
    draw_through_layers(roll[layer], "rollout", "attr_rollout")


def _choose_flow() -> None:
    st.session_state["sel_attr_flow"] = st.session_state["attr_flow_on"]  # the user's choice from now on


flow = None
cheap = kind != "cross" and layer < 2  # one or two layers: a closed form, no max-flow solver (rollout.max_flows)
chosen = st.session_state.get("sel_attr_flow")  # None: on where it is cheap
st.session_state["attr_flow_on"] = cheap if chosen is None else chosen
flow_col, flow_text = st.columns(2)
on = flow_text.toggle("Attention flow", key="attr_flow_on", on_change=_choose_flow)
flow_text.caption(rollout.EXPLANATIONS["flow"] + FLOW_LIMITS)
if on:
    try:
        flow = shared_analyses.flow_map(ctx.trace_key, trace, kind, layer)
    except rollout.FlowTooLong as e:
        flow_text.info(f"No attention flow for this input: {e}.")
    if flow is not None:
        with flow_col:
            draw_through_layers(flow, "attention_flow", "attr_flow")

# -- saliency: the gradient of one prediction ---------------------------------------------------------------
st.divider()
st.subheader("Which input tokens does the prediction depend on?", anchor=False)
if cfg.kind == "encoder" and not cfg.n_classes:
    st.info("Saliency needs a prediction to explain, and this encoder has no output head (its output is its hidden states).")
    session.sync_url(ctx, "attribution")
    st.stop()
methods = tuple(urlstate.SALIENCY_METHODS.values())
c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
method = c1.radio("Method", methods, horizontal=True, **session.bind("sel_attr_method", "attr_method"))
steps = urlstate.IG_DEFAULT_STEPS
if method == "integrated gradients":
    steps = c2.select_slider(
        "Steps (midpoint rule)",
        urlstate.IG_STEPS,
        help="More steps: the scores add up more closely to the change in log-probability (the gap is shown), at more cost.",
        **session.bind("sel_attr_steps", "attr_steps"),
    )

# Which prediction, and so which position both the attention rows and the saliency below explain:
# - a classifier's class, read from its first token (position 0): the rows are position 0's;
# - a decoder's next token at the selected query, when the rows are decoder positions (decoder self, cross);
# - on an encoder-decoder's encoder self, a decoder position picked here, and the rows beside it are the cross
#   attention's at that position (an encoder row predicts nothing): both over the source tokens.
decoder_rows = kind in ("decoder self", "cross")
row_kind = kind
if cfg.kind == "encoder":
    position, row_at = None, 0
    st.session_state["sel_attr_dec_pos"] = None  # a link's decoder position: this model has none
elif decoder_rows:
    position = row_at = query
else:
    d_labels = unique_labels(trace.query_tokens("cross"))
    last, picked, clamped = len(d_labels) - 1, st.session_state.get("sel_attr_dec_pos"), []
    if picked is not None:  # a link's or one picked on another text: this text may have fewer positions
        picked = urlstate.clamp(int(picked), len(d_labels), "decoder position", clamped)
    st.session_state["sel_attr_dec_pos"] = last if picked is None else picked
    for message in clamped:
        st.warning(message)
    position = row_at = st.selectbox(
        "Decoder position explained (saliency needs a prediction; encoder positions predict nothing)",
        range(len(d_labels)),
        format_func=d_labels.__getitem__,
        **session.bind("sel_attr_dec_pos", "attr_dec_position"),
    )
    if position == last:
        st.session_state["sel_attr_dec_pos"] = None  # the default: the last position, whatever the text
    row_kind = "cross"
row_label = unique_labels(trace.query_tokens(row_kind))[row_at]
row_layer = min(layer, trace.n_layers(row_kind) - 1)  # an encoder deeper than the decoder: its last layer
where = ("the predicted class, read" if position is None else "the next token predicted") + f" at position {md(row_label, 40)}"
if row_kind != kind:
    st.caption(
        f"The rows compared below are the cross attention's (layer {row_layer}) at decoder position {md(row_label, 40)}: "
        "what that prediction reads from the source, over the same source tokens as the saliency."
    )
elif row_at != query:
    st.caption(f"A classifier reads its class at position {md(row_label, 40)}: the rows compared below are that position's.")
result = shared_analyses.attribution(ctx.trace_key, ctx.ckpt, ctx.tokens, method, position, steps)
pred = result.prediction
st.caption(
    f"{result.explanation} Explained: {where}, {md(pred.label, 40)} with log-probability {pred.log_prob:.4f}."
    + (
        f" {result.steps} steps from the all-zero token vectors (log-probability {result.baseline_log_prob:.4f}); "
        f"the scores add up to the change within {abs(result.completeness_gap):.2g}."
        if result.method == "integrated gradients"
        else ""
    )
)
# Scores over the tokens the row's keys are: the source for encoder self and cross, the decoder's input for decoder self.
scores = result.source if (kind != "decoder self" or cfg.kind == "decoder") else result.target
roll_rows = roll if row_kind == kind else shared_analyses.rollout_maps(ctx.trace_key, trace, row_kind)
row = trace.head(row_kind, row_layer, head)["weights"][row_at]
at = f"position {row_label}"
series = {
    f"{row_kind} attention of layer {row_layer} · head {head}, row at {at}": row,
    f"rollout through layers 0–{row_layer}, row at {at}": roll_rows[row_layer][row_at],
}
if flow is not None and row_kind == kind:
    series[f"attention flow, row at {at}"] = flow[row_at]
# The scores are over the same tokens as the keys by construction (source or decoder input, whole).
assert len(scores.tokens) == len(k_tokens), (len(scores.tokens), len(k_tokens))
series[f"{method} of the prediction at {at}"] = scores.scores
widgets.chart(
    why.token_scores_figure(
        k_tokens, series, f"Per input token: {row_kind} attention and rollout beside {method}", ctx.presentation
    ),
    key="attr_scores",
)


def scores_csv() -> str:
    frame = pd.DataFrame({"token": list(k_tokens)})
    for name, values in series.items():
        frame[name] = as_array(values).reshape(-1)
    return frame.to_csv(index=True, index_label="position")


widgets.csv_download(
    scores_csv, key="csv_attr_scores", filename=f"attribution_{kind.replace(' ', '_')}_L{layer}_H{head}_q{row_at}"
)
session.sync_url(ctx, "attribution")
