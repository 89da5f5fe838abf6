"""Fixtures of the image tests: podman, the bootstrapped base image, the CPU image built from the repository.

Everything here FAILS (never skips) when podman cannot run: a missing container runtime must
not hide as a green run. The broker is the session's (tests/conftest.py); containers reach
it on the host network.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import podman_images as podman_mod

# stream_utils (inputs, producer, output readers) is shared with the integration tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

TIMINGS = podman_mod.TIMINGS


@pytest.fixture(scope="session")
def podman() -> podman_mod.Podman:
    try:
        return podman_mod.Podman()
    except (podman_mod.PodmanUnavailable, OSError) as exc:
        pytest.fail(f"podman cannot run the image tests: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("container-logs")


@pytest.fixture(scope="session")
def base_image(podman, logs_dir) -> str:
    """The Debian bookworm base with Python 3.11 (``localhost/sieve-test-base:<key>``), cached across runs."""
    ref, seconds = podman_mod.ensure_base_image(podman, logs_dir / "base.log")
    TIMINGS["base_bootstrap_s"] = seconds
    return ref


@pytest.fixture(scope="session")
def torch_index_url() -> str:
    return podman_mod.torch_index_url()


@pytest.fixture(scope="session")
def cpu_image(podman, base_image, torch_index_url, logs_dir) -> str:
    """docker/Dockerfile.cpu built from the repository over the test base, as ``localhost/sieve-test:cpu``."""
    tag = "localhost/sieve-test:cpu"
    TIMINGS["cpu_build_s"] = podman_mod.build_image(
        podman, "Dockerfile.cpu", tag, {"BASE_IMAGE": base_image, "TORCH_INDEX_URL": torch_index_url},
        logs_dir / "build-cpu.log")
    return tag


def pytest_terminal_summary(terminalreporter) -> None:
    if TIMINGS:
        terminalreporter.write_line("image tests: " + ", ".join(f"{k}={v:.0f}" for k, v in TIMINGS.items()))
