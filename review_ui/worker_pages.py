"""The worker's pages: the one-by-one review page and its answers, column mode, the snippet
of a leased task, and the worker's own page. Every route needs a signed-in worker."""

from __future__ import annotations

import hashlib
import secrets
from types import SimpleNamespace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from kerani.core.errors import BadInputError, ForbiddenError
from kerani.core.vocabulary import PayKind, Role
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.leases import (
    claim_tasks,
    offered_kinds,
    renew_leases,
    renew_saved_leases,
)
from kerani.microtasks.ledger import price, ringgit
from kerani.microtasks.pay_rates import rate_card
from kerani.microtasks.statements import malaysian_days, parse_week, statement
from kerani.microtasks.tasks import ClaimedTask
from kerani.people.workers import Person
from kerani.review_ui.i18n import translator
from kerani.review_ui.my_work import my_work, today
from kerani.review_ui.onboarding import passed_practice, practice_entry, tip_key
from kerani.review_ui.web import (
    STATIC,
    PageSession,
    check_csrf,
    db_of,
    draws_of,
    duration_from_form,
    inline_snippet,
    label_of,
    need_role,
    page_session,
    render,
    settings_of,
    settle_side_effects,
    snippet_response,
    wants_json,
)

# Tasks the one-by-one page comes with: the task shown and two in reserve, so that on a
# slow line the next snippet is already on the phone when the worker submits. The script
# then tops the reserve up to crowd.offline_reserve (POST /review/renew, each answer's
# reply), kept in the phone's storage for a dead spot.
HELD_ON_REVIEW = 3
# Rows of one column form at most (the page shows review.column_size of them).
MAX_COLUMN_ROWS = 30
# Task ids a phone may name in one renewal (its reserve and its waiting answers), at most.
MAX_RENEW_IDS = 200
# The words review.js shows about the line and the answers waiting ({n}: a number).
OFFLINE_WORDS = (
    "offline_online",
    "offline_offline",
    "offline_waiting_one",
    "offline_waiting",
    "offline_all_sent",
    "offline_empty",
    "offline_empty_online",
    "offline_expired_one",
    "offline_expired",
    "offline_refused_one",
    "offline_refused",
    "offline_signout_wait",
)

router = APIRouter()


def rates_of(request: Request, tasks: list[ClaimedTask]) -> dict[str, int]:
    """The rate in force of each task (by task id): shown before the worker starts it."""
    if not tasks:
        return {}  # an answer's reply whose reserve the page holds already: no query
    crowd = settings_of(request).crowd
    with db_of(request).connect() as conn:
        card = {
            (r.field_type, r.pay_kind): r.rate_sen
            for r in rate_card(conn, crowd, {t.field_kind for t in tasks})
        }
    return {
        t.task_id: card[(t.field_kind, PayKind.ARBITRATION if t.escalated else PayKind.FIELD)]
        for t in tasks
    }


def task_json(request: Request, person: Person, task: ClaimedTask, rate_sen: int) -> dict[str, Any]:
    """What the page's script needs to show a task it holds in reserve, snippet included."""
    lang = person.language
    t = translator(lang)
    label, hint = label_of(request, task, lang)
    return {
        "task_id": task.task_id,
        # The tip of its field type, for the page's Help (#field-tip, _field_help.html).
        "help": t(tip_key(task.field_kind)),
        "rate": t("task_pays", rate=price(rate_sen)),
        "label": label,
        "hint": t("format", hint=hint) if hint else "",
        "note": t("check_again", note=task.note) if task.note else "",
        "ocr_text": task.ocr_text,
        "snippet_src": inline_snippet(request, person, task),
        "idempotency_key": secrets.token_urlsafe(16),
    }


def offline_words(lang: str) -> dict[str, str]:
    """The texts the page's script shows offline, in the worker's language."""
    t = translator(lang)
    return {key: t(key, n="{n}") for key in OFFLINE_WORDS}


def signin_tag(csrf: str) -> str:
    """A name for this sign-in (from its CSRF token, which it does not reveal): the service
    worker keeps one cache per sign-in, so no cached page outlives the session it was for."""
    return hashlib.sha256(b"kerani-sw:" + csrf.encode()).hexdigest()[:16]


