"""What every router of the web app shares: who is asking, their role and CSRF token, the
pages' renderer and cookies, read from `request.app.state` (settings, stores, templates).

`create_app` (kerani.review_ui.app) fills the state; the routers (signin, worker_pages,
agency_pages, api) only ever reach it through these helpers.
"""

from __future__ import annotations

import base64
import random
import re
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine

from kerani.core.errors import BadInputError, ForbiddenError, KeraniError
from kerani.core.settings import Settings
from kerani.core.vocabulary import Role
from kerani.flows.triggers import document_settled
from kerani.forms.templates import Template
from kerani.microtasks.audit import log_view
from kerani.microtasks.leases import view_leased_task
from kerani.microtasks.tasks import ClaimedTask
from kerani.people.rate_limits import reserve_attempt
from kerani.people.workers import Person, person_by_code, session_person
from kerani.records.progress import batch_progress, resolve_batch_id
from kerani.review_ui.i18n import (
    LANG_COOKIE,
    LANGUAGE_NAMES,
    LANGUAGES,
    language_from_headers,
    translator,
)
from kerani.storage.stores import Stores

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
COOKIE = "kerani_session"
# Forms shown before sign-in (sign-in, join, language) carry a token matching this cookie,
# so that another site cannot post them in a visitor's name (login CSRF).
FORM_COOKIE = "kerani_form"


class NotSignedIn(KeraniError):
    """A page needs a session: the error handler redirects to sign-in rather than show it."""

    http_status = 401

    def __init__(self) -> None:
        super().__init__("please sign in")


# ---- the app's state ----------------------------------------------------------------------


def settings_of(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def stores_of(request: Request) -> Stores:
    """The database and blob store of the app."""
    stores: Stores = request.app.state.stores
    return stores


def draws_of(request: Request) -> random.Random | None:
    """The app's source of gold and blindness draws (None: the queue's own, unseeded)."""
    draws: random.Random | None = request.app.state.draws
    return draws


def db_of(request: Request) -> Engine:
    """The app's database."""
    return stores_of(request).db


def form_template(request: Request, name: str, template_id: int | None) -> Template:
    """The stored template version a page was read with, parsed once per app (every claim
    shows a field's label)."""
    stored: Callable[[str, int | None], Template] = request.app.state.form_template
    return stored(name, template_id)


# ---- who is asking ------------------------------------------------------------------------


def page_session(request: Request) -> tuple[Person, str]:
    """The signed-in person and their CSRF token, from the session cookie."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise NotSignedIn()
    idle = settings_of(request).review.session_idle_minutes
    try:
        return session_person(db_of(request), cookie, idle)
    except ForbiddenError as e:
        raise NotSignedIn() from e


def api_person(request: Request) -> Person:
    """The person whose access code the request carries as a bearer token."""
    auth = request.headers.get("authorization", "")
    scheme, _, code = auth.partition(" ")
    if scheme.lower() != "bearer" or not code:
        raise ForbiddenError("send 'Authorization: Bearer <access code>'")
    return person_by_code(db_of(request), code.strip())


def need_role(person: Person, *roles: Role) -> None:
    """Refuse unless the person has one of `roles`."""
    if person.role not in roles:
        raise ForbiddenError(f"this needs the role {' or '.join(roles)}")


def check_csrf(csrf: str, expected: str) -> None:
    """Refuse a form whose CSRF token is not the session's."""
    # As bytes: compare_digest refuses str with characters outside ASCII (a 500).
    if not secrets.compare_digest(csrf.encode(), expected.encode()):
        raise ForbiddenError("the form has expired; reload the page", key="form_expired")


def check_form_token(request: Request, csrf: str) -> None:
    """Refuse a form shown before sign-in whose token is not the visitor's form cookie."""
    check_csrf(csrf, request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(24))


PageSession = Annotated[tuple[Person, str], Depends(page_session)]
ApiPerson = Annotated[Person, Depends(api_person)]


def wants_json(request: Request) -> bool:
    """Say whether the caller (the page's script) asked for JSON rather than a page."""
    return "application/json" in request.headers.get("accept", "")


def client_host(request: Request) -> str:
    """The caller's address, for the sign-in throttle."""
    return request.client.host if request.client else "unknown"


def safe_next(path: str) -> str:
    """A same-site path to go back to after a form; anything else goes home (no open redirect)."""
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not path.startswith("/") or path.startswith("//"):
        return "/"
    return path


def duration_from_form(text: str | None) -> int | None:
    """The milliseconds a form says the worker took (None when it does not say)."""
    if not text:
        return None
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise BadInputError("duration_ms must be a whole number of milliseconds")
    return int(text)  # its range is submit_answer's to check


# ---- pages and cookies --------------------------------------------------------------------


def language_of(request: Request, person: Person | None) -> str:
    """The page language: the person's choice, else the cookie, else the browser's."""
    if person is not None:
        return person.language
    return language_from_headers(
        request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
    )


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    """Set one of the app's cookies: HTTP only, same site, secure where the settings say."""
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=settings_of(request).review.secure_cookies,
        max_age=max_age,
    )


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    person: Person | None = None,
    csrf: str | None = None,
    status_code: int = 200,
) -> Response:
    """A page from review_ui/templates in the visitor's language, with its CSRF token."""
    lang = language_of(request, person)
    new_form_token = None
    if csrf is None:
        csrf = request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(24)
        if csrf != request.cookies.get(FORM_COOKIE):
            new_form_token = csrf
    base = {
        "t": translator(lang),
        "lang": lang,
        "languages": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        "here": request.url.path,
        "person": person,
        "csrf": csrf,
    }
    templates: Jinja2Templates = request.app.state.templates
    response = templates.TemplateResponse(request, name, base | context, status_code=status_code)
    if new_form_token is not None:
        hours = settings_of(request).review.session_hours
        set_cookie(request, response, FORM_COOKIE, new_form_token, hours * 3600)
    return response


