"""Page 3 — Model view: every layer and head of one attention kind at once; click one to open it.

It draws pooled maps (`Context.maps`), not the full trace: at 2048 tokens the model's light pass
takes about a second where a full trace takes several and holds gigabytes.
"""

from __future__ import annotations

import streamlit as st

from server import notices, session, widgets
from viz import grid

ctx = session.require_text(session.context())
notices.coverage(ctx)
kind = ctx.kind
cfg = ctx.ckpt.config
# Two rows: the kind and the colours, then the switches (one row of three cut their labels beside the sidebar).
top = st.columns([6, 5], vertical_alignment="center")
switches = st.columns(2, vertical_alignment="center")
with top[0]:
    widgets.kind_picker(ctx, "mv_kind")
with switches[0]:
    skip_first = widgets.first_token_switch("mv_skip_first")
with switches[1]:
    grouped = cfg.group_size > 1 and st.toggle(
        "Group heads by key/value head",
        help=f"Grouped-query attention: this model's {cfg.n_heads} query heads share {cfg.kv_heads} key/value heads, "
        f"{cfg.group_size} query heads each. On: each thumbnail is labelled with the key/value head it reads "
        "(H5 · kv1) and a dark line separates the groups.",
        **session.bind("sel_group", "mv_group"),
    )
with top[1]:
    scale = st.radio(
        "Colours",
        grid.SCALES,
        format_func={"linear": "0–1", "sqrt": "√ weight", "stretch": "stretched"}.get,
        horizontal=True,
        help="0–1: the same colours for every view. √ weight: spreads the small weights of heads that attend to many "
        "tokens. Stretched: 0 to the 99th percentile of the cells shown (top colour above it), for long texts where "
        "nearly every weight is small. Hover values are exact in all three.",
        **session.bind("sel_scale", "mv_scale"),
    )
maps = ctx.maps
n_layers, n_heads = maps.n_layers(kind), ctx.n_heads


def _open(layer: int, head: int) -> None:
    session.set_selection(kind=kind, layer=layer, head=head)
    st.session_state["_goto"] = "attention"


def _on_click() -> None:
    picked = grid.pick_from_selection(st.session_state["mv_grid"].selection.points)
    if picked is not None:
        _open(*picked)


fig = grid.head_grid(
    maps,
    kind,
    selected=(ctx.layer, ctx.head),
    presentation=ctx.presentation,
    scale=scale,
    group_size=cfg.group_size if grouped else 1,
    skip_first=skip_first,
)
n_queries, n_keys = len(maps.query_tokens(kind)), len(maps.key_tokens(kind))
block = maps.block(kind)
st.caption(
    f"{n_layers} layers × {n_heads} heads; {n_queries} query × {n_keys} key tokens. {grid.pooled_note(n_queries, n_keys, block)} "
    "Hover a cell for its weight; click a thumbnail's centre to open that head on the Attention page."
)
if grouped:
    groups = "; ".join(
        f"key/value head {g}: query heads {g * cfg.group_size}–{(g + 1) * cfg.group_size - 1}" for g in range(cfg.kv_heads)
    )
    st.caption(
        f"Grouped by key/value head ({groups}). The heads of a group read the same keys and values; each scores "
        "them with its own queries, so their maps can still differ."
    )
if skip_first and n_keys > 1:
    widgets.grid_first_note(fig, maps.key_tokens(kind)[0], block[1])
widgets.chart(fig, key="mv_grid", on_select=_on_click, selection_mode="points")
widgets.csv_download(
    lambda: widgets.pooled_frame(
        maps.maps[kind], range(n_layers), n_queries, n_keys, block, maps.query_tokens(kind), maps.key_tokens(kind)
    ).to_csv(index=False),
    key="csv_mv_grid",
    filename=f"model_view_{kind.replace(' ', '_')}",
)

pairs = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
choice = c1.selectbox(
    "Or pick a head",
    pairs,
    index=pairs.index((ctx.layer, ctx.head)),
    format_func=lambda p: f"layer {p[0]} · head {p[1]}",
    key="mv_pick",
)
c2.button("Open on the Attention page", key="mv_open", on_click=_open, args=choice, type="primary", width="stretch")
