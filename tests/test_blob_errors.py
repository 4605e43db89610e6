"""S3 that fails: a missing bucket, refused keys, an endpoint nobody answers at.

Each is one line that names the bucket, where botocore gave a traceback: Kerani's
ExternalProgramError (the CLI's exit code 4) for a bucket missing or refused, its
UnreachableError (exit code 9) for an endpoint that does not answer. Against moto's S3
server on loopback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from kerani.core.errors import (
    ExitCode,
    ExternalProgramError,
    KeraniError,
    NotFoundError,
    UnreachableError,
)
from kerani.core.settings import BlobSettings, CoreSettings, Settings
from kerani.storage.blobs import BlobStore, S3BlobStore, open_blob_store
from tests.conftest import free_port_for_tests


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on loopback, with a bucket `kerani-test`."""
    from moto.server import ThreadedMotoServer

    port = free_port_for_tests()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    _client(url, "test", "test").create_bucket(Bucket="kerani-test")
    yield url
    server.stop()


def _client(endpoint: str, key_id: str, secret: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )


# Every call a blob store has, each one the first a process might make.
CALLS: dict[str, Callable[[BlobStore], object]] = {
    "put": lambda b: b.put("pages/a.png", b"png"),
    "get": lambda b: b.get("pages/a.png"),
    "exists": lambda b: b.exists("pages/a.png"),
    "list": lambda b: b.list("pages/"),
}


def _one_line(
    error: pytest.ExceptionInfo[KeraniError],
    *words: str,
    code: ExitCode = ExitCode.external_program,
) -> str:
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert error.value.exit_code == code
    return message


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_missing_bucket_is_one_line_naming_it(
    call: str, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings = Settings(
        core=CoreSettings(data_dir=tmp_path),
        blobs=BlobSettings(url="s3://no-such-bucket/kerani", s3_endpoint_url=s3_endpoint),
    )
    blobs = open_blob_store(settings)
    with pytest.raises(ExternalProgramError) as error:
        CALLS[call](blobs)
    _one_line(error, "'no-such-bucket'", "does not exist", "KERANI_BLOB_URL")


def test_a_missing_key_in_a_bucket_that_exists_is_still_not_found(s3_endpoint: str) -> None:
    blobs = S3BlobStore("kerani-test", "missing-key", _client(s3_endpoint, "test", "test"))
    with pytest.raises(NotFoundError, match=r"no blob 'pages/none\.png'"):
        blobs.get("pages/none.png")


def test_refused_keys_are_one_line_naming_the_bucket(s3_endpoint: str) -> None:
    from moto.core.authorization import enable_iam_authentication

    iam = boto3.client(
        "iam",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    iam.create_user(UserName="nobody")  # a real user, with no policy: may do nothing
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    nobody = S3BlobStore(
        "kerani-test", "refused", _client(s3_endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    )
    unknown = S3BlobStore("kerani-test", "refused", _client(s3_endpoint, "AKIAUNKNOWN", "x"))
    with enable_iam_authentication():
        for blobs, code in ((nobody, "AccessDenied"), (unknown, "InvalidAccessKeyId")):
            for call in CALLS.values():
                with pytest.raises(ExternalProgramError) as error:
                    call(blobs)
                _one_line(error, "'kerani-test'", "refused access", code)


def test_an_endpoint_nobody_answers_at_is_one_line_naming_it() -> None:
    endpoint = f"http://127.0.0.1:{free_port_for_tests()}"  # nothing listens there
    blobs = S3BlobStore("kerani-test", "", _client(endpoint, "test", "test"))
    for call in CALLS.values():
        with pytest.raises(UnreachableError) as error:
            call(blobs)
        _one_line(
            error, "'kerani-test'", f"cannot reach S3 at {endpoint}", code=ExitCode.unreachable
        )
