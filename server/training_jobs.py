"""Training jobs in the app: this server's one job runner (shared by every session), the picker's entries
for finished jobs, a job's probe traces, and the figures of its progress.

The runner and what it trained are the server's (every session sees the same jobs); which job a
session asked for, and its form, are the session's (`st.session_state`, keys "tj_*"). The figure
builders (`loss_figure`, `metric_figure`) are pure: data in, `go.Figure` out.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from server import job_board, shared
from server.literal import md
from transformer import api
from transformer.checkpoints import catalog
from transformer.checkpoints.format import Checkpoint, CheckpointError, check_state_dict
from transformer.model.network import TransformerModel
from transformer.model.trace import Trace
from transformer.train import jobs
from transformer.train.jobs import Job, JobRunner, Limits
from viz import figures
from viz.labels import plotly_text

# On two cores, one thread: the other core keeps serving every session. More cores: half of them, at most 4.
TRAIN_THREADS = 1 if shared.CORES <= 2 else min(4, shared.CORES // 2)
WALL_ENV = "ATTNVIZ_TRAIN_MAX_SECONDS"  # one job's wall-time limit (default 600 s)
LINK_KEYS = {"task": "task", "preset": "preset", "steps": "steps", "layers": "n_layers", "heads": "n_heads", "d_model": "d_model"}
ENTRY_PREFIX = "trained-"


def limits() -> Limits:
    seconds = os.environ.get(WALL_ENV, "")
    return Limits(max_wall_s=float(seconds)) if seconds.replace(".", "", 1).isdigit() else Limits()


@st.cache_resource
def board() -> job_board.LocalBoard | job_board.RedisBoard:
    """Where this server's jobs are listed: this process alone, or the deployment's shared store (`make school`)."""
    return job_board.from_env()


class Unavailable(RuntimeError):
    """This app process cannot train: its jobs folder cannot be made, in `where`, for the system's reason `why`."""

    def __init__(self, where: str, why: str):
        super().__init__(f"the jobs folder cannot be made in {where}: {why}")
        self.where, self.why = where, why

    def message(self) -> str:
        """For the page (Markdown: the folder and the reason shown literally)."""
        return (
            f"Training is unavailable on this server: its jobs folder cannot be made in {md(self.where, 300)} "
            f"({md(self.why, 100)}). The server's owner can give the app's user that folder; the other pages work "
            "meanwhile."
        )


@st.cache_resource
def runner() -> JobRunner:
    """This server's job runner: made once per process. Alone, it removes the job folders of dead servers as it
    starts; in a deployment's shared folder it removes nothing (`JobRunner`'s `shared`).

    Raises `Unavailable` where its folder cannot be made (a shared jobs folder the app's user may not write, say):
    not cached, so a fixed folder is used at the next run, and every other page goes on meanwhile."""
    b = usable_board()
    number = b.next_number if b.shared else None  # alone, the runner counts
    try:
        made = JobRunner(limits(), threads=TRAIN_THREADS, parent=b.folder, number=number, shared=b.shared)
    except OSError as e:
        raise unavailable(e, b.folder) from e
    b.publish(made.root)
    return made


def unavailable(e: OSError, folder: Path | None) -> Unavailable:
    where = Path(e.filename).parent if e.filename else folder or tempfile.gettempdir()
    return Unavailable(str(where), e.strerror or type(e).__name__)


def usable_board() -> job_board.LocalBoard | job_board.RedisBoard:
    """`board()`, or `Unavailable` where the deployment's shared jobs folder cannot be made (tried again next time)."""
    try:
        return board()
    except OSError as e:
        raise unavailable(e, None) from e


def all_jobs() -> list[Job]:
    """Every job of the deployment (this process's alone without a shared store), by number (`job_board.listed`):
    without a runner of its own (`Unavailable`), the other app processes' jobs; none without a board."""
    try:
        runner()  # its folder is on the board
    except Unavailable:
        pass
    try:
        return job_board.listed(usable_board())
    except Unavailable:
        return []


def current() -> Job | None:
    """The job the Training page shows: a running one, else the first waiting one, else the latest."""
    return jobs.current_of(all_jobs())


def is_ours(job: Job) -> bool:
    """Whether `job` is this app process's (its runner stops it; another process's is asked through the folder)."""
    return job.folder.parent == runner().root


def cancel(job_id: str) -> None:
    """Cancel job `job_id` of the deployment: at once when this process runs it, else by asking the process that does
    (`jobs.ask_cancel`: it stops within a second). The caller has checked that this browser owns it."""
    job = next((j for j in all_jobs() if j.id == job_id), None)
    if job is None:
        return
    if is_ours(job):
        runner().cancel(job.id)
    else:
        jobs.ask_cancel(job)


def entry_name(job: Job) -> str:
    return f"{ENTRY_PREFIX}{job.number}"


