"""compose.yaml run for real: the image built from ./Dockerfile, two replicas, redis and nginx on a Docker daemon.

The stack then does what `make school` does (tests/test_school.py): nginx answers and keeps a browser on its
replica, the app draws its first page through it, a student on one replica follows a teacher on the other through
the redis service, a model trained on one replica is offered on the other through the shared volume, pages draw
while redis is stopped and classes start again once it is back, and when a replica's app process crashes its
browsers get the other one until the container has restarted it.

Skipped where no Docker daemon answers or no compose command is installed. `make containers` (CI runs it) gives
a Debian machine both, with local stand-ins for the base images where no registry answers (deploy/base_images.py).
The image is built with a CPU-only torch: this machine's own wheel when pip has one (served to the build on
127.0.0.1), else PyTorch's CPU index.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

from benchmarks.ws_load import open_sessions, teach
from deploy.base_images import BASE_IMAGES
from deploy.school import CONTAINER_JOBS, IMAGE_NAME, PORT_ENV, REPLICA_HEADER, ROUTE_COOKIE, Settings
from server.job_board import JOBS_DIR_ENV
from tests.browser import free_port, run_async
from tests.test_school import train_on_one_offer_on_the_other

ROOT = Path(__file__).resolve().parent.parent
UP_TIMEOUT_S = 240
REPLICA_PORT = Settings().replica_port  # every replica's, each in a container of its own


def docker(*args: str, timeout: float = 60, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check, **kwargs)


@functools.cache
def compose_command() -> tuple[str, ...] | None:
    """`docker compose` (the plugin), else Debian's `docker-compose`; None without a daemon to run them on."""
    if shutil.which("docker") is None or docker("info").returncode != 0:
        return None
    if docker("compose", "version").returncode == 0:
        return ("docker", "compose")
    return ("docker-compose",) if shutil.which("docker-compose") else None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        compose_command() is None,
        reason="no Docker daemon or no compose command here (Debian, as root: `make containers`): the stack is not run",
    ),
]


def torch_pin() -> str:
    (line,) = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("torch==")]
    return line.split("==", 1)[1].strip()


def local_cpu_torch() -> Path | None:
    """A CPU-only torch wheel of requirements.txt's version in one of this machine's pip find-links folders."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60).stdout
    folders = [f for line in listed.splitlines() if "find-links" in line for f in line.split("=", 1)[1].strip("'\"").split()]
    folders += os.environ.get("PIP_FIND_LINKS", "").split()
    for folder in folders:
        found = sorted(Path(folder.removeprefix("file://")).glob(f"torch-{torch_pin()}+cpu-cp311-*.whl"))
        if found:
            return found[0]
    return None


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # pip asks for every project: the misses are expected
        pass


@contextlib.contextmanager
def torch_index(tmp: Path):
    """The TORCH_INDEX build argument: a one-project index of this machine's CPU-only wheel on 127.0.0.1 (pip trusts
    plain http there), or PyTorch's CPU index when there is no such wheel."""
    wheel = local_cpu_torch()
    if wheel is None:
        yield "https://download.pytorch.org/whl/cpu"
        return
    (tmp / "torch").mkdir()
    (tmp / "torch" / wheel.name).symlink_to(wheel)
    (tmp / "torch/index.html").write_text(f'<a href="{wheel.name.replace("+", "%2B")}">{wheel.name}</a>\n')
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(tmp)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


class Stack:
    """One compose project of the repository's compose.yaml, on a free port."""

    def __init__(self, tmp: Path):
        self.name = f"attnviz-test-{os.getpid()}"
        self.port = free_port()
        models = tmp / "models"
        models.mkdir()
        self.env = {
            **os.environ,
            "ATTNVIZ_COOKIE_SECRET": secrets.token_urlsafe(32),
            "ATTNVIZ_MODELS_DIR": str(models),
            PORT_ENV: str(self.port),
        }
        self.url = f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [*compose_command(), "-p", self.name, *args]
        return subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def replica(self, service: str) -> str:
        """A replica's "address:port" on compose's network, which this machine reaches, as nginx names it."""
        inspect = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", self.container(service))
        return f"{inspect.stdout.strip()}:{REPLICA_PORT}"

    def exec(self, service: str, command: str) -> subprocess.CompletedProcess:
        return docker("exec", self.container(service), "sh", "-c", command)

    def logs(self) -> str:
        return self.compose("logs", "--tail", "30").stdout[-6000:]


