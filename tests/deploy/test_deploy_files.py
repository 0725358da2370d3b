"""The deployment files against the architecture and the rules they must keep: every service
everywhere, non-root images, probes and resources, the API's HPA and PDB, default-deny network
policies, no secret in a committed file, pinned images, health checks. Each check also runs
on a broken input, which it must report."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from readmit.errors import ReadmitError
from readmit.settings import Settings
from tests.deploy import checks
from tests.deploy.checks import (
    AIRFLOW_HELM_COMPONENTS,
    AIRFLOW_VALUES,
    COMPOSE_ENV_EXAMPLE,
    COMPOSE_SERVICES,
    DOCKER,
    K8S,
    K8S_WORKLOADS,
    OBSERVABILITY,
    OVERLAYS,
    REPO,
    by_kind,
    pod_spec,
)
from tests.deploy.conftest import run

DEPLOY_COMPOSE = checks.COMPOSE_FILE.parent
DOCKERFILES = {p.name: p for p in sorted(DOCKER.glob("*.Dockerfile"))}

# ---- Dockerfiles ---------------------------------------------------------------------------


# What .dockerignore lets into the images' build context: the one list both tests check.
BUILD_CONTEXT = (
    "src",
    "dags",
    "pyproject.toml",
    "README.md",
    "uv.lock",
    "deploy/docker/healthcheck.py",
    "deploy/docker/airflow-entrypoint.sh",
)


def test_every_image_has_a_dockerfile() -> None:
    expected = {"api.Dockerfile", "ui.Dockerfile", "mlflow.Dockerfile", "airflow.Dockerfile"}
    assert expected <= set(DOCKERFILES)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_is_pinned_non_root_and_has_a_healthcheck(name: str) -> None:
    assert checks.dockerfile_problems(DOCKERFILES[name].read_text()) == []


def test_airflow_image_extends_the_official_image_with_dags_and_package() -> None:
    """By default (the last stage); target `on-python` makes the same from uv.lock's Airflow
    on the Python base of the other images, as the official image's user."""
    text = DOCKERFILES["airflow.Dockerfile"].read_text()
    stages = {stage.name: stage for stage in checks.dockerfile_stages(text)}
    assert list(stages) == ["on-python", "upstream"]
    assert stages["upstream"].base == "apache/airflow:3.3.2-python3.11"
    python_base = checks.dockerfile_stages(DOCKERFILES["api.Dockerfile"].read_text())[0].base
    assert stages["on-python"].base == python_base
    assert stages["upstream"].user == stages["on-python"].user == "50000:0"
    assert len(re.findall(r"^COPY .*dags /opt/airflow/dags$", text, re.M)) == 2
    assert "uv export --frozen --no-emit-project" in text
    assert "uv sync --locked --no-editable --extra stack" in text


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_images_install_from_uv_lock_with_the_makefiles_uv(name: str) -> None:
    """The images take their versions from uv.lock, through the uv release `make install` uses."""
    makefile = (REPO / "Makefile").read_text()
    pinned = re.search(r"^UV_VERSION := (\S+)$", makefile, re.M)
    assert pinned, "Makefile pins no UV_VERSION"
    text = DOCKERFILES[name].read_text()
    assert re.findall(r"^ARG UV_VERSION=(\S+)$", text, re.M) == [pinned.group(1)]
    assert re.search(r"^COPY .*uv\.lock pyproject\.toml \./$", text, re.M)
    assert re.search(r"uv (sync --locked|export --frozen)", text)


@pytest.mark.parametrize("name", ["api.Dockerfile", "ui.Dockerfile", "mlflow.Dockerfile"])
def test_app_images_run_as_uid_10001_on_a_pinned_base(name: str) -> None:
    stages = checks.dockerfile_stages(DOCKERFILES[name].read_text())
    assert len(stages) >= 2 and stages[0].name == "app"
    assert checks._effective(stages, len(stages) - 1, "user") == "10001:10001"
    assert stages[0].base == "python:3.11.14-slim-bookworm"


APP_IMAGES = ("api.Dockerfile", "ui.Dockerfile", "mlflow.Dockerfile")


def _stage_text(text: str, name: str) -> list[tuple[str, str]]:
    """The instructions of stage `name`, from its FROM to the next FROM."""
    instructions = list(checks.dockerfile_instructions(text))
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    for start, end in zip(starts, [*starts[1:], len(instructions)], strict=True):
        if instructions[start][1].endswith(f" AS {name}"):
            return instructions[start:end]
    raise AssertionError(f"no stage {name}")


def test_app_images_share_their_app_stage() -> None:
    """The same stage letter for letter, so one image's build reuses the others' layers."""
    first, *others = (_stage_text(DOCKERFILES[name].read_text(), "app") for name in APP_IMAGES)
    assert len(first) > 3
    for other in others:
        assert other == first


