"""The digitisation flows: ingest → pre-OCR → route, and later reassemble → export.

Each task wraps one library call and passes ids and keys. People answer micro tasks in
Kerani's own database, for hours or days, outside any flow run: `submit_batch` ends when the
tasks are published, and `finish_batch` (run when fields settle, or on a schedule) builds
the records and exports them.

No flow or task takes the settings: Prefect records every flow run's parameters on its
server, and the settings hold the database password and the S3 keys. Each reads them where
it runs with `current_settings()`: what the entry point activated with `using_settings`, or
KERANI_* from the environment in a deployment's worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from sqlalchemy import select

from kerani.core.settings import Settings, current_settings, settings_environment
from kerani.core.vocabulary import PageStatus
from kerani.flows.documents import finish_ready_documents
from kerani.flows.reassembly import report_task, text_layers_task
from kerani.flows.webhooks import deliver_due, prefect_in_use
from kerani.forms.catalogue import resolve_template, stored_template, template_of
from kerani.ingest.batches import ingest_paths
from kerani.ingest.cancel import is_cancelled, page_batch_cancelled
from kerani.ingest.intake import ingest_intake
from kerani.ingest.retry import reset_failed_pages
from kerani.microtasks.refit import current_calibration
from kerani.microtasks.routing import route_page
from kerani.ocr.preocr import preocr_page
from kerani.ocr.stage import StageOptions
from kerani.ocr.tesseract import TesseractEngine
from kerani.people.workers import agency_named
from kerani.records.completion import mark_complete
from kerani.records.exports import export_batch
from kerani.records.progress import resolve_batch_id
from kerani.storage import schema
from kerani.storage.stores import open_stores


@task(name="ingest-scans")
def ingest_task(paths: list[str], template: str, agency: str | None = None) -> dict[str, Any]:
    """Ingest files, folders and zips into one batch read with `template` (a stored
    `name[:version]`, or a YAML file, stored first); return the report as plain data."""
    settings = current_settings()
    stores = open_stores(settings)
    # Refuse an unknown template before touching any file.
    agency_id = agency_named(stores.db, agency) if agency else None
    stored = resolve_template(stores.db, template, agency_id=agency_id)
    report = ingest_paths(
        stores.db, stores.blobs, [Path(p) for p in paths], stored, settings.ingest, agency_id
    )
    return report.as_dict()


@task(name="pre-ocr-page", retries=1, retry_delay_seconds=2)
def preocr_task(page_id: int, template: str, template_id: int | None = None) -> str:
    """OCR one page into field guesses and snippets, with the template version it names."""
    settings = current_settings()
    stores = open_stores(settings)
    engine = TesseractEngine(settings.ocr.languages, settings.ocr.timeout_s)
    options = StageOptions.from_settings(settings.ocr)
    return preocr_page(
        stores.db,
        stores.blobs,
        page_id,
        template_of(stores.db, template, template_id),
        engine,
        settings.ocr.snippet_margin_px,
        options,
    )


@task(name="route-page")
def route_task(page_id: int, template: str | None = None) -> tuple[int, int]:
    """Auto-accept or publish a micro task for each field of a page (a share as audits)."""
    settings = current_settings()
    db = open_stores(settings).db
    if page_batch_cancelled(db, page_id):
        return (0, 0)  # cancelled while the batch was being routed: nobody is asked
    # The latest refit from the crowd's work, else the folder's or the bundled rule.
    calibration = (
        current_calibration(db, template, settings.ocr.calibration_dir) if template else None
    )
    return route_page(
        db, page_id, settings.ocr.auto_accept_confidence, calibration, crowd=settings.crowd
    )


@task(name="assemble-ready-pages")
def assemble_task(batch_id: str) -> int:
    """Build the records of every page whose fields are all settled."""
    return finish_ready_documents(open_stores(current_settings()).db, batch_id)


@task(name="export-batch")
def export_task(batch_id: str) -> dict[str, str]:
    """Write every document of the batch (CSV, Parquet, JSON Lines), its data dictionary
    (JSON, CSV) and audit trail (CSV) to the blob store; format or deliverable → where."""
    stores = open_stores(current_settings())
    result = export_batch(stores.db, stores.blobs, batch_id)
    return {fmt: stores.blobs.location(key) for fmt, key in result.keys.items()}


def _page_ids(batch_id: str, status: PageStatus) -> list[tuple[int, str, int | None]]:
    """(id, template name, template version id) of the batch's pages in this status."""
    p = schema.pages
    with open_stores(current_settings()).db.connect() as conn:
        rows = conn.execute(
            select(p.c.id, p.c.template, p.c.template_id)
            .where(p.c.batch_id == batch_id, p.c.status == status)
            .order_by(p.c.id)
        ).all()
    return [(int(r.id), str(r.template), r.template_id) for r in rows]


