"""The stack's bucket survives a restart of the in-memory S3 server: saved, then loaded back."""

from __future__ import annotations

from pathlib import Path

from readmit.services import free_port, s3_env, start_s3_server
from readmit.stack import s3


def _client(url: str):
    env = s3_env(url)
    return s3.client(url, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])


def test_bucket_saved_and_loaded_across_servers(tmp_path: Path) -> None:
    objects = {"1/abc/artifacts/model/MLmodel": b"flavors: {}\n",
               "1/abc/artifacts/model/booster.txt": bytes(range(256)) * 40,
               "1/def/artifacts/plots/roc.png": b"\x89PNG..."}  # fmt: skip
    folder = tmp_path / "snapshot" / s3.BUCKET
    first = start_s3_server(free_port(), tmp_path / "s3a.log")
    try:
        store = _client(first.url)
        for key, body in objects.items():
            store.put_object(Bucket=s3.BUCKET, Key=key, Body=body)
        assert s3.save_bucket(store, folder) == 3
    finally:
        first.stop()
    assert not folder.with_name(folder.name + ".partial").exists()
    second = start_s3_server(free_port(), tmp_path / "s3b.log")
    try:
        store = _client(second.url)
        assert store.list_objects_v2(Bucket=s3.BUCKET).get("KeyCount") == 0
        assert s3.load_bucket(store, folder) == 3
        for key, body in objects.items():
            assert store.get_object(Bucket=s3.BUCKET, Key=key)["Body"].read() == body
        assert s3.load_bucket(store, tmp_path / "nothing-here") == 0
    finally:
        second.stop()
