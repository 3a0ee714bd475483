"""The training job runner (transformer/train/jobs.py): start, progress, cancel, crash, queue, clean-up, limits.

Real job processes on tiny models (d_model 16, tens of steps); the runner's folder lives under the test's tmp_path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from transformer.checkpoints.format import load_checkpoint
from transformer.checkpoints.snapshots import load_snapshots
from transformer.train import jobs
from transformer.train.jobs import JobError, JobRunner, JobSpec, Limits
from transformer.train.loop import snapshot_steps

TINY = dict(task="reverse", n_layers=1, n_heads=2, d_model=16)


@pytest.fixture
def runner(tmp_path):
    r = JobRunner(Limits(), threads=1, parent=tmp_path, nice=0)
    yield r
    r.close()


def until(runner: JobRunner, job_id: str, ok, timeout: float = 120.0) -> jobs.Job:
    """Poll the job's files until ok(job) (the way the page sees it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = runner.get(job_id)
        if job is not None and ok(job):
            return job
        time.sleep(0.02)
    raise AssertionError(f"{job_id} never reached the expected state; last: {runner.get(job_id)}")


# ---------------------------------------------------------------------------------------------
# Limits, checked before anything starts.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, message",
    [
        (dict(TINY, steps=0), "steps is 0: this server trains with steps from 1 to 5,000."),
        (dict(TINY, steps=10**12), "steps is 1,000,000,000,000: this server trains with steps from 1 to 5,000."),
        (dict(TINY, steps="1e3"), "steps must be a whole number, not '1e3'"),
        (dict(TINY, steps=True), "steps must be a whole number, not True"),
        (dict(TINY, steps=10, n_layers=5), "n_layers is 5: this server trains with n_layers from 1 to 4."),
        (dict(TINY, steps=10, n_heads=0), "n_heads is 0: this server trains with n_heads from 1 to 8."),
        (dict(TINY, steps=10, d_model=4096), "d_model is 4,096: this server trains with d_model from 8 to 256."),
        (dict(TINY, steps=10, d_model=18, n_heads=4), "d_model 18 does not split evenly over 4 heads"),
        (
            dict(TINY, task="classifier", steps=10),
            "Unknown task 'classifier': choose one of reverse, copy, sort, lm, translation.",
        ),
        (dict(TINY, task=None, steps=10), "Unknown task None"),
    ],
)
def test_bad_specs_are_refused_with_a_message(raw, message):
    with pytest.raises(JobError) as e:
        jobs.make_spec(raw)
    assert str(e.value).startswith(message)


def test_wall_time_and_disk_are_estimated_before_starting():
    big = dict(task="lm", n_layers=4, n_heads=8, d_model=256, steps=5000)
    with pytest.raises(JobError, match=r"would take about \d+ min on this server; one job may take at most 10 min"):
        jobs.make_spec(big)
    with pytest.raises(JobError, match=r"would write about \d+ MB .* at most 1 MB"):
        jobs.make_spec(dict(TINY, steps=10, d_model=256), Limits(max_disk_mb=1))
    preset = jobs.make_spec(jobs.PRESETS["reverse in under a minute"])
    assert jobs.estimate_seconds(preset) < 60
    for preset in jobs.PRESETS.values():  # every preset fits the default limits
        jobs.make_spec(preset)


def test_the_parameter_count_matches_the_model_the_trainer_builds():
    from transformer.api import build_model
    from transformer.model.config import ModelConfig

    for spec in (
        jobs.make_spec(dict(TINY, steps=10)),
        jobs.make_spec(dict(task="lm", n_layers=2, n_heads=4, d_model=64, steps=10)),
    ):
        f = spec.train_fields()
        kind = "decoder" if spec.task == "lm" else "encoder-decoder"
        cfg = ModelConfig(
            kind=kind,
            vocab_size=f["vocab_size"],
            n_layers=spec.n_layers,
            n_heads=spec.n_heads,
            d_model=spec.d_model,
            d_ff=f["d_ff"],
        )
        actual = sum(p.numel() for p in build_model(cfg).parameters())
        assert abs(jobs.n_parameters(spec) - actual) / actual < 0.05, (spec, jobs.n_parameters(spec), actual)


# ---------------------------------------------------------------------------------------------
# Jobs that run.
# ---------------------------------------------------------------------------------------------


