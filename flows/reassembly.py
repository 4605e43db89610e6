"""Reassembly flows: rebuild the records of settled documents, in batches, and reconcile.

People settle fields in Kerani's own database, outside any flow run. Each settle of a
document's last field writes a row into the settle outbox in the same transaction, and a
publisher (kerani.flows.triggers) sends the open rows to Prefect once a minute in one
event: the `reassemble-settled` deployment's trigger starts one run of the flow here for
all the documents that event carries, not one run per document. Runs can be lost and
processes can die, so `reconcile-records` runs on a schedule: it reassembles what stayed
too long in the outbox and every settled page that still has no record, and says what it
did in Prefect (its run logger, and a Markdown and a table artifact: page ids, batches,
outcomes and field names, never a field's value). Like every flow here, these take ids,
never the settings (see kerani.flows.digitise).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from kerani.core.settings import current_settings
from kerani.flows.documents import (
    Finished,
    batches_of,
    finish_settled,
    finish_unrecorded,
    tally,
)
from kerani.flows.triggers import STALE_AFTER
from kerani.records.archive import write_archive_files
from kerani.records.assembly import pages_to_reassemble
from kerani.records.progress import resolve_batch_id
from kerani.records.report import batch_report, report_markdown
from kerani.storage import outbox
from kerani.storage.database import utcnow
from kerani.storage.stores import open_stores

# Closed outbox rows are kept this long (what reassembled which settle), then pruned.
KEEP_CLOSED = timedelta(days=7)
# A table artifact lists at most this many documents (the counts cover them all).
TABLE_ROWS = 500


@task(name="reassemble-outbox")
def reassemble_outbox_task(publication: str) -> list[dict[str, Any]]:
    """Reassemble the documents one publication of the outbox carries, and close its rows."""
    db = open_stores(current_settings()).db
    return [d.as_dict() for d in finish_settled(db, outbox.rows_of(db, publication))]


@flow(name="reassemble-settled")
def reassemble_settled(publication: str | None = None) -> dict[str, Any]:
    """Reassemble every document one publication carries (the trigger's event names it);
    without one, every document in the outbox that nobody took yet."""
    logger = get_run_logger()
    if not publication:
        publication = outbox.new_publication("run")
        outbox.take(open_stores(current_settings()).db, publication, unpublished=True)
    done = [_finished(d) for d in reassemble_outbox_task(publication)]
    counts = tally(done)
    logger.info(
        "publication %s: %s documents, %s records built, %s sent back, %s not ready, %s failed",
        publication,
        counts["pages"],
        counts["assembled"],
        counts["sent_back"],
        counts["not_ready"],
        counts["failed"],
    )
    _warn_failed(logger, done)
    return counts | {"publication": publication, "sent_back_fields": _sent_back(done)}


@task(name="reconcile")
def reconcile_task(batch_id: str | None) -> dict[str, Any]:
    """Reassemble outbox rows open too long and settled pages with no record; prune."""
    db = open_stores(current_settings()).db
    since = utcnow() - STALE_AFTER
    # Outbox rows open too long: their publication or its run was lost.
    stale = outbox.take(
        db, outbox.new_publication("reconcile"), settled_before=since, batch_id=batch_id
    )
    done = finish_settled(db, stale)
    # Settled pages with no record: those whose settle's row is on its way are left to it.
    skip = {d.page_id for d in done} | outbox.pages_in_flight(db, since)
    done += finish_unrecorded(db, [p for p in pages_to_reassemble(db, batch_id) if p not in skip])
    pruned = outbox.prune(db, KEEP_CLOSED)
    waiting, oldest = outbox.backlog(db)
    batches = batches_of(db, [d.page_id for d in done])
    return {
        "done": [d.as_dict() | {"batch_id": batches.get(d.page_id, "")} for d in done],
        "pruned": pruned,
        "open": waiting,
        "oldest_open": oldest.isoformat() if oldest else None,
    }


@flow(name="reconcile-records")
def reconcile_records(batch_id: str | None = None) -> dict[str, Any]:
    """Reassemble every settled document still without its record: outbox rows whose run
    was lost, and settled pages with no outbox row. `batch_id`: one batch (any unique
    prefix of its id); none, every batch."""
    logger = get_run_logger()
    if batch_id:
        batch_id = resolve_batch_id(open_stores(current_settings()).db, batch_id)
    result = reconcile_task(batch_id)
    done = [_finished(d) for d in result["done"]]
    counts = tally(done)
    from_outbox = sum(d.found == "outbox" for d in done)
    logger.info(
        "reconciled %s documents (%s from the outbox, %s settled without a record): "
        "%s records built, %s sent back, %s not ready, %s failed; %s closed outbox rows "
        "pruned, %s open",
        counts["pages"],
        from_outbox,
        counts["pages"] - from_outbox,
        counts["assembled"],
        counts["sent_back"],
        counts["not_ready"],
        counts["failed"],
        result["pruned"],
        result["open"],
    )
    _warn_failed(logger, done)
    _reconcile_artifacts(batch_id, result, counts, from_outbox)
    return counts | {
        "from_outbox": from_outbox,
        "pruned": result["pruned"],
        "open": result["open"],
        "sent_back_fields": _sent_back(done),
    }


def _finished(d: dict[str, Any]) -> Finished:
    return Finished(
        int(d["page_id"]), str(d["status"]), str(d["found"]), tuple(d["sent_back"]), d["flagged"]
    )


def _sent_back(done: Sequence[Finished]) -> dict[int, list[str]]:
    """The names (never the values) of the fields each document sent back to people."""
    return {d.page_id: list(d.sent_back) for d in done if d.sent_back}


def _warn_failed(logger: Any, done: Sequence[Finished]) -> None:
    failed = [d.page_id for d in done if d.status == "failed"]
    if failed:
        logger.warning(
            "reassembly failed for pages %s: they stay in the outbox for the next run", failed
        )


def _reconcile_artifacts(
    batch_id: str | None, result: dict[str, Any], counts: dict[str, int], from_outbox: int
) -> None:
    """What reconcile did, in Prefect: counts as Markdown, and a table of the documents."""
    scope = f"batch `{batch_id[:12]}`" if batch_id else "every batch"
    lines = [
        f"# Reconcile records: {scope}",
        "",
        "| | documents |",
        "|---|---:|",
        f"| from the outbox, open over {int(STALE_AFTER.total_seconds() // 60)} minutes "
        f"| {from_outbox} |",
        f"| settled without a record or an outbox row | {counts['pages'] - from_outbox} |",
        f"| records built | {counts['assembled']} |",
        f"| sent back to people (a rule failed) | {counts['sent_back']} |",
        f"| not ready (a field reopened meanwhile) | {counts['not_ready']} |",
        f"| failed (tried again next run) | {counts['failed']} |",
        "",
        f"Outbox: {result['open']} rows open"
        + (f", the oldest settled at {result['oldest_open']}" if result["oldest_open"] else "")
        + f"; {result['pruned']} rows closed over {KEEP_CLOSED.days} days ago pruned.",
    ]
    if not counts["pages"]:
        lines += ["", "Nothing to do: every settled document has its record."]
    create_markdown_artifact(
        "\n".join(lines), key="reconcile-records", description="What reconcile-records did"
    )
    rows = [
        {
            "page": d["page_id"],
            "batch": str(d["batch_id"])[:12],
            "found": d["found"],
            "outcome": d["status"],
            "fields sent back": ", ".join(d["sent_back"]),
            "problems kept": d["flagged"],
        }
        for d in result["done"][:TABLE_ROWS]
    ]
    if rows:
        create_table_artifact(
            rows,
            key="reconcile-records-documents",
            description=f"The documents reconciled ({len(rows)} of {counts['pages']} shown)",
        )


@task(name="write-text-layers")
def text_layers_task(batch_id: str) -> dict[str, Any]:
    """Write the archive files of a batch: hOCR and ALTO of each page with a record, a
    searchable PDF/A of each document with one; return how many and where."""
    settings = current_settings()
    stores = open_stores(settings)
    # A page keeps no record of the languages it was read with: the deployment's setting
    # now is the best there is (records.archive says what the files claim from it).
    files = write_archive_files(stores.db, stores.blobs, batch_id, settings.ocr.languages)
    where = stores.blobs.location
    return {
        "pages": len(files.hocr),
        "where": where(f"exports/{batch_id}/hocr"),
        "alto": {"pages": len(files.alto), "where": where(f"exports/{batch_id}/alto")},
        "pdf": {
            "documents": len(files.pdf),
            "where": where(f"exports/{batch_id}/pdf"),
            "skipped": [{"file": name, "reason": why} for name, why in files.pdf_skipped],
        },
        "ocr_languages": settings.ocr.languages,
    }


@task(name="batch-report")
def report_task(batch_id: str) -> dict[str, Any]:
    """Build the batch report and publish it as Prefect artifacts (Markdown and a table)."""
    report = batch_report(open_stores(current_settings()).db, batch_id)
    key = batch_id[:12].lower()
    create_markdown_artifact(
        report_markdown(report), key=f"batch-report-{key}", description="Batch report"
    )
    if report.unread_fields:
        create_table_artifact(
            [vars(u) for u in report.unread_fields],
            key=f"unread-fields-{key}",
            description="Fields that could not be read",
        )
    return report.as_dict()
