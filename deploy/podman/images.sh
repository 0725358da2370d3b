#!/usr/bin/env bash
# Builds the images of deploy/docker with podman and prints each one's build time and size.
#
#   deploy/podman/images.sh [--local-base] [api|ui|mlflow|airflow ...]   (default: all four)
#
# --local-base builds the images on a Debian bookworm base made here with mmdebstrap (python3,
# venv, CA certificates), for machines that cannot pull python:3.11.14-slim-bookworm nor
# apache/airflow: the Airflow image is then its `on-python` target (uv.lock's Airflow).
# Builds use the host's network and, read-only, its CA certificates (so a build behind a
# TLS-inspecting proxy reaches PyPI and Debian as the host does).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}"
TAG="${READMIT_IMAGE_TAG:-0.1.0}"
LOCAL_BASE=localhost/readmit-base:bookworm

command -v podman >/dev/null || { echo "images: podman is not installed (apt-get install podman)" >&2; exit 2; }

local_base=0
if [ "${1:-}" = --local-base ]; then
  local_base=1
  shift
fi
images=("$@")
if [ ${#images[@]} -eq 0 ]; then
  images=(api ui mlflow airflow)
fi

build_base() {
  if podman image exists "$LOCAL_BASE"; then
    return
  fi
  command -v mmdebstrap >/dev/null || { echo "images: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 2; }
  echo "images: building the base $LOCAL_BASE with mmdebstrap"
  local work
  work=$(mktemp -d)
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    bookworm "$work/rootfs.tar"
  podman import --quiet "$work/rootfs.tar" "$LOCAL_BASE" >/dev/null
  rm -rf "$work"
}

# Build-time settings for pip and uv inside the build: the system's CA bundle, mounted below.
config=$(mktemp -d)
trap 'rm -rf "$config"' EXIT
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$config/pip.conf"
printf 'system-certs = true\n' > "$config/uv.toml"
build_opts=(--network host --format docker --layers
  --volume "$config/pip.conf:/etc/pip.conf:ro" --volume "$config/uv.toml:/etc/uv/uv.toml:ro")
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  build_opts+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
if [ $local_base -eq 1 ]; then
  build_base
  build_opts+=(--build-arg "PYTHON_IMAGE=$LOCAL_BASE")
fi

for image in "${images[@]}"; do
  dockerfile="deploy/docker/$image.Dockerfile"
  [ -f "$dockerfile" ] || { echo "images: no $dockerfile" >&2; exit 2; }
  extra=()
  if [ "$image" = airflow ] && [ $local_base -eq 1 ]; then
    extra=(--target on-python)
  fi
  if [ "$image" = airflow ]; then
    extra+=(--build-arg "READMIT_GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)")
  fi
  started=$(date +%s)
  podman build "${build_opts[@]}" "${extra[@]}" -f "$dockerfile" -t "readmit-$image:$TAG" .
  size=$(podman image inspect --format '{{.Size}}' "readmit-$image:$TAG")
  printf 'images: readmit-%s:%s built in %d s, %d MB\n' "$image" "$TAG" \
    $(( $(date +%s) - started )) $(( size / 1000000 ))
done
