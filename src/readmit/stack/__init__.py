"""The full stack on one machine: PostgreSQL, S3, MLflow, Airflow, the API, the UI, Prometheus."""
