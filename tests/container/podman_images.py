"""Podman for the image tests: its configuration, a Debian base bootstrapped here, image builds.

No registry image can be pulled on the machines the tests run on, so the base image the
Dockerfiles build FROM is made locally: ``debootstrap --variant=minbase bookworm`` from the
Debian mirror (Python 3.11, like ``python:3.11-slim``), a venv on PATH as the image's
``python``/``pip``, and this machine's CA bundle (it reaches the package registries through
its own CA), then ``podman import``. It is cached as ``localhost/sieve-test-base:<key>``, the
key a hash of the recipe and the CA bundle, so later runs reuse it.

Podman runs with ``runc`` and ``default_ulimits = []`` (the default ``crun`` fails on
setrlimit and on the hybrid cgroup layout of these machines). Those settings live in a
containers.conf of our own, passed to each podman call through ``CONTAINERS_CONF``: no
configuration file of the user or the system is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Where the podman configuration and the build logs of the tests live between runs.
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sieve" / "podman"
CONTAINERS_CONF = """\
# Written by tests/container/podman_images.py for the image tests; used only through CONTAINERS_CONF.
[containers]
default_ulimits = []
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
#: What the tests need, as Debian packages (make setup installs them as root).
APT_PACKAGES = "podman runc debootstrap uidmap fuse-overlayfs slirp4netns"
HOW_TO_INSTALL = f"as root: apt-get install {APT_PACKAGES} (make test does it when it runs as root)"

