"""Page 6 — Training: train a small model now and watch its attention form; or replay a checkpoint's snapshots.

"Train a model now" starts a job in its own process through the project's trainer
(`transformer/train/jobs.py`; one job at a time per server, every session sees it), and draws its
progress live: loss, the task metric, and one head's attention on a probe input at each snapshot.
Below, the checkpoint in the sidebar replays its snapshots (`*.snapshots.safetensors`, written by
`python -m transformer.train --n-snapshots N`, or by a job trained here) on the same tokens as the
other pages (for the translator: the final model's greedy translation, or the edited target).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from server import notices, session, shared, training_jobs, widgets
from server.literal import md
from transformer.checkpoints import catalog
from transformer.checkpoints.format import CheckpointError
from transformer.train import jobs
from viz import figures

# ---------------------------------------------------------------------------------------------
# Replay: the sidebar checkpoint's snapshots.
# ---------------------------------------------------------------------------------------------


def replay(ctx: session.Context | None) -> None:
    """The sidebar checkpoint's snapshots, replayed on the page's tokens (they need no jobs folder)."""
    st.divider()
    ctx = session.require_text(ctx)
    # Named: under a finished job, "the checkpoint in the sidebar" may well be another model than the one just trained.
    st.subheader(f"Snapshots of the checkpoint in the sidebar: {md(session.short_label(ctx.label)[0], 60)}", anchor=False)
    entry = session.entries().get(ctx.name)  # shipped, found on disk or trained here: snapshots sit beside any
    if ctx.name == session.UPLOAD:  # an upload's, uploaded with it
        path = shared.upload_snapshots(st.session_state.get(session.UPLOAD_DIGEST))
    else:
        path = catalog.snapshots_path(entry) if entry is not None else None
    if path is None:
        st.info(
            "This checkpoint ships no training snapshots. The Translator and the Language model do; to record "
            "your own, train with `python -m transformer.train --n-snapshots 9` and keep the `.snapshots.safetensors` "
            "file next to the checkpoint in the assets folder, or upload it together with the checkpoint."
        )
        return

    try:
        identity = shared.identity_of(path)  # path + mtime + size: a rewritten file is loaded again
        snaps = shared.snapshots(identity, str(path))
    except CheckpointError as e:
        st.error(f"Could not read the training snapshots: {md(e, 400)}")
        return

    if not shared.snapshots_belong(snaps, ctx.ckpt):
        st.error(f"{path.name} does not belong to {ctx.label} (no snapshots, or another shape or tokenizer): nothing to show.")
        return

    widgets.kind_picker(ctx, "tr_kind")
    widgets.layer_head_controls(ctx, ctx.n_layers, ctx.n_heads, "tr")
    kind, layer, head = ctx.kind, st.session_state["sel_layer"], st.session_state["sel_head"]
    steps = [step for step, _ in snaps]
    planned = ctx.ckpt.training.get("steps") if ctx.ckpt.training else None
    labels = [f"step {step}" for step in steps]
    traces = [
        shared.snapshot_trace(identity, str(path), i, ctx.identity, ctx.text, ctx.target, ctx.tokens) for i in range(len(snaps))
    ]

    try:
        dtypes = shared.snapshot_dtypes(identity, str(path))
    except CheckpointError:
        dtypes = ()
    if not dtypes:
        stored = ""
    elif set(dtypes) <= {"float32", "float64"}:
        stored = f", stored in {' and '.join(dtypes)}: the weights as they were at each step, unrounded"
    else:
        stored = f", stored in {' and '.join(dtypes)}; the last one is the trained model up to that rounding"
    st.caption(
        f"{len(steps)} snapshots from step 0 (random weights) to step {steps[-1]}"
        + (f" of {planned}" if isinstance(planned, int) and planned > 0 else "")  # a number from the metadata, or nothing
        + f"{stored}. Same colours (0–1) in every panel."
    )
    widgets.chart(figures.training_strip(traces, labels, kind, layer, head, ctx.presentation), key="tr_strip")

    def strip_csv() -> str:
        """Every panel's matrix as one long table: step, query, key, weight."""
        frames = []
        for step, trace in zip(steps, traces):
            matrix = widgets.matrix_frame(
                trace.head(kind, layer, head)["weights"], trace.query_tokens(kind), trace.key_tokens(kind)
            )
            frames.append(matrix.stack().rename("weight").rename_axis(["query", "key"]).reset_index().assign(step=step))
        return pd.concat(frames)[["step", "query", "key", "weight"]].to_csv(index=False)

    widgets.csv_download(strip_csv, key="csv_tr_strip", filename=f"weights_by_step_{kind.replace(' ', '_')}_L{layer}_H{head}")

    index = st.select_slider("Snapshot", range(len(steps)), format_func=lambda i: labels[i], key="tr_step", value=len(steps) - 1)
    trace = traces[index]
    fig = figures.attention_figure(trace, kind, layer, head, ctx.presentation, label=labels[index])
    widgets.heatmap(
        fig,
        trace.head(kind, layer, head)["weights"],
        trace.query_tokens(kind),
        trace.key_tokens(kind),
        key="tr_heatmap",
        filename=f"weights_step{steps[index]}_{kind.replace(' ', '_')}_L{layer}_H{head}",
    )
    session.sync_url(ctx, "training")


