"""`create_app(settings)`: the review pages, the agency pages and the JSON API, in one ASGI app.

The routes live in their routers, one module per audience: kerani.review_ui.signin (before
and around sign-in), .worker_pages, .onboarding (a new worker's introduction and practice),
.agency_pages, .operator_gold, .operator_calibration, .operator_pay and .api. This module
only wires them: the app's state, its middleware, the static files and the one error handler.
"""

from __future__ import annotations

import contextlib
import functools
import random
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.middleware.gzip import GZipMiddleware

from kerani.core.errors import KeraniError
from kerani.core.settings import Settings
from kerani.core.vocabulary import Role
from kerani.flows.retrying import BatchRuns
from kerani.flows.webhooks import WebhookSender
from kerani.forms.catalogue import template_of
from kerani.microtasks.ledger import ringgit, ringgit_each
from kerani.people.api_tokens import TOKEN_PREFIX
from kerani.review_ui import (
    agency_api,
    agency_pages,
    api,
    health,
    my_account,
    onboarding,
    operator_calibration,
    operator_crowd,
    operator_gold,
    operator_pay,
    signin,
    template_designer,
    token_pages,
    worker_pages,
)
from kerani.review_ui.i18n import translator
from kerani.review_ui.limits import BodyLimit
from kerani.review_ui.template_designer import SAMPLE_LIMIT
from kerani.review_ui.web import (
    STATIC,
    TEMPLATES,
    NotSignedIn,
    api_person,
    language_of,
    need_role,
    page_session,
    render,
    settings_of,
    wants_json,
)
from kerani.storage.stores import Stores, open_stores

