"""`make install` against its inputs: nothing to do while .venv matches uv.lock and
pyproject.toml, a sync when either changes (a dry run of the project's own Makefile)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The Makefile, uv.lock and pyproject.toml, and a uv stand-in (a dry run never runs it)."""
    for name in ("Makefile", "uv.lock", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "uv").touch()
    return tmp_path


def _set_mtime(path: Path, seconds: int) -> None:
    os.utime(path, (seconds, seconds))


def _installed(checkout: Path, at: int) -> None:
    """As after a `make install` at time `at`, inputs older than the stamp."""
    (checkout / ".venv").mkdir()
    (checkout / ".venv" / ".installed-stamp").touch()
    _set_mtime(checkout / "uv.lock", at - 100)
    _set_mtime(checkout / "pyproject.toml", at - 100)
    _set_mtime(checkout / ".venv" / ".installed-stamp", at)


def _dry_run(checkout: Path) -> str:
    done = subprocess.run(
        ["make", "--dry-run", "install", f"UV={checkout / 'uv'}"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_a_fresh_checkout_syncs_from_the_lock(checkout: Path) -> None:
    commands = _dry_run(checkout)
    assert "sync --quiet --locked --all-extras" in commands
    assert "touch .venv/.installed-stamp" in commands


def test_nothing_to_do_when_nothing_changed(checkout: Path) -> None:
    _installed(checkout, at=1_800_000_000)
    assert "sync" not in _dry_run(checkout)


@pytest.mark.parametrize("changed", ["uv.lock", "pyproject.toml"])
def test_a_changed_input_syncs_again(checkout: Path, changed: str) -> None:
    _installed(checkout, at=1_800_000_000)
    _set_mtime(checkout / changed, 1_800_000_100)
    assert "sync --quiet --locked --all-extras" in _dry_run(checkout)
