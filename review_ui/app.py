"""`create_app(settings)`: the review page, the status page and the JSON API, in one ASGI app."""

from __future__ import annotations

import base64
import contextlib
import functools
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.middleware.gzip import GZipMiddleware

from kerani.core.errors import (
    BadInputError,
    ForbiddenError,
    KeraniError,
    NotFoundError,
)
from kerani.core.settings import Settings
from kerani.flows.triggers import document_settled
from kerani.forms.templates import load_template
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.audit import log_view
from kerani.microtasks.leases import claim_tasks, leased_task, offered_kinds, renew_leases
from kerani.microtasks.tasks import ClaimedTask
from kerani.people.rate_limits import clear_failures, minutes_locked, record_failure
from kerani.people.workers import (
    Person,
    end_session,
    join_with_invite,
    person_by_code,
    person_by_pin,
    session_person,
    set_language,
    start_session,
)
from kerani.records.progress import batch_agency, batch_progress, resolve_batch_id
from kerani.records.report import batch_report
from kerani.review_ui.i18n import (
    LANG_COOKIE,
    LANGUAGE_NAMES,
    LANGUAGES,
    language_from_headers,
    translator,
)
from kerani.review_ui.my_work import my_work, today
from kerani.review_ui.status import recent_answers
from kerani.storage.stores import Stores, open_stores

