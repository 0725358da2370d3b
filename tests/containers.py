"""podman as the image and Compose tests call it: the project's containers.conf (runc,
slirp4netns, no pod infra image), and the images built from this checkout by
deploy/podman/images.sh on the local Debian base."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import _unavailable

REPO = Path(__file__).resolve().parents[1]
TAG = "0.1.0"
BUILD_TIMEOUT_SECONDS = 2400


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(REPO / "deploy" / "podman" / "containers.conf")}


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def build(*names: str) -> None:
    """The images `names`, built from this checkout on the local base (cached layers reused)."""
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is not installed (apt-get install podman runc mmdebstrap)")
    built = subprocess.run(
        [str(REPO / "deploy" / "podman" / "images.sh"), "--local-base", *names],
        env=podman_env(),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