def offline_context(person: Person, csrf: str) -> dict[str, Any]:
    """What review.html needs for the script's offline part (its reserve, its indicator)."""
    return {"signin_tag": signin_tag(csrf), "offline_words": offline_words(person.language)}


# The worker's busiest routes read the session in their own thread: PageSession, a sync
# dependency, would take a thread of its own, one more trip through the thread pool (and
# the interpreter lock) on every request.


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request) -> Response:
    """The one-by-one page: a task to check, its guess pre-filled, two more in reserve."""
    person, csrf = page_session(request)
    need_role(person, Role.WORKER)
    db, crowd = db_of(request), settings_of(request).crowd
    # The task on screen and two in reserve, which the script shows without a round trip.
    try:
        tasks = claim_tasks(db, person.id, crowd, count=HELD_ON_REVIEW, draws=draws_of(request))
    except ForbiddenError as e:
        if e.key != "practice_first":
            raise
        # Not past practice yet: the claim read that with the worker's row, at no cost.
        return practice_entry(request, person)
    if not tasks:
        return render(request, "no_tasks.html", {}, person, csrf)
    task = tasks[0]
    label, hint = label_of(request, task, person.language)
    rates = rates_of(request, tasks)
    context = {
        "task": task,
        "label": label,
        "hint": hint,
        "rate": price(rates[task.task_id]),
        "snippet_src": inline_snippet(request, person, task),
        "idempotency_key": secrets.token_urlsafe(16),
        "upcoming": [task_json(request, person, t, rates[t.task_id]) for t in tasks[1:]],
        "today": today(db, person.id),
    } | offline_context(person, csrf)
    return render(request, "review.html", context, person, csrf)


@router.get("/review/offline", response_class=HTMLResponse)
def review_shell(request: Request) -> Response:
    """The review page without a task: the service worker keeps it for a navigation made
    offline, and the script fills it from the tasks kept on the phone. It leases nothing."""
    person, csrf = page_session(request)
    need_role(person, Role.WORKER)
    empty = SimpleNamespace(task_id="", ocr_text="", note=None, field_kind="")
    context = {
        "task": empty,
        "label": "",
        "hint": None,
        "rate": price(0),
        "snippet_src": "data:,",
        "idempotency_key": "",
        "upcoming": [],
        "today": today(db_of(request), person.id),
        "shell": True,
    } | offline_context(person, csrf)
    return render(request, "review.html", context, person, csrf)


@router.get("/sw.js", include_in_schema=False)
def service_worker() -> Response:
    """The worker pages' service worker, for the whole site (scope /), never cached stale."""
    return FileResponse(
        STATIC / "sw.js",
        media_type="text/javascript",
        headers={"Service-Worker-Allowed": "/", "Cache-Control": "no-cache"},
    )


def task_ids_of(text: str) -> list[str]:
    """Task ids from a comma-separated form field (at most MAX_RENEW_IDS, each short)."""
    ids = [i for i in text.split(",") if i]
    if len(ids) > MAX_RENEW_IDS or any(len(i) > 64 for i in ids):
        raise BadInputError(f"at most {MAX_RENEW_IDS} task ids of at most 64 characters")
    return ids


@router.post("/review/renew")
async def review_renew(request: Request) -> Response:
    """The phone is back online: renew the leases of the tasks it kept, say which are gone,
    and top its reserve up (only tasks it does not have carry their snippet)."""
    form = await request.form()
    sent = {k: str(v) for k, v in form.items()}
    response: Response = await run_in_threadpool(_review_renew, request, sent)
    return response


def _review_renew(request: Request, sent: dict[str, str]) -> Response:
    person, expected = page_session(request)
    need_role(person, Role.WORKER)
    check_csrf(sent.get("csrf", ""), expected)
    # `waiting`: tasks whose answers wait on the phone; `held`: the one shown and the rest.
    waiting, held = task_ids_of(sent.get("waiting", "")), task_ids_of(sent.get("held", ""))
    db, crowd = db_of(request), settings_of(request).crowd
    # Waiting answers' tasks first: renewed, nobody takes them before the answers arrive.
    renewed, gone = renew_saved_leases(db, person.id, waiting + held, crowd)
    answered_soon = len(set(waiting) & set(renewed))
    count = 1 + crowd.offline_reserve + answered_soon
    tasks = claim_tasks(db, person.id, crowd, count=count, draws=draws_of(request))
    # A task gone and leased again (given back meanwhile) is new to the phone: it was dropped.
    known = (set(waiting) | set(held)) - set(gone)
    rates = rates_of(request, [t for t in tasks if t.task_id not in known])
    return JSONResponse(
        {
            "gone": gone,
            "upcoming": [
                task_json(request, person, t, rates[t.task_id])
                if t.task_id not in known
                else {"task_id": t.task_id}
                for t in tasks
            ],
            "progress": progress_of(db, person),
        }
    )


