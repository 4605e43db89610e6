"""Batches filled through the agency API: created empty with a name, given files (whole,
or in chunks that a weak line can resume) or an S3 prefix, then started.

A batch made here is `open` until it is started; its files wait in the blob store under
`intake/<batch>/files/`, each as the agency named it (folders kept: `scans/a.png`). Starting
it (`ingest_intake`, run by the process-batch flow) reads them, and the S3 prefix if one was
given, exactly as `kerani submit` reads files and folders: the same limits, the same
refusals by name, the same per-agency deduplication.

Chunks are appended to a staging file under the data folder (`uploads/<upload id>.part`),
at the offset the client says; a chunk at the wrong offset is refused with the offset the
server has, which is also what a client that lost its line asks for before going on. The
finished file is streamed into the blob store.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Connection, Engine, Row, insert, select

from kerani.core.errors import (
    BadInputError,
    ConflictError,
    ExternalProgramError,
    NotFoundError,
    UnreachableError,
)
from kerani.core.settings import ApiSettings, IngestSettings
from kerani.core.text import storable
from kerani.core.vocabulary import BatchStatus, Role, UploadStatus
from kerani.forms.catalogue import StoredTemplate, template_by_id
from kerani.ingest.batches import IngestReport, ingest_collected
from kerani.ingest.sources import RejectedFile, collect_scans
from kerani.storage import schema
from kerani.storage.blobs import BlobStore
from kerani.storage.database import utcnow

API_SOURCE = "agency API"
_CHUNK = 1024 * 1024
_MAX_NAME = 900  # bytes of UTF-8: an S3 key is at most 1,024 with the prefix
_MAX_PART = 255  # a file system's limit on one name
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_S3_URL = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.*)")


def intake_prefix(batch_id: str) -> str:
    """Where an open batch's files wait in the blob store."""
    return f"intake/{batch_id}/files/"


def check_batch_name(name: str) -> str:
    """A batch's name as stored: trimmed, 1 to 200 characters, no control characters."""
    name = storable(name.strip())
    if not name or len(name) > 200 or _CONTROL.search(name):
        raise BadInputError("name: give 1 to 200 characters, without control characters")
    return name


def check_file_name(name: str) -> str:
    """A file's name relative to its batch (`a.png`, `scans/b.pdf`), refused when it could
    leave the batch's folder or hide (no `..`, no absolute path, no hidden part)."""
    name = storable(name.replace("\\", "/").strip())
    parts = name.split("/")
    if not name or len(name.encode()) > _MAX_NAME or _CONTROL.search(name):
        raise BadInputError(
            f"file name {name[:80]!r}: give 1 to {_MAX_NAME} bytes of printable characters"
        )
    if any(len(p.encode()) > _MAX_PART for p in parts):
        raise BadInputError(f"file name {name[:80]!r}: each folder or file name at most 255 bytes")
    if name.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise BadInputError(
            f"file name {name[:80]!r}: a relative path without '..', empty or hidden parts"
        )
    return name


def size_limit(name: str, limits: IngestSettings) -> int:
    """The most bytes a file of this name may have: a zip's limit, or a scan's."""
    return limits.max_zip_total_bytes if name.lower().endswith(".zip") else limits.max_file_bytes


def create_open_batch(
    db: Engine,
    template: StoredTemplate,
    agency_id: int,
    name: str,
    webhook_url: str | None = None,
    token_id: int | None = None,
) -> str:
    """Create an empty, named batch of this agency (status `open`); its id (random)."""
    batch_id = secrets.token_hex(16)
    with db.begin() as conn:
        conn.execute(
            insert(schema.batches).values(
                id=batch_id,
                template=template.name,
                template_id=template.id,
                source=API_SOURCE,
                status=BatchStatus.OPEN,
                created_at=utcnow(),
                agency_id=agency_id,
                name=check_batch_name(name),
                webhook_url=webhook_url,
                token_id=token_id,
            )
        )
    return batch_id


def agency_batch(db: Engine, batch_id: str, agency_id: int) -> Row[Any]:
    """The batch with this exact id if it is this agency's; NotFoundError otherwise, the
    same for another agency's batch as for one that does not exist."""
    b = schema.batches
    with db.connect() as conn:
        row = conn.execute(select(b).where(b.c.id == batch_id, b.c.agency_id == agency_id)).first()
    if row is None:
        raise NotFoundError("no such batch")
    return row


def open_batch(db: Engine, batch_id: str, agency_id: int) -> Row[Any]:
    """This agency's batch if it is still open; NotFoundError (not this agency's, or none)
    or ConflictError (started, cancelled)."""
    return _open_batch(db, batch_id, agency_id)