def test_a_job_reports_progress_and_writes_a_checkpoint_with_snapshots(runner):
    spec = jobs.make_spec(dict(TINY, steps=60, seed=3), owner="me")
    job = runner.submit(spec)
    assert job.state in ("queued", "running") and job.folder.parent == runner.root
    assert oct(runner.root.stat().st_mode & 0o777) == "0o700"
    seen = []
    while True:
        job = runner.get(job.id)
        seen.append((job.state, job.step, len(job.losses), job.snapshots))
        if job.state in jobs.FINAL:
            break
        time.sleep(0.02)
    job = runner.wait(job.id)
    assert job.state == "done", (job.reason, (job.folder / "log.txt").read_text()[-2000:])
    steps_seen = [s for state, s, _, _ in seen if state == "running"]
    assert steps_seen == sorted(steps_seen) and len(set(steps_seen)) > 2  # the progress moved while it ran
    assert job.step == job.steps == 60 and job.losses[-1][0] == 60
    assert [e["step"] for e in job.evals] == list(range(10, 61, 10))  # eval every max(10, steps // 20)
    assert job.snapshots == tuple(snapshot_steps(60, spec.n_snapshots)) and job.snapshots[0] == 0
    assert job.steps_per_s > 0 and job.eta_s == 0.0 and job.ended >= job.started
    assert set(job.metrics) >= {"exact_match", "token_accuracy", "loss"}
    # What it wrote: the checkpoint and snapshots load; no temp files; the resumable state is gone.
    ckpt = load_checkpoint(job.checkpoint, device="cpu")
    assert ckpt.training["task"] == "reverse" and ckpt.training["steps"] == 60 and ckpt.training["seed"] == 3
    assert ckpt.config.n_layers == 1 and ckpt.config.n_heads == 2 and ckpt.config.d_model == 16
    snaps = load_snapshots(job.snapshots_file, device="cpu")
    assert [s for s, _ in snaps] == list(job.snapshots)
    # The last snapshot and the checkpoint store the same weights, copied, not computed twice: the same bits.
    torch.testing.assert_close(snaps[-1][1].model.state_dict(), ckpt.model.state_dict(), rtol=0, atol=0)
    names = sorted(p.name for p in job.folder.iterdir())
    assert names == ["job-0001.safetensors", "job-0001.snapshots.safetensors", "log.txt", "spec.json", "status.json"]
    assert runner.finished() == [job] and runner.current() == job

    # The same spec again gives the same weights (seeded data, model and batches); another seed does not. Bit for
    # bit, as promised: the same training code on the runner's one thread (threads=1), in both job processes.
    again = runner.wait(runner.submit(spec).id)
    other = runner.wait(runner.submit(jobs.make_spec(dict(TINY, steps=60, seed=4))).id)
    same = load_checkpoint(again.checkpoint, device="cpu").model.state_dict()
    torch.testing.assert_close(same, ckpt.model.state_dict(), rtol=0, atol=0)
    differs = load_checkpoint(other.checkpoint, device="cpu").model.state_dict()
    assert any(not torch.equal(differs[k], v) for k, v in same.items())
    assert [j.number for j in runner.finished()] == [1, 2, 3]


def test_a_second_job_waits_a_third_is_refused_and_cancel_works_for_both(runner):
    first = runner.submit(jobs.make_spec(dict(TINY, steps=3000), owner="teacher"))
    second = runner.submit(jobs.make_spec(dict(TINY, steps=20), owner="student"))
    assert runner.get(second.id).state == "queued" and runner.waiting() == [second.id]
    with pytest.raises(JobError) as e:
        runner.submit(jobs.make_spec(dict(TINY, steps=20), owner="student"))
    message = str(e.value)
    assert message.startswith("This server trains one model at a time and 1 more may wait; ahead now: #1 (reverse, 1 layers")
    assert "asked for from another browser; #2 (reverse, 1 layers × 2 heads, d_model 16, 20 steps; queued), yours." in message
    assert len(runner.jobs()) == 2

    assert runner.cancel(second.id)
    assert runner.get(second.id).state == "cancelled" and runner.get(second.id).reason == "cancelled before it started"
    until(runner, first.id, lambda j: j.step > 0)
    pid = runner.pid(first.id)
    assert runner.cancel(first.id)
    job = runner.wait(first.id, 60)
    assert job.state == "cancelled" and job.reason == "cancelled while it was training" and 0 < job.step < 3000
    assert not jobs.pid_alive(pid) or _zombie(pid)
    assert not runner.cancel(first.id)  # already over
    assert not (second.folder / "job-0002.safetensors").exists()  # the waiting job never ran


def test_a_killed_job_is_reported_and_the_next_one_still_runs(runner):
    doomed = runner.submit(jobs.make_spec(dict(TINY, steps=3000)))
    after = runner.submit(jobs.make_spec(dict(TINY, steps=20)))
    until(runner, doomed.id, lambda j: j.step > 5)
    os.kill(runner.pid(doomed.id), signal.SIGKILL)  # as the OOM killer would
    job = runner.wait(doomed.id, 60)
    assert job.state == "failed"
    assert job.reason == "the training process ended without finishing (killed?) (signal SIGKILL)"
    assert job.step > 5 and job.losses  # what it did before it died is still there
    assert runner.wait(after.id, 120).state == "done"


