"""Blob stores (local folder, S3 through a real S3-compatible server) and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from kerani.exceptions import BadInputError, NotFoundError
from kerani.settings import BlobSettings, CoreSettings, Settings
from storage import schema
from storage.blobs import BlobStore, LocalBlobStore, open_blob_store
from storage.database import table_names
from storage.stores import Stores
from tests.conftest import free_port_for_tests


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on loopback, with a bucket `kerani-test`."""
    from moto.server import ThreadedMotoServer

    port = free_port_for_tests()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket="kerani-test")
    yield url
    server.stop()


@pytest.fixture(params=["local", "s3"])
def blobs(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> BlobStore:
    if request.param == "local":
        url = str(tmp_path / "blobs")
        endpoint = None
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        url = f"s3://kerani-test/run-{tmp_path.name}"
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings = Settings(
        core=CoreSettings(data_dir=tmp_path), blobs=BlobSettings(url=url, s3_endpoint_url=endpoint)
    )
    return open_blob_store(settings)


def test_blob_round_trip(blobs: BlobStore) -> None:
    blobs.put("pages/abc/0001.png", b"\x89PNG one")
    blobs.put("pages/abc/0002.png", b"two")
    blobs.put("exports/x.csv", b"a,b\n")
    assert blobs.get("pages/abc/0001.png") == b"\x89PNG one"
    assert blobs.exists("exports/x.csv") and not blobs.exists("exports/y.csv")
    assert blobs.list("pages/") == ["pages/abc/0001.png", "pages/abc/0002.png"]
    blobs.put("exports/x.csv", b"replaced")
    assert blobs.get("exports/x.csv") == b"replaced"
    with pytest.raises(NotFoundError):
        blobs.get("pages/missing.png")


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", "", "a\\b"])
def test_unsafe_keys_are_refused(blobs: BlobStore, key: str) -> None:
    with pytest.raises(BadInputError, match="not a safe relative path"):
        blobs.put(key, b"x")


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "b")
    store.put("k/v.bin", b"data")
    assert sorted(p.name for p in (tmp_path / "b" / "k").iterdir()) == ["v.bin"]


def test_migrations_create_every_table(stores: Stores) -> None:
    assert {
        "batches",
        "scans",
        "pages",
        "fields",
        "tasks",
        "answers",
        "workers",
        "records",
        "audit_log",
        "sessions",
        "alembic_version",
    } <= set(table_names(stores.db))


def test_migrations_build_the_schema_the_code_declares(stores: Stores) -> None:
    # Queries are written against storage.schema; the database is built by the migrations.
    # Any column, index or key one has and the other lacks shows up as a difference.
    with stores.db.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert differences == []