def _open_batch(db: Engine, batch_id: str, agency_id: int) -> Row[Any]:
    batch = agency_batch(db, batch_id, agency_id)
    if batch.status != BatchStatus.OPEN:
        raise ConflictError(
            f"the batch is {batch.status}: files can only be added before it is started"
        )
    return batch


def _lock_open_batch(conn: Connection, batch_id: str) -> None:
    """In this transaction, hold the batch's row (PostgreSQL: FOR UPDATE) and refuse when
    it is not open any more: a file completed as the batch starts is either in it, or
    refused with 409, never stored and left out without a word."""
    b = schema.batches
    status = conn.execute(select(b.c.status).where(b.c.id == batch_id).with_for_update()).scalar()
    if status != BatchStatus.OPEN:
        raise ConflictError(f"the batch is {status}: files can only be added before it is started")


def _upload_row(db: Engine, batch_id: str, name: str) -> Row[Any] | None:
    u = schema.uploads
    with db.connect() as conn:
        return conn.execute(select(u).where(u.c.batch_id == batch_id, u.c.filename == name)).first()


def _check_no_clash(db: Engine, batch_id: str, name: str) -> None:
    """Refuse a name that is a folder of another file of the batch, or inside one's name
    (`a` and `a/b.png` cannot both be files)."""
    u = schema.uploads
    with db.connect() as conn:
        names = conn.execute(select(u.c.filename).where(u.c.batch_id == batch_id)).scalars()
        clash = next(
            (n for n in names if n.startswith(name + "/") or name.startswith(n + "/")), None
        )
    if clash is not None:
        raise ConflictError(f"{name}: clashes with {clash} (a file and a folder)")


def _save_upload(
    db: Engine, batch_id: str, name: str, size: int, received: int, status: UploadStatus
) -> str:
    """Insert or replace the upload row of this file name; its id."""
    u = schema.uploads
    now = utcnow()
    upload_id = secrets.token_hex(16)
    with db.begin() as conn:
        _lock_open_batch(conn, batch_id)
        conn.execute(u.delete().where(u.c.batch_id == batch_id, u.c.filename == name))
        conn.execute(
            insert(u).values(
                id=upload_id,
                batch_id=batch_id,
                filename=name,
                size=size,
                received=received,
                status=status,
                created_at=now,
                updated_at=now,
            )
        )
    return upload_id


@dataclass(frozen=True)
class Stored:
    """A file now waiting in an open batch."""

    name: str
    size: int
    sha256: str


def add_file(
    db: Engine,
    blobs: BlobStore,
    batch_id: str,
    agency_id: int,
    name: str,
    stream: BinaryIO,
    limits: IngestSettings,
    staging: Path,
) -> Stored:
    """Stream one whole file into an open batch (a file of the same name is replaced)."""
    _open_batch(db, batch_id, agency_id)
    name = check_file_name(name)
    _check_no_clash(db, batch_id, name)
    limit = size_limit(name, limits)
    h = hashlib.sha256()
    size = 0
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=staging, prefix=".whole-", delete=True) as tmp:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise BadInputError(f"{name}: larger than the limit of {limit:,} bytes")
            h.update(chunk)
            tmp.write(chunk)
        tmp.flush()
        blobs.put_file(intake_prefix(batch_id) + name, Path(tmp.name))
    _save_upload(db, batch_id, name, size, size, UploadStatus.COMPLETE)
    return Stored(name, size, h.hexdigest())


def start_upload(
    db: Engine, batch_id: str, agency_id: int, name: str, size: int, limits: IngestSettings
) -> Row[Any]:
    """Begin a chunked upload of a file of `size` bytes into an open batch; its row (the
    same row when this very file, name and size, is being uploaded already: resume it)."""
    _open_batch(db, batch_id, agency_id)
    name = check_file_name(name)
    limit = size_limit(name, limits)
    if size < 0 or size > limit:
        raise BadInputError(f"{name}: size {size:,} bytes is not within 0 to {limit:,}")
    existing = _upload_row(db, batch_id, name)
    if existing is not None and existing.size == size and existing.status == "receiving":
        return existing
    _check_no_clash(db, batch_id, name)
    _save_upload(db, batch_id, name, size, 0, UploadStatus.RECEIVING)
    row = _upload_row(db, batch_id, name)
    assert row is not None
    return row


def agency_upload(db: Engine, upload_id: str, agency_id: int) -> Row[Any]:
    """An upload of one of this agency's batches; NotFoundError otherwise (one answer)."""
    u, b = schema.uploads, schema.batches
    with db.connect() as conn:
        row = conn.execute(
            select(u)
            .join(b, b.c.id == u.c.batch_id)
            .where(u.c.id == upload_id, b.c.agency_id == agency_id)
        ).first()
    if row is None:
        raise NotFoundError("no such upload")
    return row