COOKIE = "kerani_session"
# Forms shown before sign-in (sign-in, join, language) carry a token matching this cookie,
# so that another site cannot post them in a visitor's name (login CSRF).
FORM_COOKIE = "kerani_form"
# Leases a worker holds on the one-by-one page: the task shown and two in reserve, so that
# on a slow line the next snippet is already on the phone when the worker submits.
HELD_ON_REVIEW = 3
_SECURITY_HEADERS = {
    # Nothing from other hosts, no framing: the page only ever talks to its own origin.
    # The first snippet comes inline (data:) and the next ones as blobs fetched by script.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class NotSignedIn(Exception):
    """A page needs a session: redirect to sign-in rather than show an error."""


def _db(request: Request) -> Engine:
    db: Engine = request.app.state.stores.db
    return db


def page_session(request: Request) -> tuple[Person, str]:
    """The signed-in person and their CSRF token, from the session cookie."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise NotSignedIn()
    idle = request.app.state.settings.review.session_idle_minutes
    try:
        return session_person(_db(request), cookie, idle)
    except ForbiddenError as e:
        raise NotSignedIn() from e


def api_person(request: Request) -> Person:
    """The person whose access code the request carries as a bearer token."""
    auth = request.headers.get("authorization", "")
    scheme, _, code = auth.partition(" ")
    if scheme.lower() != "bearer" or not code:
        raise ForbiddenError("send 'Authorization: Bearer <access code>'")
    return person_by_code(_db(request), code.strip())


def need_role(person: Person, *roles: str) -> None:
    """Refuse unless the person has one of `roles`."""
    if person.role not in roles:
        raise ForbiddenError(f"this needs the role {' or '.join(roles)}")


def check_csrf(csrf: str, expected: str) -> None:
    """Refuse a form whose CSRF token is not the session's."""
    if not secrets.compare_digest(csrf, expected):
        raise ForbiddenError("the form has expired; reload the page", key="form_expired")


PageSession = Annotated[tuple[Person, str], Depends(page_session)]
ApiPerson = Annotated[Person, Depends(api_person)]


class AnswerIn(BaseModel):
    """An answer submitted through the JSON API."""

    kind: str = "value"
    value: str = ""
    idempotency_key: str


def _safe_next(path: str) -> str:
    """A same-site path to go back to after a form; anything else goes home (no open redirect)."""
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not path.startswith("/") or path.startswith("//"):
        return "/"
    return path


def snippet_media_type(image: bytes) -> str:
    """The media type of a stored snippet, from its first bytes (WebP or PNG)."""
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_app(settings: Settings, stores: Stores | None = None) -> FastAPI:
    """Build the web app for these settings (and these stores, for tests)."""
    stores = stores or open_stores(settings)
    db: Engine = stores.db
    review = settings.review
    templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
    app = FastAPI(title="Kerani", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.settings = settings
    app.state.stores = stores
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), "static")
    # Phones on mobile data pay per byte: pages and reserve replies go compressed.
    app.add_middleware(GZipMiddleware, minimum_size=500)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.update(_SECURITY_HEADERS)
        if request.url.path.startswith("/static/"):
            # Small and versioned with the app: a phone on mobile data fetches them once a day.
            response.headers["Cache-Control"] = "public, max-age=86400"
        elif "Cache-Control" not in response.headers:
            # Pages show citizen data: never kept in a shared PC's cache.
            response.headers["Cache-Control"] = "no-store"
        return response

    def language_of(request: Request, person: Person | None) -> str:
        if person is not None:
            return person.language
        return language_from_headers(
            request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
        )

    def render(
        request: Request,
        name: str,
        context: dict[str, Any],
        person: Person | None = None,
        csrf: str | None = None,
        status_code: int = 200,
    ) -> Response:
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
        response = templates.TemplateResponse(
            request, name, base | context, status_code=status_code
        )
        if new_form_token is not None:
            set_cookie(response, FORM_COOKIE, new_form_token, review.session_hours * 3600)
        return response

    def locked_out(
        request: Request, keys: dict[str, int], page: str, context: dict[str, Any]
    ) -> Response | None:
        """The form again with a "too many tries" message while one of `keys` is locked."""
        minutes = minutes_locked(db, list(keys))
        if not minutes:
            return None
        error = translator(language_of(request, None))("signin_locked", minutes=minutes)
        return render(request, page, context | {"error": error}, status_code=429)

    def check_form_token(request: Request, csrf: str) -> None:
        check_csrf(csrf, request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(24))

    @app.exception_handler(KeraniError)
    async def kerani_error(request: Request, exc: KeraniError) -> Response:
        code = exc.http_status
        if request.url.path.startswith("/api/") or wants_json(request):
            return JSONResponse({"error": str(exc)}, status_code=code)
        person, csrf = None, None
        with contextlib.suppress(NotSignedIn):  # their language and header, when signed in
            person, csrf = await run_in_threadpool(page_session, request)
        # Errors a worker meets carry a catalogue key and are shown in their language; the
        # rest stay in English (they speak to operators, or name a file or field).
        message = str(exc)
        if exc.key is not None:
            message = translator(language_of(request, person))(exc.key)
        context = {"message": message, "code": code}
        return render(request, "error.html", context, person, csrf, status_code=code)

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if wants_json(request):
            return JSONResponse({"error": "please sign in"}, status_code=401)
        return RedirectResponse("/signin", status_code=303)

    def wants_json(request: Request) -> bool:
        return "application/json" in request.headers.get("accept", "")

    def settle_side_effects(page_id: int | None) -> None:
        # The document's last field settled: have it reassembled (inline, by Prefect event or
        # by deployment; see kerani.flows.triggers). The scheduled reconcile-records flow catches
        # anything this misses.
        if page_id is not None:
            document_settled(db, page_id)

    # Every claim shows a field's label: parse each template once per app, not per request.
    template_named = functools.lru_cache(maxsize=64)(load_template)

    def label_of(task: ClaimedTask, lang: str) -> tuple[str, str | None]:
        template = template_named(task.template)
        if template.kind != "form":
            return translator(lang)("text_line"), None
        spec = template.field(task.field_name)
        return getattr(spec.label, lang), spec.format_hint

    def task_json(person: Person, task: ClaimedTask) -> dict[str, Any]:
        """What the page's script needs to show a task it holds in reserve, snippet included."""
        lang = person.language
        t = translator(lang)
        label, hint = label_of(task, lang)
        return {
            "task_id": task.task_id,
            "label": label,
            "hint": t("format", hint=hint) if hint else "",
            "note": t("check_again", note=task.note) if task.note else "",
            "ocr_text": task.ocr_text,
            "snippet_src": inline_snippet(person, task),
            "idempotency_key": secrets.token_urlsafe(16),
        }

    def inline_snippet(person: Person, task: ClaimedTask) -> str:
        # The snippet of the task on screen comes inside the page: one round trip fewer on
        # a slow phone connection. Viewing it is logged like any other view.
        log_view(db, person.id, task.task_id)
        image = stores.blobs.get(task.snippet_key)
        return f"data:{snippet_media_type(image)};base64,{base64.b64encode(image).decode()}"

    def set_cookie(response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            httponly=True,
            samesite="strict",
            secure=review.secure_cookies,
            max_age=max_age,
        )

    def signed_in(person: Person, target: str = "/") -> Response:
        cookie, _csrf = start_session(db, person.id, review.session_hours)
        response = RedirectResponse(target, status_code=303)
        set_cookie(response, COOKIE, cookie, review.session_hours * 3600)
        return response

    # ---- sign-in ------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def home(session: PageSession) -> Response:
        person, _ = session
        return RedirectResponse("/review" if person.role == "worker" else "/status", 303)

    @app.get("/signin", response_class=HTMLResponse)
    def signin_form(request: Request) -> Response:
        return render(request, "signin.html", {"error": None})

    @app.post("/signin", response_class=HTMLResponse)
    def signin(
        request: Request,
        number: Annotated[str, Form()],
        pin: Annotated[str, Form()],
        csrf: Annotated[str, Form()] = "",
    ) -> Response:
        check_form_token(request, csrf)
        t = translator(language_of(request, None))
        number = number.strip()
        keys = {f"ip:{_client(request)}": review.signin_ip_max_failures}
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
            return render(
                request, "signin.html", {"error": error, "number": number}, None, None, 403
            )
        clear_failures(db, f"worker:{person.id}")
        return signed_in(person)

    @app.post("/signin/code", response_class=HTMLResponse)
    def signin_code(
        request: Request, code: Annotated[str, Form()], csrf: Annotated[str, Form()] = ""
    ) -> Response:
        check_form_token(request, csrf)
        t = translator(language_of(request, None))
        keys = {f"ip:{_client(request)}": review.signin_ip_max_failures}
        if (refused := locked_out(request, keys, "signin.html", {})) is not None:
            return refused
        try:
            person = person_by_code(db, code.strip())
        except ForbiddenError:
            record_failure(db, keys, review.signin_lock_minutes)
            return render(request, "signin.html", {"error": t("code_wrong")}, status_code=403)
        return signed_in(person)

    @app.get("/join", response_class=HTMLResponse)
    def join_form(request: Request) -> Response:
        return render(request, "join.html", {"error": None})

    @app.post("/join", response_class=HTMLResponse)
    def join(
        request: Request,
        invite: Annotated[str, Form()],
        pin: Annotated[str, Form()],
        pin_again: Annotated[str, Form()],
        csrf: Annotated[str, Form()] = "",
    ) -> Response:
        check_form_token(request, csrf)
        t = translator(language_of(request, None))
        keys = {f"invite:{_client(request)}": review.signin_ip_max_failures}
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
        return signed_in(person, "/me?welcome=1")

    @app.post("/signout")
    def signout(request: Request, session: PageSession, csrf: Annotated[str, Form()]) -> Response:
        check_csrf(csrf, session[1])
        end_session(db, request.cookies[COOKIE])
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.post("/language")
    def language(
        request: Request,
        lang: Annotated[str, Form()],
        next: Annotated[str, Form()] = "/",
        csrf: Annotated[str, Form()] = "",
    ) -> Response:
        if lang not in LANGUAGES:
            raise BadInputError(f"language must be one of {', '.join(LANGUAGES)}")
        person, expected = None, ""
        with contextlib.suppress(NotSignedIn):
            person, expected = page_session(request)
        if person is not None:
            # Signed in: the choice is kept with the person, for every device they use.
            check_csrf(csrf, expected)
            set_language(db, person.id, lang)
        else:
            check_form_token(request, csrf)
        response = RedirectResponse(_safe_next(next), status_code=303)
        set_cookie(response, LANG_COOKIE, lang, 365 * 24 * 3600)
        return response

    # ---- worker pages -------------------------------------------------------------------

    @app.get("/review", response_class=HTMLResponse)
    def review_page(request: Request, session: PageSession) -> Response:
        person, csrf = session
        need_role(person, "worker")
        # The task on screen and two in reserve, which the script shows without a round trip.
        tasks = claim_tasks(db, person.id, settings.crowd, count=HELD_ON_REVIEW)
        if not tasks:
            return render(request, "no_tasks.html", {}, person, csrf)
        task = tasks[0]
        label, hint = label_of(task, person.language)
        context = {
            "task": task,
            "label": label,
            "hint": hint,
            "snippet_src": inline_snippet(person, task),
            "idempotency_key": secrets.token_urlsafe(16),
            "upcoming": [task_json(person, t) for t in tasks[1:]],
            "today": today(db, person.id),
        }
        return render(request, "review.html", context, person, csrf)

    @app.post("/review/{task_id}")
    def review_submit(
        request: Request,
        task_id: str,
        session: PageSession,
        csrf: Annotated[str, Form()],
        idempotency_key: Annotated[str, Form()],
        action: Annotated[str, Form()] = "value",
        value: Annotated[str, Form()] = "",
    ) -> Response:
        person, expected = session
        need_role(person, "worker")
        check_csrf(csrf, expected)
        outcome = submit_answer(
            db, task_id, person.id, action, value, idempotency_key, settings.crowd
        )
        settle_side_effects(outcome.completed_page_id)
        if not wants_json(request):
            return RedirectResponse("/review", status_code=303)
        # The script showed a task in reserve at once; it gets the reserve topped up from here
        # (only tasks it does not have yet carry their snippet).
        # A worker at work keeps the reserve: its leases are renewed with each answer.
        renew_leases(db, person.id, settings.crowd)
        held = claim_tasks(db, person.id, settings.crowd, count=HELD_ON_REVIEW)
        known = set(request.headers.get("x-kerani-held", "").split(","))
        day = today(db, person.id)
        progress = translator(person.language)("progress_today", done=day.done, earned=day.earned)
        return JSONResponse(
            {
                "recorded": outcome.recorded,
                "upcoming": [
                    task_json(person, t) if t.task_id not in known else {"task_id": t.task_id}
                    for t in held
                ],
                "progress": progress,
            }
        )

    def snippet_response(person: Person, task_id: str) -> Response:
        # Only the snippet of a task leased to this worker; every view goes to the audit log.
        need_role(person, "worker")
        task = leased_task(db, task_id, person.id)
        log_view(db, person.id, task_id)
        image = stores.blobs.get(task.snippet_key)
        return Response(
            image,
            media_type=snippet_media_type(image),
            headers={"Cache-Control": "private, no-store"},
        )

    @app.get("/snippets/{task_id}")
    def snippet(task_id: str, session: PageSession) -> Response:
        return snippet_response(session[0], task_id)

    @app.get("/column", response_class=HTMLResponse)
    def column_page(request: Request, session: PageSession) -> Response:
        person, csrf = session
        need_role(person, "worker")
        # The field type with the most work waiting: a long column is the fastest to check.
        kinds = offered_kinds(db, person.id, settings.crowd)
        tasks = []
        if kinds:
            kind = kinds[0][0]
            tasks = claim_tasks(db, person.id, settings.crowd, review.column_size, field_kind=kind)
        if not tasks:
            return render(request, "no_tasks.html", {}, person, csrf)
        label, hint = label_of(tasks[0], person.language)
        rows = [{"task": t, "snippet_src": inline_snippet(person, t)} for t in tasks]
        context = {
            "rows": rows,
            "label": label,
            "hint": hint,
            "column_key": secrets.token_urlsafe(16),
            "today": today(db, person.id),
        }
        return render(request, "column.html", context, person, csrf)

    @app.post("/column")
    async def column_submit(request: Request, session: PageSession) -> Response:
        person, expected = session
        need_role(person, "worker")
        form = await request.form()
        check_csrf(str(form.get("csrf", "")), expected)
        column_key = str(form.get("column_key", ""))
        if not 8 <= len(column_key) <= 40:
            raise BadInputError("column_key must be 8 to 40 characters")
        task_ids = [str(v) for v in form.getlist("task_id")]
        values = [str(v) for v in form.getlist("value")]
        unreadable = {str(v) for v in form.getlist("unreadable")}
        if len(task_ids) != len(values) or len(task_ids) > 30:
            raise BadInputError("the column form must have one value per task (at most 30)")
        for i, (task_id, value) in enumerate(zip(task_ids, values, strict=True)):
            kind = "unreadable" if str(i) in unreadable else "value"
            try:
                outcome = await run_in_threadpool(
                    submit_answer,
                    db,
                    task_id,
                    person.id,
                    kind,
                    value,
                    f"{column_key}:{i}",
                    settings.crowd,
                )
            except ForbiddenError:
                continue  # that lease was lost (expired and taken): the others still count
            await run_in_threadpool(settle_side_effects, outcome.completed_page_id)
        return RedirectResponse("/column", status_code=303)

    @app.get("/me", response_class=HTMLResponse)
    def me_page(request: Request, session: PageSession, welcome: int = 0) -> Response:
        person, csrf = session
        need_role(person, "worker")
        me = my_work(db, person.id, settings.crowd.quarantine_min_gold)
        return render(request, "me.html", {"me": me, "welcome": bool(welcome)}, person, csrf)

    # ---- operator and agency pages -------------------------------------------------------

    def batches_for(person: Person) -> list[dict[str, Any]]:
        # An agency sees its own batches only; operators see every batch.
        return batch_progress(db, agency_id=person.id if person.role == "agency" else None)

    def own_batch(person: Person, prefix: str) -> str:
        batch_id = resolve_batch_id(db, prefix)
        if person.role == "agency" and batch_agency(db, batch_id) != person.id:
            # As if it did not exist: another agency's batch ids reveal nothing.
            raise NotFoundError(f"no batch {prefix!r}")
        return batch_id

    @app.get("/status", response_class=HTMLResponse)
    def status_page(request: Request, session: PageSession) -> Response:
        person, csrf = session
        need_role(person, "operator", "agency")
        answers = recent_answers(db) if person.role == "operator" else []
        context = {"batches": batches_for(person), "answers": answers}
        return render(request, "status.html", context, person, csrf)

    @app.get("/batches/{batch_id}/report", response_class=HTMLResponse)
    def report_page(request: Request, batch_id: str, session: PageSession) -> Response:
        person, csrf = session
        need_role(person, "operator", "agency")
        report = batch_report(db, own_batch(person, batch_id))
        return render(request, "report.html", {"r": report}, person, csrf)

    # ---- JSON API -----------------------------------------------------------------------

    @app.post("/api/tasks/claim")
    def api_claim(person: ApiPerson) -> Response:
        need_role(person, "worker")
        tasks = claim_tasks(db, person.id, settings.crowd, count=1)
        if not tasks:
            return Response(status_code=204)
        task = tasks[0]
        label, hint = label_of(task, person.language)
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

    @app.get("/api/tasks/{task_id}/snippet")
    def api_snippet(task_id: str, person: ApiPerson) -> Response:
        return snippet_response(person, task_id)

    @app.post("/api/tasks/{task_id}/answer")
    def api_answer(task_id: str, answer: AnswerIn, person: ApiPerson) -> dict[str, Any]:
        need_role(person, "worker")
        outcome = submit_answer(
            db,
            task_id,
            person.id,
            answer.kind,
            answer.value,
            answer.idempotency_key,
            settings.crowd,
        )
        settle_side_effects(outcome.completed_page_id)
        return {"recorded": outcome.recorded, "settled": outcome.settled}

    @app.get("/api/batches")
    def api_batches(person: ApiPerson) -> list[dict[str, Any]]:
        need_role(person, "operator", "agency")
        return batches_for(person)

    return app
