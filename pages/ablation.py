"""Ablation — knock heads out and see what the model's output loses; sweep every head to find those that matter.

A knocked-out head's output (its weighted sum of values, before W_O) is replaced by zeros or by its
mean over reference texts; the model reruns with `forward(ablate=...)` (transformer/why/ablation.py).
Both the ablation and the sweep are computed once per (checkpoint, text, options) and shared.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from server import notices, session, shared_analyses, urlstate, widgets
from server.literal import md
from transformer.why import ablation, head_jobs
from viz import grid, why
from viz.figures import as_array

ctx = session.require_text(session.context())
notices.coverage(ctx)
# Ablations and sweeps hold output distributions and batched activations of the whole text: the same
# budget as a full trace decides which texts this server takes (a long text is offered a cut).
session.stop_unless_trace_fits(ctx)
cfg = ctx.ckpt.config
key = ctx.trace_key
st.caption(
    "Knock out heads: each chosen head's output (its weighted sum of the values, before the output projection W_O) "
    "is replaced by zeros, or by its mean over reference texts, and the model runs again on the same tokens; the "
    "charts show what changed in its output."
)
if cfg.group_size > 1:
    st.caption(
        f"This model's {cfg.n_heads} query heads share {cfg.kv_heads} key/value heads ({cfg.group_size} each): a head here "
        "is a query head, and knocking it out removes its own output only; the key/value head it shares stays, "
        "for the other query heads of its group."
    )

# -- which heads, how ---------------------------------------------------------------------------------------
heads_all = ablation.all_heads(cfg)
wanted = tuple(st.session_state.get("sel_heads") or ())
known = set(heads_all)
kept = tuple(h for h in wanted if h in known)
if len(kept) < len(wanted):  # from the link, or chosen on another checkpoint
    st.warning(f"{len(wanted) - len(kept)} head(s) chosen do not exist in this model and were left out.")
st.session_state["sel_heads"] = list(kept)


def head_label(h) -> str:
    kind, layer, head = h
    return f"{kind} · L{layer} H{head}"


top = st.columns([4, 2, 1], vertical_alignment="bottom")
top[0].multiselect(
    "Heads to knock out",
    heads_all,
    format_func=head_label,
    placeholder="Pick heads, or click a cell of the sweep below…",
    **session.bind("sel_heads", "abl_heads"),
)
top[1].radio(
    "Replace their output by",
    urlstate.ABLATION_MODES,
    format_func={"zero": "zeros", "mean": "their mean"}.get,
    horizontal=True,
    help="Zeros: the head adds nothing. Mean: the head adds what it adds on average over reference texts, "
    "so only what it does for this particular text is taken away.",
    **session.bind("sel_ablation", "abl_mode"),
)


def _all() -> None:
    st.session_state["sel_heads"] = list(heads_all)


top[2].button("All heads", key="abl_all", on_click=_all, width="stretch")
mode, heads = st.session_state["sel_ablation"], st.session_state["sel_heads"]
tokens = ctx.tokens


if not heads:
    st.info("No head is knocked out yet: pick some above, or click a cell of the sweep below.")
else:
    result = shared_analyses.ablate(key, ctx.ckpt, tokens, heads, mode)
    if result.reference:
        st.caption(f"Mean ablation: each head's mean output over {md(result.reference, 200)}.")
    if len(heads) == len(heads_all):
        st.caption("Every head is knocked out: what is left is the embeddings and the feed-forward layers.")
    # What changed, by the model's job: (labels, before, after, quantity, title, CSV name); one chart and CSV below.
    y_range = (0, 1)
    if isinstance(result, ablation.LMAblation):
        changed = sum(a != b for a, b in zip(result.top_before, result.top_after))
        st.markdown(
            f"**Mean KL divergence** of the next-token distribution: {float(result.kl.mean()):.4f} nats · "
            f"the top prediction changed at {changed} of {len(result.top_before)} positions."
        )
        labels = [f"{a} → {b}" for a, b in zip(result.tokens, result.tokens[1:])]
        shown = (
            labels,
            result.p_next_before,
            result.p_next_after,
            "p(next)",
            "Probability of the token that comes next",
            "next_token",
        )
    elif isinstance(result, ablation.TranslationAblation):
        st.markdown("**Greedy translation** with all heads, then with the heads knocked out:")
        st.text(f"before: {result.translation_before}\nafter:  {result.translation_after}")
        st.caption("The translation changed." if result.changed else "The translation did not change.")
        title = "Probability of each token of the original translation (teacher-forced)"
        shown = (result.target_tokens, result.p_target_before, result.p_target_after, "p(token)", title, "translation")
    elif isinstance(result, ablation.ClassifierAblation):
        st.markdown(
            f"**Predicted class** before: {md(result.predicted_before, 60)} · after: {md(result.predicted_after, 60)} · "
            f"KL divergence {result.kl:.4f} nats"
        )
        shown = (result.class_names, result.probs_before, result.probs_after, "p(class)", "Class probabilities", "classes")
    else:  # an encoder without an output head: its output is the final hidden states
        title = "This model's output is its final hidden states: cosine similarity of each token's, before (1) and after"
        shown = (result.tokens, [1.0] * len(result.tokens), result.cosine, "cosine", title, "hidden")
        y_range = (-1, 1)
    labels, before, after, what, title, name = shown
    value = "cosine similarity" if what == "cosine" else "probability"
    widgets.chart(
        why.before_after_figure(labels, before, after, value, title, ctx.presentation, y_range=y_range), key="abl_effect"
    )
    widgets.csv_download(
        lambda: pd.DataFrame({"token": labels, f"{what} before": as_array(before), f"{what} after": as_array(after)}).to_csv(
            index=False
        ),
        "csv_abl_effect",
        f"ablation_{name}",
    )
    if isinstance(result, ablation.LMAblation):
        frame = pd.DataFrame({"token": result.tokens, "predicted before": result.top_before, "predicted after": result.top_after})
        st.dataframe(frame[frame["predicted before"] != frame["predicted after"]], hide_index=False)

# -- the sweep ----------------------------------------------------------------------------------------------
st.divider()
st.subheader("Which heads matter? Knock out each head alone", anchor=False)
metrics = ablation.metrics_for(cfg)
if st.session_state.get("sel_metric") not in metrics:
    st.session_state["sel_metric"] = metrics[0]
names = {
    "kl": "KL divergence",
    "logprob": "drop in log p(own prediction)",
    "logprob-next": "drop in log p(next token)",
    "cosine": "1 − cosine",
}
st.radio("Effect measured", metrics, format_func=names.get, horizontal=True, **session.bind("sel_metric", "abl_metric"))
metric = st.session_state["sel_metric"]
st.caption(ablation.METRICS[metric])

positions = None
if cfg.kind == "decoder":
    copies = head_jobs.copy_positions(tokens[0].ids)
    only = st.toggle(
        f"Count only the {len(copies)} positions where copying predicts the next token",
        disabled=not copies,
        help="Positions whose next token already followed the same token earlier in the text (A B … A → B): "
        "where an induction head can copy. Repeat a phrase in the text to get some.",
        **session.bind("sel_abl_copies", "abl_copies"),
    )
    if only and copies:
        positions = copies
        st.caption(f"Counted positions: {', '.join(f'{t} ({tokens[0].tokens[t]})' for t in copies[:30])}.")

bar = st.progress(0.0, text="Knocking out each head in turn…")
result = shared_analyses.sweep(
    key,
    ctx.ckpt,
    tokens,
    metric,
    mode,
    positions,
    on_progress=lambda done, total: bar.progress(done / total, text=f"{done} of {total} heads…"),
)
bar.empty()


def sweep_key(kind: str) -> str:
    return f"abl_sweep_{kind.replace(' ', '_')}"


def _open(kind: str) -> None:
    picked = grid.pick_from_selection(st.session_state[sweep_key(kind)].selection.points)
    if picked is not None:
        session.set_selection(kind=kind, layer=picked[0], head=picked[1])
        st.session_state["_goto"] = "attention"


best = result.top(3)
st.caption(
    "Largest effects: "
    + "; ".join(f"{head_label(h)} ({v:.3g})" for h, v in best)
    + ". Click a cell to open that head on the Attention page."
)
for kind, effects in result.grids.items():
    widgets.chart(
        why.head_effect_figure(
            effects,
            kind,
            names[metric],
            selected=(ctx.layer, ctx.head) if kind == ctx.kind else None,
            presentation=ctx.presentation,
        ),
        key=sweep_key(kind),
        on_select=lambda kind=kind: _open(kind),
        selection_mode="points",
    )


def sweep_csv() -> str:
    rows = [
        (kind, layer, head, float(effects[layer, head]))
        for kind, effects in result.grids.items()
        for layer in range(effects.shape[0])
        for head in range(effects.shape[1])
    ]
    return pd.DataFrame(rows, columns=["kind", "layer", "head", metric]).to_csv(index=False)


widgets.csv_download(sweep_csv, key="csv_abl_sweep", filename=f"sweep_{metric}_{mode}")
session.sync_url(ctx, "ablation")
