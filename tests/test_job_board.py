"""Training jobs across the replicas of a deployment (`server/job_board.py`): two job runners, as two app processes
have, in one shared folder, listed through a private redis-server; one process's runner alone without a store.

Real jobs (the project's trainer in a process of its own), as tests/test_jobs.py runs them.
"""

from __future__ import annotations

import time

import pytest

from server import job_board
from server.job_board import LocalBoard, RedisBoard
from tests.test_class_store import RedisServer
from transformer.train import jobs
from transformer.train.jobs import JobError, JobRunner, Limits

pytestmark = pytest.mark.timeout(300)

TINY = dict(task="reverse", n_layers=1, n_heads=2, d_model=16)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def replica(url: str, folder, alive_s: float = job_board.ALIVE_SECONDS) -> tuple[RedisBoard, JobRunner]:
    """What `server/training_jobs.py` makes in each app process behind `make school`."""
    board = RedisBoard(url, folder, heartbeat_s=0.2, alive_s=alive_s)
    runner = JobRunner(Limits(), threads=1, parent=board.folder, nice=0, number=board.next_number, shared=True)
    board.publish(runner.root)
    return board, runner


def wait_for(test, timeout: float = 120.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while not (value := test()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)
    return value


def test_every_replica_lists_every_replicas_jobs_with_numbers_of_the_deployment(redis_server, tmp_path):
    shared = tmp_path / "jobs"
    (board_a, a), (board_b, b) = replica(redis_server.url, shared), replica(redis_server.url, shared)
    try:
        first = a.submit(jobs.make_spec(dict(TINY, steps=30, seed=1), owner="teacher"))
        second = b.submit(jobs.make_spec(dict(TINY, steps=30, seed=2), owner="student"))
        assert (first.number, first.id, second.number, second.id) == (1, "job-0001", 2, "job-0002")
        assert a.wait(first.id, 120).state == "done" and b.wait(second.id, 120).state == "done"
        for board in (board_a, board_b):  # the same list from either app process, files read from the shared folder
            listed = job_board.listed(board)
            assert [(j.number, j.state, j.spec.owner) for j in listed] == [(1, "done", "teacher"), (2, "done", "student")]
            assert all(j.checkpoint.is_file() and j.checkpoint.is_relative_to(shared) for j in listed)
        assert jobs.current_of(job_board.listed(board_b)).number == 2  # none running: the latest
    finally:
        for board, runner in ((board_a, a), (board_b, b)):
            runner.close()
            board.close()
    # A replica that stops keeps its trained models in the shared folder (the store may still list them).
    assert first.checkpoint.is_file() and second.checkpoint.is_file()


def test_a_stopped_replicas_job_is_never_shown_running(redis_server, tmp_path):
    shared = tmp_path / "jobs"
    board_a, a = replica(redis_server.url, shared, alive_s=1.0)
    board_b, b = replica(redis_server.url, shared, alive_s=1.0)
    try:
        long = a.submit(jobs.make_spec(dict(TINY, steps=3000)))
        wait_for(lambda: a.get(long.id).state == "running")
        seen = {j.number: j for j in job_board.listed(board_b)}
        assert seen[long.number].state == "running", "another replica's live job shows as it is"
        # Replica A stops calling in, as a killed app process does (its runner never gets to say so).
        board_a._stop.set()
        board_a._thread.join(2)

        def listed_by_b():
            return next(j for j in job_board.listed(board_b) if j.number == long.number)

        wait_for(lambda: listed_by_b().state == "failed", 5)
        job = listed_by_b()
        assert not job.active and job.reason == job_board.GONE and job.eta_s is None
        assert jobs.current_of(job_board.listed(board_b)).number == long.number  # shown, as failed
    finally:
        a.close()
        b.close()
        board_a.close()
        board_b.close()
    assert a.get(long.id) is not None and a.get(long.id).state == "cancelled", "its own runner, at exit, says so too"


def test_a_store_that_cannot_be_reached_refuses_new_jobs_and_lists_this_replicas_own(redis_server, tmp_path):
    board, runner = replica(redis_server.url, tmp_path / "jobs")
    try:
        done = runner.wait(runner.submit(jobs.make_spec(dict(TINY, steps=20))).id, 120)
        redis_server.stop()
        with pytest.raises(JobError, match="Training is unavailable just now"):
            runner.submit(jobs.make_spec(dict(TINY, steps=20)))
        assert [j.id for j in job_board.listed(board)] == [done.id]
        redis_server.start()  # empty: the next heartbeat puts this replica's folder back, and its highest number
        wait_for(lambda: board._redis.hget(board._key("folders"), board.replica), 5)
        assert board._redis.get(board._key("number")) == str(done.number)
        again = runner.submit(jobs.make_spec(dict(TINY, steps=20)))
        assert again.number == done.number + 1 and [j.id for j in job_board.listed(board)] == [done.id, again.id]
    finally:
        runner.close()
        board.close()


def test_one_process_alone_lists_its_own_runners_jobs(tmp_path):
    board, runner = LocalBoard(), JobRunner(Limits(), threads=1, parent=tmp_path, nice=0)
    board.publish(runner.root)
    try:
        assert job_board.listed(board) == [] and jobs.current_of([]) is None
        job = runner.wait(runner.submit(jobs.make_spec(dict(TINY, steps=20))).id, 120)
        assert [j.id for j in job_board.listed(board)] == [job.id] == ["job-0001"]
    finally:
        runner.close()
    assert not runner.root.exists(), "alone, its folder goes at exit, as before"
