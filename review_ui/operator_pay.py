"""The operator's pay page: rates proposed from measured effort (confirmed here), payouts
made once per week and downloaded as CSV, and any worker's weekly statement."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kerani.core.vocabulary import Role
from kerani.microtasks.ledger import price, ringgit
from kerani.microtasks.pay_rates import confirm_rates, propose_rates
from kerani.microtasks.statements import (
    make_payout,
    parse_week,
    payout,
    payouts,
    week_label,
    week_start,
)
from kerani.records.payout_sheet import payout_csv, payout_filename
from kerani.review_ui.web import PageSession, check_csrf, db_of, need_role, render, settings_of
from kerani.review_ui.worker_pages import statement_view
from kerani.storage.database import utcnow

router = APIRouter()


def _last_full_week() -> str:
    return week_label(week_start(utcnow()) - timedelta(days=7))


def _notice(request: Request) -> tuple[str, dict[str, object]] | None:
    """What the last action did, from the query string it redirected to (PRG: a reload
    does not post again)."""
    q = request.query_params
    if q.get("confirmed"):
        return ("op_pay_confirmed", {"changes": q["confirmed"][:500]})
    if q.get("payout", "").isdigit():
        found = payout(db_of(request), int(q["payout"]))
        week = week_label(found.period_end - timedelta(days=7))
        if q.get("again"):
            return ("op_payout_again", {"week": week, "id": found.id})
        total = ringgit(found.total_sen)
        return ("op_payout_made", {"id": found.id, "workers": len(found.rows), "total": total})
    return None


@router.get("/operator/pay", response_class=HTMLResponse)
def pay_page(request: Request, session: PageSession) -> Response:
    """Rates now and proposed (per hour at the median time, cost per field), and payouts."""
    person, csrf = session
    need_role(person, Role.OPERATOR)
    crowd = settings_of(request).crowd
    proposals = propose_rates(db_of(request), crowd)
    context = {
        "proposals": proposals,
        "payouts": payouts(db_of(request)),
        "any_proposed": any(p.proposed_sen is not None for p in proposals),
        "floor": ringgit(crowd.pay_floor_sen_per_hour),
        "cap": crowd.pay_max_timed_seconds,
        "min_timed": crowd.pay_min_timed_answers,
        "last_week": _last_full_week(),
        "week_label": week_label,
        "price": price,
        "ringgit": ringgit,
        "notice": _notice(request),
    }
    return render(request, "operator_pay.html", context, person, csrf)


@router.post("/operator/pay/rates")
def confirm(request: Request, session: PageSession, csrf: Annotated[str, Form()]) -> Response:
    """Put the proposed rates in force, as proposed now from the same measurements."""
    person, expected = session
    need_role(person, Role.OPERATOR)
    check_csrf(csrf, expected)
    crowd = settings_of(request).crowd
    chosen = confirm_rates(db_of(request), person.id, propose_rates(db_of(request), crowd), crowd)
    changes = ", ".join(
        f"{p.field_type} {price(p.current_sen)} → {price(p.proposed_sen or 0)}" for p in chosen
    )
    return RedirectResponse(f"/operator/pay?{urlencode({'confirmed': changes})}", status_code=303)


@router.post("/operator/payouts")
def make(
    request: Request,
    session: PageSession,
    csrf: Annotated[str, Form()],
    week: Annotated[str, Form(max_length=10)],
) -> Response:
    """Make the payout up to the end of `week` (once: again, the same payout is shown)."""
    person, expected = session
    need_role(person, Role.OPERATOR)
    check_csrf(csrf, expected)
    end = parse_week(week) + timedelta(days=7)
    made = make_payout(db_of(request), person.id, end, settings_of(request).crowd)
    again = "" if made.new else "&again=1"
    return RedirectResponse(f"/operator/pay?payout={made.id}{again}", status_code=303)


@router.get("/operator/payouts/{payout_id}.csv")
def payout_sheet(request: Request, session: PageSession, payout_id: int) -> Response:
    """A payout's sheet: one row per worker, amounts in sen and ringgit."""
    need_role(session[0], Role.OPERATOR)
    found = payout(db_of(request), payout_id)
    return Response(
        payout_csv(found),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{payout_filename(found)}"',
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/operator/workers/{worker_id}/statement/{week}", response_class=HTMLResponse)
def worker_statement(request: Request, session: PageSession, worker_id: int, week: str) -> Response:
    """Any worker's weekly statement, as the worker sees it."""
    person, csrf = session
    need_role(person, Role.OPERATOR)
    return statement_view(request, person, csrf, worker_id, week, back="/operator/workers")
