"""The operator's console of the crowd: how the work stands, who the workers are, and what
an operator may change about one (pause, unpause, arbiter, cleared, revoke) or do for
their account (a new one-time code for a forgotten PIN, a fresh invite, their language).

Operators only, on every route; the same figures come as JSON under /api for scripts.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from kerani.core.errors import BadInputError
from kerani.core.vocabulary import AuditAction, Role
from kerani.microtasks.audit import audit_entries
from kerani.microtasks.crowd import crowd_health, worker_records
from kerani.microtasks.standing import StandingChange, revoke, set_standing
from kerani.people.workers import InviteCode, reinvite, reset_pin, set_worker_language
from kerani.review_ui.status import reveal_answer
from kerani.review_ui.web import (
    ApiPerson,
    PageSession,
    check_csrf,
    db_of,
    need_role,
    render,
    settings_of,
)

router = APIRouter()
AUDIT_ACTIONS = tuple(a.value for a in AuditAction)
AUDIT_PAGE = 100
STATUSES = ("", "probation", "worker", "suspect", "arbiter", "paused")
# action -> the standing it sets (see microtasks.standing.set_standing)
ACTIONS: dict[str, dict[str, bool]] = {
    "pause": {"paused": True},
    "unpause": {"paused": False},
    "trust": {"trusted": True},
    "untrust": {"trusted": False},
    "clear": {"cleared": True},
    "unclear": {"cleared": False},
}
# Account care: a code for /join (shown once, on a page of its own) or the pages' language.
CODE_ACTIONS = ("reset-pin", "reinvite")
ALL_ACTIONS = (*ACTIONS, "revoke", *CODE_ACTIONS, "language")


def _filters(search: str, status: str) -> tuple[str, str]:
    if len(search) > 100:
        raise BadInputError("search is longer than 100 characters")
    if status not in STATUSES:
        raise BadInputError(f"status must be one of {', '.join(s for s in STATUSES if s)}")
    return search.strip(), status


@router.get("/operator/crowd", response_class=HTMLResponse)
def crowd_page(request: Request, session: PageSession) -> Response:
    """The queue by field type and age, leases, pace, ETA per batch, fields waiting."""
    person, csrf = session
    need_role(person, Role.OPERATOR)
    health = crowd_health(db_of(request), settings_of(request).crowd)
    return render(request, "operator_crowd.html", {"h": health}, person, csrf)


@router.get("/operator/workers", response_class=HTMLResponse)
def workers_page(
    request: Request, session: PageSession, search: str = "", status: str = "", done: str = ""
) -> Response:
    """The workers, searchable: standing, accuracy on gold, speed, pay, and the actions."""
    person, csrf = session
    need_role(person, Role.OPERATOR)
    search, status = _filters(search, status)
    context = {
        "workers": worker_records(db_of(request), search, status),
        "search": search,
        "status": status,
        "statuses": STATUSES,
        "done": done[:200],
    }
    return render(request, "operator_workers.html", context, person, csrf)


def _apply(request: Request, operator_id: int, worker_id: int, action: str) -> StandingChange:
    rules = settings_of(request).crowd
    if action == "revoke":
        return revoke(db_of(request), operator_id, worker_id, rules)
    if action not in ACTIONS:
        raise BadInputError(f"action must be one of {', '.join(ALL_ACTIONS)}")
    return set_standing(db_of(request), operator_id, worker_id, rules, **ACTIONS[action])


def _code(request: Request, operator_id: int, worker_id: int, action: str) -> InviteCode:
    days = settings_of(request).review.invite_days
    give = reset_pin if action == "reset-pin" else reinvite
    return give(db_of(request), worker_id, days, operator_id)


def _language(request: Request, operator_id: int, worker_id: int, language: str) -> bool:
    return set_worker_language(db_of(request), worker_id, language, operator_id)


@router.post("/operator/workers/{worker_id}")
def worker_action(
    request: Request,
    worker_id: int,
    session: PageSession,
    csrf: Annotated[str, Form()],
    action: Annotated[str, Form()],
    confirm: Annotated[str, Form()] = "",
    language: Annotated[str, Form()] = "",
) -> Response:
    """Change one worker's standing or account, and go back to the list saying what changed
    (a new code is shown on a page of its own, once: never in a URL)."""
    person, expected = session
    need_role(person, Role.OPERATOR)
    check_csrf(csrf, expected)
    if action in CODE_ACTIONS:
        code = _code(request, person.id, worker_id, action)
        context = {"code": code, "reset": action == "reset-pin"}
        return render(request, "operator_code.html", context, person, expected)
    if action == "language":
        changed = _language(request, person.id, worker_id, language)
        said = f"worker {worker_id}: language {language}" + ("" if changed else " already")
        return RedirectResponse(f"/operator/workers?{urlencode({'done': said})}", 303)
    if action == "revoke" and confirm != "yes":
        raise BadInputError("revoking a worker needs its box ticked: it cannot be undone")
    change = _apply(request, person.id, worker_id, action)
    said = ", ".join(change.changed) or "nothing to change"
    done = urlencode({"done": f"{change.name}: {said}"})
    return RedirectResponse(f"/operator/workers?{done}", status_code=303)


@router.get("/operator/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    session: PageSession,
    who: str = "",
    action: str = "",
    before: int | None = None,
) -> Response:
    """The audit log, newest first, by person and action, a page at a time."""
    person, csrf = session
    need_role(person, Role.OPERATOR)
    who, _ = _filters(who, "")
    if action and action not in AUDIT_ACTIONS:
        raise BadInputError(f"action must be one of {', '.join(AUDIT_ACTIONS)}")
    rows = audit_entries(db_of(request), who, action, before, AUDIT_PAGE)
    older = rows[-1]["id"] if len(rows) == AUDIT_PAGE else None
    next_page = f"/operator/audit?{urlencode({'who': who, 'action': action, 'before': older})}"
    context = {
        "rows": rows,
        "who": who,
        "action": action,
        "actions": AUDIT_ACTIONS,
        "older": next_page if older is not None else None,
    }
    return render(request, "operator_audit.html", context, person, csrf)


@router.post("/operator/answers/{answer_id}/reveal", response_class=HTMLResponse)
def reveal_page(
    request: Request, answer_id: int, session: PageSession, csrf: Annotated[str, Form()]
) -> Response:
    """One masked answer in clear, on the operator's request; the look is audited."""
    person, expected = session
    need_role(person, Role.OPERATOR)
    check_csrf(csrf, expected)
    answer = reveal_answer(db_of(request), person.id, answer_id)
    return render(request, "revealed.html", {"a": answer}, person, csrf)


