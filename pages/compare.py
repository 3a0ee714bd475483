"""Compare — one head, two inputs or two models: two texts on this checkpoint, this text on two
checkpoints, or this text at two training snapshots; side by side, with B − A when the tokens line up.

Panel A is always what the sidebar says (for snapshots: snapshot A of the sidebar's checkpoint).
"""

from __future__ import annotations

import streamlit as st

from server import notices, session, shared, urlstate, widgets
from server.literal import md
from transformer.checkpoints import catalog
from transformer.checkpoints.format import CheckpointError
from viz import compare, figures

ctx = session.require_text(session.context())
notices.coverage(ctx)
session.stop_unless_trace_fits(ctx)  # panel A is a full trace of the sidebar's text (or of a snapshot on it)
MODES = {
    "texts": "Two texts, this checkpoint",
    "checkpoints": "This text, two checkpoints",
    "snapshots": "This text, two training snapshots",
}
st.caption(compare.EXPLANATION)
st.radio("Compare", list(MODES), format_func=MODES.get, horizontal=True, **session.bind("sel_cmp", "cmp_mode"))
mode = st.session_state["sel_cmp"]


def stop(message: str) -> None:
    st.info(message)
    session.sync_url(ctx, "compare")
    st.stop()


def text_panel():
    """B: a second text on the sidebar's checkpoint (decoded greedily for an encoder-decoder)."""
    if st.session_state.get("sel_text2") is None:  # start from the sidebar's text: change a word and see what moves
        st.session_state["sel_text2"] = ctx.text
    st.text_area(
        "Text B",
        help="Change a word or two: when B has as many tokens as A, the difference B − A is drawn below.",
        height=68,
        max_chars=urlstate.MAX_TEXT_CHARS,
        **session.bind("sel_text2", "cmp_text2"),
    )
    text = st.session_state["sel_text2"]
    if not text.strip():
        stop("Text B is empty: type a second sentence to compare with the sidebar's.")
    tokens = shared.tokens_for(ctx.identity, text, None, ctx.ckpt)
    if tokens[0].truncated:
        st.warning(f"Text B is longer than this model reads: its last {tokens[0].truncated} tokens are left out.")
    if not shared.trace_fits(ctx.ckpt, tokens):
        stop("Text B is too long for a full trace on this server: shorten it.")
    note = " (target: its greedy translation)" if ctx.ckpt.config.kind == "encoder-decoder" else ""
    return ctx.trace, "A: the sidebar's text", shared.trace_for(ctx.identity, text, None, ctx.ckpt), f"B: text B{note}"


def checkpoint_panel():
    """B: the sidebar's text on another checkpoint of the catalogue (through that checkpoint's own tokenizer)."""
    others = {name: entry for name, entry in session.entries().items() if name != ctx.name}
    if not others:
        stop("There is no other checkpoint to compare with.")
    if st.session_state.get("sel_checkpoint2") not in others:
        st.session_state["sel_checkpoint2"] = next(iter(others))
    st.selectbox(
        "Checkpoint B",
        list(others),
        format_func=lambda n: session.short_label(others[n].label)[0],
        **session.bind("sel_checkpoint2", "cmp_checkpoint2"),
    )
    entry = others[st.session_state["sel_checkpoint2"]]
    identity, ckpt, error = session.load_entry(entry)
    if ckpt is None:
        st.error(error)
        session.sync_url(ctx, "compare")
        st.stop()
    tokens = shared.tokens_for(identity, ctx.text, None, ckpt)
    if not shared.trace_fits(ckpt, tokens):
        stop("The text is too long for a full trace of checkpoint B on this server: shorten it.")
    a = session.short_label(ctx.label)[0] if ctx.name != session.UPLOAD else "the uploaded checkpoint"
    return ctx.trace, f"A: {a}", shared.trace_for(identity, ctx.text, None, ckpt), f"B: {session.short_label(entry.label)[0]}"


