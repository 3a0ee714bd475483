"""A second floor for `benchmarks/ws_load.py --page-floor`: the Attention page's elements, without the app.

The bare floor (`floor_app.py`) draws one text area and one heatmap; the Attention page sends about 70 elements a
run (counted over the websocket for the `lm` after a typed Toy English text, as the benchmarks type: 29 blocks,
9 markdown, 8 buttons, 4 checkboxes, 3 select boxes, 3 Plotly charts, 2 sliders, 2 segmented controls, 2 download
buttons, 2 headings, a text area, a text input, a file uploader, a data frame and an HTML element;
`tests/test_ws_load.py` checks that the two agree). This app draws that same
inventory with no model, no caching and no logic of ours: the figures are built from the words as the floor's
heatmap is (two word × word heatmaps and one image of 4 thumbnails, with one clickable point per thumbnail). What
a run costs here is what Streamlit and Plotly charge for a page of that shape; what the app costs beyond it is
ours. The widget keys the harness reads (`w_text`, `attn_heatmap`) and the axis labels match the app's.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

HEADS = 4

st.set_page_config(page_title="Page-shaped floor", layout="wide")
with st.sidebar:
    st.selectbox("Checkpoint", ["lm", "translator", "classifier"], key="w_ckpt")
    st.selectbox("Colour scale", ["linear", "sqrt"], key="w_scale")
    st.selectbox("Lesson", ["none", "attention"], key="w_lesson")
    st.file_uploader("Open a checkpoint", key="w_upload")
    st.text_input("Class code", key="w_code")
    st.button("Join", key="w_join")
    st.button("Teach this class", key="w_teach")
    with st.container():
        st.button("Ask why", key="w_why")
        st.button("Share", key="w_share")
    st.checkbox("Presentation mode", key="w_present")
    st.html("<style>.floor {}</style>")
    st.caption("A model trained on Toy English.")
text = st.text_area("Text", "the dog sees the cat .", key="w_text", height=100)
labels = [f"{i}·{w}" for i, w in enumerate(text.split())]
n = len(labels)
z = np.array(
    [
        [zlib.crc32(f"{a} {b}".encode()) % 1000 / 1000 if j <= i else np.nan for j, b in enumerate(labels)]
        for i, a in enumerate(labels)
    ],
    dtype=np.float32,
)


def heatmap(values: np.ndarray, title: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=values, x=labels, y=labels, zmin=0, zmax=1, colorscale="Blues", hoverongaps=False))
    fig.update_layout(
        title=title,
        xaxis=dict(type="category", tickangle=-60),
        yaxis=dict(type="category", autorange="reversed"),
        height=min(900, max(320, 22 * n + 170)),
    )
    return fig


for i in range(3):
    left, right = st.columns(2)
    left.checkbox(f"Option {i}", key=f"w_opt{i}")
    right.markdown(f"**{n} tokens**")
st.segmented_control("Kind", ["decoder self"], key="w_kind")
with st.container():
    a, b, c = st.columns([1, 1, 4])
    a.button("◀ layer", key="w_prev_layer")
    b.button("layer ▶", key="w_next_layer")
    c.slider("Layer", 0, 1, key="w_layer")
    a, b, c = st.columns([1, 1, 4])
    a.button("◀ head", key="w_prev_head")
    b.button("head ▶", key="w_next_head")
    c.slider("Head", 0, HEADS - 1, key="w_head")
    st.segmented_control("Autoplay: each head stays", [1.0, 2.0, 4.0], key="w_speed")
    st.markdown("**What this head does** — looks at the previous token.")
    st.plotly_chart(heatmap(z, "layer 0 · head 0"), key="attn_heatmap", width="stretch")
    st.download_button("CSV", lambda: pd.DataFrame(z, index=labels, columns=labels).to_csv(), "w.csv", key="w_csv1")
    st.markdown("Its weights are its own.")
st.divider()
left, right = st.columns(2)
with left:
    st.subheader("Mean over heads", anchor=False)
    st.plotly_chart(heatmap(z[::-1, ::-1].copy(), "mean over heads"), key="attn_mean", width="stretch")
    st.download_button("CSV", lambda: pd.DataFrame(z).to_csv(), "m.csv", key="w_csv2")
with right:
    st.subheader("All heads of this layer", anchor=False)
    st.caption("Click a thumbnail to show that head above.")
    image = np.concatenate([np.roll(z, h, axis=1) for h in range(HEADS)], axis=1)
    x = (np.arange(HEADS * n) // n + (np.arange(HEADS * n) % n + 0.5) / n - 0.5).astype(np.float32)
    y = ((np.arange(n) + 0.5) / n - 0.5).astype(np.float32)
    grid = go.Figure(
        [
            go.Heatmap(z=image, x=x, y=y, zmin=0, zmax=1, colorscale="Blues"),
            go.Scatter(x=list(range(HEADS)), y=[0] * HEADS, mode="markers", marker=dict(opacity=0)),
        ]
    )
    grid.update_layout(height=220, yaxis=dict(autorange="reversed"))
    st.plotly_chart(grid, key="attn_grid", on_select="ignore", width="stretch")
    st.caption("Head-job scores for this layer.")
    st.dataframe(pd.DataFrame({"head": range(HEADS), "previous token": z[:HEADS, 0]}), key="w_jobs")
for _ in range(7):  # the page's remaining layout blocks (the app's keyed containers), empty here
    st.container()
