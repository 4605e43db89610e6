"""Record a submitted batch: originals kept untouched, page images rendered, all idempotent.

A batch's id is a hash of its template, its files' contents and its agency, so submitting
the same batch again finds the same rows and creates nothing new. Pages are unique within a
batch only: another agency's copy of a scan neither stops nor reveals itself to this one.
A scan page the same agency sent before, in an earlier batch, and that was read there,
gets a page of its own linked to it (status `duplicate`, `duplicate_of`) when it was read
with the same template version: it is not read again, and receives a copy of that page's
record (now, or when it is assembled).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, or_, select

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
    """What a submission did: pages created, linked or already there, and each rejected
    file's reason.

    `rejected` holds refused pages too, named `file (page N)` or `file (pages A-B)`.
    """

    batch_id: str
    template: str  # `name:version`
    accepted_files: int = 0
    pages_created: int = 0
    pages_existing: int = 0  # already in this batch (submitted again, or the same file twice)
    pages_linked: int = 0  # read before in an earlier batch of the same agency
    rejected: list[RejectedFile] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for flow results and the CLI."""
        return {
            "batch_id": self.batch_id,
            "template": self.template,
            "accepted_files": self.accepted_files,
            "pages_created": self.pages_created,
            "pages_existing": self.pages_existing,
            "pages_linked": self.pages_linked,
            "rejected": [{"name": r.name, "reason": r.reason} for r in self.rejected],
        }


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
                    schema.pages.c.batch_id == batch_id,
                    schema.pages.c.source_sha256 == sha,
                    schema.pages.c.page_index == image.index,
                )
            ).first()
            if existing is not None:
                report.pages_existing += 1
                continue
            image_key = f"pages/{sha}/{image.index:04d}.png"
            blobs.put(image_key, image.png)
            earlier = _earlier_reading(conn, batch_id, sha, image.index, template.id)
            page_id = _insert_page(
                conn,
                batch_id=batch_id,
                scan_id=scan_id,
                source_sha256=sha,
                page_index=image.index,
                template=template.name,
                template_id=template.id,
                image_key=image_key,
                width=image.width,
                height=image.height,
                status=PageStatus.DUPLICATE if earlier is not None else PageStatus.INGESTED,
                duplicate_of=earlier,
                created_at=utcnow(),
            )
            if earlier is None:
                report.pages_created += 1
                continue
            report.pages_linked += 1
            _copy_record(conn, earlier, page_id, batch_id)


# The statuses of a page that was read and routed (people may be answering it): a repeat
# links to it. A page still `ingested` or only `ocred` (its batch's run crashed, or is yet
# to finish) or failed is read again in the new batch instead, so that a resubmission after
# a crash gets its records; so is a page of a cancelled batch, whose tasks are withdrawn.
_READ = (PageStatus.ROUTED, PageStatus.COMPLETE)


def _earlier_reading(
    conn: Connection, batch_id: str, sha: str, index: int, template_id: int
) -> int | None:
    """The first page of the same agency's earlier batches holding this scan page, read with
    the same template version, if there is one (never another agency's, nor one of a
    cancelled batch)."""
    p, b = schema.pages, schema.batches
    agency = select(b.c.agency_id).where(b.c.id == batch_id).scalar_subquery()
    same_agency = select(b.c.id).where(
        or_(b.c.agency_id == agency, and_(b.c.agency_id.is_(None), agency.is_(None))),
        b.c.status == BatchStatus.INGESTED,
    )
    query = (
        select(p.c.id)
        .where(
            p.c.source_sha256 == sha,
            p.c.page_index == index,
            # Another version has other fields: its record would not be this one's.
            p.c.template_id == template_id,
            p.c.batch_id != batch_id,
            p.c.duplicate_of.is_(None),
            p.c.status.in_(_READ),
            p.c.batch_id.in_(same_agency),
        )
        .order_by(p.c.id)
        .limit(1)
    )
    found = conn.execute(query).scalar()
    return int(found) if found is not None else None


def _insert_page(conn: Connection, **values: object) -> int:
    result = conn.execute(insert(schema.pages).values(**values))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _copy_record(conn: Connection, source_page: int, page_id: int, batch_id: str) -> None:
    """Give a linked page a copy of its earlier page's record, if that has one yet (else
    kerani.records.assembly copies it when it is written)."""
    r = schema.records
    data = conn.execute(select(r.c.data).where(r.c.page_id == source_page)).scalar()
    if data is not None:
        conn.execute(
            insert(r).values(page_id=page_id, batch_id=batch_id, data=data, assembled_at=utcnow())
        )


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
    return ingest_collected(engine, blobs, batch_id, template, scans, rejected, limits)


def ingest_collected(
    engine: Engine,
    blobs: BlobStore,
    batch_id: str,
    template: StoredTemplate,
    scans: Sequence[ScanSource],
    rejected: Sequence[RejectedFile],
    limits: IngestSettings,
) -> IngestReport:
    """Ingest collected scans into an existing batch (rejected ones recorded with their
    reason); the batch is `ingested` afterwards."""
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
