"""The training job's own process: `python -m transformer.train.job_process <job folder>` (started by `jobs.JobRunner`).

It runs the project's trainer (`loop.train`) on `--threads` torch threads at a lower priority, and
its hook (`Progress`) rewrites the job's status.json atomically: step, loss points, evaluations,
snapshots and their write times, steps/s, time left. It checks at every step that the server that
started it is still alive, and ends if not.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from pathlib import Path
from typing import Any

from transformer.train.jobs import MAX_LOSS_POINTS, WRITE_EVERY_S, JobSpec, read_json, write_json


class Progress:
    """The trainer's hook in the job process: keeps the progress and rewrites status.json (atomically, throttled)."""

    def __init__(self, folder: Path, spec: JobSpec, parent_pid: int):
        self.folder, self.spec, self.parent_pid = folder, spec, parent_pid
        self.status: dict[str, Any] = {
            "state": "running",
            "reason": "preparing the data and the tokenizer",
            "step": 0,
            "steps": spec.steps,
            "losses": [],
            "evals": [],
            "snapshots": [],
            "snapshot_times": [],
            "steps_per_s": 0.0,
            "eta_s": None,
            "started": time.time(),
            "ended": None,
            "metrics": {},
            "pid": os.getpid(),
        }
        self.every = max(1, spec.steps // MAX_LOSS_POINTS)  # steps per loss point
        self._bucket: list[float] = []
        self._train_t0: float | None = None
        self._first_step = 0
        self._written = 0.0
        self.write()

    def write(self) -> None:
        self.status["cpu_s"] = time.process_time()  # this process's CPU time: its wall time on an otherwise idle core
        write_json(self.folder / "status.json", self.status)
        self._written = time.monotonic()

    def __call__(self, event: str, facts: dict[str, Any]) -> None:
        if self.parent_pid and os.getppid() != self.parent_pid:  # the server is gone: so is this job
            os._exit(3)
        s = self.status
        now = time.monotonic()
        urgent = False
        if event == "start":
            self._train_t0, self._first_step = now, facts["step"]
            s["reason"] = "training"
            urgent = True
        elif event == "step":
            s["step"] = facts["step"]
            self._bucket.append(facts["loss"])
            if len(self._bucket) >= self.every or facts["step"] == self.spec.steps:
                s["losses"].append([facts["step"], sum(self._bucket) / len(self._bucket)])
                self._bucket = []
            if self._train_t0 is not None and now > self._train_t0:
                rate = (facts["step"] - self._first_step) / (now - self._train_t0)
                s["steps_per_s"] = rate
                s["eta_s"] = (self.spec.steps - facts["step"]) / rate if rate > 0 else None
            if facts["step"] == self.spec.steps:
                s["reason"] = "measuring held-out quality"
                urgent = True
        elif event == "eval":
            s["evals"].append({k: v for k, v in facts.items() if isinstance(v, int | float)})
            urgent = True
        elif event == "snapshot":
            s["snapshots"].append(facts["step"])
            s["snapshot_times"].append(time.time())  # when the file holding it was in place (benchmarks/train_live.py)
            urgent = True
        elif event == "saved":
            s["metrics"] = {k: v for k, v in facts["metrics"].items() if isinstance(v, int | float)}
        if urgent or now - self._written >= WRITE_EVERY_S:
            self.write()

    def finish(self) -> None:
        self.status.update(state="done", reason="", ended=time.time(), eta_s=0.0)
        self.write()

    def fail(self, reason: str) -> None:
        self.status.update(state="failed", reason=reason, ended=time.time(), eta_s=None)
        self.write()


def run_job(folder: Path, threads: int = 1, nice: int = 0, parent_pid: int = 0) -> int:
    """Train the job in `folder` (the job process's body); returns the exit code."""
    from transformer.train.loop import TrainConfig, train

    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)  # the server's sessions come first
    spec = JobSpec(**read_json(folder / "spec.json")["spec"])
    progress = Progress(folder, spec, parent_pid)
    cfg = TrainConfig(
        out=str(folder / f"{folder.name}.safetensors"),
        state_out=str(folder / "state.safetensors"),
        progress=False,
        threads=threads,
        device="cpu",
        **spec.train_fields(),
    )
    try:
        train(cfg, hook=progress)
    except Exception as e:  # the job's own error, for the page; the traceback goes to log.txt
        traceback.print_exc()
        progress.fail(f"the training stopped with an error: {type(e).__name__}: {e}"[:500])
        return 1
    with contextlib.suppress(FileNotFoundError):
        os.unlink(cfg.state_file)  # nothing will resume a finished job: its state is only disk
    progress.finish()
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m transformer.train.jobs", description="Run one training job (the app starts it).")
    p.add_argument("folder", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--parent", type=int, default=0, help="the server's pid: the job ends when that process is gone")
    args = p.parse_args(argv)
    return run_job(args.folder, args.threads, args.nice, args.parent)


if __name__ == "__main__":
    raise SystemExit(main())
