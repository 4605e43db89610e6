"""The pages of agencies and operators: the status of batches and a batch's report.

There are no operator-only pages: operators use these too, and see every batch (and, on the
status page, the newest answers), where an agency sees only its own batches.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from kerani.core.vocabulary import Role
from kerani.records.report import batch_report
from kerani.review_ui.status import recent_answers
from kerani.review_ui.web import (
    PageSession,
    batches_for,
    db_of,
    need_role,
    own_batch,
    render,
)

router = APIRouter()


@router.get("/status", response_class=HTMLResponse)
def status_page(request: Request, session: PageSession) -> Response:
    """The progress of the batches this person may see."""
    person, csrf = session
    need_role(person, Role.OPERATOR, Role.AGENCY)
    answers = recent_answers(db_of(request)) if person.role == Role.OPERATOR else []
    context = {"batches": batches_for(request, person), "answers": answers}
    return render(request, "status.html", context, person, csrf)


@router.get("/batches/{batch_id}/report", response_class=HTMLResponse)
def report_page(request: Request, batch_id: str, session: PageSession) -> Response:
    """A batch's report: what came out, and what to send back."""
    person, csrf = session
    need_role(person, Role.OPERATOR, Role.AGENCY)
    report = batch_report(db_of(request), own_batch(request, person, batch_id))
    return render(request, "report.html", {"r": report}, person, csrf)
