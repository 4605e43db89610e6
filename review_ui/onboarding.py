"""A new worker's way in: the illustrated introduction (/welcome/1..4) and the practice round
(/practice), which they pass before any paid work (microtasks.practice; claim_tasks refuses
them until then). Every route needs a signed-in worker.

The pages work without script: each practice answer is a form post, answered by a page of
feedback (right, or what the snippet says against what was typed, with the tip of its kind).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kerani.core.errors import NotFoundError
from kerani.core.vocabulary import AnswerKind, Role
from kerani.microtasks.practice import (
    PracticeAnswer,
    PracticeItem,
    PracticeState,
    answer_practice,
    has_passed_practice,
    has_started_practice,
    needed_right,
    practice_item,
    practice_state,
)
from kerani.people.workers import Person
from kerani.review_ui.i18n import translator
from kerani.review_ui.web import (
    PageSession,
    check_csrf,
    db_of,
    need_role,
    render,
    settings_of,
)

router = APIRouter()

WELCOME_STEPS = 4
# The tip shown for each field type (help on the review page, feedback in practice).
TIP_KEYS = {
    "amount": "tip_amount",
    "date": "tip_date",
    "ic_number": "tip_ic_number",
    "line": "tip_text",
    "text": "tip_text",
    "choice": "tip_text",
    "phone": "tip_phone",
    "postcode": "tip_postcode",
    "number": "tip_number",
}


def tip_key(field_type: str) -> str:
    """The message key of the tip for a field type."""
    return TIP_KEYS.get(field_type, "tip_other")


def practice_entry(request: Request, person: Person) -> Response:
    """Where a worker who has not passed practice is sent instead of paid work: the
    introduction, or their practice round once they have started it."""
    started = has_started_practice(db_of(request), person.id)
    return RedirectResponse("/practice" if started else "/welcome/1", status_code=303)


def passed_practice(request: Request, person: Person) -> bool:
    """Whether the worker passed the practice round."""
    return has_passed_practice(db_of(request), person.id)


@router.get("/welcome/{step}", response_class=HTMLResponse)
def welcome(request: Request, session: PageSession, step: int) -> Response:
    """One screen of the introduction: snippets, formats, Unreadable and Blank, pay."""
    person, csrf = session
    need_role(person, Role.WORKER)
    if not 1 <= step <= WELCOME_STEPS:
        raise NotFoundError(f"the introduction has screens 1 to {WELCOME_STEPS}")
    crowd = settings_of(request).crowd
    context = {
        "step": step,
        "steps": WELCOME_STEPS,
        "hold_days": crowd.pay_hold_days,
        # Said without cutting the snippets (the first practice page of a process does).
        "items": crowd.practice_items,
        "needed": needed_right(crowd.practice_items, crowd.practice_pass_share),
        "tips": ["tip_amount", "tip_date", "tip_ic_number", "tip_text"],
    }
    return render(request, "welcome.html", context, person, csrf)


def _snippet_src(item: PracticeItem) -> str:
    return f"data:image/webp;base64,{base64.b64encode(item.snippet).decode()}"


def _item_context(person: Person, state: PracticeState, item: PracticeItem) -> dict[str, object]:
    label = item.label(person.language)
    return {
        "item": item,
        "label": label,
        "position": [i.id for i in state.items].index(item.id) + 1,
        "total": len(state.items),
        "snippet_src": _snippet_src(item),
        "help_kind": item.field_type,
        "tip": tip_key(item.field_type),
    }


@router.get("/practice", response_class=HTMLResponse)
def practice_page(request: Request, session: PageSession, again: int = 0) -> Response:
    """The next item of the worker's round, or the round's result once it is complete
    (`again`: the first item of a new round, after a failed one)."""
    person, csrf = session
    need_role(person, Role.WORKER)
    state = practice_state(db_of(request), person.id, settings_of(request).crowd)
    round_no = state.round
    item = state.next_item
    if item is None and again and not state.round_passed:
        round_no, item = state.round + 1, state.items[0]
    if item is None:
        context = {"state": state, "passed": state.round_passed or state.passed_at is not None}
        return render(request, "practice_result.html", context, person, csrf)
    context = _item_context(person, state, item) | {"round": round_no}
    return render(request, "practice.html", context, person, csrf)


@router.post("/practice")
def practice_answer(
    request: Request,
    session: PageSession,
    csrf: Annotated[str, Form()],
    round: Annotated[int, Form()],
    item: Annotated[str, Form(max_length=40)],
    action: Annotated[str, Form(max_length=20)] = AnswerKind.VALUE,
    value: Annotated[str, Form()] = "",
) -> Response:
    """Keep a practice answer and show its feedback (a page of its own, so that a reload
    shows it again rather than answering twice)."""
    person, expected = session
    need_role(person, Role.WORKER)
    check_csrf(csrf, expected)
    answer_practice(
        db_of(request), person.id, round, item, action, value, settings_of(request).crowd
    )
    return RedirectResponse(f"/practice/feedback?round={round}&item={item}", status_code=303)


def explanation(t: Callable[..., str], item: PracticeItem, answer: PracticeAnswer) -> str:
    """What the feedback says of an answer: what the snippet shows, against what was given."""
    pressed = t(f"pr_pressed_{answer.kind}") if answer.kind != AnswerKind.VALUE else ""
    if answer.correct:
        if item.kind == AnswerKind.VALUE:
            return t("pr_says", value=item.value)
        return t(f"pr_right_{item.kind}")
    if item.kind == AnswerKind.UNREADABLE:
        return t("pr_wrong_unreadable", typed=answer.value or pressed)
    if item.kind == AnswerKind.BLANK:
        return t("pr_wrong_blank_typed", typed=answer.value or pressed)
    if answer.kind != AnswerKind.VALUE:
        return t("pr_wrong_not_value", value=item.value, pressed=pressed)
    if not answer.value.strip():
        return t("pr_wrong_empty", value=item.value)
    return t("pr_wrong_value", value=item.value, typed=answer.value)


@router.get("/practice/feedback", response_class=HTMLResponse)
def practice_feedback(request: Request, session: PageSession, round: int, item: str) -> Response:
    """Whether an answer was right; if not, what the snippet says and the tip of its kind."""
    person, csrf = session
    need_role(person, Role.WORKER)
    state = practice_state(db_of(request), person.id, settings_of(request).crowd, round)
    the_item = practice_item(item)
    answer = state.answers.get(the_item.id)
    if answer is None:
        raise NotFoundError("no such practice answer")
    context = _item_context(person, state, the_item) | {
        "answer": answer,
        "explain": explanation(translator(person.language), the_item, answer),
        "last": state.complete,
    }
    return render(request, "practice_feedback.html", context, person, csrf)
