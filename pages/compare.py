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
from viz import compare, figures, word_swap

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


AUTO_TEXT2 = session.AUTO_TEXT2  # the B this page chose itself (the link leaves it out: session._page_param)


def automatic_text_b() -> dict | None:
    """Text B chosen by the page, so that it opens on a difference: A with one word changed; None when B is the user's.

    A B the user typed, or one a link gave, is never overwritten. The page's own B follows A: another text or
    checkpoint in the sidebar gives another B. "change" is word_swap's (B, old word, new word), or None when no
    word could be swapped (B is then A itself).
    """
    state = st.session_state
    made = state.get(AUTO_TEXT2)
    if state.get("sel_text2") is not None and (made is None or state["sel_text2"] != made["text2"]):
        return None
    if made is None or made["for"] != (ctx.identity, ctx.text):
        examples = [ex["text"] for ex in session.examples(ctx.name)]
        change = word_swap.one_word_changed(ctx.text, ctx.ckpt.tokenizer, [*examples, ctx.text])
        made = {"for": (ctx.identity, ctx.text), "text2": change[0] if change else ctx.text, "change": change}
        state[AUTO_TEXT2] = made
    state["sel_text2"] = made["text2"]
    return made


def text_panel():
    """B: a second text on the sidebar's checkpoint (decoded greedily for an encoder-decoder)."""
    made = automatic_text_b()
    st.text_area(
        "Text B",
        help="Change a word or two: when B has as many tokens as A, the difference B − A is drawn below.",
        height=68,
        max_chars=urlstate.MAX_TEXT_CHARS,
        **session.bind("sel_text2", "cmp_text2"),
    )
    if made is not None and made["change"] is not None:
        _, old, new = made["change"]
        st.caption(f"B is A with {md(old, 40)} changed to {md(new, 40)}: type in B to compare another sentence.")
    elif made is not None:
        st.caption("No word of A could be swapped for another that this model reads whole: type a different sentence in B.")
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


KINDS_SEEN = "_cmp_attention_kinds"  # path -> attention kinds of a catalogue checkpoint (None: not known)
AUTO_CHECKPOINT2 = "_cmp_auto_checkpoint2"  # (A's identity, B's name): the B this page chose itself


def attention_kinds(entry: catalog.CatalogEntry) -> tuple[str, ...] | None:
    """The attention kinds a catalogue checkpoint computes (`catalog.attention_kinds`, read once a session); None when
    not known: a Hugging Face or nanoGPT folder is known once it has been loaded as B (`checkpoint_panel` notes it)."""
    seen = st.session_state.setdefault(KINDS_SEEN, {})
    key = str(entry.path)
    if key not in seen:
        seen[key] = catalog.attention_kinds(entry)
    return seen[key]


def partners() -> tuple[dict[str, catalog.CatalogEntry], list[str]]:
    """The other checkpoints of the catalogue, and their names in the order offered as B (same kinds as A first)."""
    others = {name: entry for name, entry in session.entries().items() if name != ctx.name}
    kinds = {name: attention_kinds(entry) for name, entry in others.items()}
    return others, compare.order_partners(ctx.ckpt.config.attention_kinds, kinds, ctx.kind)


def checkpoint_panel():
    """B: the sidebar's text on another checkpoint of the catalogue (through that checkpoint's own tokenizer).

    Until the user picks one (here or in a link), B is the page's choice: one computing the same attention as A,
    chosen again when A changes.
    """
    others, order = partners()
    if not others:
        stop("There is no other checkpoint to compare with.")
    state = st.session_state
    chosen, auto = state.get("sel_checkpoint2"), state.get(AUTO_CHECKPOINT2)
    if chosen not in others or (auto is not None and auto[1] == chosen and auto[0] != ctx.identity):
        state["sel_checkpoint2"] = order[0]
        state[AUTO_CHECKPOINT2] = (ctx.identity, order[0])
    st.selectbox(
        "Checkpoint B",
        order,
        format_func=lambda n: session.short_label(others[n].label)[0],
        **session.bind("sel_checkpoint2", "cmp_checkpoint2"),
    )
    entry = others[st.session_state["sel_checkpoint2"]]
    identity, ckpt, error = session.load_entry(entry)
    if ckpt is None:
        st.error(error)
        session.sync_url(ctx, "compare")
        st.stop()
    state[KINDS_SEEN][str(entry.path)] = ckpt.config.attention_kinds
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
if missing and mode == "checkpoints" and kind not in trace_b.kinds:
    others, order = partners()
    same_kind_elsewhere = attention_kinds(others[order[0]]) == ctx.ckpt.config.attention_kinds
    stop(compare.kinds_differ(missing, trace_a.kinds, trace_b.kinds, same_kind_elsewhere))
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
    if not diff.any():
        same_text = mode == "texts" and st.session_state["sel_text2"] == ctx.text
        st.caption(compare.SAME_TEXT if same_text else compare.NOTHING_DIFFERS)
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
