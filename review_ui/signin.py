"""Sign-in, joining with an invite, sign-out, the language switch and the home redirect.

Everything here but `/` and `/signout` is reached before sign-in: those forms carry the
form-cookie token (login CSRF) and tries are throttled by address and by worker: each is
reserved before its PIN or code is checked (people/rate_limits.py), and PIN checks run a
few at a time (review.pin_checks_at_once).
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kerani.core.errors import BadInputError, ForbiddenError
from kerani.core.vocabulary import Role
from kerani.microtasks.practice import has_passed_practice
from kerani.people.rate_limits import attempt_failed, attempt_succeeded
from kerani.people.workers import (
    Person,
    check_new_pin,
    end_sessions,
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
    page_session,
    pin_gate,
    render,
    reserved_or_refused,
    safe_next,
    set_cookie,
    settings_of,
)

router = APIRouter()

# The longest text each sign-in field takes. A PIN is 6 digits, an access code 24
# characters, an invite code 8 (perhaps typed with spaces or a dash): anything much longer
# is no guess, and is refused before it reaches the throttle or a hash.
MAX_NUMBER, MAX_PIN, MAX_CODE, MAX_INVITE = 20, 32, 100, 40


def signed_in(request: Request, person: Person, target: str = "/") -> Response:
    """A new session for `person` (their others end) and a redirect to `target`."""
    review = settings_of(request).review
    cookie, _csrf = start_session(
        db_of(request), person.id, review.session_hours, review.session_idle_minutes
    )
    response = RedirectResponse(target, status_code=303)
    set_cookie(request, response, COOKIE, cookie, review.session_hours * 3600)
    return response


def overlong(
    request: Request, page: str, context: dict[str, Any], fields: list[tuple[str, str, int]]
) -> Response | None:
    """The form again with a 400 naming the first of `fields` (label key, text, most
    characters) that is too long; None when all fit."""
    for label, text, most in fields:
        if len(text) > most:
            t = translator(language_of(request, None))
            error = t("too_long", field=t(label), most=most)
            return render(request, page, context | {"error": error}, status_code=400)
    return None


def worker_number(text: str) -> int | None:
    """The worker number typed, if it can be one (ASCII digits, fewer than 10 of them)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


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
    context = {"number": number[:MAX_NUMBER]}
    fields = [("worker_number", number, MAX_NUMBER), ("pin", pin, MAX_PIN)]
    if (refused := overlong(request, "signin.html", context, fields)) is not None:
        return refused
    keys = {f"ip:{client_host(request)}": review.signin_ip_max_failures}
    if (typed := worker_number(number)) is not None:
        keys[f"worker:{typed}"] = review.signin_max_failures
    # The attempt takes its place in the count before the PIN is checked: parallel
    # guesses cannot all pass a lock that none of them has set yet.
    if (refused := reserved_or_refused(request, keys, "signin.html", context)) is not None:
        return refused
    try:
        if typed is None:
            raise ForbiddenError("signin_wrong")
        with pin_gate(request):
            person = person_by_pin(db, typed, pin)
    except ForbiddenError:
        attempt_failed(db, keys, review.signin_lock_minutes)
        error = t("signin_wrong")
        return render(request, "signin.html", context | {"error": error}, None, None, 403)
    attempt_succeeded(db, list(keys), clear=f"worker:{person.id}")
    return signed_in(request, person)


@router.post("/signin/code", response_class=HTMLResponse)
def signin_code(
    request: Request, code: Annotated[str, Form()], csrf: Annotated[str, Form()] = ""
) -> Response:
    """Sign staff (or an API user) in with their access code."""
    check_form_token(request, csrf)
    db, review = db_of(request), settings_of(request).review
    t = translator(language_of(request, None))
    code = code.strip()
    fields = [("access_code", code, MAX_CODE)]
    if (refused := overlong(request, "signin.html", {}, fields)) is not None:
        return refused
    keys = {f"ip:{client_host(request)}": review.signin_ip_max_failures}
    if (refused := reserved_or_refused(request, keys, "signin.html", {})) is not None:
        return refused
    try:
        person = person_by_code(db, code)
    except ForbiddenError:
        attempt_failed(db, keys, review.signin_lock_minutes)
        return render(request, "signin.html", {"error": t("code_wrong")}, status_code=403)
    attempt_succeeded(db, list(keys))
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
    context: dict[str, Any] = {"invite": invite[:MAX_INVITE]}
    fields = [
        ("invite_code", invite, MAX_INVITE),
        ("new_pin", pin, MAX_PIN),
        ("new_pin_again", pin_again, MAX_PIN),
    ]
    if (refused := overlong(request, "join.html", context, fields)) is not None:
        return refused
    try:
        # A PIN that will not do is said before the invite is tried: no guess spent on it.
        check_new_pin(pin, pin_again)
    except BadInputError as e:
        return render(request, "join.html", context | {"error": t(str(e))}, status_code=400)
    keys = {f"invite:{client_host(request)}": review.signin_ip_max_failures}
    if (refused := reserved_or_refused(request, keys, "join.html", context)) is not None:
        return refused
    try:
        with pin_gate(request):
            person = join_with_invite(db, invite, pin, pin_again)
    except ForbiddenError as e:
        attempt_failed(db, keys, review.signin_lock_minutes)
        return render(request, "join.html", context | {"error": t(str(e))}, status_code=403)
    attempt_succeeded(db, list(keys))
    # A new worker starts with the introduction and the practice round; one who passed it
    # already (a PIN reset, a re-invite) goes to their own page.
    target = "/me?welcome=1" if has_passed_practice(db, person.id) else "/welcome/1"
    return signed_in(request, person, target)


@router.post("/signout")
def signout(request: Request, session: PageSession, csrf: Annotated[str, Form()]) -> Response:
    """End the session and forget its cookie."""
    check_csrf(csrf, session[1])
    # Everywhere: a session left open on another device ends too.
    end_sessions(db_of(request), session[0].id)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE)
    # The browser forgets what this person's pages kept: the tasks and snippets saved for
    # offline work (localStorage), the service worker and its cached pages.
    response.headers["Clear-Site-Data"] = '"cache", "storage"'
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
