"""The JSON API under /api: claim a task, fetch its snippet, answer it; list batches.

Every call carries an access code as a bearer token (`Authorization: Bearer <code>`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from kerani.core.vocabulary import Role
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.leases import claim_tasks
from kerani.people.workers import Person
from kerani.review_ui.web import (
    api_person,
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


def caller(request: Request, *roles: Role) -> Person:
    """The person whose access code the request carries, refused unless of one of `roles`.

    Called inside each route rather than declared as a dependency: FastAPI runs a sync
    dependency in a thread of its own, one more trip through the thread pool (and the
    interpreter lock) on every request, where the route's own thread can read it.
    """
    person = api_person(request)
    need_role(person, *roles)
    return person


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
def api_claim(request: Request) -> Response:
    """Lease the next task to this worker (204 when there is none)."""
    person = caller(request, Role.WORKER)
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
def api_snippet(request: Request, task_id: str) -> Response:
    """The snippet of a task leased to this worker."""
    return snippet_response(request, caller(request, Role.WORKER), task_id)


# The body the answer route reads itself (see api_answer), as the API's schema shows it.
_ANSWER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": AnswerIn.model_json_schema()}},
    }
}


@router.post("/api/tasks/{task_id}/answer", openapi_extra=_ANSWER_BODY)
async def api_answer(request: Request, task_id: str) -> dict[str, Any]:
    """Record an answer to a task leased to this worker (once per idempotency key)."""
    # The body is checked after the caller, in the one thread the answer takes: declared
    # as a parameter it would be checked first (an anonymous caller would learn the API's
    # fields from a 422), and the caller, a dependency, would take a thread of its own.
    body = await request.body()
    result: dict[str, Any] = await run_in_threadpool(_answer, request, task_id, body)
    return result


def _answer(request: Request, task_id: str, body: bytes) -> dict[str, Any]:
    person = caller(request, Role.WORKER)
    try:
        answer = AnswerIn.model_validate_json(body)
    except ValidationError as e:
        # FastAPI's own 422, as if the body had been a declared parameter.
        errors = [{**error, "loc": ("body", *error["loc"])} for error in e.errors()]
        raise RequestValidationError(errors, body=body) from e
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
def api_batches(request: Request) -> list[dict[str, Any]]:
    """The batches this person may see, with their progress."""
    person = caller(request, Role.OPERATOR, Role.AGENCY)
    return batches_for(request, person)
