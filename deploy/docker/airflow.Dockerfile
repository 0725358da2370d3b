# Airflow 3 with the readmit package and the project's DAGs baked in. One image for every
# component: api-server (the default command), scheduler, dag-processor, triggerer,
# `db migrate`, and the KubernetesExecutor's worker pods.
#
#   docker build -f deploy/docker/airflow.Dockerfile -t readmit-airflow:0.1.0 .
#
# Two ways to the same image, in two targets. `upstream` (the default, the last stage): the
# official apache/airflow image plus readmit. `on-python`: where that image cannot be pulled,
# the same Airflow release from uv.lock (the `stack` extra) on a plain Python base, with the
# official image's user (uid 50000, gid 0), folders, entry point behaviour and health check:
#   docker build -f deploy/docker/airflow.Dockerfile --target on-python -t readmit-airflow:0.1.0 .
# It lacks the providers the official image ships (cncf.kubernetes among them): it suits
# Compose's LocalExecutor, not the KubernetesExecutor.

ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# uv: the release the Makefile pins (each stage declares it again to use it).
ARG UV_VERSION=0.13.9

# ---- on-python ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS on-python
# libgomp1: LightGBM's OpenMP runtime; tini: PID 1; curl: the health checks Compose declares.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 tini curl \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow \
 && install -d -o 50000 -g 0 -m 0775 /opt/airflow
ARG UV_VERSION
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install uv==${UV_VERSION} \
 && ln -s /opt/uv/bin/uv /usr/local/bin/uv
WORKDIR /src
COPY uv.lock pyproject.toml ./
RUN uv sync --locked --no-install-project --extra stack --python python3 \
 && uv pip check --python /opt/venv/bin/python
COPY README.md ./
COPY src ./src
RUN uv sync --locked --no-editable --extra stack --python python3 \
 && /opt/venv/bin/python -c "import readmit.orchestration, airflow"
COPY deploy/docker/airflow-entrypoint.sh /usr/local/bin/airflow-entrypoint
COPY --chown=50000:0 dags /opt/airflow/dags
RUN install -d -o 50000 -g 0 -m 0770 /opt/airflow/auth /opt/airflow/readmit-data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    READMIT_DATA_DIR=/opt/airflow/readmit-data
# The commit the image is built from (images.sh passes it): the lineage tag of every model
# trained in it. The image has no git: GitPython, imported by MLflow, is told not to look.
# The RUN step makes a new commit a new layer: the layer cache keys a RUN step by the build
# arguments it sees, but an ENV step only by its text, which would keep the previous commit.
ARG READMIT_GIT_COMMIT=unknown
RUN test -n "${READMIT_GIT_COMMIT}"
ENV READMIT_GIT_COMMIT=${READMIT_GIT_COMMIT} \
    GIT_PYTHON_REFRESH=quiet
WORKDIR /opt/airflow
USER 50000:0
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=5 \
    CMD ["curl", "--fail", "--silent", "--show-error", "http://127.0.0.1:8080/api/v2/monitor/health"]
ENTRYPOINT ["tini", "-g", "--", "airflow-entrypoint"]
CMD ["api-server"]

# ---- upstream: the default target ---------------------------------------------------------
FROM ${AIRFLOW_IMAGE} AS upstream

# libgomp1: the OpenMP runtime LightGBM's wheel links against (training runs in Airflow).
USER 0
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

# The official image installs Python packages as its `airflow` user (uid 50000, gid 0).
USER 50000:0
WORKDIR /opt/readmit
# The runtime dependencies pyproject.toml declares, at the versions uv.lock pins (exported by
# uv, the release the Makefile pins), installed with the image's own pip next to its Airflow.
# The lock's Airflow sits in the `stack` extra, which is left out, so this never moves the
# image's Airflow. The providers the base image ships stay installed: cncf.kubernetes among
# them, which the KubernetesExecutor needs on Kubernetes.
ARG UV_VERSION
COPY --chown=50000:0 uv.lock pyproject.toml ./
RUN pip install --no-cache-dir uv==${UV_VERSION} \
 && python -m uv export --frozen --no-emit-project --no-hashes --output-file runtime-requirements.txt \
 && pip uninstall -y uv \
 && pip install --no-cache-dir --requirement runtime-requirements.txt
COPY --chown=50000:0 README.md ./
COPY --chown=50000:0 src ./src
RUN pip install --no-cache-dir --no-deps . \
 && python -c "import readmit.orchestration, airflow.providers.cncf.kubernetes"

COPY --chown=50000:0 dags /opt/airflow/dags
# auth/: the simple auth manager's passwords file (written at start-up from the environment,
# never baked in); readmit-data/: the downloaded data set and pipeline logs of the tasks.
RUN install -d -m 0770 /opt/airflow/auth /opt/airflow/readmit-data
ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    READMIT_DATA_DIR=/opt/airflow/readmit-data
# The commit the image is built from (images.sh passes it): the lineage tag of every model
# trained in it. The image has no git: GitPython, imported by MLflow, is told not to look.
# The RUN step makes a new commit a new layer: the layer cache keys a RUN step by the build
# arguments it sees, but an ENV step only by its text, which would keep the previous commit.
ARG READMIT_GIT_COMMIT=unknown
RUN test -n "${READMIT_GIT_COMMIT}"
ENV READMIT_GIT_COMMIT=${READMIT_GIT_COMMIT} \
    GIT_PYTHON_REFRESH=quiet
WORKDIR /opt/airflow
USER 50000:0
EXPOSE 8080
# The api-server's health; Compose gives the other components their own check (scheduler:
# its health endpoint on 8974, dag-processor and triggerer: `airflow jobs check`).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=5 \
    CMD ["curl", "--fail", "--silent", "--show-error", "http://127.0.0.1:8080/api/v2/monitor/health"]
CMD ["api-server"]
