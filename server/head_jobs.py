"""Head-job scores and labels from `transformer.why.head_jobs`, cached per checkpoint; silently absent if unavailable."""

from __future__ import annotations

import pandas as pd
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


def label(ctx: session.Context, kind: str, layer: int, head: int) -> str | None:
    """e.g. "previous-token 0.93 · induction 0.71" for heads whose scores reach the threshold, else None."""
    frame = table(ctx, kind)
    if frame is None:
        return None
    row = frame.loc[(layer, head)]
    jobs = [f"{job} {score:.2f}" for job, score in row.sort_values(ascending=False).items() if score >= THRESHOLD]
    return " · ".join(jobs) if jobs else "no job above the threshold (0.5)"


def note(ctx: session.Context) -> str | None:
    """One line for a translator the gold-label jobs cannot score (an import): what its cross heads get instead."""
    from transformer.why import head_jobs

    return head_jobs.missing_gold_labels(ctx.ckpt)
