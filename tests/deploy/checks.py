"""Checks of the deployment files, as functions that return a list of problems.

The tests run each check on the real files (no problem expected) and on small broken inputs
(the problem must be reported), so a check that silently stopped checking would fail too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKER = DEPLOY / "docker"
COMPOSE_FILE = DEPLOY / "compose" / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = DEPLOY / "compose" / ".env.example"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
AIRFLOW_VALUES = K8S / "airflow" / "values.yaml"
OBSERVABILITY = REPO / "observability"

# One port per service, everywhere (Compose, Kubernetes Services, images).
PORTS: dict[str, int] = {
    "api": 8000,
    "ui": 8501,
    "mlflow": 5000,
    "exporter": 9108,
    "prometheus": 9090,
    "grafana": 3000,
    "minio": 9000,
    "raw-db": 5432,
    "clean-db": 5432,
    "monitor-db": 5432,
    "airflow-db": 5432,
    "mlflow-db": 5432,
    "airflow-api-server": 8080,
}

# The architecture: every service, in Compose and on Kubernetes.
DATABASES = ("raw-db", "clean-db", "monitor-db", "airflow-db", "mlflow-db")
AIRFLOW_COMPONENTS = (
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
COMPOSE_SERVICES = (
    *DATABASES,
    "minio",
    "minio-init",
    "mlflow",
    "airflow-init",
    *AIRFLOW_COMPONENTS,
    "api",
    "ui",
    "exporter",
    "prometheus",
    "grafana",
    "locust",
)
COMPOSE_ONE_SHOT = ("minio-init", "airflow-init", "locust")
K8S_WORKLOADS: dict[str, str] = {
    "raw-db": "StatefulSet",
    "clean-db": "StatefulSet",
    "monitor-db": "StatefulSet",
    "airflow-db": "StatefulSet",
    "mlflow-db": "StatefulSet",
    "minio": "StatefulSet",
    "minio-init": "Job",
    "mlflow": "Deployment",
    "api": "Deployment",
    "ui": "Deployment",
    "exporter": "Deployment",
    "prometheus": "StatefulSet",
    "grafana": "Deployment",
}
# Airflow on Kubernetes is the Helm chart: one values section per component.
AIRFLOW_HELM_COMPONENTS = ("apiServer", "scheduler", "dagProcessor", "triggerer", "workers")

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY|FERNET", re.I)
PLACEHOLDER = re.compile(r"^change-me[-a-z0-9]*$")


# ---- Dockerfiles ---------------------------------------------------------------------------


@dataclass
class Stage:
    name: str | None
    base: str
    user: str | None = None
    healthcheck: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comments dropped."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""
    if logical:
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()


def _substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), value)


def _assignments(arguments: str) -> dict[str, str]:
    """KEY=VALUE pairs of an ENV or ARG instruction (also the old `ENV KEY VALUE` form)."""
    if "=" not in arguments.split(" ", 1)[0]:
        key, _, value = arguments.partition(" ")
        return {key: value.strip()}
    return {
        key: value.strip("\"'")
        for key, value in re.findall(r"(\w+)=(\"[^\"]*\"|'[^']*'|\S*)", arguments)
    }


def dockerfile_stages(text: str) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, arguments in dockerfile_instructions(text):
        if keyword == "FROM":
            parts = arguments.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            base = _substitute(parts[0], global_args)
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=base))
        elif keyword == "ARG":
            target = stages[-1].args if stages else global_args
            target.update(
                {k: v for k, v in _assignments(arguments).items()}
                if "=" in arguments
                else {arguments: ""}
            )
        elif not stages:
            continue
        elif keyword == "USER":
            stages[-1].user = arguments
        elif keyword == "HEALTHCHECK":
            stages[-1].healthcheck = arguments
        elif keyword == "ENV":
            stages[-1].env.update(_assignments(arguments))
    return stages


def _effective(stages: list[Stage], index: int, attribute: str) -> str | None:
    """A stage's USER or HEALTHCHECK, inherited from the stage it starts from."""
    stage = stages[index]
    value = getattr(stage, attribute)
    if value is not None:
        return str(value)
    names = [s.name for s in stages[:index]]
    if stage.base in names:
        return _effective(stages, names.index(stage.base), attribute)
    return None


