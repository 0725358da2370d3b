"""The local S3 server keeps every acknowledged object on disk: a kill -9 right after the
answer loses nothing, and one during an upload leaves no half object behind."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from readmit.stack import s3
from readmit.stack.foreground import Service, free_port, start_s3_server
from readmit.stack.s3 import s3_env

pytestmark = pytest.mark.usefixtures("s3_server_installed")
MULTIPART = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)


def _client(url: str):
    env = s3_env(url)
    return s3.client(url, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])


def _kill_9(service: Service) -> None:
    os.killpg(service.process.pid, signal.SIGKILL)
    service.process.wait(10)


def _contents(store) -> dict[str, bytes]:
    keys = [o["Key"] for o in store.list_objects_v2(Bucket=s3.BUCKET).get("Contents", [])]
    return {k: store.get_object(Bucket=s3.BUCKET, Key=k)["Body"].read() for k in keys}


def test_objects_survive_a_kill_9_of_the_server(tmp_path: Path) -> None:
    data = tmp_path / "store"
    large = os.urandom(17 * 2**20)  # four parts of a multipart upload
    (tmp_path / "large.bin").write_bytes(large)
    objects = {
        "1/abc/artifacts/model/MLmodel": b"flavors: {}\n",
        "1/abc/artifacts/model/booster.txt": bytes(range(256)) * 40,
        "1/abc/artifacts/model/large.bin": large,
    }
    first = start_s3_server(free_port(), tmp_path / "s3a.log", data)
    try:
        store = _client(first.url)
        for key, body in objects.items():
            if body is not large:
                store.put_object(Bucket=s3.BUCKET, Key=key, Body=body)
        store.upload_file(
            str(tmp_path / "large.bin"),
            s3.BUCKET,
            "1/abc/artifacts/model/large.bin",
            Config=MULTIPART,
        )
    finally:
        _kill_9(first)
    second = start_s3_server(free_port(), tmp_path / "s3b.log", data)
    try:
        assert _contents(_client(second.url)) == objects
        assert s3.usage(data) == s3.Usage(3, sum(len(b) for b in objects.values()))
    finally:
        second.stop()


def _unfinished_put(url: str, key: str, sent: bytes, length: int) -> socket.socket:
    """A PUT that announces `length` bytes and sends only `sent`."""
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    head = (
        f"PUT /{s3.BUCKET}/{key} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    connection.sendall(head.encode() + sent)
    return connection


def _wait_for_bytes_on_disk(folder: Path, exclude: str, timeout: float = 20) -> None:
    """Until the server has written part of the unfinished upload somewhere under `folder`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        written = [
            p
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(exclude) and p.stat().st_size > 0
        ]
        if written:
            return
        time.sleep(0.1)
    raise AssertionError(f"the server wrote nothing of the upload under {folder}")


def test_a_kill_9_during_an_upload_leaves_no_half_object(tmp_path: Path) -> None:
    data = tmp_path / "store"
    first = start_s3_server(free_port(), tmp_path / "s3a.log", data)
    try:
        _client(first.url).put_object(Bucket=s3.BUCKET, Key="whole.txt", Body=b"whole")
        half = _unfinished_put(first.url, "half.bin", b"x" * 2**20, 4 * 2**20)
        _wait_for_bytes_on_disk(data / s3.BUCKET, exclude="whole.txt")
        store = _client(first.url)
        assert set(_contents(store)) == {"whole.txt"}
    finally:
        _kill_9(first)
        half.close()
    second = start_s3_server(free_port(), tmp_path / "s3b.log", data)
    try:
        assert _contents(_client(second.url)) == {"whole.txt": b"whole"}
    finally:
        second.stop()


def test_a_bucket_saved_by_an_earlier_version_is_imported_once(tmp_path: Path) -> None:
    snapshot = tmp_path / "s3" / s3.BUCKET
    objects = {"1/abc/artifacts/model/MLmodel": b"flavors: {}\n", "1/def/roc.png": b"\x89PNG"}
    for key, body in objects.items():
        (snapshot / key).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / key).write_bytes(body)
    server = start_s3_server(free_port(), tmp_path / "s3.log", tmp_path / "store")
    try:
        store = _client(server.url)
        assert s3.import_snapshot(store, snapshot) == 2
        assert _contents(store) == objects
        assert not snapshot.exists() and snapshot.with_name(s3.BUCKET + ".imported").is_dir()
        assert s3.import_snapshot(store, snapshot) == 0
    finally:
        server.stop()


def test_listings_page_through_every_key_and_show_folders_that_hold_only_folders(
    tmp_path: Path,
) -> None:
    server = start_s3_server(free_port(), tmp_path / "s3.log", tmp_path / "store")
    try:
        store = _client(server.url)
        keys = [f"run/model/file-{i:02}" for i in range(7)] + ["run/model/nested/deeper/w.npy"]
        for key in keys:
            store.put_object(Bucket=s3.BUCKET, Key=key, Body=key.encode())
        paged = [
            o["Key"]
            for page in store.get_paginator("list_objects_v2").paginate(
                Bucket=s3.BUCKET, PaginationConfig={"PageSize": 3}
            )
            for o in page.get("Contents", [])
        ]
        assert paged == sorted(keys)
        folders = store.list_objects_v2(Bucket=s3.BUCKET, Prefix="run/model/", Delimiter="/")
        assert [p["Prefix"] for p in folders["CommonPrefixes"]] == ["run/model/nested/"]
        assert len(folders["Contents"]) == 7
    finally:
        server.stop()


def test_a_client_naming_the_server_by_a_host_name_reaches_the_bucket(tmp_path: Path) -> None:
    """Compose's services call the S3 server `minio`: a path-style request to that host is for
    the bucket in its path, not for a bucket called `minio`."""
    server = start_s3_server(free_port(), tmp_path / "s3.log", tmp_path / "store")
    try:
        store = _client(server.url)
        port = server.url.rsplit(":", 1)[1]

        def as_minio(request, **_: object) -> None:
            request.headers["Host"] = f"minio:{port}"

        store.meta.events.register("before-sign.s3", as_minio)
        store.put_object(Bucket=s3.BUCKET, Key="1/abc/artifacts/MLmodel", Body=b"flavors: {}\n")
        assert _contents(store) == {"1/abc/artifacts/MLmodel": b"flavors: {}\n"}
    finally:
        server.stop()