def test_a_job_that_raises_says_why(runner):
    bad = JobSpec(task="reverse", n_layers=1, n_heads=3, d_model=16, steps=10)  # past make_spec: 16 is not a multiple of 3
    job = runner.wait(runner.submit(bad).id, 120)
    assert job.state == "failed"
    assert job.reason.startswith("the training stopped with an error: ") and "d_model" in job.reason
    assert "Traceback" in (job.folder / "log.txt").read_text()


def test_a_job_past_the_wall_time_limit_is_stopped(tmp_path):
    r = JobRunner(Limits(max_wall_s=4), threads=1, parent=tmp_path, nice=0)
    try:
        job = r.wait(r.submit(JobSpec(task="reverse", n_layers=1, n_heads=2, d_model=16, steps=5000)).id, 60)
        assert job.state == "failed" and job.reason == "stopped after 4 s, this server's limit for one job"
    finally:
        r.close()


def test_folders_of_dead_servers_are_removed_at_start_and_ours_at_close(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{jobs.JOBS_PREFIX}{dead.pid}-abc"
    (stale / "job-0001").mkdir(parents=True)
    (stale / "job-0001" / "job-0001.safetensors").write_bytes(b"x")
    alive = tmp_path / f"{jobs.JOBS_PREFIX}{os.getppid()}-def"  # another server that is still running
    alive.mkdir()
    unrelated = tmp_path / "attnviz-uploads-1-x"
    unrelated.mkdir()
    r = JobRunner(parent=tmp_path)
    assert not stale.exists() and alive.is_dir() and unrelated.is_dir()
    assert r.root.name.startswith(f"{jobs.JOBS_PREFIX}{os.getpid()}-")
    job = r.submit(jobs.make_spec(dict(TINY, steps=3000)))
    until(r, job.id, lambda j: j.state == "running")
    pid = r.pid(job.id)
    r.close()
    assert not r.root.exists() and (not jobs.pid_alive(pid) or _zombie(pid))
    with pytest.raises(JobError, match="shutting down"):
        r.submit(jobs.make_spec(dict(TINY, steps=10)))


SERVER = """
import sys, time
from pathlib import Path
from transformer.train import jobs
r = jobs.JobRunner(jobs.Limits(), threads=1, parent=Path(sys.argv[1]), nice=0)
job = r.submit(jobs.make_spec(dict(task="reverse", n_layers=1, n_heads=2, d_model=16, steps=3000)))
while r.get(job.id).step < 3:
    time.sleep(0.05)
print(r.pid(job.id), flush=True)
time.sleep(600)
"""


def test_a_killed_server_leaves_no_job_behind(tmp_path):
    """The server dies (SIGKILL: no atexit): its job process ends by itself, and the next server removes the folder."""
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(server.stdout.readline())
        assert jobs.pid_alive(child)
        server.kill()
        server.wait()
        deadline = time.monotonic() + 30
        while jobs.pid_alive(child) and not _zombie(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not jobs.pid_alive(child) or _zombie(child), "the job outlived its server"
    finally:
        server.kill()
    [left] = list(tmp_path.glob(f"{jobs.JOBS_PREFIX}{server.pid}-*"))
    r = JobRunner(parent=tmp_path)
    assert not left.exists()
    r.close()


def test_status_files_are_replaced_whole(tmp_path):
    path = tmp_path / "status.json"
    jobs.write_json(path, {"state": "running", "losses": [[1, 2.0]] * 1000})
    assert jobs.read_json(path)["state"] == "running"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp file left
    path.write_text('{"state": "runn')  # a torn file (never written by us) reads as nothing, not an exception
    assert jobs.read_json(path) == {}


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def test_a_job_is_cancelled_from_another_app_process_through_its_folder(tmp_path):
    """A deployment's replicas share the jobs folder: the owner's browser may be on a replica that does not run its
    job. That replica asks through the job's folder (`ask_cancel`); the running replica stops it, or drops it from
    its queue, within a second or so."""
    here = JobRunner(Limits(), threads=1, parent=tmp_path, nice=0, shared=True)
    try:
        training = here.submit(jobs.make_spec(dict(TINY, steps=3000), owner="teacher"))
        waiting = here.submit(jobs.make_spec(dict(TINY, steps=20), owner="student"))
        running = until(here, training.id, lambda j: j.step > 0)
        # what the other replica does: it reads the job from the shared folder, and never touches `here`
        assert jobs.ask_cancel(jobs.read_job(waiting.folder))
        until(here, waiting.id, lambda j: j.state == "cancelled")
        assert here.get(waiting.id).reason == "cancelled before it started"
        assert here.get(training.id).state == "running"  # only the job asked for
        assert jobs.ask_cancel(running)
        job = here.wait(training.id, 60)
        assert job.state == "cancelled" and job.reason == "cancelled while it was training" and 0 < job.step < 3000
        assert not jobs.ask_cancel(job)  # over: nothing to ask
        assert not (waiting.folder / "job-0002.safetensors").exists()
    finally:
        here.close()
