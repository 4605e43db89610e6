"""The pages of agencies and operators: the status of batches and a batch's report.

There are no operator-only pages: operators use these too, and see every batch (and, on the
status page, the newest answers), where an agency sees only its own batches.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kerani.core.errors import BadInputError, TemplateError
from kerani.core.vocabulary import Role
from kerani.flows.retrying import BatchRuns
from kerani.forms.catalogue import stored_template, template_versions
from kerani.forms.templates import bundled_template_names
from kerani.ingest.retry import retriable_pages
from kerani.people.workers import Person
from kerani.records.progress import batch_progress
from kerani.records.report import batch_report
from kerani.review_ui.downloads import export_file, export_keys
from kerani.review_ui.status import recent_answers
from kerani.review_ui.web import (
    PageSession,
    agency_of,
    batches_for,
    check_csrf,
    db_of,
    need_role,
    own_batch,
    render,
    settings_of,
)

# NAME or NAME:VERSION, as `kerani template list` shows them.
TEMPLATE_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}(:[1-9][0-9]{0,5})?")

router = APIRouter()


def _version_refs(request: Request, person: Person) -> list[str]:
    """`name:version` of each stored template version this person may pick."""
    versions = template_versions(db_of(request), agency_id=agency_of(person))
    return [v.ref for v in versions]


@router.get("/status", response_class=HTMLResponse)
def status_page(request: Request, session: PageSession) -> Response:
    """The progress of the batches this person may see."""
    person, csrf = session
    need_role(person, Role.OPERATOR, Role.AGENCY)
    answers = recent_answers(db_of(request)) if person.role == Role.OPERATOR else []
    retries: BatchRuns = request.app.state.retries
    batches = batches_for(request, person)
    for b in batches:
        b["retrying"] = retries.running(b["batch_id"])
    context = {
        "batches": batches,
        "answers": answers,
        "versions": _version_refs(request, person),
        "retry_started": request.query_params.get("retry_started", "")[:12],
    }
    return render(request, "status.html", context, person, csrf)


@router.post("/batches/{batch_id}/retry")
def retry_batch_pages(
    request: Request,
    batch_id: str,
    session: PageSession,
    csrf: Annotated[str, Form()],
    template: Annotated[str, Form(max_length=120)] = "",
) -> Response:
    """Read a batch's failed pages again (with another template version, if one is picked)."""
    person, expected = session
    need_role(person, Role.OPERATOR, Role.AGENCY)
    check_csrf(csrf, expected)
    batch_id = own_batch(request, person, batch_id)
    ref: str | None = None
    if template:
        if not TEMPLATE_REF.fullmatch(template):
            raise BadInputError("template: give NAME or NAME:VERSION")
        try:
            ref = stored_template(db_of(request), template, agency_of(person)).ref
        except TemplateError as e:  # the caller's pick, not the server's template, is wrong
            raise BadInputError(str(e)) from e
    if not retriable_pages(db_of(request), batch_id):
        return RedirectResponse("/status", status_code=303)  # nothing failed: nothing to do
    retries: BatchRuns = request.app.state.retries
    retries.start(settings_of(request), batch_id, ref)
    return RedirectResponse(f"/status?retry_started={batch_id[:12]}", status_code=303)


@router.get("/upload", response_class=HTMLResponse)
def upload_page(request: Request, session: PageSession) -> Response:
    """Send scans: name a batch, pick its template, drop files, folders and zips."""
    person, csrf = session
    need_role(person, Role.AGENCY)
    stored = _version_refs(request, person)
    # The bundled templates not stored yet are stored when a batch first names them.
    names = {v.split(":")[0] for v in stored}
    bundled = [name for name in bundled_template_names() if name not in names]
    context = {"versions": bundled + stored, "chunk": settings_of(request).api.chunk_max_bytes}
    return render(request, "upload.html", context, person, csrf)


@router.get("/batches/{batch_id}/downloads", response_class=HTMLResponse)
def downloads_page(request: Request, batch_id: str, session: PageSession) -> Response:
    """Every deliverable of a batch, written afresh, each with its download link."""
    person, csrf = session
    need_role(person, Role.OPERATOR, Role.AGENCY)
    batch_id = own_batch(request, person, batch_id)
    prefix = f"exports/{batch_id}/"
    names = [
        key[len(prefix) :]
        for key in export_keys(
            request.app.state.stores, batch_id, settings_of(request).ocr.languages
        )
    ]
    context = {"batch_id": batch_id, "names": names}
    return render(request, "downloads.html", context, person, csrf)


@router.get("/batches/{batch_id}/downloads/{name:path}")
def download(request: Request, batch_id: str, name: str, session: PageSession) -> Response:
    """One deliverable of a batch, as its downloads page lists it."""
    person, _ = session
    need_role(person, Role.OPERATOR, Role.AGENCY)
    batch_id = own_batch(request, person, batch_id)
    languages = settings_of(request).ocr.languages
    return export_file(request.app.state.stores, batch_id, name, languages)


@router.get("/batches/{batch_id}/report", response_class=HTMLResponse)
def report_page(request: Request, batch_id: str, session: PageSession) -> Response:
    """A batch's report: what came out, and what to send back."""
    person, csrf = session
    need_role(person, Role.OPERATOR, Role.AGENCY)
    batch_id = own_batch(request, person, batch_id)
    db = db_of(request)
    (progress,) = batch_progress(db, batch_id)
    retries: BatchRuns = request.app.state.retries
    context = {
        "r": batch_report(db, batch_id),
        "b": progress,
        # The batch page's Retry: its failed pages read again, with another version if picked.
        "retriable": retriable_pages(db, batch_id),
        "retrying": retries.running(batch_id),
        "versions": _version_refs(request, person),
    }
    return render(request, "report.html", context, person, csrf)
