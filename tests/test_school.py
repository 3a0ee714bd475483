"""`make school`: two app processes behind nginx with a private Redis (deploy/school.py), on free ports.

The nginx config is a pure function of the settings, and nginx accepts it. A real school then shows: a new browser
gets a route cookie and keeps its replica (HTTP and websocket reconnects alike), new browsers spread over the
replicas, a forged route is replaced, Streamlit's own websocket protocol works through the proxy, and when a
replica is killed its browsers land on the other one while the other's never see an error.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect

from deploy.school import (
    REPLICA_HEADER,
    ROUTE_COOKIE,
    School,
    Settings,
    nginx_command,
    nginx_conf,
    port_free,
    upload_limit_mb,
)
from tests.browser import run_async

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("nginx", path="/usr/sbin:/usr/bin") and shutil.which("redis-server", path="/usr/sbin:/usr/bin")),
        reason="nginx or redis-server is not installed (Debian: apt-get install -y nginx redis-server; `make browser` does it)",
    ),
]

ROUTE = re.compile(rf"{ROUTE_COOKIE}=([0-9a-f]{{32}}); Path=/; HttpOnly; SameSite=Lax")


def free_ports(n: int) -> int:
    """The first of n consecutive ports free on 127.0.0.1."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + n < 65536 and all(free(first + i) for i in range(n)):
            return first
    raise AssertionError(f"no {n} consecutive free ports")


