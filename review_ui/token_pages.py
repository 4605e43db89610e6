"""The Tokens page: an agency's API tokens, made and revoked by the agency or an operator.

An agency user sees and manages its own tokens; an operator every agency's, and names the
agency when making one. A new token and its webhook secret are shown once, on the page that
made them, and never again (only their hash is kept, and the secret for signing).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kerani.core.vocabulary import Role
from kerani.people.api_tokens import create_token, list_tokens, revoke_token
from kerani.people.workers import agency_named
from kerani.review_ui.web import PageSession, check_csrf, db_of, need_role, render

router = APIRouter()


def _agencies(request: Request) -> list[str]:
    from sqlalchemy import select

    from kerani.storage import schema

    w = schema.workers
    with db_of(request).connect() as conn:
        names = conn.execute(select(w.c.name).where(w.c.role == Role.AGENCY).order_by(w.c.name))
        return [str(n) for n in names.scalars()]


@router.get("/tokens", response_class=HTMLResponse)
def tokens_page(request: Request, session: PageSession) -> Response:
    """The API tokens this person may manage."""
    person, csrf = session
    need_role(person, Role.OPERATOR, Role.AGENCY)
    agency = person.id if person.role == Role.AGENCY else None
    context = {
        "tokens": list_tokens(db_of(request), agency),
        "agencies": _agencies(request) if person.role == Role.OPERATOR else [],
        "made": None,
    }
    return render(request, "tokens.html", context, person, csrf)


@router.post("/tokens", response_class=HTMLResponse)
def make_token(
    request: Request,
    session: PageSession,
    csrf: Annotated[str, Form()],
    label: Annotated[str, Form(max_length=100)],
    agency: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Make a token (for the agency signed in, or the one an operator names); show it once."""
    person, expected = session
    need_role(person, Role.OPERATOR, Role.AGENCY)
    check_csrf(csrf, expected)
    db = db_of(request)
    agency_id = person.id if person.role == Role.AGENCY else agency_named(db, agency)
    made = create_token(db, agency_id, label, by=person.id)
    context = {
        "tokens": list_tokens(db, person.id if person.role == Role.AGENCY else None),
        "agencies": _agencies(request) if person.role == Role.OPERATOR else [],
        "made": made,
    }
    return render(request, "tokens.html", context, person, expected)


@router.post("/tokens/{token_id}/revoke")
def revoke(
    request: Request, token_id: int, session: PageSession, csrf: Annotated[str, Form()]
) -> Response:
    """Revoke a token (an agency only its own; another's answers as a missing one)."""
    person, expected = session
    need_role(person, Role.OPERATOR, Role.AGENCY)
    check_csrf(csrf, expected)
    revoke_token(db_of(request), token_id, person.id if person.role == Role.AGENCY else None)
    return RedirectResponse("/tokens", status_code=303)
