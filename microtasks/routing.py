"""Routing: auto-accept a field only when the evidence says it is right, else make a task.

With a calibration for the page's template (ocr.calibration, fitted on data with ground
truth to a target accuracy), a field is auto-accepted exactly when its calibrated rule
says so: its (type, evidence) group has a confidence floor and the field is above it and
passes its validator. A group the calibration has no floor for never auto-accepts.
Without any calibration the old hand-set rule applies to typed fields (validator and a
confidence floor), and free text lines are never auto-accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, and_, insert, select

from kerani.core.text import fold_whitespace
from kerani.forms.validators import validate
from kerani.microtasks.tasks import new_task_id
from kerani.ocr.calibration import Calibration
from kerani.storage import schema
from kerani.storage.database import utcnow


@dataclass(frozen=True)
class Decision:
    """Whether a field is auto-accepted, and why."""

    accept: bool
    reason: str


def decide(
    field_type: str,
    ocr_text: str,
    confidence: float,
    threshold: float,
    calibration: Calibration | None = None,
    evidence: str = "page",
) -> Decision:
    """Auto-accept only a non-empty guess that passes its validator with enough evidence."""
    if not ocr_text.strip():
        return Decision(False, "nothing was read")
    if calibration is not None:
        return _decide_calibrated(field_type, ocr_text, confidence, calibration, evidence)
    if field_type == "line":
        # A free text line has no validator to back the OCR up, and Tesseract's confidence
        # alone is a poor guide: people check every line until routing is calibrated.
        return Decision(False, "free text lines are not auto-accepted without calibration")
    problem = validate(field_type, ocr_text)
    if problem is not None:
        return Decision(False, f"fails its validator: {problem}")
    if confidence < threshold:
        return Decision(False, f"confidence {confidence:.0f} below {threshold:.0f}")
    return Decision(True, f"valid and confidence {confidence:.0f} >= {threshold:.0f}")


def _decide_calibrated(
    field_type: str, ocr_text: str, confidence: float, calibration: Calibration, evidence: str
) -> Decision:
    problem = validate(field_type, ocr_text)
    if problem is not None:
        return Decision(False, f"fails its validator: {problem}")
    rule = calibration.rule_for(field_type, evidence)
    if rule is None or rule.min_confidence is None:
        return Decision(
            False, f"no calibrated rule accepts {field_type} fields with evidence {evidence!r}"
        )
    if confidence < rule.min_confidence:
        return Decision(
            False, f"confidence {confidence:.0f} below calibrated {rule.min_confidence:.0f}"
        )
    return Decision(
        True,
        f"calibrated to {calibration.target:.1%}: {evidence}, confidence "
        f"{confidence:.0f} >= {rule.min_confidence:.0f}",
    )


def route_page(
    db: Engine, page_id: int, threshold: float, calibration: Calibration | None = None
) -> tuple[int, int]:
    """Route every pending field of a page; return (auto-accepted, tasks created).

    `calibration` is the page's template's calibrated rule; without one the hand-set
    `threshold` applies. Idempotent: fields already routed are left alone, and a field
    never gets two tasks.
    """
    accepted = created = 0
    fields, guess = schema.fields, schema.ocr_readings
    with db.begin() as conn:
        pending = conn.execute(
            select(fields, guess.c.evidence)
            # The guess reading holds the evidence the calibration groups by; a field with
            # none recorded counts as read from the page alone.
            .outerjoin(guess, and_(guess.c.field_id == fields.c.id, guess.c.is_guess))
            .where(fields.c.page_id == page_id, fields.c.status == "pending")
        ).all()
        for f in pending:
            d = decide(
                f.kind,
                f.ocr_text,
                f.ocr_confidence,
                threshold,
                calibration,
                f.evidence or "page",
            )
            if d.accept:
                conn.execute(
                    schema.fields.update()
                    .where(schema.fields.c.id == f.id)
                    .values(
                        status="auto_accepted",
                        value=fold_whitespace(f.ocr_text),
                        value_kind="text",
                        source="ocr",
                        agreement=1.0,
                    )
                )
                accepted += 1
            else:
                conn.execute(
                    insert(schema.tasks).values(
                        id=new_task_id(), field_id=f.id, status="open", created_at=utcnow()
                    )
                )
                conn.execute(
                    schema.fields.update()
                    .where(schema.fields.c.id == f.id)
                    .values(status="in_review")
                )
                created += 1
        conn.execute(
            schema.pages.update()
            .where(schema.pages.c.id == page_id, schema.pages.c.status == "ocred")
            .values(status="routed")
        )
    return accepted, created
