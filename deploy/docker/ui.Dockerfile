# Web UI (`readmit ui`, Streamlit, port 8501). It calls the API at READMIT_API_URL, reads
# dashboards from READMIT_PROMETHEUS_URL and the training plots from MLFLOW_TRACKING_URI.
#
#   docker build -f deploy/docker/ui.Dockerfile -t readmit-ui:0.1.0 .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: a virtualenv holding the package and its runtime dependencies -------------
# (the same stage as in api.Dockerfile, so one build reuses the other's cached layers)
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# requirements.lock is a full `pip freeze` of the development environment, dev tools
# (Playwright, Locust, mypy, ruff, ...) included. The image installs only the runtime
# dependencies that pyproject.toml declares, each at the version the lock pins
# (--constraint): the versions the tests ran with, without the dev tools and their weight.
COPY requirements.lock pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > runtime-requirements.txt \
 && pip install --constraint requirements.lock --requirement runtime-requirements.txt \
 && pip check
COPY README.md ./
COPY src ./src
RUN pip install --no-deps . \
 && readmit --help > /dev/null

# ---- runtime ----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS ui
# libgomp1: the OpenMP runtime LightGBM's wheel links against (the slim image lacks it).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
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
    MPLCONFIGDIR=/tmp/matplotlib \
    READMIT_DATA_DIR=/data \
    READMIT_UI_HOST=0.0.0.0 \
    READMIT_UI_PORT=8501
WORKDIR /data
USER 10001:10001
EXPOSE 8501
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/readmit-healthcheck", "http://127.0.0.1:8501/_stcore/health"]
CMD ["readmit", "ui"]
