"""The floor for `benchmarks/classroom.py`: a bare Streamlit + Plotly app with one text area and one heatmap.

No model and no caching: each rerun splits the text into words and draws a word × word heatmap, so
what a rerun costs here is Streamlit and Plotly alone, in the server and in the browser. The widget
keys match the app's (`w_text`, `attn_heatmap`), so the same harness types into it and reads it back;
the axis labels are the words as the app labels tokens ("0·the", "1·dog", ...).
"""

from __future__ import annotations

import zlib

import plotly.graph_objects as go
import streamlit as st

st.set_page_config(page_title="Floor", layout="wide")
text = st.sidebar.text_area("Text", "the dog sees the cat .", key="w_text", height=100)
labels = [f"{i}·{w}" for i, w in enumerate(text.split())]
# A causal, word-dependent pattern, so two texts of one length still give different figures.
z = [
    [zlib.crc32(f"{a} {b}".encode()) % 1000 / 1000 if j <= i else None for j, b in enumerate(labels)]
    for i, a in enumerate(labels)
]
fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, zmin=0, zmax=1, colorscale="Blues", hoverongaps=False))
fig.update_layout(
    title="word × word",
    xaxis=dict(type="category", tickangle=-60),
    yaxis=dict(type="category", autorange="reversed"),
    height=min(900, max(320, 22 * len(labels) + 170)),
)
st.plotly_chart(fig, key="attn_heatmap", width="stretch")
