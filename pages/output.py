"""Page 5 — Output: what the model does with the text (translation, next tokens, or class probabilities)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from server import notices, session, widgets
from server.literal import md
from transformer.checkpoints import catalog
from viz import figures, metrics

ctx = session.context()
trace = session.require_trace(ctx)
notices.coverage(ctx, trace)
cfg, tok = ctx.ckpt.config, ctx.ckpt.tokenizer
task = catalog.task_of(ctx.ckpt.training)  # what it was trained to do names its output ("reverse", "lm", …)


def top_k(trace) -> pd.DataFrame:
    """The next-token table, every row on screen for the short texts of the teaching models (scrolling past 64)."""
    table = metrics.top_k_table(trace, tok.id_to_token)
    st.dataframe(table, key="out_topk", height="content" if len(table) <= 64 else "auto")
    return table


def seq2seq_title() -> str:
    """A translator's output is a translation; an algorithmic model's says what it does with its input."""
    if task in catalog.TASK_DOES:
        return f"Greedy output (the model {catalog.TASK_DOES[task]})"
    if task == "translation" or ctx.target_lang is not None or ctx.ckpt.training.get("model_type") == "marian":
        return "Greedy translation"
    return "Greedy output (the decoder's most likely token at each step)"


if cfg.kind == "encoder-decoder":
    st.subheader(seq2seq_title(), anchor=False)
    if ctx.target_lang is not None:  # a multilingual translator: the sidebar's languages (tokens: literal)
        source = "" if ctx.source_lang is None else f"from {md(ctx.source_lang)} "
        st.caption(f"Translated {source}into {md(ctx.target_lang)}: choose the languages in the sidebar.")
    if ctx.target is None:
        st.code(trace.target.text or "(empty: no text before the end token)", language=None)
    else:
        st.code(session.greedy_text(ctx) or "(empty: no text before the end token)", language=None)
        st.caption("The tables below are for your own target text from the sidebar:")
        st.code(ctx.target, language=None)
    st.markdown("**Next-token predictions at each decoder position** (top 5, probability in brackets):")
    top_k(trace)
elif cfg.kind == "decoder":
    st.subheader("Next-token predictions at each position", anchor=False)
    caption = st.empty()  # filled below, naming a row of this text's table (tokens: literal)
    rows = top_k(trace).index
    i = min(3, len(rows) - 1)
    caption.caption(f"Row {md(rows[i])} shows what the model predicts right after reading up to token {i}.")
elif cfg.n_classes > 0:
    meanings = catalog.CLASS_MEANINGS.get(task, {})
    st.subheader("Class probabilities", anchor=False)
    names = [str(n) for n in cfg.class_names] or [f"class {i}" for i in range(cfg.n_classes)]  # from the checkpoint
    if any(n in meanings for n in names):  # class names are checkpoint metadata: shown literally
        st.text("\n".join(f"{n}: {meanings[n]}" for n in names if n in meanings))
    probs = trace.probs[0].float().numpy()
    widgets.chart(figures.class_probabilities_figure(probs, names, ctx.presentation), key="out_classes")
    best = names[int(probs.argmax())]
    meaning = f": {meanings[best]}" if best in meanings else ""
    st.text(f"Prediction: {best} ({float(probs.max()):.3f}){meaning}")
else:
    st.subheader("No output head", anchor=False)
    st.info(
        "This encoder has no classification head: its output is one vector per token (the hidden states). "
        "Below: how similar the final vectors of the tokens are to each other (cosine similarity)."
    )
    tokens = trace.source.tokens
    sim = metrics.cosine_similarity(trace.encoder.final[0])
    fig = figures.token_heatmap(
        sim,
        tokens,
        tokens,
        title="cosine similarity of the final token vectors",
        value_name="cosine",
        row_name="token",
        col_name="token",
        colorscale=figures.SIGNED_SCALE,
        zmin=-1.0,
        zmax=1.0,
        fmt=".4f",
        presentation=ctx.presentation,
    )
    widgets.heatmap(fig, sim, tokens, tokens, key="out_similarity", filename="cosine_similarity")
