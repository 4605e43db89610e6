"""Routing: auto-accept a field only when the evidence says it is right, else make a task.

With a calibration for the page's template (ocr.calibration: refitted from fields people
settled, kerani.microtasks.refit, else bundled), a field is auto-accepted exactly when its
calibrated rule says so: its (type, evidence) group has a confidence floor and the field is
above it and passes its validator. A group the calibration has no floor for never
auto-accepts. Without a calibration nothing is auto-accepted, unless an operator set a
hand-set confidence floor (`KERANI_OCR_AUTO_ACCEPT_CONFIDENCE`): then it applies to typed
fields with a passing validator, and free text lines and key fields (values that rules
chose among a template-free page's lines, forms.key_fields) are still never auto-accepted.

Audit sampling: a share of the fields a rule accepts still goes to people, marked
`fields.audit` (their leases are blind), so that the refit learns how right the rule is on
the fields it no longer shows anyone; a larger share while the rule is young.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy import Engine, and_, insert, select

from kerani.core.settings import CrowdSettings
from kerani.core.text import fold_whitespace
from kerani.forms.key_fields import is_key_evidence
from kerani.forms.validators import validate
from kerani.microtasks.tasks import new_task_id
from kerani.ocr.calibration import Calibration, GroupRule
from kerani.storage import schema
from kerani.storage.database import utcnow


@dataclass(frozen=True)
class Decision:
    """Whether a field is auto-accepted, why, and the calibrated rule that accepted it."""

    accept: bool
    reason: str
    rule: GroupRule | None = None  # None: no calibrated rule (the hand-set floor, or none)


def decide(
    field_type: str,
    ocr_text: str,
    confidence: float,
    threshold: float | None,
    calibration: Calibration | None = None,
    evidence: str = "page",
) -> Decision:
    """Auto-accept only a non-empty guess that passes its validator with enough evidence.

    `threshold` is the hand-set floor used without a calibration; None (the default
    setting) means that without a calibration nothing is auto-accepted.
    """
    if not ocr_text.strip():
        return Decision(False, "nothing was read")
    if calibration is not None:
        return _decide_calibrated(field_type, ocr_text, confidence, calibration, evidence)
    if threshold is None:
        # A floor nobody measured is no evidence: people settle every field until a refit
        # (or a bundled calibration) says which groups the OCR gets right.
        return Decision(False, "no calibration for this template, and no hand-set floor")
    if field_type == "line":
        # A free text line has no validator to back the OCR up, and Tesseract's confidence
        # alone is a poor guide: people check every line until routing is calibrated.
        return Decision(False, "free text lines are not auto-accepted without calibration")
    if is_key_evidence(evidence):
        # Its confidence is a rule's guess that this is the right line, not an engine's
        # reading that a hand-set floor was meant for: only a calibration of key fields
        # (their own evidence groups, never the lines') can say a rule picks right.
        return Decision(False, "key fields are not auto-accepted without calibration")
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
        rule,
    )


def audit_probability(rule: GroupRule | None, crowd: CrowdSettings) -> float:
    """The chance that a field this rule accepts goes to people anyway, as an audit."""
    # A young rule (fitted on few accepted fields), or the hand-set floor that no data
    # backs, is checked more often than one with a long record.
    if rule is None or rule.accepted < crowd.audit_young_below:
        return crowd.audit_share_young
    return crowd.audit_share


def ocr_group(template: str, field_type: str, evidence: str) -> str:
    """The group whose record weighs a field's OCR guess: what a template's guesses of one
    type, read on one evidence, have proved worth once people checked them."""
    return f"{template}|{field_type}|{evidence}"[:200]


def route_page(
    db: Engine,
    page_id: int,
    threshold: float | None = None,
    calibration: Calibration | None = None,
    *,
    crowd: CrowdSettings | None = None,
    rng: random.Random | None = None,
) -> tuple[int, int]:
    """Route every pending field of a page; return (auto-accepted, tasks created).

    `calibration` is the page's template's calibrated rule; without one the hand-set
    `threshold` applies if given, else nothing is auto-accepted. With `crowd`, a field the
    rule accepts goes to people instead with its audit share (`audit_probability`, drawn
    from `rng`, by default seeded by the page), marked `fields.audit`; without `crowd`
    (benchmarks, tests) nothing is audited.
    Idempotent: fields already routed are left alone, and a field never gets two tasks.
    """
    # Without an rng, a page's draws are seeded by its id: routing the same pages gives the
    # same audits on every run (the seeded demo repeats its figures), at the same share.
    draw = rng if rng is not None else random.Random(f"kerani-audit-{page_id}")
    accepted = created = 0
    fields, guess = schema.fields, schema.ocr_readings
    with db.begin() as conn:
        pending = conn.execute(
            select(fields, guess.c.evidence)
            # The guess reading holds the evidence the calibration groups by; a field with
            # none recorded counts as read from the page alone.
            .outerjoin(guess, and_(guess.c.field_id == fields.c.id, guess.c.is_guess))
            .where(fields.c.page_id == page_id, fields.c.status == "pending")
            # In the order read (the form's), fixed so a seeded `rng` draws the same audits.
            .order_by(fields.c.id)
        ).all()
        template = conn.execute(
            select(schema.pages.c.template).where(schema.pages.c.id == page_id)
        ).scalar_one()
        for f in pending:
            group = ocr_group(template, f.kind, f.evidence or "page")
            d = decide(
                f.kind,
                f.ocr_text,
                f.ocr_confidence,
                threshold,
                calibration,
                f.evidence or "page",
            )
            audit = (
                d.accept and crowd is not None and draw.random() < audit_probability(d.rule, crowd)
            )
            if d.accept and not audit:
                conn.execute(
                    schema.fields.update()
                    .where(schema.fields.c.id == f.id)
                    .values(
                        status="auto_accepted",
                        value=fold_whitespace(f.ocr_text),
                        value_kind="text",
                        source="ocr",
                        agreement=1.0,
                        ocr_group=group,
                    )
                )
                accepted += 1
            else:
                conn.execute(
                    insert(schema.tasks).values(
                        id=new_task_id(), field_id=f.id, status="open", created_at=utcnow()
                    )
                )
                # An audited field goes to people exactly like a doubtful one; its mark
                # makes its leases blind and its settled value a sample for the refit.
                conn.execute(
                    schema.fields.update()
                    .where(schema.fields.c.id == f.id)
                    .values(status="in_review", audit=audit, ocr_group=group)
                )
                created += 1
        conn.execute(
            schema.pages.update()
            .where(schema.pages.c.id == page_id, schema.pages.c.status == "ocred")
            .values(status="routed")
        )
    return accepted, created
