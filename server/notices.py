"""The notice at the top of every page when the text falls outside what the model can read.

Each page calls `coverage(ctx, trace)` right after it has its context (and trace, if it has one). The
judgement itself is `transformer/coverage.py` (pure); this module only draws it. The words come from
the user's text and are shown with `st.text`/`st.code` (literally); the headline holds only counts.
"""

from __future__ import annotations

import streamlit as st

from server import session, widgets
from server.session import Context
from transformer import coverage as cover
from transformer.checkpoints import catalog
from transformer.model.trace import Trace

N_EXAMPLES = 3  # example sentences the notice quotes
MAX_SHOWN = 40  # distinct words or characters the notice lists (a paste in another script can hold hundreds)
HEADLINE = "This text is outside what this model has learnt to read"  # how the notice's warning starts


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def headline(found: cover.Coverage) -> str:
    """What was found, in counts (no user text: this goes through Markdown)."""
    parts = []
    if found.n_unknown:
        parts.append(f"{_plural(found.n_unknown, 'token')} its tokenizer does not know")
    if found.broken:
        parts.append(f"{_plural(len(found.broken), 'word')} broken into single letters")
    if found.flat:
        parts.append("flat next-token predictions (it barely prefers any token)")
    return f"{HEADLINE}: " + "; ".join(parts) + ". Its results here mean little."


def _listed(items: tuple[str, ...]) -> str:
    more = f"   … and {len(items) - MAX_SHOWN} more" if len(items) > MAX_SHOWN else ""
    return "   ".join(items[:MAX_SHOWN]) + more


def coverage(ctx: Context | None, trace: Trace | None = None) -> None:
    """Warn when `ctx`'s text holds unknown tokens, words broken into letters, or (given an LM's trace) flat predictions.

    Says what the model knows (its description, vocabulary size and examples) and where to go instead. Never shown
    for the model's own example sentences, nor without a checkpoint and a text.
    """
    if ctx is None or ctx.tokens is None:
        return
    cfg = ctx.ckpt.config
    probs = trace.probs[0] if trace is not None and cfg.kind == "decoder" and trace.probs.dim() == 3 else None
    found = cover.judge(ctx.ckpt.tokenizer, ctx.tokens[0], probs)
    examples = session.examples(ctx.name)  # its own, its task's (an upload, a model trained here), or the generic
    if found.ok or ctx.text.strip() in {ex["text"].strip() for ex in examples}:
        return
    if ctx.presentation:  # on a projector the figure keeps the screen: one line, the rest folded under it
        with st.container(key="coverage_notice"):
            with st.expander(f":orange[**{HEADLINE}**: its results here mean little.]", icon=":material/translate:"):
                st.warning(headline(found))
                _details(ctx, found, examples, cfg)
        # and the figure below gives the notice its height (a later rule than app.py's)
        above = widgets.PRESENTED_TOP_PX + widgets.NOTICE_PX + st.session_state.get(widgets.ABOVE_PX, 0)
        st.html(f"<style>{widgets.presented_css(above)}</style>")
        return
    with st.container(border=True, key="coverage_notice"):
        st.warning(headline(found), icon=":material/translate:")
        _details(ctx, found, examples, cfg)


def _details(ctx: Context, found, examples: list[dict[str, str]], cfg) -> None:
    """The notice's body: the words found (literal), what the model knows, and where to go instead."""
    if found.unknown:
        st.text("Unknown to its tokenizer: " + _listed(found.unknown))
    if found.broken:
        st.text("Broken into single letters: " + _listed(found.broken))
    if found.flat:
        st.text(f"Its top next-token probability is only {found.peak:.1f} × a uniform guess (1/{cfg.vocab_size}).")
    described = catalog.description(ctx.name, ctx.ckpt.training)
    knows = f"{described} " if described else ""
    st.caption(f"What it knows: {knows}Its vocabulary has {ctx.ckpt.tokenizer.vocab_size:,} tokens. Its examples:")
    st.code("\n".join(ex["text"] for ex in examples[:N_EXAMPLES]), language=None, wrap_lines=True)
    entries = st.session_state.get("_entries") or {}
    minilm = catalog.MINILM in entries and ctx.name != catalog.MINILM
    also = ", or pick all-MiniLM-L6-v2 for any English sentence" if minilm else ""
    st.caption(f"Try an example (the sidebar's Examples){also}.")
