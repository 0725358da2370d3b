"""The local S3 server and the stack's bucket on disk.

The stack's S3 server (s3server/server.js) keeps each object as files under
<data dir>/stack/s3store/<bucket>/ and answers a write only once it is fsynced there, so the
MLflow artifacts that the registry in PostgreSQL points to survive any stop: a clean
`stack down`, a crash, a kill -9, an OOM kill or a power cut.

Earlier versions kept the bucket in memory and saved it to <data dir>/stack/s3/<bucket>/ at
`stack down`; `import_snapshot` brings such a folder into the store once.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from readmit.files import SOURCE_ROOT

BUCKET = "mlflow-artifacts"
OBJECT_SUFFIX = "._S3rver_object"
S3_SERVER = SOURCE_ROOT / "s3server"


def s3_server_problem() -> str | None:
    """Why the local S3 server cannot start here, or None."""
    if shutil.which("node") is None:
        return "`node` (Debian package nodejs)"
    if not (S3_SERVER / "server.js").exists():
        return f"{S3_SERVER / 'server.js'} (run from a checkout of the repository)"
    if not (S3_SERVER / "node_modules" / "s3rver").is_dir():
        return f"the S3 server's packages (`make s3server-deps`, or `npm ci --prefix {S3_SERVER}`)"
    return None


def s3_env(endpoint: str) -> dict[str, str]:
    """Credentials and endpoint of a local S3 server, for its clients (MLflow, boto3)."""
    return {
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "readmit-local"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "readmit-local-secret"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }


def client(endpoint: str, access_key: str, secret_key: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )


def load_bucket(s3: Any, folder: Path, bucket: str = BUCKET) -> int:
    """Upload every file under `folder` to `bucket` under its relative path; returns count."""
    if not folder.is_dir():
        return 0
    count = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, path.relative_to(folder).as_posix())
        count += 1
    return count


def import_snapshot(s3: Any, snapshot: Path, bucket: str = BUCKET) -> int:
    """Upload a bucket saved by an earlier version, then rename its folder to
    `<name>.imported` (kept, never deleted) so it is imported once; returns the count."""
    if not snapshot.is_dir():
        return 0
    count = load_bucket(s3, snapshot, bucket)
    snapshot.rename(snapshot.with_name(snapshot.name + ".imported"))
    return count


@dataclass(frozen=True)
class Usage:
    objects: int
    size: int

    def describe(self) -> str:
        return f"{self.objects} objects, {self.size / 2**20:.1f} MiB"


def usage(store: Path, bucket: str = BUCKET) -> Usage:
    """How many objects, and how many bytes, `bucket` holds in the store folder."""
    objects = size = 0
    folder = store / bucket
    if folder.is_dir():
        for path in folder.rglob("*" + OBJECT_SUFFIX):
            objects += 1
            size += path.stat().st_size
    return Usage(objects, size)