def image_is_pinned(image: str) -> bool:
    """An explicit version tag (not latest) or a digest."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return bool(tag) and tag != "latest" and "$" not in tag


def dockerfile_problems(text: str) -> list[str]:
    stages = dockerfile_stages(text)
    if not stages:
        return ["no FROM instruction"]
    problems: list[str] = []
    known: list[str | None] = []
    for stage in stages:
        if stage.base not in known and not image_is_pinned(stage.base):
            problems.append(f"base image {stage.base!r} is not pinned to a version tag")
        known.append(stage.name)
        for key in {**stage.env, **stage.args}:
            if SECRET_NAME.search(key):
                problems.append(f"{key} is baked into the image (ENV/ARG)")
    final = len(stages) - 1
    user = _effective(stages, final, "user")
    if user is None:
        problems.append("the final stage runs as root (no USER)")
    else:
        uid = user.split(":", 1)[0]
        if not uid.isdigit():
            problems.append(f"USER {user}: use a numeric uid, so runAsNonRoot can verify it")
        elif int(uid) == 0:
            problems.append("the final stage runs as root (USER 0)")
    health = _effective(stages, final, "healthcheck")
    if health is None or health.upper().startswith("NONE"):
        problems.append("the final stage has no HEALTHCHECK")
    return problems


# ---- Compose -------------------------------------------------------------------------------

REQUIRED_VAR = re.compile(r"\$\{\w+:\?[^}]*\}")
URL_WITH_PASSWORD = re.compile(r"://[^:/@\s]+:([^@\s]+)@")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def compose_credential_problems(compose: dict[str, Any]) -> list[str]:
    """Every credential comes from .env through ${VAR:?...}, never a literal."""
    problems = []
    for name, service in compose.get("services", {}).items():
        for key, value in _environment(service).items():
            secret_value = URL_WITH_PASSWORD.search(value)
            if key.endswith("_FILE") and not secret_value:
                continue  # the path of a file, not its content
            if SECRET_NAME.search(key) or secret_value:
                literal = secret_value.group(1) if secret_value else value
                if not REQUIRED_VAR.fullmatch(literal):
                    problems.append(f"{name}: {key} is not taken from .env with ${{VAR:?}}")
    return problems


def compose_structure_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    services: dict[str, dict[str, Any]] = compose.get("services", {})
    for name in COMPOSE_SERVICES:
        if name not in services:
            problems.append(f"service {name} is missing")
    for name, service in services.items():
        image = str(service.get("image", ""))
        if not image:
            problems.append(f"{name}: no image name")
        elif not image_is_pinned(re.sub(r"\$\{\w+:-([^}]+)\}", r"\1", image)):
            problems.append(f"{name}: image {image} is not pinned")
        if name not in COMPOSE_ONE_SHOT and "healthcheck" not in service:
            problems.append(f"{name}: long-running service without a healthcheck")
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):  # the short form has no condition
            depends_on = {dependency: {} for dependency in depends_on}
        for dependency, how in depends_on.items():
            condition = how.get("condition") if isinstance(how, dict) else None
            if dependency not in services:
                problems.append(f"{name}: depends on unknown service {dependency}")
            elif condition == "service_healthy":
                if "healthcheck" not in services[dependency]:
                    problems.append(
                        f"{name}: waits for {dependency} to be healthy, which has no check"
                    )
            elif condition == "service_completed_successfully":
                if dependency not in COMPOSE_ONE_SHOT:
                    problems.append(f"{name}: waits for long-running {dependency} to complete")
            else:
                problems.append(f"{name}: depends_on {dependency} without a condition")
        for port in service.get("ports") or []:
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: port {port} is published on every interface")
            container = int(str(port).rsplit(":", 1)[-1])
            if name in PORTS and container != PORTS[name] and name != "minio":
                problems.append(f"{name}: port {container}, expected {PORTS[name]}")
    declared = set((compose.get("volumes") or {}).keys())
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/")) and source not in declared:
                problems.append(f"{name}: volume {source} is not declared")
    return problems


# Third-party images that already run as a non-root user, and the ones that may not.
NON_ROOT_IMAGES = ("prom/prometheus:", "grafana/grafana:")
ROOT_ALLOWED = {
    "minio": "a fresh named volume is owned by root; non-root on Kubernetes (fsGroup)",
    "minio-init": "one-shot client of minio, no volume, no published port",
}


def compose_user_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in compose.get("services", {}).items():
        build = service.get("build")
        user = str(service.get("user", ""))
        image = str(service.get("image", ""))
        if user in ("root", "0") or user.startswith("0:"):
            problems.append(f"{name}: runs as root (user: {user})")
        elif build or user or image.startswith(NON_ROOT_IMAGES) or name in ROOT_ALLOWED:
            continue
        else:
            problems.append(f"{name}: third-party image without a non-root `user`")
    return problems


# ---- Kubernetes ----------------------------------------------------------------------------


def by_kind(documents: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d and d.get("kind") == kind}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"])


def workload_problems(documents: list[dict[str, Any]]) -> list[str]:
    """Every Deployment/StatefulSet: probes, resources, non-root, hardened; Jobs: the latter."""
    problems = []
    for kind in ("Deployment", "StatefulSet", "Job"):
        for name, workload in by_kind(documents, kind).items():
            spec = pod_spec(workload)
            where = f"{kind}/{name}"
            pod_security = spec.get("securityContext") or {}
            if spec.get("serviceAccountName") in (None, "default"):
                problems.append(f"{where}: no ServiceAccount of its own")
            if spec.get("automountServiceAccountToken") is not False:
                problems.append(f"{where}: mounts a service account token it does not need")
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                at = f"{where}/{container['name']}"
                security = {**pod_security, **(container.get("securityContext") or {})}
                if security.get("runAsNonRoot") is not True:
                    problems.append(f"{at}: runAsNonRoot is not true")
                if security.get("runAsUser", 0) == 0:
                    problems.append(f"{at}: no non-zero runAsUser")
                if (
                    container.get("securityContext", {}).get("allowPrivilegeEscalation")
                    is not False
                ):
                    problems.append(f"{at}: allowPrivilegeEscalation is not false")
                if container.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{at}: root file system is writable")
                drops = container.get("securityContext", {}).get("capabilities", {}).get("drop", [])
                if "ALL" not in drops:
                    problems.append(f"{at}: capabilities are not all dropped")
                if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                    problems.append(f"{at}: seccompProfile is not RuntimeDefault")
                if not image_is_pinned(container.get("image", "")):
                    problems.append(f"{at}: image {container.get('image')} is not pinned")
                resources = container.get("resources") or {}
                for bound in ("requests", "limits"):
                    for resource in ("cpu", "memory"):
                        if resource not in (resources.get(bound) or {}):
                            problems.append(f"{at}: no {resource} {bound[:-1]}")
                for variable in container.get("env", []):
                    if variable["name"].endswith("_FILE"):
                        continue  # the path of a file, not its content
                    if SECRET_NAME.search(variable["name"]) and "value" in variable:
                        problems.append(f"{at}: {variable['name']} is a literal, not a Secret")
                if kind != "Job":
                    for probe in ("readinessProbe", "livenessProbe"):
                        if probe not in container:
                            problems.append(f"{at}: no {probe}")
    return problems


def api_problems(documents: list[dict[str, Any]]) -> list[str]:
    """The API: HPA (autoscaling/v2) on CPU, PDB, probes that suit a model-less start."""
    problems = []
    deployment = by_kind(documents, "Deployment").get("api")
    if deployment is None:
        return ["Deployment api is missing"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = pod_spec(deployment)["containers"][0]
    readiness = container.get("readinessProbe", {}).get("httpGet", {})
    if readiness.get("path") != "/health":
        problems.append("api: readiness probe is not GET /health")
    liveness = container.get("livenessProbe", {})
    if liveness.get("httpGet", {}).get("path") == "/health" or not (
        "tcpSocket" in liveness or "httpGet" in liveness
    ):
        problems.append("api: liveness must not be /health (503 until a model is loaded)")
    if "replicas" in deployment["spec"]:
        problems.append("api: Deployment sets replicas although the HPA owns them")
    pre_stop = container.get("lifecycle", {}).get("preStop")
    grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    if not pre_stop:
        problems.append("api: no preStop hook for a graceful shutdown")
    elif grace <= 5:
        problems.append("api: terminationGracePeriodSeconds leaves no time after preStop")
    hpas = [
        h
        for h in documents
        if h.get("kind") == "HorizontalPodAutoscaler"
        and h["spec"]["scaleTargetRef"]
        == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    ]
    if not hpas:
        problems.append("api: no HorizontalPodAutoscaler")
    for hpa in hpas:
        if hpa["apiVersion"] != "autoscaling/v2":
            problems.append(f"api: HPA is {hpa['apiVersion']}, not autoscaling/v2")
        cpu = [
            m
            for m in hpa["spec"].get("metrics", [])
            if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
        ]
        if not cpu:
            problems.append("api: the HPA does not scale on CPU")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            problems.append("api: HPA minReplicas > maxReplicas")
    pdbs = [
        p
        for p in documents
        if p.get("kind") == "PodDisruptionBudget"
        and all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items())
    ]
    if not pdbs:
        problems.append("api: no PodDisruptionBudget selects the API pods")
    return problems


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def network_policy_problems(documents: list[dict[str, Any]]) -> list[str]:
    problems = []
    policies = by_kind(documents, "NetworkPolicy")
    deny = [
        p
        for p in policies.values()
        if p["spec"].get("podSelector") == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    if not deny:
        problems.append("no default-deny NetworkPolicy (all pods, ingress and egress, no rule)")
    dns = [
        p
        for p in policies.values()
        if p["spec"].get("podSelector") == {}
        and any(
            any(port.get("port") == 53 for port in rule.get("ports", []))
            for rule in p["spec"].get("egress", [])
        )
    ]
    if not dns:
        problems.append("no NetworkPolicy lets pods reach DNS")
    for kind in ("Deployment", "StatefulSet", "Job"):
        for name, workload in by_kind(documents, kind).items():
            labels = workload["spec"]["template"]["metadata"]["labels"]
            own = [
                p
                for p in policies.values()
                if p["spec"].get("podSelector") and _selects(p["spec"]["podSelector"], labels)
            ]
            if not own:
                problems.append(f"{kind}/{name}: no NetworkPolicy of its own (all traffic denied)")
    for role_kind in ("Role", "ClusterRole"):
        for name, role in by_kind(documents, role_kind).items():
            for rule in role.get("rules", []):
                extra = set(rule.get("verbs", [])) - {"get", "list", "watch"}
                if extra:
                    problems.append(f"{role_kind}/{name}: verbs beyond get/list/watch: {extra}")
    return problems


def service_port_problems(documents: list[dict[str, Any]]) -> list[str]:
    problems = []
    services = by_kind(documents, "Service")
    for name, port in PORTS.items():
        if name.startswith("airflow-api"):
            continue  # the Helm chart's Service
        service = services.get(name)
        if service is None:
            problems.append(f"Service {name} is missing")
        elif port not in [p["port"] for p in service["spec"]["ports"]]:
            problems.append(f"Service {name} does not expose port {port}")
    return problems


# ---- secrets in files ----------------------------------------------------------------------

PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
AWS_ACCESS_KEY = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
AWS_SECRET = re.compile(r"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+=]{40}", re.I)
# A YAML key that names a password or secret itself (not `secretName:`, `secretKeyRef:`).
PASSWORD_LITERAL = re.compile(r"^\s*-?\s*[\w.-]*(?:password|passwd|secret)\s*:\s*(\S.*)$", re.I)
TOKEN = re.compile(r"[A-Za-z0-9+/_\-]{24,}={0,2}")


def entropy(text: str) -> float:
    counts = {c: text.count(c) for c in set(text)}
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def looks_random(token: str) -> bool:
    """Long, mixed letters and digits, high entropy: a key or password, not a word or path."""
    classes = sum(bool(re.search(p, token)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]"))
    return len(token) >= 24 and classes >= 3 and entropy(token) > 4.0


def secret_problems(path: str, text: str) -> list[str]:
    problems = []
    is_env = path.endswith((".env.example", ".env"))
    for number, line in enumerate(text.splitlines(), start=1):
        at = f"{path}:{number}"
        if PRIVATE_KEY.search(line):
            problems.append(f"{at}: a private key")
        if AWS_ACCESS_KEY.search(line) or AWS_SECRET.search(line):
            problems.append(f"{at}: an AWS key")
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if is_env and "=" in stripped:
            key, value = stripped.split("=", 1)
            secret_value = URL_WITH_PASSWORD.search(value)
            if SECRET_NAME.search(key) or secret_value or "{" in value:
                candidates = [secret_value.group(1)] if secret_value else []
                candidates += re.findall(r'"([^"]+)"\s*}', value) if "{" in value else []
                if not candidates:
                    candidates = [value]
                for candidate in candidates:
                    if not PLACEHOLDER.match(candidate):
                        problems.append(f"{at}: {key} is not a change-me placeholder")
        match = PASSWORD_LITERAL.match(line)
        if match and not is_env and path.endswith((".yml", ".yaml")):
            value = match.group(1).strip().strip("\"'")
            if not (
                value.startswith(("${", "{{")) or PLACEHOLDER.match(value) or value in ("|", ">")
            ):
                problems.append(f"{at}: a literal password in a manifest")
        for token in TOKEN.findall(line):
            if looks_random(token) and not PLACEHOLDER.match(token):
                problems.append(f"{at}: a random-looking value ({token[:6]}...)")
    return problems
