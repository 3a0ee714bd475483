"""Training jobs for a server: one small model trained at a time, in its own process, its progress in a JSON file.

The app (server/training_jobs.py) keeps one `JobRunner` per server. A job is a folder in the server's
private temp folder (mode 0700, `attnviz-jobs-<server pid>-…`, removed at exit; folders of dead
servers are removed when the next one starts):

    job-0003/spec.json                       what to train (written once, before the process starts)
    job-0003/status.json                     state and progress, rewritten atomically by the job process
    job-0003/job-0003.safetensors            the checkpoint (written atomically by the trainer)
    job-0003/job-0003.snapshots.safetensors  the snapshots so far (rewritten atomically at each one)
    job-0003/log.txt                         the process's output (tracebacks end up here)

The job process is `python -m transformer.train.job_process <job folder>` (job_process.py): the project's trainer
(`loop.train`) on `threads` torch threads at a lower priority, reporting through its hook. It
checks at every step that the server that started it is still alive, and ends if not. Every
status a reader sees is whole (written to a temp file, then renamed). When the process ends the
server reads the last status: "done" stays; anything else becomes "cancelled" (asked for),
"failed" with the job's own error, or "failed" because the process ended without finishing.

No Streamlit here: the runner is plain Python, tested with pytest (tests/test_jobs.py).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformer.train.make_checkpoints import RECIPES

JOBS_PREFIX = "attnviz-jobs-"
STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
KILLED = "the training process ended without finishing (killed?)"
CANCEL_FILE = "cancel"  # in a job's folder: its owner asked, from another app process, that it stop
WRITE_EVERY_S = 0.2  # the job rewrites its status at most this often between events (snapshots, evals: at once)
MAX_LOSS_POINTS = 400  # the loss curve keeps at most this many points (pairs are averaged beyond)

# ---------------------------------------------------------------------------------------------
# What can be trained: tasks, their fixed training fields, presets, limits.
# ---------------------------------------------------------------------------------------------

# task -> TrainConfig fields a job starts from; the user chooses n_layers, n_heads, d_model, steps.
# The algorithmic tasks use the "reverse in under a minute" recipe (benchmarks/train_live.py measures
# it); lm and translation take the shipped recipes' fields (train/make_checkpoints.py), the translation
# set made smaller so that it is quick to prepare.
_ALGORITHMIC = dict(d_ff_ratio=2, max_len=16, vocab_size=64, batch_size=64, lr=3e-3, warmup=40, n_train=10_000)
TASK_FIELDS: dict[str, dict[str, Any]] = {
    "reverse": dict(task="reverse", **_ALGORITHMIC),
    "copy": dict(task="copy", **_ALGORITHMIC),
    "sort": dict(task="sort", **_ALGORITHMIC),
    # the shipped lm's recipe (its data mix grows induction heads), with this page's d_ff ratio
    "lm": dict(
        task="lm",
        d_ff_ratio=2,
        **{
            k: RECIPES["lm"][k]
            for k in ("max_len", "vocab_size", "batch_size", "lr", "warmup", "min_lr_ratio", "n_train", "data")
        },
    ),
    "translation": dict(
        task="translation", d_ff_ratio=2, max_len=48, vocab_size=1200, batch_size=64, lr=1.5e-3, warmup=100, n_train=10_000
    ),
}
TASK_LABELS = {
    "reverse": "reverse a letter sequence (encoder-decoder)",
    "copy": "copy a letter sequence (encoder-decoder)",
    "sort": "sort a digit sequence (encoder-decoder)",
    "lm": "the LM stream with repeated spans (decoder-only)",
    "translation": "a small Toy English → target language set (encoder-decoder)",
}
# What the page shows each snapshot on: (source text, target text or None), and the attention it starts
# on: kind and head, in the last layer. The reverse preset (seed 0) grows its reversal head in layer 1,
# head 1 (0.97 of its weight on the mirrored source letter at the last step); the induction preset's
# induction head is layer 1, head 0 (`analysis.induction_scores` 0.59).
PROBES: dict[str, tuple[str, str | None, str, int]] = {
    "reverse": ("a b c d e f g h i j", "j i h g f e d c b a", "cross", 1),
    "copy": ("a b c d e f g h i j", "a b c d e f g h i j", "cross", 0),
    "sort": ("7 2 9 4 0 5 3 8 1 6", "0 1 2 3 4 5 6 7 8 9", "cross", 0),
    "lm": ("red cat sees big dog . red cat sees big dog . red cat sees big dog .", None, "decoder self", 0),
    "translation": ("every tiny tiger by three painters finds him .", "keza sate vepu zulun dusepun sa gufo ka .", "cross", 0),
}
PRESETS: dict[str, dict[str, Any]] = {
    "reverse in under a minute": dict(task="reverse", n_layers=2, n_heads=4, d_model=64, steps=450),
    "an induction head (a few minutes)": dict(task="lm", n_layers=2, n_heads=4, d_model=128, steps=2500),
    "sort digits": dict(task="sort", n_layers=2, n_heads=4, d_model=64, steps=800),
    "a small translator (a few minutes)": dict(task="translation", n_layers=2, n_heads=4, d_model=96, steps=1500),
}


@dataclass(frozen=True)
class Limits:
    """What one job may ask of this server; every field is checked before a job starts."""

    max_layers: int = 4
    max_heads: int = 8
    max_d_model: int = 256
    max_steps: int = 5_000
    max_wall_s: float = 600.0  # estimated before starting, and enforced while it runs
    max_disk_mb: float = 200.0  # checkpoint + snapshots + resumable state of one job
    max_waiting: int = 1  # jobs queued behind the running one; more are refused
    max_kept: int = 6  # finished jobs kept (their checkpoints stay in the picker); the oldest go first
    min_free_disk_mb: float = 500.0  # never fill the disk: refuse when less would be left


class JobError(ValueError):
    """A job that cannot be made or started. `template` names the offending value `{value}`; `value` is the user's.

    The app shows `value` literally (server.literal.md); str(e) quotes it with repr.
    """

    def __init__(self, template: str, value: object = None):
        self.template, self.value = template, value
        super().__init__(template.format(value=repr(value)) if "{value}" in template else template)


@dataclass(frozen=True)
class JobSpec:
    """One training job: the task, the model's size, the steps, and who asked (shown to others)."""

    task: str
    n_layers: int
    n_heads: int
    d_model: int
    steps: int
    seed: int = 0  # model initialisation and data (the same spec gives the same weights)
    n_snapshots: int = 8  # step 0 and steps spaced by doubling (loop.snapshot_steps)
    owner: str = ""  # an opaque tag of the session that asked (the page says "yours" or "another browser")

    def train_fields(self) -> dict[str, Any]:
        """Every TrainConfig field but the output paths, threads and progress."""
        fields = dict(TASK_FIELDS[self.task])
        ratio = fields.pop("d_ff_ratio")
        return dict(
            fields,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_ff=ratio * self.d_model,
            steps=self.steps,
            warmup=min(fields["warmup"], max(1, self.steps // 5)),
            seed=self.seed,
            data_seed=self.seed,
            n_snapshots=self.n_snapshots,
            eval_every=max(10, self.steps // 20),
            n_eval=500,
        )

    def describe(self) -> str:
        return f"{self.task}, {self.n_layers} layers × {self.n_heads} heads, d_model {self.d_model}, {self.steps} steps"


def _whole(raw: object, name: str) -> int:
    if isinstance(raw, bool):
        raise JobError(f"{name} must be a whole number, not {{value}}", raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    text = str(raw).strip()
    if not text.lstrip("-").isdigit() or len(text) > 12:
        raise JobError(f"{name} must be a whole number, not {{value}}", raw)
    return int(text)


def make_spec(raw: Mapping[str, object], limits: Limits = Limits(), owner: str = "") -> JobSpec:
    """A validated JobSpec from plain values (widgets, a link's strings); a JobError says what is wrong.

    Checks the task name, every size against `limits`, and the model's size, wall time and disk estimates.
    """
    task = raw.get("task")
    if not isinstance(task, str) or task not in TASK_FIELDS:
        raise JobError(f"Unknown task {{value}}: choose one of {', '.join(TASK_FIELDS)}.", task)
    values = {k: _whole(raw.get(k), k) for k in ("n_layers", "n_heads", "d_model", "steps")}
    seed = _whole(raw.get("seed", 0), "seed")
    bounds = {
        "steps": (1, limits.max_steps),
        "n_layers": (1, limits.max_layers),
        "n_heads": (1, limits.max_heads),
        "d_model": (8, limits.max_d_model),
    }
    for name, (lo, hi) in bounds.items():
        v = values[name]
        if not lo <= v <= hi:
            raise JobError(f"{name} is {v:,}: this server trains with {name} from {lo} to {hi:,}.")
    if not 0 <= seed < 2**31:
        raise JobError(f"seed is {seed:,}: choose a seed from 0 to {2**31 - 1:,}.")
    if values["d_model"] % values["n_heads"]:
        raise JobError(
            f"d_model {values['d_model']} does not split evenly over {values['n_heads']} heads: "
            "choose a d_model that is a multiple of n_heads."
        )
    spec = JobSpec(task=task, seed=seed, owner=owner, **values)
    seconds = estimate_seconds(spec)
    if seconds > limits.max_wall_s:
        raise JobError(
            f"{spec.describe()} would take about {seconds / 60:.0f} min on this server; one job may take at most "
            f"{limits.max_wall_s / 60:.0f} min. Choose fewer steps or a smaller model."
        )
    need = estimate_disk_bytes(spec) / 1e6
    if need > limits.max_disk_mb:
        raise JobError(
            f"{spec.describe()} would write about {need:.0f} MB (checkpoint, snapshots, training state); "
            f"one job may write at most {limits.max_disk_mb:.0f} MB. Choose a smaller model."
        )
    return spec


# Model arithmetic for the limits: parameters, seconds, bytes (estimates, stated as such on the page).
def n_parameters(spec: JobSpec) -> int:
    """Parameters of the model a spec trains (embeddings included; the vocabulary at its target size)."""
    f = spec.train_fields()
    d, d_ff, vocab = spec.d_model, f["d_ff"], f["vocab_size"]
    layer = 4 * d * d + 4 * d + 2 * d * d_ff + d_ff + d + 4 * d  # attention, feed-forward, two LayerNorms
    stacks = 2 if _kind(spec.task) == "encoder-decoder" else 1
    cross = (4 * d * d + 4 * d + 2 * d) * spec.n_layers if stacks == 2 else 0
    return stacks * spec.n_layers * layer + cross + vocab * d + vocab + 2 * d * stacks


def _kind(task: str) -> str:
    return "decoder" if task == "lm" else "encoder-decoder"


# One training step on one thread: a fixed cost (Python, small matrices) plus a cost per (parameter ×
# token), fitted to the reverse preset (30 s of CPU for 450 steps, benchmarks/train_live.py) and the
# induction preset (about 0.09 s a step) on a 2-core Xeon; plus the fixed cost of a job (the process,
# data, tokenizer, final evaluation).
SECONDS_PER_STEP = 0.05
SECONDS_PER_PARAM_TOKEN = 6e-11
FIXED_SECONDS = {"reverse": 6.0, "copy": 6.0, "sort": 6.0, "lm": 15.0, "translation": 15.0}
TOKENS_PER_EXAMPLE = {"reverse": 20, "copy": 20, "sort": 20, "lm": 40, "translation": 30}


def estimate_seconds(spec: JobSpec) -> float:
    """Rough wall time of a job on one thread (an estimate: other work on the machine slows it)."""
    f = spec.train_fields()
    per_step = SECONDS_PER_PARAM_TOKEN * n_parameters(spec) * f["batch_size"] * TOKENS_PER_EXAMPLE[spec.task]
    return FIXED_SECONDS[spec.task] + spec.steps * (SECONDS_PER_STEP + per_step)


def estimate_disk_bytes(spec: JobSpec) -> int:
    """Checkpoint (float32) + snapshots (float32) + resumable state (weights and Adam's two moments)."""
    weights = 4 * n_parameters(spec)
    return weights + spec.n_snapshots * weights + 3 * weights + 2_000_000  # + tokenizer, metadata, status


# ---------------------------------------------------------------------------------------------
# Files: atomic JSON.
# ---------------------------------------------------------------------------------------------


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (a server whose folders must be kept; server/shared.py asks too, for uploads)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------
# What a reader sees of a job.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A job as its files say now (read-only: the runner and the job process write them)."""

    id: str  # "job-0003"
    number: int
    folder: Path
    spec: JobSpec
    state: str  # queued | running | done | failed | cancelled
    reason: str = ""  # why it failed or was cancelled, or where it is (preparing the data...)
    step: int = 0
    steps: int = 0
    losses: tuple[tuple[int, float], ...] = ()  # (step, mean training loss over the steps since the previous point)
    evals: tuple[dict, ...] = ()  # the trainer's history rows: step, train_loss, eval_loss, eval_accuracy, lr
    snapshots: tuple[int, ...] = ()  # steps whose snapshot is in the snapshots file
    snapshot_times: tuple[float, ...] = ()  # time.time() when each was written
    steps_per_s: float = 0.0
    eta_s: float | None = None
    submitted: float = 0.0  # time.time()
    started: float | None = None
    ended: float | None = None
    metrics: dict = field(default_factory=dict)  # the final held-out quality (exact match, ...)
    cpu_s: float = 0.0  # CPU seconds of the job process so far
    threads: int = 1

    @property
    def checkpoint(self) -> Path:
        return self.folder / f"{self.id}.safetensors"

    @property
    def snapshots_file(self) -> Path:
        return self.folder / f"{self.id}.snapshots.safetensors"

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def elapsed_s(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.time()) - self.started

    def describe(self) -> str:
        where = f"step {self.step:,} of {self.steps:,}" if self.state == "running" else self.state
        return f"#{self.number} ({self.spec.describe()}; {where})"


def read_job(folder: Path) -> Job | None:
    """The job in `folder`, or None when it has no readable spec (being created, or not a job)."""
    spec_data = read_json(folder / "spec.json")
    if not spec_data:
        return None
    spec = JobSpec(**spec_data["spec"])
    status = read_json(folder / "status.json")
    return Job(
        id=folder.name,
        number=int(spec_data["number"]),
        folder=folder,
        spec=spec,
        state=status.get("state", "queued"),
        reason=status.get("reason", ""),
        step=int(status.get("step", 0)),
        steps=int(status.get("steps", spec.steps)),
        losses=tuple((int(s), float(v)) for s, v in status.get("losses", ())),
        evals=tuple(status.get("evals", ())),
        snapshots=tuple(status.get("snapshots", ())),
        snapshot_times=tuple(status.get("snapshot_times", ())),
        steps_per_s=float(status.get("steps_per_s", 0.0)),
        eta_s=status.get("eta_s"),
        submitted=float(spec_data.get("submitted", 0.0)),
        started=status.get("started"),
        ended=status.get("ended"),
        metrics=status.get("metrics", {}),
        cpu_s=float(status.get("cpu_s", 0.0)),
        threads=int(spec_data.get("threads", 1)),
    )


# ---------------------------------------------------------------------------------------------
# The server side: one runner per server.
# ---------------------------------------------------------------------------------------------


def jobs_in(root: Path) -> list[Job]:
    """Every job in a runner's folder, oldest first (a folder being created is left out)."""
    found = [read_job(f) for f in sorted(root.glob("job-*")) if f.is_dir()]
    return [j for j in found if j is not None]


def current_of(jobs: list[Job]) -> Job | None:
    """The job to show of `jobs` (oldest first): a running one, else the first waiting one, else the latest."""
    for state in ("running", "queued"):
        for job in jobs:
            if job.state == state:
                return job
    return jobs[-1] if jobs else None


def finished_of(jobs: list[Job]) -> list[Job]:
    """The jobs of `jobs` that finished with a checkpoint, in their order."""
    return [j for j in jobs if j.state == "done" and j.checkpoint.is_file()]


def clean_stale(parent: Path) -> list[Path]:
    """Remove job folders left by servers that are no longer running; returns what was removed."""
    removed = []
    for old in parent.glob(f"{JOBS_PREFIX}*"):
        pid = old.name.removeprefix(JOBS_PREFIX).split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


class JobRunner:
    """This server's training jobs: one runs at a time, `limits.max_waiting` may wait, the rest are refused.

    Thread-safe: every Streamlit session may call it. A monitor thread per running job waits for
    its process, settles its final state, and starts the next job in the queue.
    """

    def __init__(
        self,
        limits: Limits = Limits(),
        threads: int = 1,
        parent: Path | None = None,
        nice: int = 10,
        number: Callable[[], int] | None = None,
        shared: bool = False,
    ):
        """`number`: where a new job's number comes from (a deployment's counter: numbers and job ids unique across
        its app processes); by default this runner counts. `shared`: `parent` is a folder every app process of a
        deployment writes its jobs into: nothing there is removed by process id (another machine's, or another
        container's, could look dead from here), and at exit this runner's folder stays, with the models it trained.
        """
        self.limits, self.threads, self.nice, self.shared = limits, threads, nice, shared
        parent = Path(parent or tempfile.gettempdir())
        if not shared:
            clean_stale(parent)
        self.root = Path(tempfile.mkdtemp(prefix=f"{JOBS_PREFIX}{os.getpid()}-", dir=parent))  # mode 0700
        self._lock = threading.RLock()
        self._queue: list[str] = []
        self._running: tuple[str, subprocess.Popen] | None = None
        self._cancel_asked: set[str] = set()
        self._number = 0
        self._next_number = number
        self._closed = False
        atexit.register(self.close)

    # -- reading ----------------------------------------------------------------------------------
    def jobs(self) -> list[Job]:
        """Every job of this server, oldest first."""
        return jobs_in(self.root)

    def get(self, job_id: str) -> Job | None:
        folder = self.root / job_id
        return read_job(folder) if job_id.startswith("job-") and folder.is_dir() else None

    def current(self) -> Job | None:
        """The running job, else the first waiting one, else the latest one (None: no job yet)."""
        return current_of(self.jobs())

    def finished(self) -> list[Job]:
        """Jobs that finished with a checkpoint, oldest first."""
        return finished_of(self.jobs())

    def waiting(self) -> list[str]:
        with self._lock:
            return list(self._queue)

    # -- starting, cancelling ---------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> Job:
        """Queue `spec` (it starts at once when nothing is running); JobError when the queue is full or the disk is short."""
        with self._lock:
            if self._closed:
                raise JobError("This server is shutting down: no new training jobs.")
            ahead = [j for j in (self.get(i) for i in self._running_and_waiting()) if j is not None]
            if len(ahead) > self.limits.max_waiting:
                names = "; ".join(f"{j.describe()}, {_whose(j, spec.owner)}" for j in ahead)
                raise JobError(
                    f"This server trains one model at a time and {len(ahead) - 1} more may wait; ahead now: {names}. "
                    "Try again when one has finished."
                )
            self._check_disk(spec)
            self._number = self._next_number() if self._next_number is not None else self._number + 1
            job_id = f"job-{self._number:04d}"
            folder = self.root / job_id
            folder.mkdir(mode=0o700)
            write_json(folder / "status.json", {"state": "queued", "steps": spec.steps})
            spec_data = {"spec": dataclasses.asdict(spec), "number": self._number, "submitted": time.time()}
            write_json(folder / "spec.json", {**spec_data, "threads": self.threads, "server_pid": os.getpid()})
            self._queue.append(job_id)
            self._drop_old()
            self._start_next()
            return self.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Stop a running job or take a waiting one off the queue; False when it is not active."""
        with self._lock:
            if job_id in self._queue:
                self._queue.remove(job_id)
                _settle(self.root / job_id, "cancelled", "cancelled before it started")
                return True
            if self._running is not None and self._running[0] == job_id:
                self._cancel_asked.add(job_id)
                with contextlib.suppress(ProcessLookupError):
                    self._running[1].terminate()
                return True
            return False

    def _cancel_marked(self) -> None:
        """Cancel the running and waiting jobs whose folder holds CANCEL_FILE (`ask_cancel`, from another process)."""
        with self._lock:
            marked = [j for j in self._running_and_waiting() if (self.root / j / CANCEL_FILE).exists()]
        for job_id in marked:
            self.cancel(job_id)

    def wait(self, job_id: str, timeout: float = 300.0) -> Job:
        """Block until the job has a final state (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            with self._lock:  # final, and the monitor is done with it (the next job, if any, has started)
                settled = self._running is None or self._running[0] != job_id
            if job is not None and job.state in FINAL and settled:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"{job_id} did not finish within {timeout} s")
            time.sleep(0.05)

    def pid(self, job_id: str) -> int | None:
        """The job process's pid while it runs (tests kill it to play a crash)."""
        with self._lock:
            if self._running is not None and self._running[0] == job_id:
                return self._running[1].pid
        return None

    def close(self) -> None:
        """Stop the running job, forget the queue and remove this server's folder (at exit)."""
        with self._lock:
            self._closed = True
            for job_id in self._queue if self.shared else ():
                _settle(self.root / job_id, "cancelled", "its app process stopped before it started")
            self._queue.clear()
            running = self._running
        if running is not None:
            self._cancel_asked.add(running[0])
            with contextlib.suppress(ProcessLookupError):
                running[1].terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                running[1].wait(timeout=10)
            if running[1].poll() is None:
                running[1].kill()
            if self.shared:  # its folder stays: say how it ended
                _settle(self.root / running[0], "cancelled", "its app process stopped")
        if not self.shared:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- inside -----------------------------------------------------------------------------------
    def _running_and_waiting(self) -> list[str]:
        return ([self._running[0]] if self._running is not None else []) + self._queue

    def _check_disk(self, spec: JobSpec) -> None:
        need = estimate_disk_bytes(spec)
        free = shutil.disk_usage(self.root).free
        if free - need < self.limits.min_free_disk_mb * 1e6:
            raise JobError(
                f"Not enough disk for this job: it writes about {need / 1e6:.0f} MB and the server's temp folder has "
                f"{free / 1e6:,.0f} MB free (at least {self.limits.min_free_disk_mb:.0f} MB must stay free)."
            )

    def _drop_old(self) -> None:
        """Keep at most limits.max_kept finished jobs: the oldest finished ones are removed."""
        final = [j for j in self.jobs() if j.state in FINAL]
        for job in final[: max(0, len(final) - self.limits.max_kept)]:
            shutil.rmtree(job.folder, ignore_errors=True)

    def _start_next(self) -> None:
        if self._running is not None or not self._queue or self._closed:
            return
        job_id = self._queue.pop(0)
        folder = self.root / job_id
        if (folder / CANCEL_FILE).exists():  # cancelled from another app process while it waited
            _settle(folder, "cancelled", "cancelled before it started")
            self._start_next()
            return
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "transformer.train.job_process", str(folder), "--threads", str(self.threads)]
        cmd += ["--nice", str(self.nice), "--parent", str(os.getpid())]
        with open(folder / "log.txt", "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self._running = (job_id, proc)
        threading.Thread(target=self._monitor, args=(job_id, proc), name=f"attnviz-{job_id}", daemon=True).start()

    def _monitor(self, job_id: str, proc: subprocess.Popen) -> None:
        """Wait for the job process (stopping it past the wall-time limit), settle its state, start the next job."""
        started = time.monotonic()
        timed_out = False
        while proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
            self._cancel_marked()  # the running job's, or a waiting one's: asked from another app process
            if proc.poll() is None and time.monotonic() - started > self.limits.max_wall_s and not timed_out:
                timed_out = True
                proc.terminate()
        folder = self.root / job_id
        with self._lock:
            status = read_json(folder / "status.json")
            if folder.is_dir() and status.get("state") != "done":
                if job_id in self._cancel_asked:
                    _settle(folder, "cancelled", "cancelled while it was training", status)
                elif timed_out:
                    _settle(
                        folder, "failed", f"stopped after {self.limits.max_wall_s:.0f} s, this server's limit for one job", status
                    )
                elif status.get("state") == "failed" and status.get("reason"):
                    _settle(folder, "failed", status["reason"], status)
                else:
                    _settle(folder, "failed", f"{KILLED} ({_exit_words(proc.returncode)})", status)
            self._cancel_asked.discard(job_id)
            self._running = None
            self._start_next()


def ask_cancel(job: Job) -> bool:
    """Ask the app process that runs `job` to cancel it (a deployment's other process: its runner checks every 0.5 s,
    `JobRunner._cancel_marked`); False when the job is no longer active. The caller has checked the owner."""
    if not job.active:
        return False
    (job.folder / CANCEL_FILE).touch()
    return True


def _settle(folder: Path, state: str, reason: str, status: dict | None = None) -> None:
    status = dict(status if status is not None else read_json(folder / "status.json"))
    status.update(state=state, reason=reason, ended=time.time(), eta_s=None)
    if folder.is_dir():
        write_json(folder / "status.json", status)


def _exit_words(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def _whose(job: Job, owner: str) -> str:
    return "yours" if owner and job.spec.owner == owner else "asked for from another browser"
