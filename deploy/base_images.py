"""The container setup's base images, pulled, or made from Debian's mirror where no container registry answers.

Dockerfile and compose.yaml start from three public images (`BASE_IMAGES`). A machine whose Docker can pull them
needs nothing here. Ours (CI's included) reach PyPI and Debian's mirror but no container registry, so `make
containers` runs `python -m deploy.base_images`: it pulls each image that is not there yet and, for those it cannot
pull, makes local stand-ins. One Debian bookworm root file system (debootstrap, minimal variant) holds what each
of the three provides, and is tagged with each missing name:

- python:3.11-slim-bookworm: Debian's Python 3.11 and pip, `python` on the PATH and pip installing into the
  system, as in the python image (Debian's "externally managed" marker removed);
- redis:7-bookworm: Debian's redis-server 7.0 and redis-cli;
- nginx:stable: Debian's nginx 1.22, the one `make school` runs.

The machine's CA certificates are copied in, so that pip in a build trusts what pip on this machine trusts (here,
the certificate of the proxy between the machine and PyPI).

A stand-in is not the official image: Debian's Python is 3.11.2, the python image's a later 3.11, and each
stand-in holds all three programs. What the container tests prove with them is that our Dockerfile and compose.yaml
work on a Debian bookworm base, not what the official images contain.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from deploy.school import NGINX_IMAGE, PYTHON_IMAGE, REDIS_IMAGE

BASE_IMAGES = (PYTHON_IMAGE, REDIS_IMAGE, NGINX_IMAGE)
SUITE = "bookworm"  # the Debian release every one of the three images is built on
PACKAGES = ("python3", "python3-pip", "ca-certificates", "redis-server", "redis-tools", "nginx")
MIRROR = "http://deb.debian.org/debian"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PULL_TIMEOUT_S = 120


def docker(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def present(image: str) -> bool:
    return docker("image", "inspect", image).returncode == 0


def pull(image: str) -> bool:
    try:
        return docker("pull", image, timeout=PULL_TIMEOUT_S).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def stand_in(names: list[str], mirror: str = MIRROR, say=print) -> None:
    """One Debian root file system with PACKAGES, imported as an image and tagged with every name in `names`."""
    if shutil.which("debootstrap") is None:
        raise SystemExit("debootstrap is missing (Debian: apt-get install -y debootstrap; `make containers` installs it)")
    with tempfile.TemporaryDirectory(prefix="attnviz-base-") as tmp:
        root = Path(tmp) / "rootfs"
        say(f"debootstrap {SUITE} from {mirror} with {', '.join(PACKAGES)}")
        made = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), mirror],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        if made.returncode != 0:
            raise SystemExit(f"debootstrap failed:\n{made.stdout[-2000:]}{made.stderr[-2000:]}")
        (root / "usr/bin/python").symlink_to("python3")
        for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        if CA_BUNDLE.exists():
            shutil.copyfile(CA_BUNDLE, root / CA_BUNDLE.relative_to("/"))
        for cached in [*root.glob("var/cache/apt/archives/*.deb"), *root.glob("var/lib/apt/lists/*_Packages")]:
            cached.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = docker(
            "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["bash"]', "-", names[0], stdin=tar.stdout, timeout=600
        )
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise SystemExit(f"docker import failed: {imported.stderr[-2000:]}")
    for name in names[1:]:
        docker("tag", names[0], name).check_returncode()
    say(f"made local stand-ins (Debian {SUITE}) for {', '.join(names)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.base_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default=MIRROR, help=f"Debian's mirror for debootstrap (default {MIRROR})")
    parser.add_argument("--no-pull", action="store_true", help="make the stand-ins without trying a registry first")
    args = parser.parse_args(argv)
    if shutil.which("docker") is None or docker("info").returncode != 0:
        print("no Docker daemon answers (`docker info` fails): nothing to do", file=sys.stderr)
        return 1
    missing = [image for image in BASE_IMAGES if not present(image)]
    if not args.no_pull:
        missing = [image for image in missing if not pull(image)]
    if missing:
        stand_in(missing, args.mirror)
    for image in BASE_IMAGES:
        print(f"{image}: {'there' if present(image) else 'MISSING'}")
    return 0 if all(present(image) for image in BASE_IMAGES) else 1


if __name__ == "__main__":
    raise SystemExit(main())
