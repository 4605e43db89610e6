"""Record a submitted batch: originals kept untouched, page images rendered, all idempotent.

A batch's id is a hash of its template and its files' contents, so submitting the same
batch again finds the same rows and creates nothing new; a page already ingested (same
file content, page and template) is never created twice, even from another batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, insert, select

from kerani.core.errors import BadInputError
from kerani.core.settings import IngestSettings
from kerani.core.text import split_pages_label, storable
from kerani.core.vocabulary import BatchStatus, PageStatus, ScanStatus
from kerani.forms.catalogue import StoredTemplate
from kerani.ingest.pages import RefusedPages, RenderedScan, render_pages
from kerani.ingest.sources import RejectedFile, ScanSource, collect_scans
from kerani.storage import schema
from kerani.storage.blobs import BlobStore
from kerani.storage.database import utcnow


@dataclass
class IngestReport:
    """What a submission did: pages created or already there, and each rejected file's reason.

    `rejected` holds refused pages too, named `file (page N)` or `file (pages A-B)`.
    """

    batch_id: str
    template: str  # `name:version`
    accepted_files: int = 0
    pages_created: int = 0
    pages_existing: int = 0
    rejected: list[RejectedFile] = field(default_factory=list)


def batch_id_for(
    template: str,
    scans: Sequence[ScanSource],
    rejected: Sequence[RejectedFile],
    agency_id: int | None = None,
) -> str:
    """A stable id from the template, the files' contents (names of rejected files too) and
    the submitting agency (two agencies never share a batch)."""
    h = hashlib.sha256(template.encode())
    if agency_id is not None:
        h.update(f"\0agency:{agency_id}".encode())
    for digest in sorted(s.sha256 for s in scans):
        h.update(digest.encode())
    for name in sorted(r.name for r in rejected):
        h.update(b"\0rejected:" + name.encode())
    return h.hexdigest()[:32]


def _ensure_batch(
    engine: Engine, batch_id: str, template: StoredTemplate, source: str, agency_id: int | None
) -> None:
    with engine.begin() as conn:
        exists = conn.execute(
            select(schema.batches.c.id).where(schema.batches.c.id == batch_id)
        ).first()
        if exists is None:
            conn.execute(
                insert(schema.batches).values(
                    id=batch_id,
                    template=template.name,
                    template_id=template.id,
                    source=source,
                    status=BatchStatus.INGESTING,
                    created_at=utcnow(),
                    agency_id=agency_id,
                )
            )


def record_scan(
    engine: Engine,
    batch_id: str,
    name: str,
    *,
    size: int,
    sha256: str | None,
    blob_key: str | None,
    status: ScanStatus,
    error: str | None,
) -> int:
    """A batch's file, by name (a second record of the same name updates it); its id.

    A name that is not valid UTF-8 is kept with '?' in place of what cannot be encoded:
    one odd file name must not sink its batch.
    """
    name = storable(name)
    error = storable(error) if error is not None else None
    with engine.begin() as conn:
        row = conn.execute(
            select(schema.scans.c.id).where(
                schema.scans.c.batch_id == batch_id, schema.scans.c.filename == name
            )
        ).first()
        if row is not None:
            conn.execute(
                schema.scans.update()
                .where(schema.scans.c.id == row.id)
                .values(status=status, error=error)
            )
            return int(row.id)
        result = conn.execute(
            insert(schema.scans).values(
                batch_id=batch_id,
                filename=name,
                sha256=sha256,
                size=size,
                blob_key=blob_key,
                status=status,
                error=error,
                created_at=utcnow(),
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def _ingest_scan(
    engine: Engine,
    blobs: BlobStore,
    batch_id: str,
    template: StoredTemplate,
    source: ScanSource,
    limits: IngestSettings,
    report: IngestReport,
) -> None:
    sha = source.sha256
    original_key = f"originals/{sha}"
    error: str | None = None
    rendered = RenderedScan([])
    try:
        scan = source.read()  # one file's bytes in memory at a time
        if not blobs.exists(original_key):
            blobs.put(original_key, scan.data)
        rendered = render_pages(scan, limits)
    except BadInputError as e:
        # The report names the file already; keep only what is wrong with it.
        error = str(e).removeprefix(f"{source.name}: ")
    # A file that could not be read again has no original kept, and so no hash on record.
    kept = blobs.exists(original_key)
    if error is None and not rendered.pages:
        error = "no page could be taken (each refused page is listed)"
    scan_id = record_scan(
        engine,
        batch_id,
        source.name,
        size=source.size,
        sha256=sha if kept else None,
        blob_key=original_key if kept else None,
        status=ScanStatus.REJECTED if error else ScanStatus.ACCEPTED,
        error=error,
    )
    _record_refused_pages(engine, batch_id, source.name, sha, rendered.refused, report)
    if error:
        report.rejected.append(RejectedFile(source.name, error))
        return
    report.accepted_files += 1
    for image in rendered.pages:
        with engine.begin() as conn:
            existing = conn.execute(
                select(schema.pages.c.id).where(
                    schema.pages.c.source_sha256 == sha,
                    schema.pages.c.page_index == image.index,
                    schema.pages.c.template == template.name,
                )
            ).first()
            if existing is not None:
                report.pages_existing += 1
                continue
            image_key = f"pages/{sha}/{image.index:04d}.png"
            blobs.put(image_key, image.png)
            conn.execute(
                insert(schema.pages).values(
                    batch_id=batch_id,
                    scan_id=scan_id,
                    source_sha256=sha,
                    page_index=image.index,
                    template=template.name,
                    template_id=template.id,
                    image_key=image_key,
                    width=image.width,
                    height=image.height,
                    status=PageStatus.INGESTED,
                    created_at=utcnow(),
                )
            )
            report.pages_created += 1


def _record_refused_pages(
    engine: Engine,
    batch_id: str,
    name: str,
    sha: str,
    refused: Sequence[RefusedPages],
    report: IngestReport,
) -> None:
    """Record each refused page (or range) as a rejected entry named `file (page N)`.

    It keeps its file's content hash and no blob of its own, which is how
    `records.report.batch_refusals` tells it from a file. The entries of an earlier submission
    go first: submitted again with a higher limit, the pages taken now are not still listed.
    """
    s = schema.scans
    stored = storable(name)
    with engine.begin() as conn:
        stale = conn.execute(
            select(s.c.id, s.c.filename).where(
                s.c.batch_id == batch_id,
                s.c.sha256 == sha,
                s.c.blob_key.is_(None),
                s.c.filename.startswith(f"{stored} (page", autoescape=True),
            )
        ).all()
        ids = [row.id for row in stale if _is_label_of(row.filename, stored)]
        if ids:
            conn.execute(s.delete().where(s.c.id.in_(ids)))
    for pages in refused:
        label = pages.label(name)
        record_scan(
            engine,
            batch_id,
            label,
            size=0,
            sha256=sha,
            blob_key=None,
            status=ScanStatus.REJECTED,
            error=pages.reason,
        )
        report.rejected.append(RejectedFile(label, pages.reason))


def _is_label_of(label: str, name: str) -> bool:
    split = split_pages_label(label)
    return split is not None and split[0] == name


def ingest_paths(
    engine: Engine,
    blobs: BlobStore,
    paths: Sequence[Path],
    template: StoredTemplate,
    limits: IngestSettings,
    agency_id: int | None = None,
) -> IngestReport:
    """Ingest files, folders and zips as one batch read with this stored template version;
    bad files are reported, never fatal."""
    scans, rejected = collect_scans(paths, limits)
    batch_id = batch_id_for(template.ref, scans, rejected, agency_id)
    source = storable(", ".join(str(p) for p in paths))
    _ensure_batch(engine, batch_id, template, source, agency_id)
    report = IngestReport(batch_id=batch_id, template=template.ref)
    for bad in rejected:
        record_scan(
            engine,
            batch_id,
            bad.name,
            size=0,
            sha256=None,
            blob_key=None,
            status=ScanStatus.REJECTED,
            error=bad.reason,
        )
        report.rejected.append(bad)
    for scan in scans:
        _ingest_scan(engine, blobs, batch_id, template, scan, limits, report)
    with engine.begin() as conn:
        conn.execute(
            schema.batches.update()
            .where(
                schema.batches.c.id == batch_id, schema.batches.c.status == BatchStatus.INGESTING
            )
            .values(status=BatchStatus.INGESTED)
        )
    return report
