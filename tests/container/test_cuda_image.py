"""The CUDA image (docker/Dockerfile.cuda) builds as far as a machine without a GPU allows.

Its default base, python:3.11-slim, cannot be pulled here, so it is built over the same
bootstrapped Debian base as the CPU image (BASE_IMAGE): every step after FROM runs, torch
from the default index (the CUDA build, whose CUDA runtime comes as nvidia-* wheels). Run on
CPU, the image must hold a CUDA-enabled torch that finds no GPU and falls back to CPU, and the
`sieve` CLI. A GPU run is not proven here (docs/deployment.md).
"""

from __future__ import annotations

import pytest

import podman_images as podman_mod

pytestmark = [pytest.mark.container, pytest.mark.timeout(3600)]

PROBE = """
import torch
from models.encoder import resolve_device
print(torch.version.cuda, torch.backends.cudnn.version(), torch.cuda.is_available(), resolve_device("auto"))
"""


@pytest.fixture(scope="module")
def cuda_image(podman, base_image, logs_dir) -> str:
    tag = "localhost/sieve-test:cuda"
    podman_mod.TIMINGS["cuda_build_s"] = podman_mod.build_image(podman, "Dockerfile.cuda", tag,
                                                                {"BASE_IMAGE": base_image},
                                                                logs_dir / "build-cuda.log")
    return tag


def test_cuda_image_builds_and_holds_a_cuda_torch_that_falls_back_to_cpu(podman, cuda_image):
    out = podman.run("run", "--rm", cuda_image, "python", "-c", PROBE, timeout=300).stdout.split()
    cuda, cudnn, available, device = out[-4:]
    assert cuda != "None" and cudnn != "None", "torch in the CUDA image was built without CUDA"
    assert (available, device) == ("False", "cpu")


def test_cuda_image_runs_the_sieve_cli_as_its_unprivileged_user(podman, cuda_image):
    assert podman.run("run", "--rm", cuda_image, "id", "-u").stdout.strip() == "10001"
    assert "stream worker" in podman.run("run", "--rm", cuda_image, "sieve", "--help").stdout
    env = podman.run("image", "inspect", "--format", "{{json .Config.Env}}", cuda_image).stdout
    assert "NVIDIA_VISIBLE_DEVICES=all" in env and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env
