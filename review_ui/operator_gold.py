"""The operator's gold page: key a sampled field blind, as one of its two rounds.

Blind means the page shows the snippet and the field's label only: never the OCR's guess,
a worker's answer, nor the other round's keying. Each keying is the field's next missing
round, by the signed-in operator; where both rounds agree the field becomes gold
(kerani.microtasks.gold). Every route needs a signed-in operator.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kerani.core.errors import BadInputError, TemplateError
from kerani.core.vocabulary import Role
from kerani.microtasks.gold import (
    KeyingField,
    KeyingOutcome,
    gold_counts,
    keying_field,
    log_keying_view,
    next_field_for_keying,
    record_next_keying,
)
from kerani.review_ui.i18n import translator
from kerani.review_ui.web import (
    PageSession,
    check_csrf,
    db_of,
    form_template,
    need_role,
    render,
    settle_side_effects,
    snippet_media_type,
    stores_of,
)

router = APIRouter()

# What the page says after a keying (?done=...): the only values it shows.
DONE = {
    "recorded": "gold_done_recorded",
    "gold": "gold_done_gold",
    "agreed": "gold_done_agreed",
    "disagreed": "gold_done_disagreed",
}


def _label(request: Request, field: KeyingField, lang: str) -> tuple[str, str | None]:
    """The field's label in `lang` and its format hint (what workers see, less the guess)."""
    try:
        template = form_template(request, field.template, field.template_id)
        # A template-free page's fields are its lines, and its key fields (company, total).
        spec = (
            template.field(field.field_name)
            if template.kind == "form"
            else template.spec(field.field_name)
        )
    except TemplateError:
        return field.field_name, None
    if spec is None:
        return translator(lang)("text_line"), None
    return getattr(spec.label, lang), spec.format_hint


def _done(outcome: KeyingOutcome) -> str:
    if not outcome.complete:
        return "recorded"
    if not outcome.agreed:
        return "disagreed"
    return "gold" if outcome.gold_value is not None else "agreed"


@router.get("/operator/gold", response_class=HTMLResponse)
def gold_page(request: Request, session: PageSession, done: str = "") -> Response:
    """One field to key blind, with the counts of gold and of keying still to do."""
    person, csrf = session
    need_role(person, Role.OPERATOR)
    db = db_of(request)
    field_id = next_field_for_keying(db, person.id)
    field = keying_field(db, field_id) if field_id is not None else None
    label, hint = _label(request, field, person.language) if field else ("", None)
    context = {
        "field": field,
        "label": label,
        "hint": hint,
        "counts": gold_counts(db),
        "done": DONE.get(done),
    }
    return render(request, "operator_gold.html", context, person, csrf)


@router.post("/operator/gold")
def gold_keyed(
    request: Request,
    session: PageSession,
    csrf: Annotated[str, Form()],
    field_id: Annotated[str, Form()],
    action: Annotated[str, Form()] = "value",
    value: Annotated[str, Form()] = "",
) -> Response:
    """Record the operator's keying as the field's next missing round."""
    person, expected = session
    need_role(person, Role.OPERATOR)
    check_csrf(csrf, expected)
    if not re.fullmatch(r"[0-9]{1,12}", field_id):
        raise BadInputError(f"field_id {field_id!r} is not a field number")
    outcome = record_next_keying(db_of(request), int(field_id), person.id, action, value)
    settle_side_effects(request, outcome.completed_page_id)
    return RedirectResponse(f"/operator/gold?done={_done(outcome)}", status_code=303)


@router.get("/operator/gold/snippets/{field_id}")
def gold_snippet(request: Request, field_id: int, session: PageSession) -> Response:
    """The snippet of a field staff may key (never a restricted one); the view is audited."""
    person, _csrf = session
    need_role(person, Role.OPERATOR)
    db = db_of(request)
    field = keying_field(db, field_id)
    log_keying_view(db, person.id, field_id)
    image = stores_of(request).blobs.get(field.snippet_key)
    return Response(
        image,
        media_type=snippet_media_type(image),
        headers={"Cache-Control": "private, no-store"},
    )