def build(tmp: Path) -> None:
    for image in BASE_IMAGES:
        if docker("image", "inspect", image).returncode != 0 and docker("pull", image, timeout=300).returncode != 0:
            pytest.skip(f"base image {image} is not here and cannot be pulled (`make containers` makes a local stand-in)")
    buildkit = docker("buildx", "version").returncode == 0  # without buildx, Docker's own builder (no `syntax` image to pull)
    with torch_index(tmp) as index:
        made = subprocess.run(
            ["docker", "build", "--network", "host", "--build-arg", f"TORCH_INDEX={index}", "-t", IMAGE_NAME, "."],
            cwd=ROOT, env={**os.environ, "DOCKER_BUILDKIT": "1" if buildkit else "0"}, capture_output=True, text=True,
            timeout=1800,
        )  # fmt: skip
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compose")
    build(tmp)
    stack = Stack(tmp)
    try:
        up = stack.compose("up", "-d", "--no-build", timeout=UP_TIMEOUT_S)
        assert up.returncode == 0, up.stderr[-3000:]
        deadline = time.monotonic() + UP_TIMEOUT_S
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{stack.url}/_stcore/health", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"the stack did not answer within {UP_TIMEOUT_S} s:\n{stack.logs()}"
            time.sleep(1)
        yield stack
    finally:
        stack.compose("down", "-v", "--timeout", "5", timeout=180)


def replicas(stack: Stack) -> dict[str, str]:
    """Each replica's address as nginx names it in its X-Attnviz-Replica header → its service."""
    return {stack.replica(name): name for name in ("replica1", "replica2")}


def answered_by(response: requests.Response) -> str:
    return response.headers[REPLICA_HEADER].split(",")[-1].strip()


def test_the_replicas_run_as_the_app_user_with_a_cpu_torch_and_a_writable_jobs_volume(stack):
    for name in ("replica1", "replica2"):
        who = stack.exec(name, f'id -u; echo "${JOBS_DIR_ENV}"; touch {CONTAINER_JOBS}/.written && echo written')
        assert who.stdout.split() == ["10001", CONTAINER_JOBS, "written"], who.stdout + who.stderr
    torch = stack.exec("replica1", "python -c 'import torch; print(torch.__version__)'")
    assert torch.stdout.strip() == f"{torch_pin()}+cpu" or local_cpu_torch() is None, torch.stdout + torch.stderr


def test_nginx_answers_spreads_new_browsers_and_keeps_each_on_its_replica(stack):
    proxy = requests.get(f"{stack.url}/healthz", timeout=10)
    assert (proxy.status_code, proxy.text) == (200, "ok\n")
    names = replicas(stack)
    seen = [requests.get(f"{stack.url}/_stcore/health", timeout=10) for _ in range(20)]
    assert {answered_by(r) for r in seen} == set(names), [answered_by(r) for r in seen]
    route = re.search(rf"{ROUTE_COOKIE}=([0-9a-f]{{32}})", seen[0].headers["Set-Cookie"]).group(1)
    again = [requests.get(f"{stack.url}/_stcore/health", cookies={ROUTE_COOKIE: route}, timeout=10) for _ in range(50)]
    assert {answered_by(r) for r in again} == {answered_by(seen[0])}


def test_the_attention_page_draws_through_the_proxy(stack):
    async def first_page() -> tuple[str, list[str]]:
        (session,) = await open_sessions([stack.url], "attention", "", 1)
        try:
            return session.figures[-1].title, session.problems
        finally:
            await session.close()

    title, problems = run_async(first_page())
    assert "attention weights" in title and not problems, (title, problems)


def test_a_student_on_one_replica_follows_a_teacher_on_the_other(stack):
    """The class lives in the redis service: the teacher starts it on replica 1, the student joins it on replica 2."""
    first, second = (f"http://{stack.replica(name)}" for name in ("replica1", "replica2"))

    async def follow() -> tuple[str, str | None, list[str]]:
        teacher, code = await teach(first)
        (student,) = await open_sessions([second], "", urlencode({"follow": code}), 1)
        try:
            sent = await teacher.click("attn_next_head")
            assert await teacher.wait(lambda: teacher.done_since(sent) is not None, 60), teacher.problems
            view = teacher.last_figure(sent).title
            await student.wait(lambda: student.done_since(sent, lambda f: f.title == view) is not None, 30)
            shown = student.last_figure(sent)
            return view, None if shown is None else shown.title, teacher.problems + student.problems
        finally:
            await asyncio.gather(teacher.close(), student.close())

    view, shown, problems = run_async(follow())
    assert shown == view and not problems, (view, shown, problems)