def preocr_runner(settings: Settings) -> Any:
    """The task runner pre-OCR fans out on: the flow's own threads, or a Dask cluster."""
    scale = settings.scale
    if scale.runner == "threads":
        # Its threads see this context's settings (it submits in copy_context()).
        return ThreadPoolTaskRunner(max_workers=settings.ocr.workers)
    from prefect_dask import DaskTaskRunner  # only where Dask is asked for

    if scale.dask_address:
        # Workers on other machines read KERANI_* from their own environment.
        return DaskTaskRunner(address=scale.dask_address)
    # A local cluster of processes, one page at a time each (Tesseract is single-threaded
    # here): its processes rebuild these settings from the environment they are given.
    cluster = {
        "n_workers": scale.dask_workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        "env": settings_environment(settings),
    }
    return DaskTaskRunner(cluster_kwargs=cluster)


def _chunks(pages: list[tuple[int, str, int | None]], size: int) -> list[tuple[int, int]]:
    """(first, last) page ids of consecutive runs of `size` pages."""
    return [
        (pages[i][0], pages[min(i + size, len(pages)) - 1][0]) for i in range(0, len(pages), size)
    ]


@flow(name="pre-ocr-batch")
def preocr_batch(
    batch_id: str, first_page_id: int = 0, last_page_id: int | None = None
) -> dict[str, int]:
    """OCR the ingested pages of a batch (those with ids in the range given), with a
    progress artifact, on the task runner the flow was given."""
    pages = [
        page
        for page in _page_ids(batch_id, PageStatus.INGESTED)
        if page[0] >= first_page_id and (last_page_id is None or page[0] <= last_page_id)
    ]
    artifact: Any = create_progress_artifact(
        0.0,
        key=f"pre-ocr-{batch_id[:12]}-{first_page_id}",
        description=f"Pre-OCR of batch {batch_id}, pages {first_page_id} to {last_page_id}",
    )
    futures = [preocr_task.submit(pid, name, tid) for pid, name, tid in pages]
    outcome: dict[str, int] = {}
    for done, future in enumerate(as_completed(futures), start=1):
        status = future.result()
        outcome[status] = outcome.get(status, 0) + 1
        update_progress_artifact(artifact, 100.0 * done / max(1, len(futures)))
    update_progress_artifact(artifact, 100.0)
    return outcome


@flow(name="route-batch")
def route_batch(batch_id: str) -> dict[str, int]:
    """Route every OCRed page of a batch; return counts of auto-accepted fields and tasks."""
    accepted = created = 0
    cancelled = is_cancelled(open_stores(current_settings()).db, batch_id)
    for page_id, tpl, _version in [] if cancelled else _page_ids(batch_id, PageStatus.OCRED):
        a, c = route_task(page_id, tpl)
        accepted += a
        created += c
    assembled = assemble_task(batch_id)
    return {"auto_accepted": accepted, "tasks_created": created, "records": assembled}


