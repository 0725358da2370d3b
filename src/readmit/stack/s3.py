"""The stack's S3 bucket across restarts.

The local S3 server (moto) keeps objects in memory. So that `stack down` / `stack up` keeps
the MLflow artifacts that the registry in PostgreSQL points to, `down` saves the bucket to a
folder under the data dir and `up` loads it back.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

BUCKET = "mlflow-artifacts"


def client(endpoint: str, access_key: str, secret_key: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )


def ensure_bucket(s3: Any, bucket: str = BUCKET) -> None:
    names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in names:
        s3.create_bucket(Bucket=bucket)


def save_bucket(s3: Any, folder: Path, bucket: str = BUCKET) -> int:
    """Write every object under `folder` (replaced whole, never half-written); returns count."""
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            target = staging / item["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(target))
            count += 1
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return count


def load_bucket(s3: Any, folder: Path, bucket: str = BUCKET) -> int:
    """Upload every file under `folder` to `bucket` under its relative path; returns count."""
    if not folder.is_dir():
        return 0
    count = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, path.relative_to(folder).as_posix())
        count += 1
    return count
