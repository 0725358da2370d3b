# Airflow 3 with the readmit package and the project's DAGs baked in. One image for every
# component: api-server (the default command), scheduler, dag-processor, triggerer,
# `db migrate`, and the KubernetesExecutor's worker pods.
#
#   docker build -f deploy/docker/airflow.Dockerfile -t readmit-airflow:0.1.0 .

FROM apache/airflow:3.3.2-python3.11

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
ARG UV_VERSION=0.13.9
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
WORKDIR /opt/airflow
USER 50000:0
EXPOSE 8080
# The api-server's health; Compose gives the other components their own check (scheduler:
# its health endpoint on 8974, dag-processor and triggerer: `airflow jobs check`).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=5 \
    CMD ["curl", "--fail", "--silent", "--show-error", "http://127.0.0.1:8080/api/v2/monitor/health"]
CMD ["api-server"]