SECURITY_HEADERS = {
    # Nothing from other hosts, no framing: the page only ever talks to its own origin.
    # The first snippet comes inline (data:) and the next ones as blobs fetched by script.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # The pages use no device feature: a script that got in could not turn one on either.
    "Permissions-Policy": "accelerometer=(), autoplay=(), camera=(), display-capture=(), "
    "geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=(), "
    "browsing-topics=()",
    # A page opened from Kerani (or opening it) gets no handle on its window.
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Sent only when the app is served over HTTPS (review.secure_cookies): the browser then
# refuses plain HTTP to this host for a year, so a cookie cannot be stripped on the way.
HSTS = "max-age=31536000"
# Request bodies larger than review.max_body_bytes are refused (review_ui.limits); a route
# that takes more, such as a future upload, gets its own limit by path prefix here.
BODY_LIMITS: dict[str, int] = {"/templates/samples": SAMPLE_LIMIT + 64 * 1024}


async def security_headers(request: Request, call_next: Any) -> Response:
    """Add the security headers to every response, and say what may be cached."""
    response: Response = await call_next(request)
    response.headers.update(SECURITY_HEADERS)
    if settings_of(request).review.secure_cookies:
        response.headers["Strict-Transport-Security"] = HSTS
    if request.url.path.startswith("/static/"):
        # Small and versioned with the app: a phone on mobile data fetches them once a day.
        response.headers["Cache-Control"] = "public, max-age=86400"
    elif "Cache-Control" not in response.headers:
        # Pages show citizen data: never kept in a shared PC's cache.
        response.headers["Cache-Control"] = "no-store"
    return response


API_DESCRIPTION = (
    "Kerani's JSON API. Agencies: /api/v1 with an API token of the agency "
    "(Authorization: Bearer kt_...). Workers: /api/tasks with their access code. "
    "Webhooks of completed batches carry Kerani-Signature: t=<unix time>,v1=<hex "
    "HMAC-SHA256 of '<t>.<raw body>' with the token's webhook secret>."
)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> Any:
    """While the app serves: deliver the webhooks of completed batches in the background."""
    sender = WebhookSender(app.state.stores.db, app.state.settings.api)
    sender.start()
    try:
        yield
    finally:
        sender.stop()


def openapi_for_staff(request: Request) -> Response:
    """The API's description, for operators and agency users only (by bearer code, API
    token or session): it maps every route, which is no business of an anonymous visitor."""
    auth = request.headers.get("authorization", "")
    if auth.partition(" ")[2].strip().startswith(TOKEN_PREFIX):
        agency_api.agency_caller(request)
        return JSONResponse(request.app.openapi())
    if auth:
        person = api_person(request)
    else:
        person, _ = page_session(request)
    need_role(person, Role.OPERATOR, Role.AGENCY)
    return JSONResponse(request.app.openapi())


async def kerani_error(request: Request, exc: KeraniError) -> Response:
    """The one error handler: JSON for the API and the page's script, else a page or sign-in."""
    code = exc.http_status
    if request.url.path.startswith("/api/") or wants_json(request):
        body = {"error": str(exc)}
        if exc.key is not None:  # the page's script tells "not yours any more" from "paused"
            body["key"] = exc.key
        return JSONResponse(body, status_code=code)
    if isinstance(exc, NotSignedIn):
        return RedirectResponse("/signin", status_code=303)
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


def create_app(
    settings: Settings, stores: Stores | None = None, draws: random.Random | None = None
) -> FastAPI:
    """Build the web app for these settings (and these stores, for tests)."""
    # No public schema: openapi_for_staff serves it at /api/openapi.json to staff only.
    app = FastAPI(
        title="Kerani",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=_lifespan,
        description=API_DESCRIPTION,
    )
    app.state.settings = settings
    app.state.stores = stores or open_stores(settings)
    # Who gets gold and blind leases when: unpredictable, unless a benchmark seeds it.
    app.state.draws = draws
    app.state.templates = Jinja2Templates(directory=str(TEMPLATES))
    # Money on the pages is written one way, the ledger's (RM with sen, sen below RM 1).
    app.state.templates.env.globals.update(ringgit=ringgit, ringgit_each=ringgit_each)
    # The Help by a field names the tip of its type (_field_help.html).
    app.state.templates.env.globals.update(tip_keys=onboarding.TIP_KEYS)
    # Every claim shows a field's label: parse each template once per app, not per request.
    # A stored version never changes, so it is cached for the app's life.
    app.state.form_template = functools.lru_cache(maxsize=64)(
        functools.partial(template_of, app.state.stores.db)
    )
    # The flows of batches this process runs (Retry on the agency page, the API's start).
    app.state.retries = BatchRuns()
    # Scrypt takes 16 MiB a PIN check: only so many at once (threads wait their turn).
    app.state.pin_gate = threading.BoundedSemaphore(settings.review.pin_checks_at_once)
    app.mount("/static", StaticFiles(directory=str(STATIC)), "static")
    # Innermost, so that even a refused body gets the security headers.
    limits = BODY_LIMITS | {
        # Whole files, several at once (a zip may be as big as its limit), and chunks.
        "/api/v1/uploads/": settings.ingest.max_zip_total_bytes + 1024 * 1024,
        "/api/v1/uploads/chunks/": settings.api.chunk_max_bytes + 64 * 1024,
    }
    app.add_middleware(BodyLimit, max_bytes=settings.review.max_body_bytes, by_prefix=limits)
    # Phones on mobile data pay per byte: pages and reserve replies go compressed. Added
    # first, so that it runs inside the security headers and compresses what they wrap.
    app.add_middleware(GZipMiddleware, minimum_size=500)
    app.middleware("http")(security_headers)
    app.exception_handler(KeraniError)(kerani_error)
    for router in (
        signin.router,
        worker_pages.router,
        onboarding.router,
        my_account.router,
        agency_pages.router,
        template_designer.router,
        token_pages.router,
        operator_gold.router,
        operator_calibration.router,
        operator_pay.router,
        operator_crowd.router,
        health.router,
        api.router,
        agency_api.router,
    ):
        app.include_router(router)
    app.add_api_route(
        "/api/openapi.json", openapi_for_staff, methods=["GET"], include_in_schema=False
    )
    return app


APP_FACTORY = "kerani.review_ui.app:app_from_env"


def app_from_env() -> FastAPI:
    """The app of one `kerani serve` process (uvicorn's factory, by APP_FACTORY).

    Its settings are built here, the entry point, from the KERANI_* environment that the
    CLI passed down (never from argv, which every user of the machine may read), and its
    database pool is this process's share of the connections (ServeSettings).
    """
    from kerani.storage.blobs import open_blob_store
    from kerani.storage.database import open_engine, pool_for_processes

    settings = Settings.load()
    serve = settings.serve
    pool = pool_for_processes(serve.processes, serve.db_connections)
    db = open_engine(settings.database_url, pool=pool)
    return create_app(settings, Stores(db=db, blobs=open_blob_store(settings)))
