"""promtool for the observability tests: skipped locally when missing, required in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest

PROMTOOL_TIMEOUT_SECONDS = 300


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool (Debian package `prometheus`)."""
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not on PATH (apt-get install prometheus)"
        if os.environ.get("READMIT_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"required test tool unavailable: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def run_promtool(promtool: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs promtool with the given arguments; its whole output goes into a failed assert."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [promtool, *args],
            capture_output=True,
            text=True,
            timeout=PROMTOOL_TIMEOUT_SECONDS,
            check=False,
        )
        assert result.returncode == 0, (
            f"promtool {' '.join(args)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
        return result

    return run