@pytest.mark.parametrize("name", APP_IMAGES)
def test_app_images_start_under_an_init_that_passes_sigterm_on(name: str) -> None:
    app = _stage_text(DOCKERFILES[name].read_text(), "app")
    assert ("ENTRYPOINT", '["tini", "-g", "--"]') in app


@pytest.mark.parametrize(
    ("dockerfile", "problem"),
    [
        ("FROM python\nUSER 10001\nHEALTHCHECK CMD true\n", "not pinned"),
        ("FROM python:latest\nUSER 10001\nHEALTHCHECK CMD true\n", "not pinned"),
        ("ARG BASE=python\nFROM ${BASE}\nUSER 10001\nHEALTHCHECK CMD true\n", "not pinned"),
        ("FROM python:3.11.14-slim\nHEALTHCHECK CMD true\n", "runs as root"),
        ("FROM python:3.11.14-slim\nUSER 0\nHEALTHCHECK CMD true\n", "runs as root"),
        ("FROM python:3.11.14-slim\nUSER app\nHEALTHCHECK CMD true\n", "numeric uid"),
        ("FROM python:3.11.14-slim\nUSER 10001\n", "no HEALTHCHECK"),
        (
            "FROM python:3.11.14-slim AS base\nUSER 10001\nHEALTHCHECK CMD true\n"
            "FROM base AS final\nHEALTHCHECK NONE\n",
            "no HEALTHCHECK",
        ),
        (
            "FROM python:3.11.14-slim AS b\nUSER 10001\nHEALTHCHECK CMD true\nFROM b\nUSER 0\n",
            "runs as root",
        ),
        (
            "FROM python:3.11.14-slim\nENV DB_PASSWORD=hunter2\nUSER 1\nHEALTHCHECK CMD true\n",
            "baked into the image",
        ),
    ],
)
def test_dockerfile_check_reports_problems(dockerfile: str, problem: str) -> None:
    assert any(problem in p for p in checks.dockerfile_problems(dockerfile))


def test_dockerfile_stage_inheritance_counts() -> None:
    text = (
        "ARG IMG=python:3.11.14-slim\nFROM ${IMG} AS runtime\nUSER 10001:10001\n"
        'HEALTHCHECK CMD ["true"]\nFROM runtime AS api\n'
    )
    assert checks.dockerfile_problems(text) == []


def test_dockerignore_keeps_local_state_and_data_out_of_the_context() -> None:
    lines = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert "*" in lines, "the context is an allow-list"
    for pattern in (
        ".venv",
        ".readmit",
        ".git",
        "**/.env",
        "**/*.zip",
        "**/diabetic_data.csv",
        "**/.pytest_cache",
        "**/.mypy_cache",
        "**/.ruff_cache",
    ):
        assert pattern in lines, pattern
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == set(BUILD_CONTEXT)


