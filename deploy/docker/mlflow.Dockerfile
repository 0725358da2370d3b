# MLflow tracking server (`readmit mlflow-server`, port 5000): PostgreSQL backend store
# (READMIT_MLFLOW_BACKEND_STORE_URI) and S3 artifacts (READMIT_MLFLOW_ARTIFACTS_DESTINATION,
# MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), artifacts proxied to
# clients (--serve-artifacts), so only this server ever talks to the object store.
#
#   docker build -f deploy/docker/mlflow.Dockerfile -t readmit-mlflow:0.1.0 .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
# uv: the release the Makefile pins.
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never
# In a virtualenv of its own: any base with python3 and its venv module will do.
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install uv==${UV_VERSION} \
 && ln -s /opt/uv/bin/uv /usr/local/bin/uv \
 && uv venv --python python3 /opt/venv
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what `readmit mlflow-server` needs: MLflow, the PostgreSQL driver, boto3 for S3 and the
# command line's own imports, each at the version uv.lock pins (--constraint, from
# `uv export`). The package itself goes in without its dependencies (Airflow, Streamlit, the
# model libraries), which this server never imports.
COPY uv.lock pyproject.toml ./
RUN uv export --frozen --all-extras --no-emit-project --no-hashes --output-file /tmp/pins.txt \
 && uv pip install --constraint /tmp/pins.txt \
        "mlflow[auth]" "psycopg[binary]" boto3 typer rich pydantic-settings httpx \
 && uv pip check
COPY README.md ./
COPY src ./src
RUN uv pip install --no-deps . \
 && readmit mlflow-server --help > /dev/null \
 && python -c "import readmit.stack.services, readmit.stack.mlflow_server"

# ---- runtime ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS mlflow
RUN groupadd --system --gid 10001 readmit \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin readmit \
 && install -d -o 10001 -g 10001 -m 0750 /data
COPY --from=builder /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /usr/local/bin/readmit-healthcheck
# Settings only, no credentials. /data and /tmp are the only places written to.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/data \
    READMIT_DATA_DIR=/data \
    READMIT_MLFLOW_HOST=0.0.0.0 \
    READMIT_MLFLOW_PORT=5000
WORKDIR /data
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/readmit-healthcheck", "http://127.0.0.1:5000/health"]
CMD ["readmit", "mlflow-server"]
