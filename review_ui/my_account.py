"""The worker's own account: changing their PIN (the current one asked first, its tries
throttled like sign-in's, so that a phone left signed in cannot be used to learn it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kerani.core.errors import BadInputError, ForbiddenError
from kerani.core.vocabulary import Role
from kerani.people.rate_limits import attempt_failed, attempt_succeeded, reserve_attempt
from kerani.people.workers import Person, change_pin, check_new_pin
from kerani.review_ui.i18n import translator
from kerani.review_ui.web import (
    COOKIE,
    PageSession,
    check_csrf,
    client_host,
    db_of,
    need_role,
    pin_gate,
    render,
    settings_of,
)

router = APIRouter()
# A PIN is 6 digits: anything much longer is no PIN (as on the sign-in form).
MAX_PIN = 32
PAGE = "me_pin.html"


def _form(
    request: Request, person: Person, csrf: str, error: str | None = None, status: int = 200
) -> Response:
    return render(request, PAGE, {"error": error, "done": False}, person, csrf, status)


@router.get("/me/pin", response_class=HTMLResponse)
def pin_form(request: Request, session: PageSession, done: int = 0) -> Response:
    """The form to change one's PIN (and, after a change, the word that it is done)."""
    person, csrf = session
    need_role(person, Role.WORKER)
    return render(request, PAGE, {"error": None, "done": bool(done)}, person, csrf)


@router.post("/me/pin", response_class=HTMLResponse)
def pin_change(
    request: Request,
    session: PageSession,
    csrf: Annotated[str, Form()],
    current: Annotated[str, Form()],
    pin: Annotated[str, Form()],
    pin_again: Annotated[str, Form()],
) -> Response:
    """Change the PIN: the other sessions of the worker end, this one goes on."""
    person, expected = session
    need_role(person, Role.WORKER)
    check_csrf(csrf, expected)
    t = translator(person.language)
    db, review = db_of(request), settings_of(request).review
    for label, text in (("pin_current", current), ("new_pin", pin), ("new_pin_again", pin_again)):
        if len(text) > MAX_PIN:
            error = t("too_long", field=t(label), most=MAX_PIN)
            return _form(request, person, expected, error, 400)
    try:
        # A new PIN that will not do is said before the current one is tried: no try spent.
        check_new_pin(pin, pin_again)
    except BadInputError as e:
        return _form(request, person, expected, t(str(e)), 400)
    # The same counts as sign-in's: guesses here and at /signin add up for this worker.
    keys: dict[str, int] = {
        f"ip:{client_host(request)}": review.signin_ip_max_failures,
        f"worker:{person.id}": review.signin_max_failures,
    }
    if minutes := reserve_attempt(db, keys, review.signin_lock_minutes):
        return _form(request, person, expected, t("signin_locked", minutes=minutes), 429)
    try:
        with pin_gate(request):
            change_pin(db, person.id, current, pin, pin_again, request.cookies.get(COOKIE, ""))
    except ForbiddenError as e:
        attempt_failed(db, keys, review.signin_lock_minutes)
        return _form(request, person, expected, t(str(e)), 403)
    attempt_succeeded(db, list(keys), clear=f"worker:{person.id}")
    return RedirectResponse("/me/pin?done=1", status_code=303)