def reserved_or_refused(
    request: Request, keys: dict[str, int], page: str, context: dict[str, Any]
) -> Response | None:
    """Reserve a sign-in attempt against `keys` (see people/rate_limits.py); None when it
    may go ahead, else the form again with a "too many tries" message."""
    lock_minutes = settings_of(request).review.signin_lock_minutes
    minutes = reserve_attempt(db_of(request), keys, lock_minutes)
    if not minutes:
        return None
    error = translator(language_of(request, None))("signin_locked", minutes=minutes)
    return render(request, page, context | {"error": error}, status_code=429)


def pin_gate(request: Request) -> threading.BoundedSemaphore:
    """The app's bound on PIN checks at once (scrypt takes 16 MiB each)."""
    gate: threading.BoundedSemaphore = request.app.state.pin_gate
    return gate


# ---- tasks, shared by the worker pages and the API ------------------------------------------


def label_of(request: Request, task: ClaimedTask, lang: str) -> tuple[str, str | None]:
    """The field's label in `lang` and its format hint (none for a line of running text)."""
    template = form_template(request, task.template, task.template_id)
    # A template-free page's fields are its lines, and its key fields (company, total).
    spec = (
        template.field(task.field_name)
        if template.kind == "form"
        else template.spec(task.field_name)
    )
    if spec is None:
        return translator(lang)("text_line"), None
    return getattr(spec.label, lang), spec.format_hint


def snippet_media_type(image: bytes) -> str:
    """The media type of a stored snippet, from its first bytes (WebP or PNG)."""
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def inline_snippet(request: Request, person: Person, task: ClaimedTask) -> str:
    """The snippet of a task as a data: URL, its view logged like any other."""
    # The snippet of the task on screen comes inside the page: one round trip fewer on
    # a slow phone connection.
    log_view(db_of(request), person.id, task.task_id)
    image = stores_of(request).blobs.get(task.snippet_key)
    return f"data:{snippet_media_type(image)};base64,{base64.b64encode(image).decode()}"


def snippet_response(request: Request, person: Person, task_id: str) -> Response:
    """The snippet of a task leased to this worker, never cached; the view is audited."""
    need_role(person, Role.WORKER)
    task = view_leased_task(db_of(request), task_id, person.id)
    image = stores_of(request).blobs.get(task.snippet_key)
    return Response(
        image,
        media_type=snippet_media_type(image),
        headers={"Cache-Control": "private, no-store"},
    )


def settle_side_effects(request: Request, page_id: int | None, *more: int) -> None:
    """Have each document reassembled once an answer settled its last field (`more`: pages
    a worker's passing probation completed besides)."""
    # The settle wrote each page's outbox row; this reassembles it inline, or leaves it to
    # the next publication to Prefect (see kerani.flows.triggers), which reassembles it here
    # when Prefect cannot be reached. reconcile-records catches anything left.
    for page in (page_id, *more):
        if page is not None:
            document_settled(db_of(request), page)


# ---- batches, shared by the agency pages and the API ----------------------------------------


def batches_for(request: Request, person: Person) -> list[dict[str, Any]]:
    """The batches this person may see: an agency its own, an operator every batch."""
    return batch_progress(db_of(request), agency_id=agency_of(person))


def agency_of(person: Person) -> int | None:
    """The agency a person's view is limited to (theirs), or None: an operator sees all."""
    return person.id if person.role == Role.AGENCY else None


def own_batch(request: Request, person: Person, prefix: str) -> str:
    """The batch id a prefix names, if this person may see that batch."""
    # Among an agency's own batches only: another agency's id, whole or a prefix, answers
    # exactly as an unknown one (same status, same words), and so reveals nothing.
    return resolve_batch_id(db_of(request), prefix, agency_of(person))
