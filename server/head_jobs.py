"""Head-job scores and labels from `transformer.why.head_jobs`, cached per checkpoint; silently absent if unavailable."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pyarrow as pa
import streamlit as st

from server import session, shared

THRESHOLD = 0.5


@st.cache_resource(max_entries=8, show_spinner="Scoring head jobs on probe sentences…")
def _scores(identity: str, _ckpt) -> dict | None:
    """{"job (kind)": (n_layers, n_heads) tensor} for one checkpoint, or None when the analysis cannot run."""
    try:
        from transformer.why import head_jobs
    except ImportError:
        return None
    try:
        with shared.model_slot():  # a model run like any other: it waits for a slot and runs on one thread
            return head_jobs.head_scores(_ckpt)
    except Exception:  # a checkpoint the probes do not fit (e.g. an upload with another vocabulary)
        return None


def table(ctx: session.Context, kind: str) -> pd.DataFrame | None:
    """Scores of every job for attention `kind`, one row per (layer, head); None when there are none (read-only: shared)."""
    return _table(ctx.identity, kind, ctx.ckpt)


@st.cache_resource(max_entries=32, show_spinner=False)
def _table(identity: str, kind: str, _ckpt) -> pd.DataFrame | None:
    scores = _scores(identity, _ckpt)
    if not scores:
        return None
    cols = {key[: key.index(" (")]: t for key, t in scores.items() if key.endswith(f"({kind})")}
    if not cols:
        return None
    first = next(iter(cols.values()))
    index = pd.MultiIndex.from_product([range(first.shape[0]), range(first.shape[1])], names=["layer", "head"])
    return pd.DataFrame({job: t.reshape(-1).float().numpy() for job, t in cols.items()}, index=index)


def layer_rows(ctx: session.Context, kind: str, layer: int) -> tuple[pa.Table, tuple[int, ...]] | None:
    """One layer's rows of `table` as the Arrow table `st.dataframe` would make of them (the same bytes: its index,
    layer and head, kept as pandas keeps it), and the head of each row; None when there are none. Made once per
    (checkpoint, kind, layer): converting the frame again took ~0.5 ms of every run of the Attention page."""
    return _layer_rows(ctx.identity, kind, layer, ctx.ckpt)


@st.cache_resource(max_entries=256, show_spinner=False)
def _layer_rows(identity: str, kind: str, layer: int, _ckpt) -> tuple[pa.Table, tuple[int, ...]] | None:
    frame = _table(identity, kind, _ckpt)
    if frame is None:
        return None
    shown = frame[frame.index.get_level_values(0) == layer] if frame.index.nlevels > 1 else frame
    return pa.Table.from_pandas(shown), tuple(int(h) for h in shown.index.get_level_values(-1))


def says(ctx: session.Context, kind: str, layer: int, head: int) -> str | None:
    """One line on what the head does, its best job first: "alignment 0.97: each word of the translation looks at the
    source word it translates (also: focused 0.81)"; None when the jobs cannot be scored for this model."""
    return _says(ctx.identity, kind, layer, head, ctx.ckpt)


@st.cache_resource(max_entries=1024, show_spinner=False)
def _says(identity: str, kind: str, layer: int, head: int, _ckpt) -> str | None:
    frame = _table(identity, kind, _ckpt)
    if frame is None:
        return None
    from transformer.why.head_jobs import JOB_MEANINGS

    row = frame.loc[(layer, head)].sort_values(ascending=False)
    jobs = [(job, float(score)) for job, score in row.items() if score >= THRESHOLD]
    if not jobs:
        best, score = next(iter(row.items()))
        return f"No job above the threshold ({THRESHOLD}) for this head; its best is {best} {score:.2f}."
    (job, score), others = jobs[0], jobs[1:]
    also = f" (also: {' · '.join(f'{j} {s:.2f}' for j, s in others)})" if others else ""
    return f"{job} {score:.2f}: {JOB_MEANINGS.get(job, job)}{also}."


def telling(ctx: session.Context):
    """The model's most telling head (`transformer.why.head_jobs.most_telling`), or None."""
    from transformer.why.head_jobs import most_telling

    scores = _scores(ctx.identity, ctx.ckpt)
    return most_telling(scores, THRESHOLD) if scores else None


def tour(ctx: session.Context) -> list[tuple[str, int, int]]:
    """The heads with a job, in the model's order (the autoplay's "heads with a job" tour); [] when none or unscored."""
    from transformer.why.head_jobs import tour as heads_with_a_job

    scores = _scores(ctx.identity, ctx.ckpt)
    return heads_with_a_job(scores, ctx.ckpt.config.attention_kinds, THRESHOLD) if scores else []


def open_telling(ctx: session.Context | None) -> session.Context | None:
    """A first view with no head chosen (a new session without one in its link, or a checkpoint switch) opens on the
    model's most telling head; the context comes back with that selection (or as it was)."""
    if ctx is None or not st.session_state.pop(session.PICK_TELLING, False):
        return ctx
    best = telling(ctx)
    if best is None:
        return ctx
    session.set_selection(kind=best.kind, layer=best.layer, head=best.head)
    return dataclasses.replace(ctx, kind=best.kind, layer=best.layer, head=best.head)


def note(ctx: session.Context) -> str | None:
    """One line for a translator the gold-label jobs cannot score (an import): what its cross heads get instead."""
    from transformer.why import head_jobs

    return head_jobs.missing_gold_labels(ctx.ckpt)