def free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def settings(run_dir: Path, replicas: int = 2) -> Settings:
    return Settings(
        replicas=replicas, port=free_ports(1), host="127.0.0.1", bind="127.0.0.1", replica_port=free_ports(replicas),
        redis_port=free_ports(1), run_dir=run_dir, upload_mb=upload_limit_mb(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def school(tmp_path_factory):
    with School(settings(tmp_path_factory.mktemp("school")), say=lambda line: None) as school:
        yield school


def get(school: School, path: str = "/_stcore/health", route: str | None = None, timeout: float = 10) -> requests.Response:
    headers = {"Cookie": f"{ROUTE_COOKIE}={route}"} if route is not None else {}
    return requests.get(f"{school.settings.local_url}{path}", headers=headers, timeout=timeout)


def replica(response_headers) -> str:
    """The replica that answered ("127.0.0.1:PORT"); after a failover nginx names every one it tried, the last answered."""
    return response_headers[REPLICA_HEADER].split(",")[-1].strip()


def new_route(response: requests.Response) -> str | None:
    found = ROUTE.search(response.headers.get("Set-Cookie", ""))
    return found.group(1) if found else None


def ws_url(school: School) -> str:
    return school.settings.local_url.replace("http://", "ws://") + "/_stcore/stream"


def test_config_is_a_pure_function_nginx_accepts(tmp_path):
    s = settings(tmp_path)
    conf = nginx_conf(s)
    assert conf == nginx_conf(s), "the same settings, the same text"
    for port in s.replica_ports:
        assert f"server 127.0.0.1:{port} max_fails=1 fail_timeout=10s;" in conf
    assert "hash $route consistent;" in conf
    assert "map $cookie_attnviz_route $route_cookie {" in conf and '"~^[0-9a-f]{32}$" $cookie_attnviz_route;' in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf and "proxy_set_header Connection $connection_upgrade;" in conf
    assert "proxy_next_upstream error timeout;" in conf and f"add_header {REPLICA_HEADER} $upstream_addr always;" in conf
    assert f"client_max_body_size {upload_limit_mb() + 1}m;" in conf and f"listen 127.0.0.1:{s.port};" in conf
    assert str(tmp_path.resolve()) in conf and "/var/" not in conf, "every file nginx writes is in the run folder"

    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    (tmp_path / "nginx-tmp").mkdir()
    check = subprocess.run([*nginx_command(s, path)[:-2], "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_proxy_and_replicas_answer(school):
    proxy = get(school, "/healthz")
    assert (proxy.status_code, proxy.text) == (200, "ok\n")
    health = get(school)
    assert (health.status_code, health.text) == (200, "ok")
    assert replica(health.headers) in {f"127.0.0.1:{p}" for p in school.settings.replica_ports}
    assert get(school, "/").status_code == 200  # the page itself


def test_a_browser_keeps_its_replica(school):
    first = get(school)
    route = new_route(first)
    assert route, f"a new browser gets a route: {first.headers}"
    home = replica(first.headers)
    for _ in range(100):
        again = get(school, route=route)
        assert again.status_code == 200 and replica(again.headers) == home
        assert "attnviz_route" not in again.headers.get("Set-Cookie", ""), "a browser with a route keeps it"
    for _ in range(100):  # websocket reconnects, as a browser tab makes them
        with connect(ws_url(school), subprotocols=["streamlit"], additional_headers={"Cookie": f"{ROUTE_COOKIE}={route}"}) as ws:
            assert replica(ws.response.headers) == home


def test_new_browsers_spread_over_the_replicas(school):
    seen = [replica(get(school).headers) for _ in range(20)]
    assert set(seen) == {f"127.0.0.1:{p}" for p in school.settings.replica_ports}, seen


@pytest.mark.parametrize(
    "forged", ["../../x", "%0d%0aX-Injected:%201", "0" * 31, "0" * 33, "A" * 32, "$remote_addr", "", '"' + "0" * 32 + '"']
)
def test_a_forged_route_gets_a_fresh_one(school, forged):
    response = get(school, route=forged)
    assert response.status_code == 200 and response.text == "ok"
    assert new_route(response), response.headers
    assert "X-Injected" not in response.headers


def test_a_raw_newline_in_the_cookie_reaches_no_replica(school):
    """A newline ends a header line: nginx sees a cookie without it, or refuses the request itself (400)."""
    with socket.create_connection(("127.0.0.1", school.settings.port), timeout=10) as conn:
        conn.sendall(
            b"GET /_stcore/health HTTP/1.1\r\nHost: x\r\nCookie: attnviz_route=../\nX-Injected: 1\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    assert status.split()[1] in (b"200", b"400"), answer
    assert b"X-Injected" not in rest


def test_streamlit_session_through_the_proxy(school):
    """Streamlit's handshake as its frontend makes it: the XSRF cookie from the health check the page makes first
    (Streamlit 1.67 sets it there), its token as the second subprotocol, the page's Origin; then a rerun request,
    answered by a new session."""
    page = get(school)
    xsrf, route = page.cookies["_streamlit_xsrf"], new_route(page)
    assert route
    headers = {"Cookie": f"_streamlit_xsrf={xsrf}; {ROUTE_COOKIE}={route}"}
    with connect(
        ws_url(school), subprotocols=["streamlit", xsrf], additional_headers=headers, origin=school.settings.local_url
    ) as ws:
        assert ws.subprotocol == "streamlit"
        assert replica(ws.response.headers) == replica(page.headers)
        ws.send(BackMsg(rerun_script={"query_string": "", "page_script_hash": ""}).SerializeToString())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = ForwardMsg()
            msg.ParseFromString(ws.recv(timeout=60))
            if msg.WhichOneof("type") == "new_session":
                break
        else:
            raise AssertionError("no new_session within 60 s")


def test_every_replica_signs_with_the_school_secret(school):
    secrets = {r.env["STREAMLIT_SERVER_COOKIE_SECRET"] for r in school.replicas}
    assert secrets == {school.cookie_secret} and len(school.cookie_secret) >= 32
    assert not any(school.cookie_secret in " ".join(r.command) for r in school.replicas), "not visible in ps"


def a_job_done(jobs_dir: Path) -> bool:
    """Whether a training job in the school's shared folder has finished."""
    return any('"state": "done"' in f.read_text() for f in jobs_dir.glob("*/job-*/status.json"))


async def train_on_one_offer_on_the_other(first: str, second: str, done: Callable[[], bool]) -> list[str]:
    """Replica `first`'s Training page, its form from a link, and its Train button; once `done()` (the job finished,
    as the shared folder tells), the checkpoint picker of a new session on replica `second` (its options, as drawn)."""
    from benchmarks.ws_load import Session

    form = "task=reverse&steps=20&layers=1&heads=2&d_model=16"
    trainer = Session(first, "training", form)
    await trainer.open()
    try:
        assert await trainer.wait(lambda: "tj_train" in trainer.widgets, 120), trainer.problems
        await trainer.click("tj_train")
        deadline = time.monotonic() + 120
        while not await asyncio.to_thread(done):
            assert time.monotonic() < deadline, "the job did not finish within 120 s"
            await asyncio.sleep(0.2)
    finally:
        await trainer.close()
    student = Session(second, "attention", "")
    await student.open()
    try:
        assert await student.wait(lambda: "w_checkpoint" in student.drawn, 120), student.problems
        return list(student.drawn["w_checkpoint"].options)
    finally:
        await student.close()


def test_a_model_trained_on_one_replica_is_offered_on_every_replica(school):
    """Training jobs are the school's: they go into one shared folder and are listed through the store."""
    s = school.settings
    assert {r.env["ATTNVIZ_JOBS_DIR"] for r in school.replicas} == {str(s.jobs_dir.resolve())}
    first, second = (f"http://127.0.0.1:{port}" for port in s.replica_ports[:2])
    options = run_async(train_on_one_offer_on_the_other(first, second, lambda: a_job_done(s.jobs_dir)))
    assert "Trained here #1" in options, options  # the picker's short name; replica 2 never trained anything


def test_a_school_whose_parent_is_killed_stops_everything(tmp_path):
    """`make school` killed with SIGKILL (or its shell gone): the school hears of it and stops all it started, as
    on Ctrl+C, instead of serving on as orphans."""
    s = settings(tmp_path / "school", replicas=1)
    args = [sys.executable, "-m", "deploy.school", "--replicas", "1", "--port", str(s.port), "--bind", "127.0.0.1",
            "--host", "127.0.0.1", "--replica-port", str(s.replica_port), "--redis-port", str(s.redis_port),
            "--run-dir", str(s.run_dir)]  # fmt: skip
    log = tmp_path / "school.log"
    # A parent that only waits, as make does for its recipe.
    parent = subprocess.Popen(["sh", "-c", f'"$@" > {log} 2>&1 & wait', "sh", *args], cwd=Path(__file__).parent.parent)
    try:
        deadline = time.monotonic() + 120
        while "ready" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline and parent.poll() is None, log.read_text() if log.exists() else "no log"
            time.sleep(0.2)
        assert requests.get(f"{s.local_url}/healthz", timeout=5).status_code == 200
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 60
    while not all(port_free(p) for p in (s.port, s.redis_port, s.replica_port)):  # nothing listens (TIME_WAIT aside)
        assert time.monotonic() < deadline, f"still listening after the parent died: {log.read_text()}"
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while "stopped" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_a_dead_replicas_browsers_move_and_the_others_never_fail(school):
    """Last in this file: it kills a replica (and starts it again at the end)."""
    routes: dict[str, str] = {}
    for _ in range(100):
        response = get(school)
        routes.setdefault(replica(response.headers), new_route(response))
        if len(routes) == 2:
            break
    ports = [f"127.0.0.1:{p}" for p in school.settings.replica_ports]
    assert set(routes) == set(ports), routes
    victim, survivor = 0, 1
    failures: list[str] = []
    done = threading.Event()

    def survivors_browser():
        while not done.is_set():
            try:
                response = get(school, route=routes[ports[survivor]], timeout=5)
                if response.status_code != 200 or replica(response.headers) != ports[survivor]:
                    failures.append(f"{response.status_code} {response.headers}")
            except requests.RequestException as e:
                failures.append(repr(e))

    thread = threading.Thread(target=survivors_browser)
    thread.start()
    try:
        time.sleep(0.5)
        said: list[str] = []
        school.say = said.append
        school.replicas[victim].send(signal.SIGKILL)
        school.replicas[victim].process.wait(10)
        school.check()
        assert said and "replica 1" in said[0] and "exited" in said[0], said

        deadline = time.monotonic() + 5
        while True:
            try:
                moved = get(school, route=routes[ports[victim]], timeout=5)
                if moved.status_code == 200 and replica(moved.headers) == ports[survivor]:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the dead replica's browsers did not move within 5 s"
            time.sleep(0.1)
        cookie = {"Cookie": f"{ROUTE_COOKIE}={routes[ports[victim]]}"}
        with connect(ws_url(school), subprotocols=["streamlit"], additional_headers=cookie) as ws:
            assert replica(ws.response.headers) == ports[survivor], "a websocket reconnect moves too"
        time.sleep(1.0)
    finally:
        done.set()
        thread.join(10)
    assert not failures, failures[:5]

    school.restart(victim)  # it answers on its port again; nginx tries it after fail_timeout and gives its routes back
    deadline = time.monotonic() + 30
    while replica(get(school, route=routes[ports[victim]]).headers) != ports[victim]:
        assert time.monotonic() < deadline, "the restarted replica did not get its routes back within 30 s"
        time.sleep(0.5)