def progress_of(db: Any, person: Person) -> str:
    """The worker's progress today as the page says it (answers the server has)."""
    day = today(db, person.id)
    return translator(person.language)("progress_today", done=day.done, earned=day.earned)


class ReviewForm(BaseModel):
    """The one-by-one page's form, as the page or its script posts it."""

    csrf: str
    idempotency_key: str
    action: str = "value"
    value: str = ""
    prefilled: str | None = None
    duration_ms: str | None = None


@router.post(
    "/review/{task_id}",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": ReviewForm.model_json_schema()}
            },
        }
    },
)
async def review_submit(request: Request, task_id: str) -> Response:
    """An answer from the one-by-one page: the form posted, or the script in the background."""
    form = await request.form()
    # As FastAPI reads a form: an empty field is a field not sent.
    sent = {k: v for k, v in form.items() if v != ""}
    response: Response = await run_in_threadpool(_review_submit, request, task_id, sent)
    return response


def _review_submit(request: Request, task_id: str, sent: dict[str, Any]) -> Response:
    # The session first: an anonymous post goes to sign-in whatever its form holds.
    person, expected = page_session(request)
    need_role(person, Role.WORKER)
    try:
        form = ReviewForm.model_validate(sent)
    except ValidationError as e:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in e.errors()]
        raise RequestValidationError(errors, body=sent) from e
    check_csrf(form.csrf, expected)
    action, value, idempotency_key = form.action, form.value, form.idempotency_key
    prefilled, duration_ms = form.prefilled, form.duration_ms
    db, crowd = db_of(request), settings_of(request).crowd
    outcome = submit_answer(
        db,
        task_id,
        person.id,
        action,
        value,
        idempotency_key,
        crowd,
        prefilled=prefilled,
        duration_ms=duration_from_form(duration_ms),
    )
    settle_side_effects(request, outcome.completed_page_id, *outcome.also_completed)
    if not wants_json(request):
        return RedirectResponse("/review", status_code=303)
    # The script showed a task in reserve at once; it gets the reserve topped up from here
    # (only tasks it does not have yet carry their snippet).
    # A worker at work keeps the reserve: its leases are renewed with each answer.
    renew_leases(db, person.id, crowd)
    # The whole reserve the phone keeps for a dead spot (crowd.offline_reserve).
    count = 1 + crowd.offline_reserve
    held = claim_tasks(db, person.id, crowd, count=count, draws=draws_of(request))
    known = set(request.headers.get("x-kerani-held", "").split(","))
    rates = rates_of(request, [t for t in held if t.task_id not in known])
    progress = progress_of(db, person)
    return JSONResponse(
        {
            "recorded": outcome.recorded,
            "upcoming": [
                task_json(request, person, t, rates[t.task_id])
                if t.task_id not in known
                else {"task_id": t.task_id}
                for t in held
            ],
            "progress": progress,
        }
    )


@router.get("/snippets/{task_id}")
def snippet(request: Request, task_id: str) -> Response:
    """The snippet of a task leased to this worker (the script's reserve fetches it)."""
    return snippet_response(request, page_session(request)[0], task_id)