def test_a_model_trained_on_one_replica_is_offered_on_the_other(stack):
    """The training jobs' volume is shared and every replica's jobs are listed through the store."""
    first, second = (f"http://{stack.replica(name)}" for name in ("replica1", "replica2"))
    done = lambda: '"state": "done"' in stack.exec("replica1", f"cat {CONTAINER_JOBS}/*/job-*/status.json").stdout
    options = run_async(train_on_one_offer_on_the_other(first, second, done))
    assert "Trained here #1" in options, options


def test_with_the_store_stopped_pages_draw_and_classes_resume_when_it_is_back(stack):
    """`docker compose stop redis`: a new student's first page draws through the proxy without an exception (the app
    says classes are unavailable); once redis is started again, a class starts."""
    first = f"http://{stack.replica('replica1')}"

    async def first_page() -> list[str]:
        (session,) = await open_sessions([stack.url], "attention", "", 1)  # raises if its first run drew no heatmap
        await session.close()
        return session.problems

    async def a_class() -> str:
        teacher, code = await teach(first)
        await teacher.close()
        return code

    assert stack.compose("stop", "redis").returncode == 0
    try:
        assert run_async(first_page()) == []
    finally:
        assert stack.compose("start", "redis").returncode == 0
    deadline = time.monotonic() + 60
    while stack.exec("redis", "redis-cli ping").stdout.strip() != "PONG":
        assert time.monotonic() < deadline, "redis did not come back"
        time.sleep(0.5)
    assert re.fullmatch(r"[A-Z0-9]{4,8}", run_async(a_class()))


# The replica's app process dies (as in a crash: SIGKILL), not its container's init (docker-init, PID 1).
CRASH = (
    "import os; [os.kill(int(p), 9) for p in os.listdir('/proc') if p.isdigit() and int(p) not in (1, os.getpid()) "
    "and open(f'/proc/{p}/cmdline', 'rb').read().startswith(b'python\\0-m\\0streamlit')]"
)


def test_a_crashed_replicas_browsers_get_the_other_until_it_is_back(stack):
    """Replica 1's app process dies: a browser routed there is answered by replica 2 at once, without an error; the
    container restarts it (`restart: unless-stopped`, behind `init: true`) on the same address, and nginx sends
    that browser to it again."""
    names = {name: address for address, name in replicas(stack).items()}
    routes = []
    while len(routes) < 5:
        r = requests.get(f"{stack.url}/_stcore/health", timeout=10)
        if answered_by(r) == names["replica1"]:
            routes.append(re.search(rf"{ROUTE_COOKIE}=([0-9a-f]{{32}})", r.headers["Set-Cookie"]).group(1))
    container = stack.container("replica1")
    crashed = docker("exec", container, "python", "-c", CRASH)
    assert crashed.returncode in (0, 137), crashed.stderr
    for route in routes:
        r = requests.get(f"{stack.url}/_stcore/health", cookies={ROUTE_COOKIE: route}, timeout=30)
        assert r.status_code == 200 and answered_by(r) == names["replica2"], (r.status_code, r.headers)

    deadline = time.monotonic() + UP_TIMEOUT_S
    while True:  # nginx tries a failed replica again after its fail_timeout
        restarts = docker("inspect", "-f", "{{.RestartCount}}", container).stdout.strip()
        r = requests.get(f"{stack.url}/_stcore/health", cookies={ROUTE_COOKIE: routes[0]}, timeout=30)
        assert r.status_code == 200, r.status_code
        if restarts != "0" and answered_by(r) == names["replica1"]:
            break
        assert time.monotonic() < deadline, f"replica 1 did not come back (restarts: {restarts}):\n{stack.logs()}"
        time.sleep(1)
    assert stack.replica("replica1") == names["replica1"], "on the same address"
