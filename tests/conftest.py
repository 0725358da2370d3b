"""Shared fixtures: the real data set, temporary PostgreSQL databases, settings per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from readmit.dataset import Dataset, load_dataset
from readmit.settings import Settings
from tests.databases import create_database, drop_database

# Tests train many small models: none searches hyperparameters unless it asks for a budget
# (tests/integration/test_tuning.py does). Set here, so processes the tests start inherit it.
os.environ.setdefault("READMIT_TUNE_SECONDS", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_ZIP = REPO.parent / "shared" / "data" / "dataset_diabetes.zip"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A module marked `in_order` tells one story over one shared service (the full stack:
    brought up, loaded and trained, killed, stopped mid-task): in a random order
    (`pytest -p randomly`, which shuffles before this runs) its tests keep the order they are
    written in, in the places the shuffle gave the module. Each of them also passes alone."""
    marked: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        if item.get_closest_marker("in_order") is not None:
            marked.setdefault(item.nodeid.split("::", 1)[0], []).append(index)
    for places in marked.values():
        written = sorted((items[i] for i in places), key=lambda item: item.location[1])
        for place, item in zip(places, written, strict=True):
            items[place] = item


def _unavailable(reason: str) -> None:
    """Skip locally; in CI (READMIT_TEST_REQUIRE_SERVICES=1) a missing service is a failure."""
    if os.environ.get("READMIT_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required test service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def s3_server_installed() -> None:
    """The local S3 server (node and s3server/'s packages) can run here."""
    from readmit.stack.s3 import s3_server_problem

    problem = s3_server_problem()
    if problem is not None:
        _unavailable(f"the local S3 server is not installed: {problem}")


@pytest.fixture(scope="session")
def dataset_uri() -> str:
    uri = os.environ.get("READMIT_DATASET_URI") or (str(SHARED_ZIP) if SHARED_ZIP.exists() else "")
    if not uri or not Path(uri).exists():
        _unavailable("the UCI zip is not available (set READMIT_DATASET_URI)")
    return uri


@pytest.fixture(scope="session")
def full_dataset(dataset_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    settings = Settings(dataset_uri=dataset_uri, data_dir=tmp_path_factory.mktemp("ds"))
    return load_dataset(settings, show_progress=False)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url = os.environ.get("READMIT_TEST_PG_URL", "")
    if not url:
        _unavailable("no PostgreSQL for tests (set READMIT_TEST_PG_URL)")
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except sa.exc.OperationalError as exc:
        _unavailable(f"PostgreSQL at READMIT_TEST_PG_URL is unreachable: {exc.orig}")
    return url


@pytest.fixture
def pg_database_factory(pg_admin_url: str) -> Iterator[object]:
    """Creates fresh databases on the test server and drops them afterwards."""
    created: list[str] = []

    def create() -> str:
        created.append(create_database(pg_admin_url))
        return created[-1]

    yield create
    for url in created:
        drop_database(pg_admin_url, url)