def checkpoint_entries() -> dict[str, catalog.CatalogEntry]:
    """Finished jobs' checkpoints (the deployment's), as the sidebar picker's entries (their snapshots lie next to
    them)."""
    out = {}
    for job in jobs.finished_of(all_jobs()):
        spec = job.spec
        quality = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in job.metrics.items() if k in ("exact_match", "accuracy"))
        label = (
            f"Trained here #{job.number} ({spec.task}, {spec.n_layers} layers × {spec.n_heads} heads, d_model {spec.d_model}, "
            f"{spec.steps} steps{', ' + quality if quality else ''})"
        )
        out[entry_name(job)] = catalog.CatalogEntry(entry_name(job), label, job.checkpoint)
    return out


def read_link() -> None:
    """Keep the Training page's part of a session's first link (?task=…&steps=…) before app.py rewrites the link.

    Plain strings, cut short; the page validates them (`jobs.make_spec`) and says what it could not use.
    """
    if "_tj_link" in st.session_state:
        return
    params = st.query_params.to_dict()
    link = {key: str(params[name])[:100] for name, key in LINK_KEYS.items() if name in params}
    if not link.get("n_heads", "0").strip().isdigit():  # ?heads=d1.3 is the Ablation page's (kind, layer, head)
        del link["n_heads"]
    st.session_state["_tj_link"] = link
    token = str(params.get("owner", ""))
    if OWNER_TOKEN.fullmatch(token):  # a reload (or this link in another tab) keeps the right to cancel its job
        st.session_state["_tj_owner"] = token
        st.session_state["_tj_owner_in_link"] = True


OWNER_TOKEN = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16): who started a job, kept in that browser's link


def owner() -> str:
    """This browser's owner token for training jobs (made on first use; from the link after a reload)."""
    return st.session_state.setdefault("_tj_owner", secrets.token_hex(16))


# ---------------------------------------------------------------------------------------------
# A job's snapshots on its probe input.
# ---------------------------------------------------------------------------------------------


def probe_traces(job: Job) -> list[tuple[int, Trace]]:
    """Every snapshot written so far run on the task's probe input: [(step, Trace)] (shared by every session).

    A step's weights never change, so each snapshot is loaded and traced once per (job, step): when
    the file grows by one snapshot, only the new one is run.
    """
    text, target, _, _ = jobs.PROBES[job.spec.task]
    out = []
    for step in job.snapshots:
        try:
            out.append((step, snapshot_trace(job.id, step, str(job.snapshots_file), text, target)))
        except (CheckpointError, OSError, KeyError):  # the job's folder was removed meanwhile (an old job dropped)
            break
    return out


@st.cache_resource(max_entries=256, show_spinner=False)
def snapshot_trace(job_id: str, step: int, path: str, text: str, target: str | None) -> Trace:
    """Snapshot `step` of a job on the probe input (the target given, so every step reads the same tokens)."""
    from transformer.checkpoints.snapshots import read_snapshot_states

    config, tokenizer, _, states = read_snapshot_states(path)
    state = dict(states)[step]
    check_state_dict(config, state, f"{Path(path).name} step {step}")
    model = TransformerModel.from_weights(config, state)
    ckpt = Checkpoint(model=model.eval().requires_grad_(False), tokenizer=tokenizer, name=f"{job_id}@{step}")
    with shared.model_slot():
        return api.trace_text(ckpt, text, target)


@st.cache_resource(max_entries=64, show_spinner=False)
def strip_figure(
    job_id: str, steps: tuple[int, ...], kind: str, layer: int, head: int, presentation: bool, _traces: tuple
) -> go.Figure:
    """The snapshot strip of a job's snapshots so far, for one head, built once and shared (read-only)."""
    return figures.training_strip(_traces, [f"step {s}" for s in steps], kind, layer, head, presentation)


@st.cache_resource(max_entries=64, show_spinner=False)
def latest_figure(job_id: str, step: int, kind: str, layer: int, head: int, presentation: bool, _trace: Trace) -> go.Figure:
    """The latest snapshot's heatmap for one head, built once and shared (read-only)."""
    return figures.attention_figure(_trace, kind, layer, head, presentation, label=f"step {step} (latest snapshot)")


# ---------------------------------------------------------------------------------------------
# The form's values from a link (pure).
# ---------------------------------------------------------------------------------------------

FIELDS = ("n_layers", "n_heads", "d_model", "steps")
CUSTOM = "your own settings"  # the preset picker's choice when the form is not a preset


def form_from_link(link: dict[str, str], limits: Limits) -> tuple[dict, list[str]]:
    """The form a link asks for (preset, task, sizes, steps), and what it could not use, as Markdown messages.

    Starts from the first preset; a link's preset replaces it, then its task and numbers, each
    checked with `jobs.make_spec` against this server's limits. A value that is not used is named
    in a message, quoted literally.
    """
    preset = next(iter(jobs.PRESETS))
    problems = []
    if "preset" in link and link["preset"] not in jobs.PRESETS:
        problems.append(f"Unknown preset {md(link['preset'], 60)} in the link: choose one of {', '.join(jobs.PRESETS)}.")
    elif "preset" in link:
        preset = link["preset"]
    form = {"preset": preset, **jobs.PRESETS[preset]}
    if "task" in link:
        if link["task"] in jobs.TASK_FIELDS:
            form["task"] = link["task"]
        else:
            problems.append(f"Unknown task {md(link['task'], 60)} in the link: choose one of {', '.join(jobs.TASK_FIELDS)}.")
    for key in FIELDS:
        if key not in link:
            continue
        try:
            jobs.make_spec({**form, key: link[key]}, limits)
        except jobs.JobError as e:
            problems.append(f"The link's {key} was not used: {error_text(e)}")
        else:
            form[key] = int(link[key])
    if any(k in link for k in ("task", *FIELDS)) and ("preset" not in link or problems):
        form["preset"] = CUSTOM
    return form, problems


