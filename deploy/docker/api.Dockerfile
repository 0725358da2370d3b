# Prediction API (`readmit serve`, port 8000); the same image runs the pipeline exporter
# (`readmit exporter --host 0.0.0.0 --port 9108`) and, as target `loadtest`, Locust.
#
#   docker build -f deploy/docker/api.Dockerfile -t readmit-api:0.1.0 .
#
# The build context is the repository root; .dockerignore sends only src/, dags/,
# pyproject.toml, README.md, uv.lock and the health check script.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- app: the package and its runtime dependencies in a virtualenv, run unprivileged -----
# This stage is the same, letter for letter, in api.Dockerfile, ui.Dockerfile and
# mlflow.Dockerfile (a test checks it), and the images differ only in the settings, port,
# health check and command their last stage adds: the image built second and third reuses
# every layer of the first. The final images are built on this stage rather than copying
# its virtualenv into a clean one, since podman copies a `COPY --from` source in full to
# check its cache (minutes for this virtualenv on every build); uv and /src stay behind
# (about 40 MB).
FROM ${PYTHON_IMAGE} AS app
# libgomp1: the OpenMP runtime LightGBM's wheel links against (the slim image lacks it).
# tini: PID 1 passes SIGTERM on to the server's process group and reaps its children; a
# Python PID 1 without a handler of its own (`mlflow server`) would ignore SIGTERM.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 tini \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 readmit \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin readmit \
 && install -d -o 10001 -g 10001 -m 0750 /data
# uv: the release the Makefile pins; it installs exactly what uv.lock pins.
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
# In a virtualenv of its own: any base with python3 and its venv module will do.
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install uv==${UV_VERSION} \
 && ln -s /opt/uv/bin/uv /usr/local/bin/uv
WORKDIR /src
# The runtime dependencies that pyproject.toml declares, at the versions uv.lock pins: the
# versions the tests ran with, without the extras (Airflow, the dev tools) and their weight.
# --locked refuses a lock that no longer matches pyproject.toml.
COPY uv.lock pyproject.toml ./
RUN uv sync --locked --no-install-project --python python3 \
 && uv pip check --python /opt/venv/bin/python
COPY README.md ./
COPY src ./src
RUN uv sync --locked --no-editable --python python3 \
 && /opt/venv/bin/readmit --help > /dev/null
COPY deploy/docker/healthcheck.py /usr/local/bin/readmit-healthcheck
# Settings only: no credential is ever baked in (they come from the environment at run time).
# /data is the only place the process writes besides /tmp (Kubernetes mounts both as
# emptyDir volumes under a read-only root file system).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/data \
    MPLCONFIGDIR=/tmp/matplotlib \
    READMIT_DATA_DIR=/data
WORKDIR /data
USER 10001:10001
ENTRYPOINT ["tini", "-g", "--"]

# ---- loadtest: the app plus Locust, at the version uv.lock pins (loadtest/payloads.py
# imports the package) --------------------------------------------------------------------
FROM app AS loadtest
USER 0
RUN uv export --directory /src --frozen --all-extras --no-emit-project --no-hashes \
        --output-file /tmp/pins.txt \
 && uv pip install --python /opt/venv/bin/python --constraint /tmp/pins.txt locust \
 && rm /tmp/pins.txt
USER 10001:10001
# A one-shot job: Locust runs headless against the API and exits.
HEALTHCHECK NONE
CMD ["locust"]

# ---- api: the default target --------------------------------------------------------------
FROM app AS api
# The API listens on every interface, so it asks every caller for a key (READMIT_AUTH=keys):
# give it READMIT_API_KEYS_FILE and/or READMIT_API_KEY (`readmit serve` refuses
# READMIT_AUTH=none on 0.0.0.0 unless READMIT_ALLOW_OPEN_BIND=true).
ENV READMIT_API_HOST=0.0.0.0 \
    READMIT_API_PORT=8000 \
    READMIT_AUTH=keys
EXPOSE 8000
# Healthy = the process answers: /health is 200 with a model and 503 (JSON) while none is
# loaded yet; readiness (200 only) is the Kubernetes readiness probe's job.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/readmit-healthcheck", "http://127.0.0.1:8000/health", "200,503"]
CMD ["readmit", "serve"]
