"""The JSON API under /api: claim a task, fetch its snippet, answer it; list batches.

Every call carries an access code as a bearer token (`Authorization: Bearer <code>`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from kerani.core.vocabulary import Role
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.leases import claim_tasks
from kerani.review_ui.web import (
    ApiPerson,
    batches_for,
    db_of,
    draws_of,
    label_of,
    need_role,
    settings_of,
    settle_side_effects,
    snippet_response,
)

router = APIRouter()


class AnswerIn(BaseModel):
    """An answer submitted through the JSON API."""

    kind: str = "value"
    value: str = ""
    idempotency_key: str
    # What the client put in the box before the worker typed, and the milliseconds from
    # showing the task to the submit: unchecked claims, kept with the answer.
    prefilled: str | None = None
    duration_ms: int | None = None


@router.post("/api/tasks/claim")
def api_claim(request: Request, person: ApiPerson) -> Response:
    """Lease the next task to this worker (204 when there is none)."""
    need_role(person, Role.WORKER)
    crowd = settings_of(request).crowd
    tasks = claim_tasks(db_of(request), person.id, crowd, count=1, draws=draws_of(request))
    if not tasks:
        return Response(status_code=204)
    task = tasks[0]
    label, hint = label_of(request, task, person.language)
    return JSONResponse(
        {
            "task_id": task.task_id,
            "field": task.field_name,
            "type": task.field_kind,
            "label": label,
            "format_hint": hint,
            "ocr_guess": task.ocr_text,
            "snippet_url": f"/api/tasks/{task.task_id}/snippet",
            "lease_expires_at": task.lease_expires_at.isoformat(),
            "note": task.note,
        }
    )


@router.get("/api/tasks/{task_id}/snippet")
def api_snippet(request: Request, task_id: str, person: ApiPerson) -> Response:
    """The snippet of a task leased to this worker."""
    return snippet_response(request, person, task_id)


@router.post("/api/tasks/{task_id}/answer")
def api_answer(
    request: Request, task_id: str, answer: AnswerIn, person: ApiPerson
) -> dict[str, Any]:
    """Record an answer to a task leased to this worker (once per idempotency key)."""
    need_role(person, Role.WORKER)
    outcome = submit_answer(
        db_of(request),
        task_id,
        person.id,
        answer.kind,
        answer.value,
        answer.idempotency_key,
        settings_of(request).crowd,
        prefilled=answer.prefilled,
        duration_ms=answer.duration_ms,
    )
    settle_side_effects(request, outcome.completed_page_id, *outcome.also_completed)
    return {"recorded": outcome.recorded, "settled": outcome.settled}


@router.get("/api/batches")
def api_batches(request: Request, person: ApiPerson) -> list[dict[str, Any]]:
    """The batches this person may see, with their progress."""
    need_role(person, Role.OPERATOR, Role.AGENCY)
    return batches_for(request, person)