def error_text(e: jobs.JobError) -> str:
    """A JobError as Markdown: the user's value (a link's, a widget's) quoted literally."""
    return e.template.format(value=md(e.value, 60)) if "{value}" in e.template else e.template


# ---------------------------------------------------------------------------------------------
# Figures (pure).
# ---------------------------------------------------------------------------------------------


def loss_figure(losses: Sequence[tuple[int, float]], evals: Sequence[dict], steps: int, presentation: bool = False) -> go.Figure:
    """Training loss (mean per predicted token, as the job logged it) and held-out loss, against the step, x fixed to 0..steps."""
    size = figures.font_size(presentation)
    return go.Figure(
        data=[
            go.Scatter(
                x=[s for s, _ in losses],
                y=[v for _, v in losses],
                mode="lines",
                line=dict(color="#1f77b4", width=1.5),
                name="training loss",
                hovertemplate="step %{x}<br>training loss %{y:.4f}<extra></extra>",
            ),
            go.Scatter(
                x=[e["step"] for e in evals],
                y=[e["eval_loss"] for e in evals],
                mode="lines+markers",
                line=dict(color="#ff7f0e"),
                name="held-out loss",
                hovertemplate="step %{x}<br>held-out loss %{y:.4f}<extra></extra>",
            ),
        ],
        layout=dict(
            title=dict(text="Loss (cross-entropy per token)", font=dict(size=size + 2)),
            xaxis=dict(title=dict(text="step"), range=[0, max(steps, 1)]),
            yaxis=dict(title=dict(text="loss"), rangemode="tozero"),
            height=300,
            margin=dict(l=60, r=10, t=50, b=50),
            legend=dict(orientation="h", y=-0.25),
            font=dict(size=size),
        ),
    )


def metric_figure(evals: Sequence[dict], steps: int, final: dict | None = None, presentation: bool = False) -> go.Figure:
    """Held-out next-token accuracy (teacher forcing) at each evaluation; the final held-out metrics as points at the end."""
    size = figures.font_size(presentation)
    data = [
        go.Scatter(
            x=[e["step"] for e in evals],
            y=[e["eval_accuracy"] for e in evals],
            mode="lines+markers",
            line=dict(color="#2ca02c"),
            name="held-out token accuracy",
            hovertemplate="step %{x}<br>token accuracy %{y:.4f}<extra></extra>",
        )
    ]
    for name in ("exact_match", "accuracy"):
        if final and isinstance(final.get(name), int | float):
            label = plotly_text(f"final {name.replace('_', ' ')}")
            data.append(
                go.Scatter(
                    x=[steps],
                    y=[final[name]],
                    mode="markers",
                    marker=dict(size=14, symbol="star", color="#d62728"),
                    name=label,
                    hovertemplate=f"{label} %{{y:.4f}}<extra></extra>",
                )
            )
    return go.Figure(
        data=data,
        layout=dict(
            title=dict(text="Task metric on held-out examples", font=dict(size=size + 2)),
            xaxis=dict(title=dict(text="step"), range=[0, max(steps, 1) * 1.02]),
            yaxis=dict(title=dict(text="fraction"), range=[0, 1.05]),
            height=300,
            margin=dict(l=60, r=10, t=50, b=50),
            legend=dict(orientation="h", y=-0.25),
            font=dict(size=size),
        ),
    )


def progress_text(job: Job) -> str:
    """ "step 120 of 600 · 14.2 steps/s · about 34 s left", or where the job is when it is not stepping."""
    if job.state == "queued":
        return "waiting for the job ahead to finish"
    if job.state == "running" and job.step == 0:
        return f"{job.reason or 'starting'}…"
    parts = [f"step {job.step:,} of {job.steps:,}"]
    if job.steps_per_s:
        parts.append(f"{job.steps_per_s:.1f} steps/s")
    if job.state == "running" and job.eta_s is not None and job.step < job.steps:
        parts.append(f"about {duration(job.eta_s)} left")
    elif job.state == "running":
        parts.append(job.reason)
    else:
        parts.append(f"{job.state} after {duration(job.elapsed_s)}")
    return " · ".join(parts)


def duration(seconds: float) -> str:
    """ "45 s", "2 min 05 s", "10 min"."""
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    return f"{seconds // 60} min" + (f" {seconds % 60:02d} s" if seconds % 60 else "")
