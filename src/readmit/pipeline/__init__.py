"""The pipeline steps: ingest, clean, train. Plain functions behind the CLI and the DAGs."""