def snapshot_panel():
    """A and B: two training snapshots of the sidebar's checkpoint, on the same tokens as every other page."""
    entry = session.entries().get(ctx.name)
    path = catalog.snapshots_path(entry) if entry is not None else None
    if path is None:
        stop("This checkpoint has no training snapshots (the Translator and the Language model have).")
    try:
        identity = shared.identity_of(path)
        snaps = shared.snapshots(identity, str(path))
    except CheckpointError as e:
        st.error(f"Could not read the training snapshots: {md(e, 400)}")
        st.stop()
    if not shared.snapshots_belong(snaps, ctx.ckpt):
        stop(f"{path.name} does not belong to this checkpoint (another shape or tokenizer).")
    labels = [f"step {step}" for step, _ in snaps]
    last = len(snaps) - 1
    for name, default in (("sel_snap1", 0), ("sel_snap2", last)):  # None (not in the link): first and last
        value = st.session_state.get(name)
        st.session_state[name] = default if value is None else min(int(value), last)
    left, right = st.columns(2)
    left.select_slider("Snapshot A", range(len(snaps)), format_func=labels.__getitem__, **session.bind("sel_snap1", "cmp_snap1"))
    right.select_slider("Snapshot B", range(len(snaps)), format_func=labels.__getitem__, **session.bind("sel_snap2", "cmp_snap2"))
    i, j = st.session_state["sel_snap1"], st.session_state["sel_snap2"]
    trace = lambda k: shared.snapshot_trace(identity, str(path), k, ctx.identity, ctx.text, ctx.target, ctx.tokens)
    return trace(i), f"A: {labels[i]}", trace(j), f"B: {labels[j]}"


trace_a, label_a, trace_b, label_b = {"texts": text_panel, "checkpoints": checkpoint_panel, "snapshots": snapshot_panel}[mode]()

top = st.columns([3, 2], vertical_alignment="center")
with top[0]:
    widgets.kind_picker(ctx, "cmp_kind")
with top[1]:
    skip_first = widgets.first_token_switch("cmp_skip_first")
kind = ctx.kind
widgets.layer_head_controls(ctx, trace_a.n_layers(kind), ctx.n_heads, "cmp")
layer, head = st.session_state["sel_layer"], st.session_state["sel_head"]
missing = compare.has_head(trace_b, kind, layer, head)
if missing:
    stop(f"B {missing}: pick a kind, layer and head that both have.")

# What each CSV is named after (widgets.download_name): each panel's own checkpoint, text and snapshot.
names = [widgets.checkpoint_name(ctx)] * 2
texts = [(ctx.text, ctx.target)] * 2
views = ["a", "b"]
if mode == "texts":
    texts[1] = (st.session_state["sel_text2"], None)
elif mode == "checkpoints":
    names[1] = st.session_state["sel_checkpoint2"]
else:
    views = [f"a_snap{st.session_state['sel_snap1']}", f"b_snap{st.session_state['sel_snap2']}"]
columns = st.columns(2)
# With the first token left out, both panels share one colour range (the larger of their other columns' maxima).
colour_top = figures.top_without_first_column(*(t.head(kind, layer, head)["weights"] for t in (trace_a, trace_b)))
for col, trace, label, key, name, text, view in zip(
    columns, (trace_a, trace_b), (label_a, label_b), "ab", names, texts, views, strict=True
):
    with col:
        fig = figures.attention_figure(trace, kind, layer, head, ctx.presentation, label=label)
        widgets.heatmap(
            widgets.leave_out_first(fig, trace.key_tokens(kind)[0], skip_first, colour_top),
            trace.head(kind, layer, head)["weights"],
            trace.query_tokens(kind),
            trace.key_tokens(kind),
            key=f"cmp_heatmap_{key}",
            filename=f"compare_{view}_{kind.replace(' ', '_')}_L{layer}_H{head}",
            checkpoint=name,
            texts=text,
        )

why_not = compare.mismatch(trace_a, trace_b, kind)
if why_not:
    st.info(why_not)
else:
    diff = compare.difference(trace_a, trace_b, kind, layer, head)
    rows, q_differ = compare.aligned_tokens(trace_a.query_tokens(kind), trace_b.query_tokens(kind))
    cols, k_differ = compare.aligned_tokens(trace_a.key_tokens(kind), trace_b.key_tokens(kind))
    differ = sorted(set(q_differ) | set(k_differ))
    if differ:
        st.caption(f"The tokens differ at position(s) {', '.join(map(str, differ[:20]))}: the axes show them as A→B.")
    widgets.heatmap(
        widgets.leave_out_first(
            compare.difference_figure(diff, rows, cols, kind, layer, head, ctx.presentation), cols[0], skip_first
        ),
        diff,
        rows,
        cols,
        key="cmp_diff",
        filename=f"compare_difference{'_' + '_'.join(views) if mode == 'snapshots' else ''}_{kind.replace(' ', '_')}_L{layer}_H{head}",
        checkpoint=names[0] if names[0] == names[1] else f"{names[0]}_vs_{names[1]}",
        texts=(*texts[0], *texts[1]),
    )
session.sync_url(ctx, "compare")