# ---------------------------------------------------------------------------------------------
# Train a model now.
# ---------------------------------------------------------------------------------------------

ctx = session.context()  # every page starts here (it may rerun the app first)
notices.coverage(ctx)
try:
    runner = training_jobs.runner()
except training_jobs.Unavailable as e:  # the jobs folder cannot be made: say so, and leave the rest of the app alone
    st.error(e.message())
    replay(ctx)  # the snapshots need no jobs folder
    st.stop()
FIELDS = {"n_layers": "Layers", "n_heads": "Heads per layer", "d_model": "d_model", "steps": "Steps"}
CUSTOM = training_jobs.CUSTOM
error_text = training_jobs.error_text
owner = training_jobs.owner()  # this browser's token: "yours", and the right to cancel (kept in the link once used)


def apply_preset() -> None:
    preset = jobs.PRESETS.get(st.session_state["tj_preset"])
    if preset is not None:
        st.session_state.update({f"tj_{k}": v for k, v in preset.items()})


def form_values() -> dict:
    return {"task": st.session_state["tj_task"], **{k: st.session_state[f"tj_{k}"] for k in FIELDS}}


if "tj_task" not in st.session_state:  # first visit: the link's form; back from another page: the form as it was
    form, problems = training_jobs.form_from_link(st.session_state.get("_tj_link") or {}, runner.limits)
    st.session_state.update({f"tj_{k}": v for k, v in st.session_state.get("_tj_form", form).items()})
    st.session_state["_tj_problems"] = problems if "_tj_form" not in st.session_state else []

st.subheader("Train a model now", anchor=False)
for problem in st.session_state.pop("_tj_problems", []):
    st.error(problem)

c_preset, c_task = st.columns(2)
c_preset.selectbox("Preset", [*jobs.PRESETS, CUSTOM], key="tj_preset", on_change=apply_preset)
c_task.selectbox(
    "Task",
    list(jobs.TASK_FIELDS),
    format_func=lambda t: f"{t}: {jobs.TASK_LABELS[t]}",
    key="tj_task",
    on_change=lambda: st.session_state.update(tj_preset=CUSTOM),
)
for col, (key, label) in zip(st.columns(len(FIELDS)), FIELDS.items()):
    col.number_input(label, step=1, key=f"tj_{key}", on_change=lambda: st.session_state.update(tj_preset=CUSTOM))

st.session_state["_tj_form"] = {**form_values(), "preset": st.session_state["tj_preset"]}  # survives other pages

lim = runner.limits
try:
    planned = jobs.make_spec(form_values(), lim, owner)
except jobs.JobError as e:
    planned, problem = None, error_text(e)
else:
    problem = None
estimate = (
    f"This one: {jobs.n_parameters(planned):,} parameters, about {training_jobs.duration(jobs.estimate_seconds(planned))} "
    "on this server (an estimate). "
    if planned
    else ""
)
st.caption(
    f"{estimate}Each job trains in its own process with the project's trainer, on {runner.threads} CPU "
    f"thread{'s' if runner.threads > 1 else ''} at a lower priority (this machine has {shared.CORES} cores: "
    f"{'the other one keeps' if shared.CORES - runner.threads == 1 else 'the others keep'} serving the app). One job at a time on this server, {lim.max_waiting} more may wait. Limits: up to {lim.max_layers} "
    f"layers, {lim.max_heads} heads, d_model {lim.max_d_model}, {lim.max_steps:,} steps, "
    f"{training_jobs.duration(lim.max_wall_s)} and {lim.max_disk_mb:.0f} MB per job."
)


def train() -> None:
    """The Train button: validate the form again and submit; what happened is shown on this run."""
    try:
        job = runner.submit(jobs.make_spec(form_values(), runner.limits, owner))
    except jobs.JobError as e:
        st.session_state["_tj_refused"] = error_text(e)
    else:
        st.session_state["_tj_mine"] = job.id
        st.session_state["_tj_owner_in_link"] = True  # a reload of this tab can still cancel it


st.button("Train", type="primary", key="tj_train", icon=":material/play_arrow:", on_click=train)
refused = st.session_state.pop("_tj_refused", None)
if refused is not None:
    st.error(refused)
elif problem is not None:
    st.warning(problem)


def _whose(job: jobs.Job) -> str:
    return "started in this browser" if job.spec.owner == owner else "started from another browser"