def append_chunk(
    db: Engine,
    blobs: BlobStore,
    upload_id: str,
    agency_id: int,
    offset: int,
    data: bytes,
    staging: Path,
) -> Row[Any]:
    """Write a chunk at `offset` of an upload; its row after. ConflictError (which names the
    offset the server has) when `offset` is not where the upload stands."""
    upload = agency_upload(db, upload_id, agency_id)
    _open_batch(db, upload.batch_id, agency_id)
    if upload.status == UploadStatus.COMPLETE:
        raise ConflictError(f"upload complete already ({upload.size} bytes)")
    if offset != upload.received:
        raise ConflictError(f"upload offset is {upload.received}, not {offset}")
    if offset + len(data) > upload.size:
        raise BadInputError(
            f"{upload.filename}: the chunk goes past the file's size ({upload.size:,} bytes)"
        )
    part = staging / f"{upload_id}.part"
    staging.mkdir(parents=True, exist_ok=True)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        # At the offset, not appended: a chunk sent twice (the answer was lost) lands on
        # the same bytes, never after them.
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    received = offset + len(data)
    u = schema.uploads
    last = received == upload.size
    if last:
        # The file is in the blob store before the upload says it is whole: a client that
        # lost the answer asks again and is told the truth, never "all received" for a file
        # that was not stored.
        blobs.put_file(intake_prefix(upload.batch_id) + upload.filename, part)
    with db.begin() as conn:
        if last:
            _lock_open_batch(conn, upload.batch_id)
        values: dict[str, Any] = {"received": received, "updated_at": utcnow()}
        if last:
            values["status"] = UploadStatus.COMPLETE
        moved = conn.execute(
            u.update().where(u.c.id == upload_id, u.c.received == offset).values(**values)
        ).rowcount
    if not moved:
        now = agency_upload(db, upload_id, agency_id)
        raise ConflictError(f"upload offset is {now.received}, not {offset}")
    if last:
        part.unlink(missing_ok=True)
    return agency_upload(db, upload_id, agency_id)


def batch_files(db: Engine, batch_id: str) -> list[dict[str, Any]]:
    """The files given to a batch through the API: name, size, bytes received, status."""
    u = schema.uploads
    with db.connect() as conn:
        rows = conn.execute(
            select(u.c.id, u.c.filename, u.c.size, u.c.received, u.c.status)
            .where(u.c.batch_id == batch_id)
            .order_by(u.c.filename)
        ).all()
    return [
        {
            "upload_id": r.id,
            "name": r.filename,
            "size": r.size,
            "received": r.received,
            "status": r.status,
        }
        for r in rows
    ]


def set_s3_source(db: Engine, batch_id: str, agency_id: int, url: str, api: ApiSettings) -> str:
    """Point an open batch at `s3://bucket/prefix/`, which must be in an allowed bucket and
    under the agency's own name there; the URL as stored."""
    _open_batch(db, batch_id, agency_id)
    found = _S3_URL.fullmatch(url.strip())
    if found is None:
        raise BadInputError("s3_url: give s3://bucket/prefix/")
    bucket, prefix = found.group(1), found.group(2)
    allowed = api.intake_buckets()
    if bucket not in allowed:
        raise BadInputError(
            f"s3_url: bucket {bucket!r} is not one Kerani reads from"
            + (
                f" (ask the operator; KERANI_API_INTAKE_S3_BUCKETS: {', '.join(allowed)})"
                if allowed
                else " (S3 intake is off: KERANI_API_INTAKE_S3_BUCKETS is empty)"
            )
        )
    w = schema.workers
    with db.connect() as conn:
        agencies = dict(
            conn.execute(select(w.c.id, w.c.name).where(w.c.role == Role.AGENCY)).tuples().all()
        )
    agency = str(agencies[agency_id])
    # Under the agency's own name, and not under a longer name of another agency's that
    # begins with it ("JPN/Selangor/" is not JPN's).
    owners = [i for i, n in agencies.items() if prefix.startswith(f"{n}/")]
    owner = max(owners, key=lambda i: len(str(agencies[i])), default=None)
    if owner != agency_id or ".." in prefix.split("/"):
        raise BadInputError(f"s3_url: the prefix must be under {agency}/ in the bucket")
    stored = f"s3://{bucket}/{prefix}"
    b = schema.batches
    with db.begin() as conn:
        conn.execute(b.update().where(b.c.id == batch_id).values(source=stored))
    return stored


def _s3_client(api: ApiSettings) -> Any:
    import boto3

    secret = api.intake_s3_secret_access_key
    return boto3.client(
        "s3",
        endpoint_url=api.intake_s3_endpoint_url,
        region_name=api.intake_s3_region,
        aws_access_key_id=api.intake_s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
    )


