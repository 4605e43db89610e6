"""Blob stores: a local folder (the default) or S3 / any S3-compatible store via boto3."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from kerani.core.errors import BadInputError, ExternalProgramError, NotFoundError, UnreachableError

if TYPE_CHECKING:
    from kerani.core.settings import Settings


def check_key(key: str) -> str:
    """Refuse keys that could escape the store (absolute, `..`, empty parts)."""
    parts = PurePosixPath(key).parts
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise BadInputError(f"blob key {key!r} is not a safe relative path")
    return key


class BlobStore(Protocol):
    """Where originals, page images, snippets and exports are kept, by key."""

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing what was there."""
        ...

    def get(self, key: str) -> bytes:
        """Return the bytes under `key`; raise NotFoundError when absent."""
        ...

    def exists(self, key: str) -> bool:
        """Say whether `key` holds a blob."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at `path` under `key`, streamed (never whole in memory)."""
        ...

    def get_file(self, key: str, path: Path) -> None:
        """Write the blob under `key` to the file `path`, streamed; NotFoundError if absent."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Return the keys that start with `prefix`, sorted."""
        ...

    def location(self, key: str) -> str:
        """Return a human-readable address of `key` (a path or an s3:// URL)."""
        ...


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once the folder's entry is on disk, not just the file's data.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    """Blobs as files under one folder; writes are atomic and durable (temp file, fsync,
    rename, fsync of the folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _make_folder(self, folder: Path) -> None:
        # A new folder's own entry must reach the disk too, or a power cut loses the folder
        # and every blob renamed into it.
        missing = []
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for made in reversed(missing):
            made.mkdir(exist_ok=True)
            _fsync_dir(made.parent)

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` atomically and durably: once it returns, a crash or a
        power cut leaves the whole new blob (or, before, the old one), never half a file."""
        path = self._path(key)
        self._make_folder(path.parent)
        # The temp file sits in the same folder, so the rename never crosses a file system.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the data is on disk before the name points at it
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at `path` under `key`, copied in chunks, as atomically as put."""
        target = self._path(key)
        self._make_folder(target.parent)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)

    def get(self, key: str) -> bytes:
        """Return the bytes under `key`."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as e:
            raise NotFoundError(f"no blob {key!r} in {self.root}") from e

    def get_file(self, key: str, path: Path) -> None:
        """Copy the blob under `key` to the file `path`."""
        try:
            shutil.copyfile(self._path(key), path)
        except FileNotFoundError as e:
            raise NotFoundError(f"no blob {key!r} in {self.root}") from e

    def exists(self, key: str) -> bool:
        """Say whether `key` holds a blob."""
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        """Return the keys under `prefix`, sorted."""
        keys = []
        # Walk only the prefix's folder, not the whole store (pages, snippets, originals).
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(folder) if folder else self.root
        if not base.is_dir():
            return []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def location(self, key: str) -> str:
        """Return the file path of `key`."""
        return str(self._path(key))


# S3's error codes for a refused request: wrong or unknown keys, a policy that says no.
_REFUSED = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "403",
}


class S3BlobStore:
    """Blobs in an S3 bucket under a prefix, through boto3 (any S3-compatible endpoint).

    A missing bucket or refused keys raise ExternalProgramError, an endpoint that cannot be
    reached UnreachableError: one line naming the bucket, not botocore's traceback.
    """

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _s3(self, key: str | None = None) -> Iterator[None]:
        """Turn botocore's errors into Kerani's, naming the bucket (and a missing key)."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            NoCredentialsError,
        )

        where = f"S3 bucket {self.bucket!r}"
        try:
            yield
        except ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in ("NoSuchKey", "404") and key is not None:
                raise NotFoundError(f"no blob {key!r} in s3://{self.bucket}/{self.prefix}") from e
            if code == "NoSuchBucket":
                raise ExternalProgramError(
                    f"{where} does not exist: create it, or set KERANI_BLOB_URL to one that does"
                ) from e
            if code in _REFUSED:
                raise ExternalProgramError(
                    f"{where} refused access ({code}): check the S3 keys "
                    "(KERANI_BLOB_S3_ACCESS_KEY_ID, KERANI_BLOB_S3_SECRET_ACCESS_KEY) "
                    "and the bucket's policy"
                ) from e
            message = str(error.get("Message", "")) or str(e)
            raise ExternalProgramError(f"{where}: S3 said {code or 'error'}: {message}") from e
        except NoCredentialsError as e:
            raise ExternalProgramError(
                f"{where}: no S3 credentials found (set KERANI_BLOB_S3_ACCESS_KEY_ID and "
                "KERANI_BLOB_S3_SECRET_ACCESS_KEY, or AWS_* variables)"
            ) from e
        except ConnectionError as e:  # refused, timed out, no such host
            endpoint = getattr(self.client.meta, "endpoint_url", None) or "AWS"
            raise UnreachableError(
                f"{where}: cannot reach S3 at {endpoint} ({type(e).__name__}): is it up, "
                "and is KERANI_BLOB_S3_ENDPOINT_URL right?"
            ) from e
        except BotoCoreError as e:
            raise ExternalProgramError(f"{where}: {type(e).__name__}: {e}") from e

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`."""
        with self._s3():
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at `path` under `key` (boto3's multipart upload for big files)."""
        with self._s3():
            self.client.upload_file(str(path), self.bucket, self._key(key))

    def get(self, key: str) -> bytes:
        """Return the bytes under `key`."""
        with self._s3(key):
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            body: bytes = obj["Body"].read()
        return body

    def get_file(self, key: str, path: Path) -> None:
        """Download the blob under `key` to the file `path` (in parts, for big files)."""
        with self._s3(key):
            self.client.download_file(self.bucket, self._key(key), str(path))

    def exists(self, key: str) -> bool:
        """Say whether `key` holds a blob."""
        with self._s3():
            resp = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(key), MaxKeys=1)
        return any(o["Key"] == self._key(key) for o in resp.get("Contents", []))

    def list(self, prefix: str) -> list[str]:
        """Return the keys under `prefix`, sorted."""
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        with self._s3():
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    k = obj["Key"]
                    keys.append(k[len(self.prefix) + 1 :] if self.prefix else k)
        return sorted(keys)

    def location(self, key: str) -> str:
        """Return the s3:// URL of `key`."""
        return f"s3://{self.bucket}/{self._key(key)}"


def open_blob_store(settings: Settings) -> BlobStore:
    """Open the blob store that the settings name."""
    url = settings.blob_url
    if url.startswith("s3://"):
        import boto3

        bucket, _, prefix = url[len("s3://") :].partition("/")
        blobs = settings.blobs
        secret = blobs.s3_secret_access_key
        client = boto3.client(
            "s3",
            endpoint_url=blobs.s3_endpoint_url,
            region_name=blobs.s3_region,
            # None lets boto3 find credentials itself (AWS_* variables, ~/.aws, a role).
            aws_access_key_id=blobs.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
        )
        return S3BlobStore(bucket, prefix, client)
    return LocalBlobStore(Path(url))
