"""Sign-in, joining with an invite, sign-out, the language switch and the home redirect.

Everything here but `/` and `/signout` is reached before sign-in: those forms carry the
form-cookie token (login CSRF) and failed tries are throttled by address and by worker.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kerani.core.errors import BadInputError, ForbiddenError
from kerani.core.vocabulary import Role
from kerani.people.rate_limits import clear_failures, record_failure
from kerani.people.workers import (
    Person,
    end_session,
    join_with_invite,
    person_by_code,
    person_by_pin,
    set_language,
    start_session,
)
from kerani.review_ui.i18n import LANG_COOKIE, LANGUAGES, translator
from kerani.review_ui.web import (
    COOKIE,
    NotSignedIn,
    PageSession,
    check_csrf,
    check_form_token,
    client_host,
    db_of,
    language_of,
    locked_out,
    page_session,
    render,
    safe_next,
    set_cookie,
    settings_of,
)

router = APIRouter()


def signed_in(request: Request, person: Person, target: str = "/") -> Response:
    """A new session for `person` and a redirect to `target`."""
    hours = settings_of(request).review.session_hours
    cookie, _csrf = start_session(db_of(request), person.id, hours)
    response = RedirectResponse(target, status_code=303)
    set_cookie(request, response, COOKIE, cookie, hours * 3600)
    return response


@router.get("/", response_class=HTMLResponse)
def home(session: PageSession) -> Response:
    """Workers go to their tasks, operators and agencies to the status page."""
    person, _ = session
    return RedirectResponse("/review" if person.role == Role.WORKER else "/status", 303)


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request) -> Response:
    """The sign-in page: worker number and PIN, or a staff access code."""
    return render(request, "signin.html", {"error": None})


@router.post("/signin", response_class=HTMLResponse)
def signin(
    request: Request,
    number: Annotated[str, Form()],
    pin: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Sign a worker in with their number and PIN."""
    check_form_token(request, csrf)
    db, review = db_of(request), settings_of(request).review
    t = translator(language_of(request, None))
    number = number.strip()
    keys = {f"ip:{client_host(request)}": review.signin_ip_max_failures}
    if number.isdigit() and len(number) < 10:
        keys[f"worker:{int(number)}"] = review.signin_max_failures
    if (refused := locked_out(request, keys, "signin.html", {"number": number})) is not None:
        return refused
    try:
        if not number.isdigit() or len(number) >= 10:
            raise ForbiddenError("signin_wrong")
        person = person_by_pin(db, int(number), pin)
    except ForbiddenError:
        record_failure(db, keys, review.signin_lock_minutes)
        error = t("signin_wrong")
        return render(request, "signin.html", {"error": error, "number": number}, None, None, 403)
    clear_failures(db, f"worker:{person.id}")
    return signed_in(request, person)


@router.post("/signin/code", response_class=HTMLResponse)
def signin_code(
    request: Request, code: Annotated[str, Form()], csrf: Annotated[str, Form()] = ""
) -> Response:
    """Sign staff (or an API user) in with their access code."""
    check_form_token(request, csrf)
    db, review = db_of(request), settings_of(request).review
    t = translator(language_of(request, None))
    keys = {f"ip:{client_host(request)}": review.signin_ip_max_failures}
    if (refused := locked_out(request, keys, "signin.html", {})) is not None:
        return refused
    try:
        person = person_by_code(db, code.strip())
    except ForbiddenError:
        record_failure(db, keys, review.signin_lock_minutes)
        return render(request, "signin.html", {"error": t("code_wrong")}, status_code=403)
    return signed_in(request, person)


@router.get("/join", response_class=HTMLResponse)
def join_form(request: Request) -> Response:
    """The page where an invited worker chooses their PIN."""
    return render(request, "join.html", {"error": None})


@router.post("/join", response_class=HTMLResponse)
def join(
    request: Request,
    invite: Annotated[str, Form()],
    pin: Annotated[str, Form()],
    pin_again: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Use an invite: set the PIN and sign in."""
    check_form_token(request, csrf)
    db, review = db_of(request), settings_of(request).review
    t = translator(language_of(request, None))
    keys = {f"invite:{client_host(request)}": review.signin_ip_max_failures}
    context: dict[str, Any] = {"invite": invite}
    if (refused := locked_out(request, keys, "join.html", context)) is not None:
        return refused
    try:
        person = join_with_invite(db, invite, pin, pin_again)
    except ForbiddenError as e:
        record_failure(db, keys, review.signin_lock_minutes)
        return render(request, "join.html", context | {"error": t(str(e))}, status_code=403)
    except BadInputError as e:
        return render(request, "join.html", context | {"error": t(str(e))}, status_code=400)
    return signed_in(request, person, "/me?welcome=1")


@router.post("/signout")
def signout(request: Request, session: PageSession, csrf: Annotated[str, Form()]) -> Response:
    """End the session and forget its cookie."""
    check_csrf(csrf, session[1])
    end_session(db_of(request), request.cookies[COOKIE])
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.post("/language")
def language(
    request: Request,
    lang: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Switch the page language, signed in or not, and go back where the visitor was."""
    if lang not in LANGUAGES:
        raise BadInputError(f"language must be one of {', '.join(LANGUAGES)}")
    person, expected = None, ""
    with contextlib.suppress(NotSignedIn):
        person, expected = page_session(request)
    if person is not None:
        # Signed in: the choice is kept with the person, for every device they use.
        check_csrf(csrf, expected)
        set_language(db_of(request), person.id, lang)
    else:
        check_form_token(request, csrf)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_cookie(request, response, LANG_COOKIE, lang, 365 * 24 * 3600)
    return response
