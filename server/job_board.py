"""Which training jobs a deployment has: this app process's alone, or every replica's (`make school`).

Each app process trains with one `JobRunner` (server/training_jobs.py), one model at a time, in a folder of its own.
On one process (`make run`) that folder is the whole registry: `LocalBoard`. Behind `make school`, each replica's
folder lies in one shared folder ($ATTNVIZ_JOBS_DIR) and the shared store ($ATTNVIZ_REDIS_URL) says which folders
there are, whose app process still lives, and the next job number: `RedisBoard`. Every replica then lists every
replica's jobs, and offers every model trained on the deployment in its picker, read from the shared folder.

Keys, under the class store's prefix ("attnviz:"):
- `jobs:number`: the last job number given (INCR): numbers, job ids and the picker's names are the deployment's;
- `jobs:folders`: a hash, replica id -> its jobs folder;
- `jobs:alive:REPLICA`: set every HEARTBEAT_SECONDS by that replica's thread, expiring after ALIVE_SECONDS.

A replica that is killed stops calling in: within ALIVE_SECONDS every other replica shows its queued or running job
as failed ("its app process stopped"), never as running (its job process ends with it: `job_process --parent`).
The finished models in its folder stay listed.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import secrets
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from server.redis_store import connect, unusable

if TYPE_CHECKING:  # imported where used: deploy/school.py reads JOBS_DIR_ENV here without torch
    from transformer.train.jobs import Job

HEARTBEAT_SECONDS = 3.0
ALIVE_SECONDS = 10.0
JOBS_DIR_ENV = "ATTNVIZ_JOBS_DIR"  # the folder every replica's jobs go into (a shared volume across machines)
GONE = "its app process stopped (a replica of this deployment)"
UNAVAILABLE = "Training is unavailable just now: this server cannot reach its shared store. Try again in a moment."


# The next number: never one this replica has given already (a store that restarted empty starts again at 1).
NEXT = """
local n = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if n <= floor then n = floor + 1; redis.call('SET', KEYS[1], n) end
return n
"""
# A heartbeat raises the counter to this replica's highest number (the same restarted store: before any other
# replica's next job takes a number that this one's jobs already have).
FLOOR = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


class LocalBoard:
    """One app process: its runner's folder is every job there is."""

    shared = False
    folder: Path | None = None  # the runner's parent folder: the system's temp folder

    def __init__(self) -> None:
        self._root: Path | None = None

    def publish(self, root: Path) -> None:
        self._root = root

    def folders(self) -> list[tuple[Path, bool]]:
        return [(self._root, True)] if self._root is not None else []


class RedisBoard:
    """Several app processes: their jobs folders (in `folder`) and their heartbeats in the shared store."""

    shared = True

    def __init__(
        self,
        url: str,
        folder: Path,
        prefix: str = "attnviz:",
        heartbeat_s: float = HEARTBEAT_SECONDS,
        alive_s: float = ALIVE_SECONDS,
    ) -> None:
        self.folder, self.prefix, self.heartbeat_s, self.alive_s = Path(folder), prefix, heartbeat_s, alive_s
        self.folder.mkdir(parents=True, exist_ok=True)
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._redis, self._lost = connect(url)
        self._next, self._floor = self._redis.register_script(NEXT), self._redis.register_script(FLOOR)
        self._given = 0  # the highest job number this replica has given
        self._root: Path | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(("jobs", *parts))

    def publish(self, root: Path) -> None:
        """Say that this replica's jobs are in `root`, and keep saying it is alive until `close`."""
        self._root = Path(root)
        self._beat()
        if self._thread is None:
            self._thread = threading.Thread(target=self._beating, name="attnviz-job-board", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _beat(self) -> None:
        """One heartbeat; it also puts this replica's folder back into a store that restarted empty."""
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(self._key("folders"), self.replica, str(self._root))
            pipe.set(self._key("alive", self.replica), "1", px=round(self.alive_s * 1000))
            self._floor(keys=[self._key("number")], args=[self._given], client=pipe)
            pipe.execute()
        except self._lost as e:
            if not unusable(e):
                raise
            # the next beat tries again; meanwhile the others may count this replica as gone

    def _beating(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._beat()

    def next_number(self) -> int:
        """The deployment's next job number (refused with a plain message while the store cannot be reached)."""
        from transformer.train.jobs import JobError

        try:
            self._given = int(self._next(keys=[self._key("number")], args=[self._given]))
        except self._lost as e:
            if not unusable(e):
                raise
            raise JobError(UNAVAILABLE) from e
        return self._given

    def folders(self) -> list[tuple[Path, bool]]:
        """Every replica's jobs folder, and whether its app process still calls in (this one's always, first).

        While the store cannot be reached: this replica's own folder alone.
        """
        own = [(self._root, True)] if self._root is not None else []
        try:
            known = self._redis.hgetall(self._key("folders"))
            others = [r for r in sorted(known) if r != self.replica]
            alive = self._redis.mget([self._key("alive", r) for r in others]) if others else []
        except self._lost as e:
            if not unusable(e):
                raise
            return own
        return own + [(Path(known[r]), a is not None) for r, a in zip(others, alive)]

    def close(self) -> None:
        """Stop calling in, and say at once that this replica is gone."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        try:
            self._redis.delete(self._key("alive", self.replica))
        except self._lost as e:
            if not unusable(e):
                raise
        self._redis.close()


def listed(board: LocalBoard | RedisBoard) -> list[Job]:
    """Every job on the board, by number. A job whose app process stopped calling in is never shown as running or
    waiting: it failed with that process."""
    from transformer.train import jobs

    out = []
    for folder, alive in board.folders():
        for job in jobs.jobs_in(folder):
            if not alive and job.active:
                job = dataclasses.replace(job, state="failed", reason=GONE, eta_s=None)
            out.append(job)
    return sorted(out, key=lambda j: (j.number, j.submitted))


def from_env() -> LocalBoard | RedisBoard:
    """The board $ATTNVIZ_REDIS_URL and $ATTNVIZ_JOBS_DIR describe: both set, the deployment's; else this process's."""
    from server.classroom import REDIS_ENV

    url, folder = os.environ.get(REDIS_ENV, "").strip(), os.environ.get(JOBS_DIR_ENV, "").strip()
    if url and folder:
        return RedisBoard(url, Path(folder))
    return LocalBoard()