@router.get("/column", response_class=HTMLResponse)
def column_page(request: Request, session: PageSession) -> Response:
    """Column mode: a column of snippets of one field type, each with its guess."""
    person, csrf = session
    need_role(person, Role.WORKER)
    if not passed_practice(request, person):
        return practice_entry(request, person)
    db, settings = db_of(request), settings_of(request)
    # The field type with the most work waiting: a long column is the fastest to check.
    kinds = offered_kinds(db, person.id, settings.crowd)
    tasks = []
    if kinds:
        kind = kinds[0][0]
        size = settings.review.column_size
        tasks = claim_tasks(
            db, person.id, settings.crowd, size, field_kind=kind, draws=draws_of(request)
        )
    if not tasks:
        return render(request, "no_tasks.html", {}, person, csrf)
    label, hint = label_of(request, tasks[0], person.language)
    rows = [{"task": t, "snippet_src": inline_snippet(request, person, t)} for t in tasks]
    rates = rates_of(request, tasks)
    context = {
        "rows": rows,
        "label": label,
        "hint": hint,
        "rate": price(rates[tasks[0].task_id]),
        "column_total": price(sum(rates.values())),
        "column_key": secrets.token_urlsafe(16),
        "today": today(db, person.id),
    }
    return render(request, "column.html", context, person, csrf)


@router.post("/column")
async def column_submit(request: Request, session: PageSession) -> Response:
    """A column's answers, one per row; a row whose lease was lost is left out."""
    person, expected = session
    need_role(person, Role.WORKER)
    db, crowd = db_of(request), settings_of(request).crowd
    form = await request.form()
    check_csrf(str(form.get("csrf", "")), expected)
    column_key = str(form.get("column_key", ""))
    if not 8 <= len(column_key) <= 40:
        raise BadInputError("column_key must be 8 to 40 characters")
    task_ids = [str(v) for v in form.getlist("task_id")]
    values = [str(v) for v in form.getlist("value")]
    unreadable = {str(v) for v in form.getlist("unreadable")}
    if len(task_ids) != len(values) or len(task_ids) > MAX_COLUMN_ROWS:
        raise BadInputError(
            f"the column form must have one value per task (at most {MAX_COLUMN_ROWS})"
        )
    # The guess each row showed; a form without them (an older page) says nothing.
    prefilled: list[str | None] = [str(v) for v in form.getlist("prefilled")]
    if not prefilled:
        prefilled = [None] * len(task_ids)
    elif len(prefilled) != len(task_ids):
        raise BadInputError("the column form must have one prefilled guess per task")
    # No duration: the screen's time divided by its rows would not be any row's time.
    refusals: list[ForbiddenError] = []
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
                crowd,
                prefilled=prefilled[i],
            )
        except ForbiddenError as e:
            refusals.append(e)  # that lease was lost (expired or taken): the others count
            continue
        await run_in_threadpool(
            settle_side_effects, request, outcome.completed_page_id, *outcome.also_completed
        )
    if refusals and len(refusals) == len(task_ids):
        # Not one row was the worker's (a paused account, or a screen left too long): say
        # so, rather than show the next column as if the answers had counted.
        raise refusals[0]
    return RedirectResponse("/column", status_code=303)


@router.get("/me", response_class=HTMLResponse)
def me_page(request: Request, session: PageSession, welcome: int = 0) -> Response:
    """The worker's own page: tasks done, accuracy, earnings."""
    person, csrf = session
    need_role(person, Role.WORKER)
    crowd = settings_of(request).crowd
    me = my_work(db_of(request), person.id, crowd)
    context = {
        "me": me,
        "practised": passed_practice(request, person),
        "welcome": bool(welcome),
        "price": price,
        "ringgit": ringgit,
        "hold_days": crowd.pay_hold_days,
    }
    return render(request, "me.html", context, person, csrf)


@router.get("/me/statement/{week}", response_class=HTMLResponse)
def statement_page(request: Request, session: PageSession, week: str) -> Response:
    """A worker's own weekly statement: every answer's pay, where it stands and why."""
    person, csrf = session
    need_role(person, Role.WORKER)
    return statement_view(request, person, csrf, person.id, week, back="/me")


def statement_view(
    request: Request, person: Person, csrf: str, worker_id: int, week: str, back: str
) -> Response:
    """The statement page of one worker's week (theirs, or any worker's for an operator)."""
    crowd = settings_of(request).crowd
    st = statement(db_of(request), worker_id, parse_week(week), crowd)
    first, last = malaysian_days(st.start, st.end)
    context = {
        "st": st,
        "price": price,
        "ringgit": ringgit,
        "start": f"{first:%d.%m.%Y}",
        "end": f"{last:%d.%m.%Y}",
        "back": back,
    }
    return render(request, "statement.html", context, person, csrf)