def _fetch_s3(
    url: str, folder: Path, api: ApiSettings, limits: IngestSettings
) -> list[RejectedFile]:
    """Download the objects under an S3 prefix into `folder` (their names relative to the
    prefix); the objects refused, by name."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    found = _S3_URL.fullmatch(url)
    assert found is not None
    bucket, prefix = found.group(1), found.group(2)
    client = _s3_client(api)
    rejected: list[RejectedFile] = []
    taken = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = str(obj["Key"])
                relative = key[len(prefix) :].lstrip("/")
                if not relative or relative.endswith("/"):
                    continue
                try:
                    name = check_file_name(relative)
                except BadInputError as e:
                    rejected.append(RejectedFile(relative, str(e)))
                    continue
                if int(obj["Size"]) > size_limit(name, limits):
                    limit = size_limit(name, limits)
                    rejected.append(RejectedFile(name, f"larger than the limit of {limit:,} bytes"))
                    continue
                taken += 1
                if taken > limits.max_zip_members:
                    rejected.append(
                        RejectedFile(name, f"past the first {limits.max_zip_members} objects")
                    )
                    continue
                target = folder / name
                if target.exists():
                    rejected.append(RejectedFile(name, "an uploaded file has the same name"))
                    continue
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:  # `x` and `x/y` both objects: a file and a folder
                    rejected.append(RejectedFile(name, f"cannot be taken: {e.strerror or e}"))
                    continue
                client.download_file(bucket, key, str(target))
    except EndpointConnectionError as e:
        raise UnreachableError(f"{url}: cannot reach S3 ({e})") from e
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "error")
        raise ExternalProgramError(f"{url}: S3 said {code}") from e
    except BotoCoreError as e:
        raise ExternalProgramError(f"{url}: {type(e).__name__}: {e}") from e
    return rejected


@contextmanager
def _batch_folder(staging: Path) -> Iterator[Path]:
    staging.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=staging, prefix=".batch-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def begin_intake(db: Engine, batch_id: str, agency_id: int) -> None:
    """Mark an open batch as started (ingesting); ConflictError if it is not open, and
    when no file was given and no S3 prefix named."""
    batch = _open_batch(db, batch_id, agency_id)
    if not batch_files(db, batch_id) and not str(batch.source).startswith("s3://"):
        raise ConflictError("the batch has no file yet: upload files or give an S3 prefix")
    b = schema.batches
    with db.begin() as conn:
        try:
            _lock_open_batch(conn, batch_id)
        except ConflictError as e:
            raise ConflictError("the batch was started already") from e
        conn.execute(b.update().where(b.c.id == batch_id).values(status=BatchStatus.INGESTING))


def ingest_intake(
    db: Engine,
    blobs: BlobStore,
    batch_id: str,
    limits: IngestSettings,
    api: ApiSettings,
    staging: Path,
) -> IngestReport:
    """Read a started batch's uploaded files (and its S3 prefix) into pages, as `submit`
    would; files whose upload never finished are refused by name. Run again (a retried
    flow), it creates nothing twice."""
    b = schema.batches
    with db.connect() as conn:
        batch = conn.execute(select(b).where(b.c.id == batch_id)).first()
    if batch is None:
        raise NotFoundError(f"no batch {batch_id!r}")
    if batch.status not in (BatchStatus.INGESTING, BatchStatus.INGESTED):
        raise ConflictError(f"batch {batch_id[:12]} is {batch.status}, not started")
    # API batches are made with a stored version, always.
    stored = template_by_id(db, int(batch.template_id))
    unfinished = [
        RejectedFile(f["name"], f"upload not finished ({f['received']:,} of {f['size']:,} bytes)")
        for f in batch_files(db, batch_id)
        if f["status"] != UploadStatus.COMPLETE
    ]
    with _batch_folder(staging) as folder:
        rejected = list(unfinished)
        # The uploads the database holds as complete, not whatever the folder lists: a
        # file replaced or unfinished is never read.
        for f in batch_files(db, batch_id):
            if f["status"] != UploadStatus.COMPLETE:
                continue
            target = folder / f["name"]
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                blobs.get_file(intake_prefix(batch_id) + f["name"], target)
            except OSError as e:
                rejected.append(RejectedFile(f["name"], f"cannot be taken: {e.strerror or e}"))
        if str(batch.source).startswith("s3://"):
            rejected += _fetch_s3(str(batch.source), folder, api, limits)
        entries = sorted(folder.iterdir())
        scans, refused = collect_scans(entries, limits)
        return ingest_collected(db, blobs, batch_id, stored, scans, [*refused, *rejected], limits)