def progress() -> None:
    """The server's current job: who asked, progress, loss and metric curves (redrawn every second while it trains)."""
    job = training_jobs.current()
    if job is None:
        st.caption("No model has been trained on this server yet.")
        return
    st.markdown(f"**Job #{job.number}**: {job.spec.describe()}, {_whose(job)}, {job.threads} thread{'s' * (job.threads > 1)}")
    if job.state == "queued":
        ahead = [j for j in training_jobs.all_jobs() if j.state == "running"]
        st.info("Waiting: " + (f"job {ahead[0].describe()} is training first." if ahead else "starting…"))
    st.progress(min(job.step / max(job.steps, 1), 1.0), text=training_jobs.progress_text(job))
    if job.active and job.spec.owner == owner:
        st.button("Cancel this job", key="tj_cancel", on_click=training_jobs.cancel, args=(job.id,), icon=":material/stop:")
        st.caption(
            "This tab's link now ends in owner=…: reopened, it can still cancel the job. Give the class the app's "
            "address without it."
        )
    presentation = bool(st.session_state.get("sel_presentation"))
    left, right = st.columns(2)
    with left:
        widgets.chart(training_jobs.loss_figure(job.losses, job.evals, job.steps, presentation), key="tj_loss")
    with right:
        widgets.chart(training_jobs.metric_figure(job.evals, job.steps, job.metrics, presentation), key="tj_metric")


def snapshots() -> None:
    """The current job's snapshots on its probe input, looked for often: a new one is drawn well within a second."""
    job = training_jobs.current()
    seen = (job.id, job.active) if job is not None else None
    if seen != st.session_state.get("_tj_seen"):  # a job started or ended: the whole page (and the picker) changes
        # Only the full run below records what it drew: if this rerun is dropped (a timer's fragment run
        # can pre-empt it), the next tick asks again instead of leaving the page without the finished job.
        st.rerun(scope="app")
    if job is None:
        return
    presentation = bool(st.session_state.get("sel_presentation"))
    traces = training_jobs.probe_traces(job)
    if not traces:
        st.caption("The first snapshot (step 0, random weights) appears here as soon as the data is ready.")
        return
    cfg = traces[-1][1]
    kinds = list(cfg.kinds)
    _, _, default_kind, default_head = jobs.PROBES[job.spec.task]
    # Plain session values (widget state is dropped in a run that does not draw the widget); widgets bound to them.
    n_layers, n_heads = job.spec.n_layers, job.spec.n_heads
    view = st.session_state
    if view.get("tjv_kind") not in kinds:
        view["tjv_kind"] = default_kind if default_kind in kinds else kinds[0]
    if view.get("tjv_layer") not in range(n_layers):
        view["tjv_layer"] = n_layers - 1  # the last layer: where the task's pattern is clearest
    if view.get("tjv_head") not in range(n_heads):
        view["tjv_head"] = min(default_head, n_heads - 1)
    c_kind, c_layer, c_head = st.columns(3)
    kind = c_kind.selectbox("Attention", kinds, **session.bind("tjv_kind", "tj_kind"))
    layer = c_layer.selectbox("Layer", range(n_layers), **session.bind("tjv_layer", "tj_layer"))
    head = c_head.selectbox("Head", range(n_heads), **session.bind("tjv_head", "tj_head"))
    steps = tuple(step for step, _ in traces)
    strip = training_jobs.strip_figure(job.id, steps, kind, layer, head, presentation, tuple(t for _, t in traces))
    widgets.chart(strip, key="tj_strip")
    fig = training_jobs.latest_figure(job.id, steps[-1], kind, layer, head, presentation, traces[-1][1])
    widgets.chart(fig, key="tj_heatmap")


latest = training_jobs.current()
st.session_state["_tj_seen"] = (latest.id, latest.active) if latest is not None else None
# While a job trains: the curves every second, the snapshots (rare, but to be seen at once) every 0.3 s
# (benchmarks/train_live.py: 0.2 s drew them sooner but slowed other sessions). Otherwise only a job
# started from another browser is looked for.
training = latest is not None and latest.active
session.fragment(progress, run_every=1.0 if training else None)()
session.fragment(snapshots, run_every=0.3 if training else 3.0)()

if latest is not None and latest.state == "done" and latest.checkpoint.is_file():
    name = training_jobs.entry_name(latest)
    quality = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in latest.metrics.items() if k != "n" and k != "loss")
    st.success(
        f"Job #{latest.number} finished in {training_jobs.duration(latest.elapsed_s)}: held-out {quality}. It is now in "
        f"the sidebar's checkpoint picker as “Trained here #{latest.number}” for everyone on this server."
    )
    text, target, _, _ = jobs.PROBES[latest.spec.task]

    def open_it() -> None:
        st.session_state.update(sel_checkpoint=name, sel_text=text, sel_target=None, sel_auto_target=True)
        session.set_selection(kind="", layer=0, head=0)
        st.session_state[session.PICK_TELLING] = True  # it opens on its most telling head, as any new model does

    c_open, c_download = st.columns(2)
    c_open.button("Open it in the sidebar", key="tj_open", on_click=open_it, icon=":material/open_in_new:")
    c_download.download_button(
        "Download the checkpoint (.safetensors)",
        latest.checkpoint.read_bytes,
        file_name=f"trained-{latest.number}-{latest.spec.task}.safetensors",
        mime="application/octet-stream",
        key="tj_download",
        icon=":material/download:",
        on_click="ignore",
    )
elif latest is not None and latest.state in ("failed", "cancelled"):
    message = f"Job #{latest.number} {latest.state}: {md(latest.reason, 400)}. The app keeps running; you can train again."
    (st.error if latest.state == "failed" else st.info)(message)

replay(ctx)
