"""Logit lens — the decoder's next-token guess read off the residual stream after every layer and sublayer."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from server import notices, session, shared_analyses, urlstate, widgets
from transformer.why import lens
from viz import why

LENS_MACS = 8 * 10**9  # multiply-adds per view: about 0.3 s on one core of our 2-core server (benchmarks/lens_saliency.py)

ctx = session.require_text(session.context())
if not ctx.ckpt.config.has_decoder:
    st.info(
        "The logit lens reads the residual stream through the model's unembedding, the matrix that turns a vector "
        "into next-token scores; this model is encoder-only and has none. Pick the Language model or the Translator."
    )
    session.sync_url(ctx, "lens")
    st.stop()

trace = ctx.trace
notices.coverage(ctx, trace)
cfg = ctx.ckpt.config
n_pos = len(trace.query_tokens("decoder self"))
n_rows = 1 + cfg.layers_of("decoder self") * (3 if cfg.has_encoder else 2)
# Every cell costs an unembedding (d_model × vocab multiply-adds): a GPT-2-sized model reads a window of positions.
fit = max(1, LENS_MACS // (n_rows * cfg.d_model * cfg.vocab_size))
positions, end = None, st.session_state.get("sel_lens_window")  # None: the window ending at the last position
if fit < n_pos:
    clamped = []
    if end is not None:  # a link's or one chosen on another text: this text may be shorter
        end = urlstate.clamp(int(end), n_pos, "window end", clamped, low=fit - 1)
    st.session_state["sel_lens_window"] = n_pos - 1 if end is None else end
    for message in clamped:
        st.warning(message)
    end = st.slider("Window of positions, ending at", fit - 1, n_pos - 1, **session.bind("sel_lens_window", "lens_window_end"))
    positions = tuple(range(end - fit + 1, end + 1))
    st.caption(
        f"This model's vocabulary is large: the lens reads {fit} positions at a time (of {n_pos}), to answer in about a second."
    )
if positions is None or end == n_pos - 1:
    st.session_state["sel_lens_window"] = None  # the default: the window ends at the last position, whatever the text
result = shared_analyses.logit_lens(ctx.trace_key, ctx.ckpt, trace, positions)
st.caption(f"{lens.EXPLANATION} Applied here: {result.norm}.")
sublayers = st.toggle(
    "Every sublayer",
    help="Off: one row per layer (after its feed-forward sublayer).",
    **session.bind("sel_lens_sublayers", "lens_sublayers"),
)
rows = [i for i, label in enumerate(result.labels) if sublayers or label == "embed" or label.endswith("feed-forward")]
where = "the target (decoder input)" if ctx.ckpt.config.kind == "encoder-decoder" else "the text"
fig = why.lens_figure(
    [result.labels[i] for i in rows],
    result.tokens,
    [result.top_tokens[i] for i in rows],
    result.top_probs[rows],
    f"Top-1 next token at each position of {where}, read after each {'sublayer' if sublayers else 'layer'}",
    ctx.presentation,
    columns=result.positions,
)
st.caption("Colour: the top-1 token's probability. Hover a cell for the top 5; the last row is the model's own prediction.")
widgets.chart(fig, key="lens_grid")


def lens_csv() -> str:
    records = []
    for r in rows:
        for t, token in enumerate(result.tokens):
            for rank, (cand, p) in enumerate(zip(result.top_tokens[r][t], result.top_probs[r, t].tolist())):
                records.append((result.labels[r], result.positions[t], token, rank + 1, cand, p))
    return pd.DataFrame(records, columns=["row", "position", "token", "rank", "candidate", "probability"]).to_csv(index=False)


widgets.csv_download(lens_csv, key="csv_lens", filename="logit_lens")
session.sync_url(ctx, "lens")
