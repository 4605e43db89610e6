"""`create_app(settings)`: the review page, the status page and the JSON API, in one ASGI app."""

from __future__ import annotations

import functools
import secrets
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from sqlalchemy import Engine

from flows.records import document_settled
from kerani.exceptions import (
    BadInputError,
    ConflictError,
    ForbiddenError,
    KeraniError,
    NotFoundError,
)
from kerani.settings import Settings
from microtasks.queue import ClaimedTask, claim_next, leased_task, log_view, submit_answer
from microtasks.workers import Person, end_session, person_by_code, session_person, start_session
from records.progress import batch_progress, resolve_batch_id
from records.report import batch_report
from records.templates import load_template
from review_ui.status import recent_answers
from storage.stores import Stores, open_stores

COOKIE = "kerani_session"
_STATUS = {BadInputError: 400, ForbiddenError: 403, NotFoundError: 404, ConflictError: 409}
_SECURITY_HEADERS = {
    # Nothing from other hosts, no framing: the page only ever talks to its own origin.
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self' "
    "'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
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
    try:
        return session_person(_db(request), cookie)
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
        raise ForbiddenError("the form has expired; reload the page")


PageSession = Annotated[tuple[Person, str], Depends(page_session)]
ApiPerson = Annotated[Person, Depends(api_person)]


class AnswerIn(BaseModel):
    """An answer submitted through the JSON API."""

    kind: str = "value"
    value: str = ""
    idempotency_key: str


def create_app(settings: Settings, stores: Stores | None = None) -> FastAPI:
    """Build the web app for these settings (and these stores, for tests)."""
    stores = stores or open_stores(settings)
    db: Engine = stores.db
    templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
    app = FastAPI(title="Kerani", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.settings = settings
    app.state.stores = stores
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), "static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    @app.exception_handler(KeraniError)
    async def kerani_error(request: Request, exc: KeraniError) -> Response:
        code = next((c for t, c in _STATUS.items() if isinstance(exc, t)), 500)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=code)
        return templates.TemplateResponse(
            request, "error.html", {"message": str(exc), "code": code}, status_code=code
        )

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        return RedirectResponse("/signin", status_code=303)

    def settle_side_effects(page_id: int | None) -> None:
        # The document's last field settled: have it reassembled (inline, by Prefect event or
        # by deployment; see flows/records.py). The scheduled reconcile-records flow catches
        # anything this misses.
        if page_id is not None:
            document_settled(db, page_id)

    # Every claim shows a field's label: parse each template once per app, not per request.
    template_named = functools.lru_cache(maxsize=64)(load_template)

    def task_view(task: ClaimedTask) -> dict[str, Any]:
        label, hint = task.field_name, None
        template = template_named(task.template)
        if template.kind == "form":
            spec = template.field(task.field_name)
            label, hint = spec.label.en, spec.format_hint
        else:
            label = "Text line"
        return {"task": task, "label": label, "hint": hint}

    # ---- pages -------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def home(session: PageSession) -> Response:
        person, _ = session
        return RedirectResponse("/review" if person.role == "worker" else "/status", 303)

    @app.get("/signin", response_class=HTMLResponse)
    def signin_form(request: Request) -> Response:
        return templates.TemplateResponse(request, "signin.html", {"error": None})

    @app.post("/signin", response_class=HTMLResponse)
    def signin(request: Request, code: Annotated[str, Form()]) -> Response:
        try:
            person = person_by_code(db, code.strip())
        except ForbiddenError:
            return templates.TemplateResponse(
                request, "signin.html", {"error": "That code is not right."}, status_code=403
            )
        cookie, _csrf = start_session(db, person.id, settings.review.session_hours)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            httponly=True,
            samesite="strict",
            secure=settings.review.secure_cookies,
            max_age=settings.review.session_hours * 3600,
        )
        return response

    @app.post("/signout")
    def signout(request: Request, session: PageSession, csrf: Annotated[str, Form()]) -> Response:
        check_csrf(csrf, session[1])
        end_session(db, request.cookies[COOKIE])
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/review", response_class=HTMLResponse)
    def review(request: Request, session: PageSession) -> Response:
        person, csrf = session
        need_role(person, "worker")
        task = claim_next(db, person.id, settings.crowd)
        if task is None:
            return templates.TemplateResponse(
                request, "no_tasks.html", {"person": person, "csrf": csrf}
            )
        context = task_view(task) | {
            "person": person,
            "csrf": csrf,
            "idempotency_key": secrets.token_urlsafe(16),
        }
        return templates.TemplateResponse(request, "review.html", context)

    @app.post("/review/{task_id}")
    def review_submit(
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
        return RedirectResponse("/review", status_code=303)

    def snippet_response(person: Person, task_id: str) -> Response:
        # Only the snippet of a task leased to this worker; every view goes to the audit log.
        need_role(person, "worker")
        task = leased_task(db, task_id, person.id)
        log_view(db, person.id, task_id)
        return Response(
            stores.blobs.get(task.snippet_key),
            media_type="image/png",
            headers={"Cache-Control": "private, no-store"},
        )

    @app.get("/snippets/{task_id}")
    def snippet(task_id: str, session: PageSession) -> Response:
        return snippet_response(session[0], task_id)

    @app.get("/status", response_class=HTMLResponse)
    def status_page(request: Request, session: PageSession) -> Response:
        person, csrf = session
        need_role(person, "operator", "agency")
        answers = recent_answers(db) if person.role == "operator" else []
        return templates.TemplateResponse(
            request,
            "status.html",
            {"person": person, "csrf": csrf, "batches": batch_progress(db), "answers": answers},
        )

    @app.get("/batches/{batch_id}/report", response_class=HTMLResponse)
    def report_page(request: Request, batch_id: str, session: PageSession) -> Response:
        person, csrf = session
        need_role(person, "operator", "agency")
        report = batch_report(db, resolve_batch_id(db, batch_id))
        return templates.TemplateResponse(
            request, "report.html", {"person": person, "csrf": csrf, "r": report}
        )

    # ---- JSON API -----------------------------------------------------------------------

    @app.post("/api/tasks/claim")
    def api_claim(person: ApiPerson) -> Response:
        need_role(person, "worker")
        task = claim_next(db, person.id, settings.crowd)
        if task is None:
            return Response(status_code=204)
        view = task_view(task)
        return JSONResponse(
            {
                "task_id": task.task_id,
                "field": task.field_name,
                "type": task.field_kind,
                "label": view["label"],
                "format_hint": view["hint"],
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
        return batch_progress(db)

    return app