@router.get("/api/crowd")
def api_crowd(request: Request, person: ApiPerson) -> dict[str, Any]:
    """The crowd's figures now, as on /operator/crowd."""
    need_role(person, Role.OPERATOR)
    return crowd_health(db_of(request), settings_of(request).crowd).as_json()


@router.get("/api/workers")
def api_workers(
    request: Request, person: ApiPerson, search: str = "", status: str = ""
) -> list[dict[str, Any]]:
    """The workers as on /operator/workers."""
    need_role(person, Role.OPERATOR)
    search, status = _filters(search, status)
    return [r.as_json() for r in worker_records(db_of(request), search, status)]


@router.post("/api/workers/{worker_id}/{action}")
def api_worker_action(
    request: Request, worker_id: int, action: str, person: ApiPerson, language: str = ""
) -> Response:
    """Pause, unpause, trust, untrust, clear, unclear or revoke a worker; reset-pin or
    reinvite (the reply carries the new one-time code); language (?language=ms)."""
    need_role(person, Role.OPERATOR)
    if action in CODE_ACTIONS:
        code = _code(request, person.id, worker_id, action)
        reply = {
            "worker_id": code.worker_id,
            "invite_code": code.code,
            "expires_at": code.expires_at.isoformat(),
        }
        # The code is a secret: not kept by any cache on the way.
        return JSONResponse(reply, headers={"Cache-Control": "no-store"})
    if action == "language":
        changed = _language(request, person.id, worker_id, language)
        return JSONResponse({"worker_id": worker_id, "changed": [f"language {language}"] * changed})
    change = _apply(request, person.id, worker_id, action)
    return JSONResponse({"worker_id": change.worker_id, "changed": list(change.changed)})
