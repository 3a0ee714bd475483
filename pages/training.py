"""Page 6 — Training: how one head's attention formed, snapshot by snapshot, on the text in the sidebar.

The shipped translator and language model carry snapshots (`assets/*.snapshots.safetensors`,
written by `python -m transformer.train --n-snapshots N`). Every snapshot runs on the same tokens
as the other pages (for the translator: the final model's greedy translation, or the edited target).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from transformer import catalog
from transformer.checkpoint import CheckpointError
from viz import figures, session, shared, ui
from viz.literal import md

ctx = session.require_text(session.context())
entry = catalog.available().get(ctx.name)
path = catalog.snapshots_path(entry) if entry is not None else None
if path is None:
    st.info(
        "This checkpoint ships no training snapshots. The Translator and the Language model do; to record "
        "your own, train with `python -m transformer.train --n-snapshots 9` and keep the `.snapshots.safetensors` "
        "file next to the checkpoint in the assets folder."
    )
    st.stop()

try:
    identity = shared.identity_of(path)  # path + mtime + size: a rewritten file is loaded again
    snaps = shared.snapshots(identity, str(path))
except CheckpointError as e:
    st.error(f"Could not read the training snapshots: {md(e, 400)}")
    st.stop()


def shape(ckpt) -> tuple:
    return ckpt.config.kind, ckpt.config.n_layers, ckpt.config.n_heads, ckpt.tokenizer.to_json()


if not snaps or shape(snaps[0][1]) != shape(ctx.ckpt):
    st.error(f"{path.name} does not belong to {ctx.label} (no snapshots, or another shape or tokenizer): nothing to show.")
    st.stop()

ui.kind_picker(ctx, "tr_kind")
ui.layer_head_controls(ctx, ctx.n_layers, ctx.n_heads, "tr")
kind, layer, head = ctx.kind, st.session_state["sel_layer"], st.session_state["sel_head"]
steps = [step for step, _ in snaps]
planned = ctx.ckpt.training.get("steps") if ctx.ckpt.training else None
labels = [f"step {step}" for step in steps]
traces = [
    shared.snapshot_trace(identity, str(path), i, ctx.identity, ctx.text, ctx.target, ctx.tokens) for i in range(len(snaps))
]

try:
    dtypes = shared.snapshot_dtypes(identity, str(path))
except CheckpointError:
    dtypes = ()
if not dtypes:
    stored = ""
elif set(dtypes) <= {"float32", "float64"}:
    stored = f", stored in {' and '.join(dtypes)}: the weights as they were at each step, unrounded"
else:
    stored = f", stored in {' and '.join(dtypes)}; the last one is the trained model up to that rounding"
st.caption(
    f"{len(steps)} snapshots from step 0 (random weights) to step {steps[-1]}"
    + (f" of {planned}" if isinstance(planned, int) and planned > 0 else "")  # a number from the metadata, or nothing
    + f"{stored}. Same colours (0–1) in every panel."
)
ui.chart(figures.training_strip(traces, labels, kind, layer, head, ctx.presentation), key="tr_strip")


def strip_csv() -> str:
    """Every panel's matrix as one long table: step, query, key, weight."""
    frames = []
    for step, trace in zip(steps, traces):
        matrix = ui.matrix_frame(trace.head(kind, layer, head)["weights"], trace.query_tokens(kind), trace.key_tokens(kind))
        frames.append(matrix.stack().rename("weight").rename_axis(["query", "key"]).reset_index().assign(step=step))
    return pd.concat(frames)[["step", "query", "key", "weight"]].to_csv(index=False)


ui.csv_download(strip_csv, key="csv_tr_strip", filename=f"weights_by_step_{kind.replace(' ', '_')}_L{layer}_H{head}")

index = st.select_slider("Snapshot", range(len(steps)), format_func=lambda i: labels[i], key="tr_step", value=len(steps) - 1)
trace = traces[index]
fig = figures.attention_figure(trace, kind, layer, head, ctx.presentation)
fig.update_layout(title_text=f"{labels[index]} · {fig.layout.title.text}")
ui.heatmap(
    fig,
    trace.head(kind, layer, head)["weights"],
    trace.query_tokens(kind),
    trace.key_tokens(kind),
    key="tr_heatmap",
    filename=f"weights_step{steps[index]}_{kind.replace(' ', '_')}_L{layer}_H{head}",
)
session.sync_url(ctx)
