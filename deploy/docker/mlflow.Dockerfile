# MLflow tracking server (`readmit mlflow-server`, port 5000): PostgreSQL backend store
# (READMIT_MLFLOW_BACKEND_STORE_URI) and S3 artifacts (READMIT_MLFLOW_ARTIFACTS_DESTINATION,
# MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), artifacts proxied to
# clients (--serve-artifacts), so only this server ever talks to the object store. MLflow
# with its `auth` extra, psycopg and boto3 are runtime dependencies of the package, so the
# virtualenv the API and UI images hold serves here too, from the same cached layers.
#
#   docker build -f deploy/docker/mlflow.Dockerfile -t readmit-mlflow:0.1.0 .

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

# ---- mlflow -----------------------------------------------------------------------------
FROM app AS mlflow
ENV READMIT_MLFLOW_HOST=0.0.0.0 \
    READMIT_MLFLOW_PORT=5000
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/readmit-healthcheck", "http://127.0.0.1:5000/health"]
CMD ["readmit", "mlflow-server"]