DEBIAN_MIRROR = os.environ.get("SIEVE_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: The base's recipe; any change here makes a new base (its key hashes this and the CA bundle).
BASE_RECIPE = {
    "debootstrap": ["--variant=minbase", "--include=python3,python3-venv", "bookworm"],
    "venv": "/opt/python",
    # the pip of the venv the tests run in (python:3.11-slim brings a recent one too)
    "pip": "pip==26.3",
    "version": 1,
}
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_REPO = "localhost/sieve-test-base"
#: The PyPI CPU wheel index the CPU Dockerfile defaults to.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

#: Seconds for a bootstrap (measured here: ~1-2 min) and for one image build (cold: GBs of wheels).
BOOTSTRAP_TIMEOUT = 900.0
BUILD_TIMEOUT = 3000.0
#: Seconds for a short podman command (inspect, exec, stop).
PODMAN_TIMEOUT = 120.0
#: Seconds each step took in this session (base bootstrap, builds), printed at the end of the run.
TIMINGS: dict[str, float] = {}


class PodmanUnavailable(RuntimeError):
    """Podman (or what the base bootstrap needs) cannot run here; the message says what to install."""


class Podman:
    """Runs podman with the tests' containers.conf; every call has a timeout."""

    def __init__(self) -> None:
        missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
        if missing:
            raise PodmanUnavailable(f"{', '.join(missing)} not found: {HOW_TO_INSTALL}")
        if os.geteuid() != 0:
            raise PodmanUnavailable("the image tests run rootful podman and debootstrap: run them as root "
                                    "(CI does), or skip them with -m 'not container'")
        CACHE.mkdir(parents=True, exist_ok=True)
        self.conf = CACHE / "containers.conf"
        self.conf.write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        info = self.run("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
        if info.returncode != 0 or info.stdout.strip() != "runc":
            raise PodmanUnavailable(f"podman cannot run with runc here (podman info: exit {info.returncode}):\n"
                                    f"{info.stderr[-2000:]}")

    def run(self, *args: str, timeout: float = PODMAN_TIMEOUT, check: bool = True,
            **kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)[:300]} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return proc

    def image_id(self, ref: str) -> str | None:
        proc = self.run("image", "inspect", "--format", "{{.Id}}", ref, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def remove_images(self, refs: list[str]) -> None:
        if refs:
            self.run("rmi", "--force", *refs, check=False)

    def logs(self, container: str) -> str:
        proc = self.run("logs", container, check=False)
        return (proc.stdout + proc.stderr)[-6000:]


def base_key() -> str:
    """The base image's tag: a hash of its recipe and of the CA bundle baked into it."""
    digest = hashlib.sha256(repr(sorted(BASE_RECIPE.items())).encode() + DEBIAN_MIRROR.encode())
    digest.update(HOST_CA_BUNDLE.read_bytes())
    return digest.hexdigest()[:16]


def ensure_base_image(podman: Podman, log: Path) -> tuple[str, float]:
    """``localhost/sieve-test-base:<key>``, bootstrapped now if no image has that key.

    Returns the image reference and the seconds spent making it (0 when reused).
    """
    ref = f"{BASE_REPO}:{base_key()}"
    if podman.image_id(ref):
        return ref, 0.0
    if not HOST_CA_BUNDLE.is_file():
        raise PodmanUnavailable(f"{HOST_CA_BUNDLE} not found: the base image needs the host's CA bundle "
                                "to reach the package registries")
    t0 = time.monotonic()
    venv = BASE_RECIPE["venv"]
    with tempfile.TemporaryDirectory(prefix="sieve-test-base-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        with open(log, "ab") as out:
            _step(["debootstrap", *BASE_RECIPE["debootstrap"], str(rootfs), DEBIAN_MIRROR], out, BOOTSTRAP_TIMEOUT)
            # this machine's CA (registries are reached through it), and a resolver for the pip step
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
            shutil.copyfile("/etc/resolv.conf", rootfs / "etc/resolv.conf")
            ca_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PIP_CERT": str(HOST_CA_BUNDLE), "HOME": "/root"}
            _step(["chroot", str(rootfs), "python3", "-m", "venv", venv], out, 120, env=ca_env)
            _step(["chroot", str(rootfs), f"{venv}/bin/pip", "install", "--no-cache-dir", "--upgrade",
                   BASE_RECIPE["pip"]], out, 600, env=ca_env)
            (rootfs / "etc/resolv.conf").unlink()
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / junk).glob("*"):
                    if path.is_file():
                        path.unlink()
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
            try:
                podman.run("import",
                           "--change",
                           f"ENV PATH={venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           "--change", f"ENV PIP_CERT={HOST_CA_BUNDLE}",
                           "--change", f"ENV SSL_CERT_FILE={HOST_CA_BUNDLE}",
                           "--change", "ENV LANG=C.UTF-8",
                           "--change", 'CMD ["python3"]',
                           "-", ref, stdin=tar.stdout, timeout=BOOTSTRAP_TIMEOUT)
            finally:
                tar.stdout.close()
                tar.wait(60)
    # older bases (another recipe or CA bundle) are ours to remove
    listed = podman.run("images", "--format", "{{.Repository}}:{{.Tag}}", BASE_REPO, check=False).stdout.split()
    podman.remove_images([r for r in listed if r != ref])
    return ref, time.monotonic() - t0


def _step(cmd: list[str], out, timeout: float, env: dict | None = None) -> None:
    out.write(f"\n$ {' '.join(cmd)}\n".encode())
    out.flush()
    proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} exited {proc.returncode}; log: {out.name}")


def torch_index_url() -> str:
    """The CPU wheel index when this machine reaches it, else empty (the default index).

    The CPU Dockerfile defaults to PyTorch's CPU index; where that host cannot be reached
    (as on the machines here) the test builds with torch from PyPI, which works the same on
    CPU but carries the CUDA libraries.
    """
    try:
        urllib.request.urlopen(TORCH_CPU_INDEX + "/", timeout=10).close()
        return TORCH_CPU_INDEX
    except OSError:
        return ""


def build_image(podman: Podman, dockerfile: str, tag: str, build_args: dict[str, str], log: Path) -> float:
    """Build ``docker/<dockerfile>`` from the repository root as ``tag``; return the seconds it took.

    The build context is the repository minus ``docker/<dockerfile>.dockerignore``, which podman
    reads beside the Dockerfile as BuildKit does. Steps run on the host network.
    ``--format docker``: the OCI image format has no HEALTHCHECK
    (podman drops it with a warning). ``--layers``: an unchanged step is reused from the last
    build, so only a changed source tree is installed again; pip's downloads are kept in the
    Dockerfiles' cache mount (here: buildah's /var/tmp/buildah-cache) where the registry lets
    them be cached.
    """
    old = podman.image_id(tag)
    args = ["build", "--layers", "--format", "docker", "--network", "host", "--file", f"docker/{dockerfile}",
            "--tag", tag]
    for name, value in build_args.items():
        args += ["--build-arg", f"{name}={value}"]
    t0 = time.monotonic()
    with open(log, "ab") as out:
        out.write(f"\n$ podman {' '.join(args)} .\n".encode())
        out.flush()
        proc = subprocess.run(["podman", *args, "."], cwd=ROOT, env=podman.env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-5000:]
        raise AssertionError(f"podman build of {dockerfile} exited {proc.returncode} (log {log}):\n{tail}")
    new = podman.image_id(tag)
    if old and old != new:
        podman.remove_images([old])  # the previous test image; its cached layers stay for the next build
    return time.monotonic() - t0