def test_images_copy_only_what_the_context_allows() -> None:
    """Each COPY source of the build context is on the .dockerignore allow-list."""
    allowed = BUILD_CONTEXT
    for name, path in DOCKERFILES.items():
        for keyword, arguments in checks.dockerfile_instructions(path.read_text()):
            if keyword != "COPY" or "--from=" in arguments:
                continue
            sources = [a for a in arguments.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert source.startswith(allowed), f"{name}: COPY {source}"


# ---- Compose -------------------------------------------------------------------------------


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    assert set(COMPOSE_SERVICES) <= set(compose["services"])


def test_compose_structure(compose: dict[str, Any]) -> None:
    assert checks.compose_structure_problems(compose) == []


def test_compose_credentials_come_from_the_env_file(compose: dict[str, Any]) -> None:
    assert checks.compose_credential_problems(compose) == []


def test_compose_services_run_as_non_root(compose: dict[str, Any]) -> None:
    assert checks.compose_user_problems(compose) == []


def test_compose_checks_report_problems(compose: dict[str, Any]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(compose))
    services = broken["services"]
    del services["clean-db"]
    del services["ui"]["healthcheck"]
    services["api"]["image"] = "readmit-api:latest"
    services["api"]["environment"]["READMIT_API_KEY"] = "s3cr3t-value"
    services["exporter"]["environment"]["READMIT_RAW_DB_URL"] = (
        "postgresql+psycopg://raw:pw@raw-db/raw"
    )
    services["api"]["depends_on"] = ["mlflow"]
    services["grafana"]["ports"] = ["3000:3000"]
    services["prometheus"]["image"] = "prom/prometheus"
    services["raw-db"].pop("user")
    services["mlflow"]["user"] = "root"
    structure = checks.compose_structure_problems(broken)
    assert "service clean-db is missing" in structure
    assert "ui: long-running service without a healthcheck" in structure
    assert any("readmit-api:latest is not pinned" in p for p in structure)
    assert any("prom/prometheus is not pinned" in p for p in structure)
    assert "api: depends_on mlflow without a condition" in structure
    assert any("every interface" in p for p in structure)
    credentials = checks.compose_credential_problems(broken)
    assert any("READMIT_API_KEY" in p for p in credentials)
    assert any("READMIT_RAW_DB_URL" in p for p in credentials)
    users = checks.compose_user_problems(broken)
    assert any(p.startswith("raw-db:") for p in users)
    assert any(p.startswith("mlflow: runs as root") for p in users)


def test_compose_airflow_uses_psycopg_local_executor_and_the_api_server(
    compose: dict[str, Any],
) -> None:
    for name in ("airflow-init", *checks.AIRFLOW_COMPONENTS):
        env = compose["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
        assert (
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"]
            == env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        )
        assert (
            env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
            == "http://airflow-api-server:8080/execution/"
        )
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?")
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert compose["services"]["airflow-init"]["command"] == ["db", "migrate"]


def test_compose_mlflow_and_minio_share_the_artifact_bucket(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]["environment"]
    assert mlflow["READMIT_MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow-artifacts"
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["READMIT_MLFLOW_ALLOWED_HOSTS"] == "mlflow,mlflow:5000"
    assert mlflow["READMIT_MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://")
    script = compose["services"]["minio-init"]["command"][0]
    assert "mb --ignore-existing local/mlflow-artifacts" in script


def test_compose_observability_mounts_match_their_configuration(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    assert "../../observability/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.compose.yml" in prometheus["command"]
    scrape = yaml.safe_load((OBSERVABILITY / "prometheus" / "prometheus.compose.yml").read_text())
    targets = [
        t
        for job in scrape["scrape_configs"]
        for c in job.get("static_configs", [])
        for t in c["targets"]
    ]
    for target in targets:
        host, port = target.split(":")
        if host != "localhost":
            assert checks.PORTS[host] == int(port) and host in services, target
    provider = yaml.safe_load(
        (OBSERVABILITY / "grafana/provisioning/dashboards/readmit.yml").read_text()
    )
    dashboards_path = provider["providers"][0]["options"]["path"]
    grafana_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert grafana_mounts[dashboards_path] == "../../observability/grafana/dashboards"
    assert grafana_mounts["/etc/grafana/provisioning"] == "../../observability/grafana/provisioning"
    datasource = yaml.safe_load(
        (OBSERVABILITY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_compose_locust_runs_under_its_profile_against_the_api(compose: dict[str, Any]) -> None:
    locust = compose["services"]["locust"]
    assert locust["profiles"] == ["loadtest"]
    assert locust["environment"]["LOCUST_HOST"] == "http://api:8000"
    assert locust["environment"]["LOCUST_LOCUSTFILE"] == "/mnt/loadtest/locustfile.py"
    assert "../../loadtest:/mnt/loadtest:ro" in locust["volumes"]
    assert (REPO / "loadtest" / "locustfile.py").exists()


# ---- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_has_every_service(overlays: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    documents = overlays[overlay]
    for name, kind in K8S_WORKLOADS.items():
        assert name in by_kind(documents, kind), f"{kind}/{name}"
    assert checks.service_port_problems(documents) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_workloads_have_probes_resources_and_run_hardened(
    overlays: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    assert checks.workload_problems(overlays[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_api_has_hpa_pdb_and_fitting_probes(
    overlays: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    assert checks.api_problems(overlays[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_network_policies_deny_by_default(
    overlays: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    assert checks.network_policy_problems(overlays[overlay]) == []


def _deployment(documents: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return by_kind(documents, "Deployment")[name]


def test_k8s_checks_report_problems(overlays: dict[str, list[dict[str, Any]]]) -> None:
    documents = yaml.safe_load_all(yaml.safe_dump_all(overlays["dev"]))
    broken = [
        d
        for d in documents
        if not (d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "default-deny-all")
    ]
    broken = [
        d for d in broken if d["kind"] not in ("HorizontalPodAutoscaler", "PodDisruptionBudget")
    ]
    api = _deployment(broken, "api")
    container = pod_spec(api)["containers"][0]
    del container["readinessProbe"]
    container["livenessProbe"] = {"httpGet": {"path": "/health", "port": "http"}}
    del container["resources"]["limits"]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    container["image"] = "readmit-api:latest"
    container["env"].append({"name": "DB_PASSWORD", "value": "hunter2"})
    api["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
    api["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    api["spec"]["replicas"] = 3
    broken.append(
        {"kind": "Role", "metadata": {"name": "x"}, "rules": [{"verbs": ["get", "create"]}]}
    )
    workloads = checks.workload_problems(broken)
    assert "Deployment/api/api: no readinessProbe" in workloads
    assert "Deployment/api/api: no cpu limit" in workloads
    assert "Deployment/api/api: root file system is writable" in workloads
    assert "Deployment/api/api: no non-zero runAsUser" in workloads
    assert any("readmit-api:latest is not pinned" in p for p in workloads)
    assert any("DB_PASSWORD is a literal" in p for p in workloads)
    assert any("service account token" in p for p in workloads)
    api_checks = checks.api_problems(broken)
    assert "api: no HorizontalPodAutoscaler" in api_checks
    assert "api: no PodDisruptionBudget selects the API pods" in api_checks
    assert any("liveness must not be /health" in p for p in api_checks)
    assert any("readiness probe" in p for p in api_checks)
    assert any("HPA owns" in p for p in api_checks)
    policies = checks.network_policy_problems(broken)
    assert any("default-deny" in p for p in policies)
    assert any("Role/x" in p for p in policies)
    no_api_policy = [
        d for d in broken if not (d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "api")
    ]
    assert (
        "Deployment/api: no NetworkPolicy of its own (all traffic denied)"
        in checks.network_policy_problems(no_api_policy)
    )
    assert "Service grafana is missing" in checks.service_port_problems(
        [d for d in broken if not (d["kind"] == "Service" and d["metadata"]["name"] == "grafana")]
    )


def test_k8s_api_probes(overlays: dict[str, list[dict[str, Any]]]) -> None:
    container = pod_spec(_deployment(overlays["prod"], "api"))["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/metrics"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/data"} <= mounts, "writable dirs under a read-only root file system"


def test_k8s_overlays_differ_as_intended(overlays: dict[str, list[dict[str, Any]]]) -> None:
    dev, prod = (
        by_kind(overlays[o], "HorizontalPodAutoscaler")["api"]["spec"] for o in ("dev", "prod")
    )
    assert dev["minReplicas"] < prod["minReplicas"] and dev["maxReplicas"] < prod["maxReplicas"]
    namespaces = {
        o: {d["metadata"].get("namespace") for d in overlays[o] if d["kind"] != "Namespace"}
        for o in OVERLAYS
    }
    assert namespaces == {"dev": {"readmit-dev"}, "prod": {"readmit"}}


def test_k8s_third_party_images_match_compose(
    overlays: dict[str, list[dict[str, Any]]], compose: dict[str, Any]
) -> None:
    compose_images = {s["image"] for s in compose["services"].values() if "build" not in s}
    k8s_images = {
        c["image"]
        for kind in ("Deployment", "StatefulSet", "Job")
        for w in by_kind(overlays["dev"], kind).values()
        for c in pod_spec(w)["containers"]
        if not c["image"].startswith("readmit-")
    }
    assert k8s_images == compose_images


def test_k8s_settings_are_the_applications_names(
    overlays: dict[str, list[dict[str, Any]]], compose: dict[str, Any]
) -> None:
    known = {f"READMIT_{name.upper()}" for name in Settings.model_fields}
    known |= {"READMIT_MLFLOW_TRACKING_URI", "READMIT_S3_ENDPOINT_URL"}  # aliases
    config = by_kind(overlays["dev"], "ConfigMap")
    names = [n for n in config if n.startswith("readmit-config-")]
    assert len(names) == 1
    used = set(config[names[0]]["data"])
    used |= {k for s in compose["services"].values() for k in checks._environment(s)}
    for overlay in OVERLAYS:
        for secret in by_kind(overlays[overlay], "Secret").values():
            used |= set(secret.get("data", {}))
    unknown = {k for k in used if k.startswith("READMIT_")} - known
    assert unknown == set()
    assert config[names[0]]["data"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_k8s_secrets_are_generated_and_config_is_shared(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    for overlay in OVERLAYS:
        secrets = by_kind(overlays[overlay], "Secret")
        names = {re.sub(r"-[a-z0-9]{10}$", "", n) for n in secrets}
        assert names == {
            "postgres-credentials",
            "minio-credentials",
            "readmit-secrets",
            "readmit-api-keys",
            "grafana-admin",
            "readmit-airflow-secrets",
            "airflow-secrets",
        }
        assert "airflow-secrets" in secrets and "readmit-airflow-secrets" in secrets  # fixed names
        assert "readmit-airflow-config" in by_kind(overlays[overlay], "ConfigMap")


def test_observability_kustomization_lists_every_rules_file_and_dashboard(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    config_maps = {
        re.sub(r"-[a-z0-9]{10}$", "", n): c
        for n, c in by_kind(overlays["dev"], "ConfigMap").items()
    }
    rules = {p.name for p in (OBSERVABILITY / "prometheus" / "rules").glob("*.yml")}
    dashboards = {p.name for p in (OBSERVABILITY / "grafana" / "dashboards").glob("*.json")}
    assert set(config_maps["prometheus-rules"]["data"]) == rules
    assert set(config_maps["grafana-dashboards"]["data"]) == dashboards
    for name in rules:
        text = (OBSERVABILITY / "prometheus" / "rules" / name).read_text()
        assert config_maps["prometheus-rules"]["data"][name] == text


def test_k8s_prometheus_and_grafana_mounts_match_their_configuration(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    documents = overlays["dev"]
    prometheus = pod_spec(by_kind(documents, "StatefulSet")["prometheus"])["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in prometheus["volumeMounts"]}
    assert "--config.file=/etc/prometheus/config/prometheus.yml" in prometheus["args"]
    config = yaml.safe_load((K8S / "base" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert {"/etc/prometheus/config", "/etc/prometheus/rules", "/prometheus"} <= set(mounts)
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"readmit-api", "readmit-pipeline"} <= jobs, "the job names the rules and dashboards use"
    dns = next(j for j in config["scrape_configs"] if j["job_name"] == "readmit-api")[
        "dns_sd_configs"
    ][0]
    headless = by_kind(documents, "Service")[dns["names"][0]]
    assert (
        headless["spec"]["clusterIP"] == "None"
        and headless["spec"]["publishNotReadyAddresses"] is True
    )
    assert dns["port"] == checks.PORTS["api"]
    grafana = pod_spec(by_kind(documents, "Deployment")["grafana"])
    grafana_mounts = {m["mountPath"]: m["name"] for m in grafana["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v.get("configMap", {}).get("name", "") for v in grafana["volumes"]}
    provider = yaml.safe_load(
        (OBSERVABILITY / "grafana/provisioning/dashboards/readmit.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert volumes[grafana_mounts[path]].startswith("grafana-dashboards-")
    assert volumes[grafana_mounts["/etc/grafana/provisioning/datasources"]].startswith(
        "grafana-datasources-"
    )
    assert volumes[grafana_mounts["/etc/grafana/provisioning/dashboards"]].startswith(
        "grafana-dashboard-providers-"
    )


# ---- Airflow on Kubernetes (Helm values) ---------------------------------------------------


@pytest.fixture(scope="module")
def airflow_values() -> dict[str, Any]:
    return dict(yaml.safe_load(AIRFLOW_VALUES.read_text()))


def _example_keys(overlay: str, name: str) -> set[str]:
    text = (K8S / "overlays" / overlay / "secrets" / f"{name}.env.example").read_text()
    return {
        line.split("=", 1)[0]
        for line in text.splitlines()
        if "=" in line and not line.startswith("#")
    }


def test_airflow_values_use_the_kubernetes_executor_and_the_project_image(
    airflow_values: dict[str, Any],
) -> None:
    values = airflow_values
    assert values["executor"] == "KubernetesExecutor"
    assert values["images"]["airflow"]["repository"] == "readmit-airflow"
    assert values["images"]["airflow"]["tag"] == values["defaultAirflowTag"]
    assert checks.image_is_pinned(f"readmit-airflow:{values['images']['airflow']['tag']}")
    base = checks.dockerfile_stages(DOCKERFILES["airflow.Dockerfile"].read_text())[-1].base
    assert base.startswith(f"apache/airflow:{values['airflowVersion']}-")
    assert (
        values["dags"]["gitSync"]["enabled"] is False
        and values["dags"]["persistence"]["enabled"] is False
    )
    assert values["postgresql"]["enabled"] is False
    for component in AIRFLOW_HELM_COMPONENTS:
        assert values[component]["resources"]["limits"], component
    assert (
        values["config"]["core"]["execution_api_server_url"]
        == "http://airflow-api-server:8080/execution/"
    )


def test_airflow_values_take_credentials_from_the_overlay_secrets(
    airflow_values: dict[str, Any], overlays: dict[str, list[dict[str, Any]]]
) -> None:
    values = airflow_values
    references = {
        (values["data"]["metadataSecretName"], "connection"),
        (values["fernetKeySecretName"], "fernet-key"),
        (values["apiSecretKeySecretName"], "api-secret-key"),
        (values["jwtSecretName"], "jwt-secret"),
    }
    references |= {(s["secretName"], s["secretKey"]) for s in values["secret"]}
    for volume in values["apiServer"]["extraVolumes"]:
        references |= {
            (volume["secret"]["secretName"], item["key"]) for item in volume["secret"]["items"]
        }
    async_conn = next(
        s for s in values["secret"] if s["envName"] == "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"
    )
    assert (async_conn["secretName"], async_conn["secretKey"]) == (
        values["data"]["metadataSecretName"],
        "connection",
    )
    for overlay in OVERLAYS:
        secrets = by_kind(overlays[overlay], "Secret")
        for name, key in references:
            assert name in secrets, f"{overlay}: Secret {name}"
            assert key in secrets[name]["data"], f"{overlay}: {name}[{key}]"
        assert "connection" in _example_keys(overlay, "airflow")
    for secret in values["secret"]:
        assert not secret["envName"].startswith("READMIT_") or secret["envName"] in _example_keys(
            "dev", "readmit"
        )


def test_airflow_values_share_the_readmit_settings(
    airflow_values: dict[str, Any], overlays: dict[str, list[dict[str, Any]]]
) -> None:
    env_from = yaml.safe_load(airflow_values["extraEnvFrom"])
    config_names = {e["configMapRef"]["name"] for e in env_from if "configMapRef" in e}
    assert config_names == {"readmit-airflow-config"}
    maps = by_kind(overlays["dev"], "ConfigMap")
    hashed = next(v for k, v in maps.items() if k.startswith("readmit-config-"))
    assert maps["readmit-airflow-config"]["data"] == hashed["data"]


def test_airflow_simple_auth_manager_reads_the_mounted_passwords_file(
    airflow_values: dict[str, Any],
) -> None:
    core = airflow_values["config"]["core"]
    assert core["simple_auth_manager_users"] == "admin:admin"
    mount = airflow_values["apiServer"]["extraVolumeMounts"][0]
    volume = airflow_values["apiServer"]["extraVolumes"][0]
    assert mount["name"] == volume["name"]
    item = volume["secret"]["items"][0]
    assert f"{mount['mountPath']}/{item['path']}" == core["simple_auth_manager_passwords_file"]
    assert airflow_values["createUserJob"]["enabled"] is False


def test_airflow_pods_have_a_network_policy(overlays: dict[str, list[dict[str, Any]]]) -> None:
    """The chart labels every Airflow pod tier=airflow; base/networkpolicies.yaml covers it."""
    policies = by_kind(overlays["dev"], "NetworkPolicy")
    selected = [
        p
        for p in policies.values()
        if p["spec"]["podSelector"].get("matchLabels") == {"tier": "airflow"}
    ]
    assert len(selected) == 1
    for db in ("airflow-db", "raw-db", "clean-db"):
        sources = [
            f["podSelector"]["matchLabels"]
            for r in policies[db]["spec"]["ingress"]
            for f in r["from"]
        ]
        assert {"tier": "airflow"} in sources, db


# ---- secrets ---------------------------------------------------------------------------------


SCANNED = ("deploy", "observability/kustomization.yaml", ".dockerignore")
# What the .gitignore files keep out of the scanned paths: the local secrets (compose's
# `.env`, the overlays' `secrets/*.env`) and Python caches.
NOT_COMMITTED = re.compile(
    r"(^|/)\.env$|/overlays/[^/]+/secrets/([^/]+\.env|api-keys)$|^deploy/compose/api-keys$"
    r"|(^|/)__pycache__/|\.pyc$"
)


def _git_listed() -> list[Path] | None:
    """What git would commit under the scanned paths; None when git cannot tell."""
    try:
        listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", *SCANNED)
    except OSError:
        return None
    if listed.returncode != 0 or not listed.stdout.strip():
        return None
    return sorted(REPO / line for line in listed.stdout.splitlines())


def _walked() -> list[Path]:
    """Every file under the same scanned paths, found without git, less what git ignores."""
    found = []
    for name in SCANNED:
        root = REPO / name
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and not NOT_COMMITTED.search(path.relative_to(REPO).as_posix()):
                found.append(path)
    return sorted(found)


def _deploy_files() -> list[Path]:
    return _git_listed() or _walked()


def test_the_scan_without_git_covers_every_file_git_would_commit() -> None:
    listed = _git_listed()
    if listed is None:
        pytest.skip("git cannot list the repository here; nothing to compare the walk with")
    missing = sorted(set(listed) - set(_walked()))
    assert missing == [], missing


def test_no_committed_deploy_file_holds_a_secret() -> None:
    files = _deploy_files()
    assert COMPOSE_ENV_EXAMPLE in files
    assert len([f for f in files if f.name.endswith(".env.example")]) == 1 + 6 * len(OVERLAYS)
    problems = []
    for path in files:
        if path.suffix in (".py",) or not path.is_file():
            continue
        problems += checks.secret_problems(str(path.relative_to(REPO)), path.read_text())
    assert problems == []


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("deploy/compose/.env.example", "RAW_DB_PASSWORD=Tr0ub4dor&3xyz\n"),
        ("deploy/compose/.env.example", "READMIT_API_KEY=abc\n"),
        (
            "x/secrets/readmit.env.example",
            "READMIT_RAW_DB_URL=postgresql://raw:hunter2@raw-db/raw\n",
        ),
        ("x/secrets/airflow.env.example", 'passwords.json={"admin": "hunter2"}\n'),
        ("deploy/k8s/base/x.yaml", "  password: hunter2\n"),
        ("deploy/k8s/base/x.yaml", "key: " + "AKIA" + "IOSFODNN7EXAMPLE\n"),
        ("deploy/k8s/base/x.yaml", "-----BEGIN RSA " + "PRIVATE KEY-----\n"),
        ("deploy/k8s/base/x.yaml", "token: " + "q8Xz3LmP0vR7tY2wK9sD4fG6hJ1nB5cV\n"),
    ],
)
def test_secret_scan_reports_credentials(path: str, text: str) -> None:
    assert checks.secret_problems(path, text) != []


def test_secret_scan_accepts_placeholders_and_references() -> None:
    text = (
        "RAW_DB_PASSWORD=change-me-raw-db-password\n"
        "READMIT_RAW_DB_URL=postgresql+psycopg://raw:change-me-raw-db-password@raw-db:5432/raw\n"
        'passwords.json={"admin": "change-me-airflow-admin-password"}\n'
        "# AIRFLOW_FERNET_KEY=any comment\n"
    )
    assert checks.secret_problems("x/secrets/a.env.example", text) == []
    manifest = "  POSTGRES_PASSWORD: ${RAW_DB_PASSWORD:?set it}\n  secretName: airflow-secrets\n"
    assert checks.secret_problems("deploy/compose/docker-compose.yml", manifest) == []


def test_local_secret_files_are_git_ignored() -> None:
    for path in (
        "deploy/compose/.env",
        "deploy/compose/api-keys",
        *(f"deploy/k8s/overlays/{o}/secrets/postgres.env" for o in OVERLAYS),
        *(f"deploy/k8s/overlays/{o}/secrets/api-keys" for o in OVERLAYS),
    ):
        assert run("git", "check-ignore", "-q", path).returncode == 0, path
    for path in (
        "deploy/compose/.env.example",
        "deploy/k8s/overlays/dev/secrets/postgres.env.example",
    ):
        assert run("git", "check-ignore", "-q", path).returncode == 1, path


def test_overlay_secret_examples_agree() -> None:
    for name in ("postgres", "readmit", "minio", "airflow", "grafana", "api-keys"):
        assert _example_keys("dev", name) == _example_keys("prod", name), name


def test_every_compose_credential_is_in_the_env_example(compose: dict[str, Any]) -> None:
    lines = [
        line
        for line in checks.COMPOSE_FILE.read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    required = set(re.findall(r"\$\{(\w+):\?", "\n".join(lines)))
    example = {
        line.split("=", 1)[0]
        for line in COMPOSE_ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert required and required <= example


# ---- MLflow behind a login ------------------------------------------------------------------

MLFLOW_CLIENTS = ("api", "ui", "exporter")


def test_compose_mlflow_asks_for_a_login_that_every_client_has(compose: dict[str, Any]) -> None:
    services = compose["services"]
    server = services["mlflow"]["environment"]
    users_db = server["READMIT_MLFLOW_AUTH_DB_URL"]
    assert users_db.startswith("postgresql+psycopg://mlflow:${MLFLOW_DB_PASSWORD:?")
    assert users_db.endswith("@mlflow-db:5432/mlflow_auth")
    login = {
        name: server[name] for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    assert login["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_TRACKING_PASSWORD:?")
    for name in (*MLFLOW_CLIENTS, *checks.AIRFLOW_COMPONENTS):
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert {k: env.get(k) for k in login} == login, name
        assert "READMIT_MLFLOW_AUTH_DB_URL" not in env, name  # only the server reaches that
    for name, service in services.items():
        command = " ".join(str(part) for part in service.get("command") or [])
        assert "MLFLOW_TRACKING_PASSWORD" not in command, name
    # The MLflow image's virtualenv is the package's runtime set, which holds the auth app.
    assert '"mlflow[auth]==' in (REPO / "pyproject.toml").read_text()


def _secret_env(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_k8s_mlflow_asks_for_a_login_that_every_client_has(
    overlays: dict[str, list[dict[str, Any]]], airflow_values: dict[str, Any]
) -> None:
    for overlay in OVERLAYS:
        documents = overlays[overlay]
        workloads = by_kind(documents, "Deployment")
        secret = next(
            s for n, s in by_kind(documents, "Secret").items() if n.startswith("readmit-secrets-")
        )
        config = next(
            c for n, c in by_kind(documents, "ConfigMap").items() if n.startswith("readmit-config-")
        )
        assert config["data"]["MLFLOW_TRACKING_USERNAME"] == "readmit"
        assert {"READMIT_MLFLOW_AUTH_DB_URL", "MLFLOW_TRACKING_PASSWORD"} <= set(secret["data"])
        server = _secret_env(pod_spec(workloads["mlflow"])["containers"][0])
        assert server["READMIT_MLFLOW_AUTH_DB_URL"][1] == "READMIT_MLFLOW_AUTH_DB_URL"
        assert server["MLFLOW_TRACKING_PASSWORD"][1] == "MLFLOW_TRACKING_PASSWORD"
        for name in ("mlflow", *MLFLOW_CLIENTS):
            container = pod_spec(workloads[name])["containers"][0]
            password = _secret_env(container)["MLFLOW_TRACKING_PASSWORD"]
            assert password[0].startswith("readmit-secrets-"), (overlay, name)
            assert "MLFLOW_TRACKING_PASSWORD" not in " ".join(
                container.get("command", []) + container.get("args", [])
            )
    task_env = {s["envName"]: (s["secretName"], s["secretKey"]) for s in airflow_values["secret"]}
    assert task_env["MLFLOW_TRACKING_PASSWORD"] == (
        "readmit-airflow-secrets",
        "MLFLOW_TRACKING_PASSWORD",
    )
    for overlay in OVERLAYS:
        example = _example_keys(overlay, "readmit")
        assert {"READMIT_MLFLOW_AUTH_DB_URL", "MLFLOW_TRACKING_PASSWORD"} <= example


# ---- API keys ------------------------------------------------------------------------------

OPEN_BIND_SETTINGS = ("READMIT_API_HOST", "READMIT_AUTH", "READMIT_ALLOW_OPEN_BIND")


def _serves(environment: dict[str, str]) -> None:
    """`readmit serve`'s bind check passes with these settings (raises otherwise)."""
    from readmit.serving.server import check_bind

    given = {k.removeprefix("READMIT_").lower(): v for k, v in environment.items()}
    check_bind(
        Settings(**{k: v for k, v in given.items() if f"READMIT_{k.upper()}" in OPEN_BIND_SETTINGS})
    )


def _finds(key_file: str, key: str, scope: str) -> str:
    """The name the key file gives `key`, which must hold `scope`."""
    from readmit.serving.auth import digest_of, parse_keys

    found = [k for k in parse_keys(key_file) if k.digest == digest_of(key)]
    assert len(found) == 1 and scope in found[0].scopes, key_file
    return found[0].name


def test_api_image_listens_openly_only_with_keys() -> None:
    stages = checks.dockerfile_stages(DOCKERFILES["api.Dockerfile"].read_text())
    api = next(s for s in stages if s.name == "api")
    assert api.env["READMIT_API_HOST"] == "0.0.0.0"
    assert api.env["READMIT_AUTH"] == "keys"
    _serves(api.env)
    with pytest.raises(ReadmitError, match="READMIT_AUTH=none"):
        _serves({**api.env, "READMIT_AUTH": "none"})


def test_compose_api_asks_for_keys_that_the_ui_and_load_test_send(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    services = compose["services"]
    api = services["api"]
    assert api["environment"]["READMIT_API_KEYS_FILE"] == "/run/secrets/api-keys"
    assert api["secrets"] == ["api-keys"]
    assert compose["secrets"]["api-keys"] == {"file": "./api-keys"}
    _serves({"READMIT_API_HOST": "0.0.0.0", **api["environment"]})
    sent = {
        "ui": services["ui"]["environment"]["READMIT_API_KEY"],
        "locust": services["locust"]["environment"]["READMIT_API_KEY"],
    }
    assert sent == {
        "ui": "${READMIT_UI_API_KEY:?set READMIT_UI_API_KEY in .env}",
        "locust": "${READMIT_LOADTEST_API_KEY:?set READMIT_LOADTEST_API_KEY in .env}",
    }
    # make-api-keys.sh writes their digests from .env, keeping lines added by hand.
    folder = tmp_path / "compose"
    folder.mkdir()
    script = folder / "make-api-keys.sh"
    script.write_bytes((DEPLOY_COMPOSE / "make-api-keys.sh").read_bytes())
    env = COMPOSE_ENV_EXAMPLE.read_text()
    env = env.replace("READMIT_UI_API_KEY=change-me", "READMIT_UI_API_KEY=ui-secret-1")
    env = env.replace("READMIT_LOADTEST_API_KEY=change-me", "READMIT_LOADTEST_API_KEY=lt-secret-2")
    (folder / ".env").write_text(env)
    (folder / "api-keys").write_text("ward-7 outcomes sha256:" + "0" * 64 + "\n")
    result = run("bash", str(script))
    assert result.returncode == 0, result.stderr
    written = (folder / "api-keys").read_text()
    assert _finds(written, "ui-secret-1", "predict") == "ui"
    assert _finds(written, "lt-secret-2", "predict") == "loadtest"
    assert written.startswith("ward-7 outcomes") and "secret" not in written
    assert (folder / "api-keys").stat().st_mode & 0o777 == 0o644
    (folder / ".env").write_text(COMPOSE_ENV_EXAMPLE.read_text())  # placeholders: refused
    refused = run("bash", str(script))
    assert refused.returncode != 0 and "READMIT_UI_API_KEY" in refused.stderr


def test_k8s_api_asks_for_keys_that_the_ui_sends(overlays: dict[str, list[dict[str, Any]]]) -> None:
    for overlay in OVERLAYS:
        documents = overlays[overlay]
        workloads = by_kind(documents, "Deployment")
        secrets = by_kind(documents, "Secret")
        (name,) = [n for n in secrets if n.startswith("readmit-api-keys-")]
        data = {k: base64.b64decode(v).decode() for k, v in secrets[name]["data"].items()}
        api_pod = pod_spec(workloads["api"])
        api = api_pod["containers"][0]
        env = {e["name"]: e.get("value") for e in api["env"]}
        _serves({"READMIT_API_HOST": "0.0.0.0", **env})
        mount = next(m for m in api["volumeMounts"] if m["name"] == "api-keys")
        volume = next(v for v in api_pod["volumes"] if v["name"] == "api-keys")
        assert volume["secret"]["secretName"] == name
        (item,) = volume["secret"]["items"]
        assert env["READMIT_API_KEYS_FILE"] == f"{mount['mountPath']}/{item['path']}"
        ui_key = _secret_env(pod_spec(workloads["ui"])["containers"][0])["READMIT_API_KEY"]
        assert ui_key == (name, "ui-api-key")
        assert _finds(data[item["key"]], data["ui-api-key"], "predict") == "ui", overlay