def _read_ingested_pages(batch_id: str) -> dict[str, Any]:
    """Pre-OCR the batch's ingested pages chunk by chunk, then route them (inside a flow)."""
    settings = current_settings()
    pages = _page_ids(batch_id, PageStatus.INGESTED)
    # A big batch goes chunk by chunk: each chunk one subflow run fanned out on the runner.
    outcome: dict[str, int] = {}
    db = open_stores(settings).db
    for first, last in _chunks(pages, settings.scale.chunk_pages):
        if is_cancelled(db, batch_id):
            break  # cancelled meanwhile: the pages not read stay unread
        runner = preocr_runner(settings)
        done = preocr_batch.with_options(task_runner=runner)(batch_id, first, last)
        for status, n in done.items():
            outcome[status] = outcome.get(status, 0) + n
    return {"ocr": outcome, "routing": route_batch(batch_id)}


@flow(name="submit-batch")
def submit_batch(paths: list[str], template: str, agency: str | None = None) -> dict[str, Any]:
    """Ingest a batch (for `agency`, the agency user's name), pre-OCR its pages and publish
    micro tasks for the doubtful fields."""
    report = ingest_task(paths, template, agency)
    report.update(_read_ingested_pages(report["batch_id"]))
    report["completed"] = completion_task(report["batch_id"])
    return report


@task(name="take-in-files", retries=1, retry_delay_seconds=5)
def intake_task(batch_id: str) -> dict[str, Any]:
    """Read the files a started API batch was given (and its S3 prefix) into pages."""
    settings = current_settings()
    stores = open_stores(settings)
    staging = settings.core.data_dir / "uploads"
    report = ingest_intake(
        stores.db, stores.blobs, batch_id, settings.ingest, settings.api, staging
    )
    return report.as_dict()


@task(name="announce-if-complete")
def completion_task(batch_id: str) -> bool:
    """Mark the batch complete if every page has its record or failed; deliver notices."""
    settings = current_settings()
    db = open_stores(settings).db
    done = mark_complete(db, batch_id, prefect_in_use())
    if done:
        deliver_due(db, settings.api)
    return done


@flow(name="process-batch")
def process_batch(batch_id: str) -> dict[str, Any]:
    """Take in a started API batch's files, pre-OCR its pages and publish micro tasks
    for the doubtful fields (as submit-batch does for files on disk)."""
    report = intake_task(batch_id)
    report.update(_read_ingested_pages(batch_id))
    report["completed"] = completion_task(batch_id)
    return report


@task(name="reset-failed-pages")
def reset_task(batch_id: str, template: str | None) -> dict[str, Any]:
    """Put a batch's failed pages back to be read (with `template`, a stored reference)."""
    db = open_stores(current_settings()).db
    stored = stored_template(db, template) if template else None
    plan = reset_failed_pages(db, batch_id, stored)
    return {
        "batch_id": batch_id,
        "template": plan.template,
        "pages_reset": plan.pages_reset,
        "pages_kept": plan.pages_kept,
    }


@flow(name="retry-batch")
def retry_batch(batch_id: str, template: str | None = None) -> dict[str, Any]:
    """Read a batch's failed pages again, with another template version (`name:version`)
    if given; pages read before keep their fields, tasks and answers."""
    batch_id = resolve_batch_id(open_stores(current_settings()).db, batch_id)
    report = reset_task(batch_id, template)
    report.update(_read_ingested_pages(batch_id))
    report["completed"] = completion_task(batch_id)
    return report


@flow(name="finish-batch")
def finish_batch(batch_id: str) -> dict[str, Any]:
    """Reconcile settled pages into records, export the batch, its text layers and report.

    `batch_id` may be any unique prefix of the id (`kerani status` prints 12 characters).
    """
    batch_id = resolve_batch_id(open_stores(current_settings()).db, batch_id)
    assembled = assemble_task(batch_id)
    return {
        "assembled": assembled,
        "exports": export_task(batch_id),
        "text_layers": text_layers_task(batch_id),
        "report": report_task(batch_id),
    }
