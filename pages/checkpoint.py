"""Page 4 — Checkpoint: what was loaded (its architecture in words, where it came from, config, training facts,
parameters, per-head weights, head jobs, entropy and attention sinks).

The attention-sink grid lives here rather than on the Model view: it is a per-head statistic of the model on this
text, like the entropy grid beside it, and exact only from the full trace (the Model view draws pooled maps, whose
first column is a block max rather than the share on the first token, so that it can show long texts).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import streamlit as st

from server import head_jobs, model_sources, notices, session, shared_analyses, widgets
from server.literal import md
from transformer.checkpoints import verify
from transformer.model.describe import describe, spans
from transformer.why import sinks
from viz import figures, grid, metrics
from viz.sinks import sink_figure

ORIGIN = ("source", "model_type", "architecture", "weights", "context", "origin", "path")  # training facts: where from

ctx = session.context()
notices.coverage(ctx)
limit = int(st.get_option("server.maxUploadSize"))
st.caption(
    "Pick a checkpoint in the sidebar, or choose “Upload…” there to load your own: one of this app's .safetensors "
    f"files, a Hugging Face folder's files (or a .zip of it), or a nanoGPT ckpt.pt with its meta.pkl (at most {limit} MB). "
    "Larger models open from a folder on the server: `make run MODELS=path`, or the Hugging Face cache."
)
if ctx is None:
    st.info("No checkpoint is loaded yet.")
    # Where this server looks for models, and what it found there that cannot be opened (and why).
    model_sources.render_sources(st.expander("Where this server finds models", expanded=True))
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


def parity_table(result: dict, key: str) -> None:
    """A parity check (from the file, or just run): one sentence and the small table, both literal."""
    st.text(metrics.parity_sentence(result))
    st.dataframe(metrics.parity_frame(result), key=key, hide_index=True, height="content")


st.subheader("Checkpoint", anchor=False)
st.text(ctx.label)
st.markdown(f"**Architecture:** {describe(cfg)}.")  # our own words and numbers from the validated config
if cfg.kind == "encoder-decoder":  # the generation rules name the tokenizer's tokens: literal text, never Markdown
    st.markdown("**How it writes a translation** (greedy, as transformers' `generate` with `num_beams=1`):")
    rules = ctx.ckpt.decoding.describe(ctx.ckpt.tokenizer.id_to_token, cfg.max_len)
    st.text(rules[:1].upper() + rules[1:] + ".")
training = ctx.ckpt.training or {}
origin = {k: training[k] for k in ORIGIN if k in training and not isinstance(training[k], dict | list)}
parity = training.get("parity") if isinstance(training.get("parity"), dict) else None
entry = session.entries().get(ctx.name)
hf_folder = entry.path if entry is not None and entry.path.is_dir() and (entry.path / "config.json").is_file() else None
if origin or parity or hf_folder is not None:
    st.markdown("**Where it came from**")
    where, checks = st.columns(2)
    if origin:
        with where:
            facts(origin, "ck_origin")
    with checks:
        if parity:
            parity_table(parity, "ck_parity")
        if hf_folder is not None and verify.available():
            checked = shared_analyses.parity_done(ctx.identity)
            # A callback marks the click (a button's return value does not survive this app's page switch).
            st.button(
                "Check against transformers",
                key="ck_verify",
                on_click=lambda: st.session_state.update(_ck_verify=True),
                help="Load this folder with the transformers library itself, run it and this app's model on a few "
                "texts, and report the largest differences of the attention weights and of the output.",
            )
            if st.session_state.pop("_ck_verify", False):
                try:
                    with st.spinner("Running transformers and this model on a few texts…"):
                        checked = shared_analyses.parity(ctx.identity, str(hf_folder), ctx.ckpt)
                except Exception as e:  # a message, never a traceback
                    st.error(f"The check could not run: {md(f'{type(e).__name__}: {e}', 400)}")
            if checked is not None:
                st.markdown("**The check, run on this server:**")
                parity_table(checked, "ck_verified")

model_sources.render_sources(st.expander("Where this server finds models"))

left, right = st.columns(2)
with left:
    st.markdown("**Configuration**")
    config = {k: (", ".join(map(str, v)) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
    config["d_head"] = cfg.d_head
    facts(config, "ck_config")
with right:
    st.markdown("**Training facts and metrics**")
    shown = {k: v for k, v in training.items() if k not in ORIGIN and k != "parity"}  # those are shown above
    flat = {k: v for k, v in shown.items() if not isinstance(v, dict | list)}
    nested = {}
    for k, v in shown.items():  # a short dict of plain values (the final metrics) joins the table as "metrics.loss"
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
    elif not shown:
        st.text("Nothing beyond where it came from (above).")

st.subheader("Parameters per module", anchor=False)
c1, c2 = st.columns(2)
c1.dataframe(metrics.stack_totals(ctx.ckpt.model), key="ck_params_parts")
with c2.expander("Every module"):
    st.dataframe(metrics.parameter_table(ctx.ckpt.model), key="ck_params")

st.subheader("Per-head projection weights", anchor=False)
widgets.kind_picker(ctx, "ck_kind")
widgets.layer_head_controls(ctx, ctx.n_layers, cfg.n_heads, "ck")
layer, head, kind = st.session_state["sel_layer"], st.session_state["sel_head"], ctx.kind
mats = metrics.head_projections(ctx.ckpt.model, kind, layer, head)
shared_kv = f" · key/value head {head // cfg.group_size}" if cfg.group_size > 1 else ""
if shared_kv:
    st.caption(
        f"W_K and W_V are key/value head {head // cfg.group_size}'s, shared by query heads "
        f"{head // cfg.group_size * cfg.group_size}–{(head // cfg.group_size + 1) * cfg.group_size - 1}."
    )
cols = st.columns(4)
for col, (name, m) in zip(cols, mats.items()):
    rows, cols_ = m.shape
    row_name, col_name = ("d_model", "d_head") if name != "W_O" else ("d_head", "d_model")
    fig = figures.token_heatmap(
        m,
        [str(i) for i in range(rows)],
        None,
        title=f"{name} ({rows} × {cols_}){shared_kv if name in ('W_K', 'W_V') else ''}",
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
if head_jobs.note(ctx):
    st.caption(head_jobs.note(ctx))
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
    n_keys = len(ctx.trace.key_tokens(kind))
    even = math.log2(n_keys)  # the entropy of attention spread evenly over every key
    top = max(1.0, even)  # the top colour; 1 bit for a single key (then always 0 bits), not an empty range
    fig = figures.token_heatmap(
        ent,
        [str(i) for i in range(ent.shape[0])],
        None,
        title=f"{kind}: mean entropy of the weight rows (bits) on this text",
        value_name="bits",
        row_name="layer",
        col_name="head",
        colorscale=figures.WEIGHTS_SCALE,
        zmin=0.0,  # the whole range the caption explains: 0 bits (one key) to log₂ of the keys (even)
        zmax=top,
        fmt=".3f",
        presentation=ctx.presentation,
    )
    fig.update_xaxes(tickmode="linear", tick0=0, dtick=1)  # heads are whole numbers: no tick at "0.5"
    st.caption(
        f"Colours from 0 bits (every query looks at a single key) to log₂ {n_keys} = {even:.2f} bits, "
        f"attention spread evenly over all {n_keys} keys."
        + (" A causal query sees only the keys up to itself, so its own ceiling is lower." if kind == "decoder self" else "")
    )
    widgets.heatmap(
        fig, ent, [str(i) for i in range(ent.shape[0])], None, key="ck_entropy", filename=f"entropy_{kind.replace(' ', '_')}"
    )

    # -- attention sinks: the share of each head's attention on the first token (see the docstring for why here)
    st.subheader("Attention sinks: how much attention lands on the first token", anchor=False)
    st.caption(sinks.EXPLANATION)
    trace = ctx.trace
    scores = sinks.trace_sink_scores(trace, kind)  # (n_layers, n_heads), exact from the trace's weights and mask
    first = trace.key_tokens(kind)[0]
    group = trace.attention(kind, 0).group_size

    def _open_sink() -> None:
        picked = grid.pick_from_selection(st.session_state["ck_sinks"].selection.points)
        if picked is not None:
            session.set_selection(kind=kind, layer=picked[0], head=picked[1])
            st.session_state["_goto"] = "attention"

    widgets.chart(
        sink_figure(scores, kind, first, group, selected=(layer, head), presentation=ctx.presentation),
        key="ck_sinks",
        on_select=_open_sink,
        selection_mode="points",
    )
    windowed = [layer_ for layer_ in range(cfg.layers_of(kind)) if kind == "decoder self" and cfg.window_of(layer_)]
    if windowed and len(trace.query_tokens(kind)) > cfg.sliding_window:
        st.caption(
            f"In layer(s) {spans(windowed)} the sliding window of {cfg.sliding_window} tokens hides the first token from "
            f"queries {cfg.sliding_window} and later: there only "
            + {1: "no query counts (NaN).", 2: "query 1 counts."}.get(
                cfg.sliding_window, f"queries 1–{cfg.sliding_window - 1} count."
            )
        )
    st.caption(
        f"On this text the first token is {md(first, 40)}. Click a cell to open that head on the Attention page; "
        "there, “Leave the first token out of the colour scale” shows what the rest of a sink head's attention does."
    )
    widgets.csv_download(
        lambda: pd.DataFrame(
            [(layer_, h, float(scores[layer_, h])) for layer_ in range(scores.shape[0]) for h in range(scores.shape[1])],
            columns=["layer", "head", "share on the first token"],
        ).to_csv(index=False),
        key="csv_ck_sinks",
        filename=f"sinks_{kind.replace(' ', '_')}",
    )
