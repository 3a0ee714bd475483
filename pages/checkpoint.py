"""Page 4 — Checkpoint: what was loaded (config, training facts, parameters, per-head weights, head jobs, entropy)."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import streamlit as st

from server import head_jobs, session, widgets
from viz import figures, metrics

ctx = session.context()
limit = int(st.get_option("server.maxUploadSize"))
st.caption(
    f"Pick a checkpoint in the sidebar, or choose “Upload…” there to load your own .safetensors file (at most {limit} MB)."
)
if ctx is None:
    st.info("No checkpoint is loaded yet.")
    st.stop()

cfg = ctx.ckpt.config


def facts(values: dict, key: str) -> None:
    """A two-column table of names and values, wide enough for names like `metrics.token_accuracy`."""
    frame = pd.DataFrame({"name": list(values), "value": [str(v) for v in values.values()]})
    st.dataframe(
        frame,
        key=key,
        hide_index=True,
        height="content",
        column_config={"name": st.column_config.TextColumn(width="medium"), "value": st.column_config.TextColumn(width="large")},
    )


st.subheader("Checkpoint", anchor=False)
st.text(ctx.label)
left, right = st.columns(2)
with left:
    st.markdown("**Configuration**")
    config = {k: (", ".join(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
    config["d_head"] = cfg.d_head
    facts(config, "ck_config")
with right:
    st.markdown("**Training facts and metrics**")
    training = ctx.ckpt.training or {}
    flat = {k: v for k, v in training.items() if not isinstance(v, dict | list)}
    nested = {}
    for k, v in training.items():  # a short dict of plain values (the final metrics) joins the table as "metrics.loss"
        if isinstance(v, dict) and len(v) <= 8 and not any(isinstance(x, dict | list) for x in v.values()):
            flat.update({f"{k}.{sub}": x for sub, x in v.items()})
        elif isinstance(v, dict | list):
            nested[k] = v
    if flat:
        facts(flat, "ck_training")
    if nested:  # e.g. the training plan and history: their names shown, the contents a click away
        st.json(json.loads(json.dumps(nested, default=str)), expanded=1)
    if not training:
        st.text("This checkpoint records no training facts.")

st.subheader("Parameters per module", anchor=False)
c1, c2 = st.columns(2)
c1.dataframe(metrics.stack_totals(ctx.ckpt.model), key="ck_params_parts")
with c2.expander("Every module"):
    st.dataframe(metrics.parameter_table(ctx.ckpt.model), key="ck_params")

st.subheader("Per-head projection weights", anchor=False)
widgets.kind_picker(ctx, "ck_kind")
widgets.layer_head_controls(ctx, cfg.n_layers, cfg.n_heads, "ck")
layer, head, kind = st.session_state["sel_layer"], st.session_state["sel_head"], ctx.kind
mats = metrics.head_projections(ctx.ckpt.model, kind, layer, head)
cols = st.columns(4)
for col, (name, m) in zip(cols, mats.items()):
    rows, cols_ = m.shape
    row_name, col_name = ("d_model", "d_head") if name != "W_O" else ("d_head", "d_model")
    fig = figures.token_heatmap(
        m,
        [str(i) for i in range(rows)],
        None,
        title=f"{name} ({rows} × {cols_})",
        value_name=name,
        row_name=row_name,
        col_name=col_name,
        colorscale=figures.SIGNED_SCALE,
        fmt=".5g",
        presentation=ctx.presentation,
    )
    with col:
        widgets.heatmap(
            fig,
            m,
            [str(i) for i in range(rows)],
            None,
            key=f"ck_{name}",
            filename=f"{name}_{kind.replace(' ', '_')}_L{layer}_H{head}",
        )

st.subheader("Head-job scores", anchor=False)
table = head_jobs.table(ctx, kind)
if table is None:
    st.text("No head-job scores for this checkpoint and attention kind.")
else:
    st.dataframe(table, key="ck_jobs")

st.subheader("Attention entropy per head", anchor=False)
if ctx.tokens is None:
    st.info("Type a text in the sidebar to measure the entropy of each head's attention on it.")
else:
    ent = metrics.attention_entropy(ctx.trace, kind)
    fig = figures.token_heatmap(
        ent,
        [str(i) for i in range(ent.shape[0])],
        None,
        title=f"{kind}: mean entropy of the weight rows (bits) on this text",
        value_name="bits",
        row_name="layer",
        col_name="head",
        colorscale=figures.WEIGHTS_SCALE,
        fmt=".3f",
        presentation=ctx.presentation,
    )
    st.caption("0 bits: every query looks at a single key. High: attention spread evenly (log₂ of the number of keys at most).")
    widgets.heatmap(
        fig, ent, [str(i) for i in range(ent.shape[0])], None, key="ck_entropy", filename=f"entropy_{kind.replace(' ', '_')}"
    )
