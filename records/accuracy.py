"""Estimated accuracy of a batch's values by where they came from, without ground truth.

Each source gets its own estimator, as a Zooniverse reducer would: a pure function of the
evidence, and one reader that gathers that evidence from the database.

- ocr (auto-accepted): the share right among audited auto-accepted fields (sent to people
  blind anyway) of the same templates, across every batch, since the auto-accept rule is
  per template; a Wilson 95% interval.
- human and arbitrated: the mean of the settled values' posteriors under the consensus
  model, the expected share right if the model is calibrated; the interval is that of a
  Poisson-binomial sum of those fields (each right with its own posterior).
- gold: keyed twice by staff, both keyings agreeing; taken as right, not measured.

How far the human figure can be trusted depends on how blind the votes were: a worker who
confirms a pre-filled guess misses errors blind keying catches, so `prefilled_confirmations`
counts the settled fields whose agreement rests partly on such a confirmation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, or_, select

from kerani.core.errors import BadInputError
from kerani.core.stats import wilson_interval
from kerani.core.vocabulary import AnswerKind, FieldStatus, ValueKind, ValueSource
from kerani.microtasks.consensus import answer_key
from kerani.storage import schema

Z95 = 1.96  # standard deviations of a two-sided 95% interval
NOT_ENOUGH = "not enough evidence yet"  # the start of the evidence text when too little
MIN_AUDITED = 20  # audited auto-accepted fields before the OCR's accuracy is estimated
MIN_FIELDS = 20  # settled fields with a posterior before people's accuracy is estimated


@dataclass(frozen=True)
class SourceEstimate:
    """One source's share of right values: estimate and 95% interval, or None when unknown."""

    source: str  # a ValueSource
    fields: int  # fields of the batch whose value came from this source
    estimate: float | None
    low: float | None
    high: float | None
    evidence: str  # what the estimate rests on, in words; starts with NOT_ENOUGH when too little


def _fields_word(n: int) -> str:
    return f"{n} field" if n == 1 else f"{n} fields"


def ocr_estimate(
    audited_right: int,
    audited: int,
    *,
    fields: int = 0,
    templates: Sequence[str] = (),
    min_audited: int = MIN_AUDITED,
) -> SourceEstimate:
    """Auto-accepted fields: the audited share right, with its Wilson 95% interval."""
    if not 0 <= audited_right <= audited:
        raise BadInputError(f"audited_right must be between 0 and audited ({audited})")
    where = f" (template {', '.join(templates)})" if templates else ""
    if audited < min_audited:
        return SourceEstimate(
            ValueSource.OCR,
            fields,
            None,
            None,
            None,
            f"{NOT_ENOUGH}: {audited} audited auto-accepted fields{where}, {min_audited} needed",
        )
    low, high = wilson_interval(audited_right, audited, z=Z95)
    return SourceEstimate(
        ValueSource.OCR,
        fields,
        audited_right / audited,
        low,
        high,
        f"{audited_right} of {audited} audited auto-accepted fields right{where}",
    )


def people_estimate(
    posteriors: Sequence[float],
    *,
    source: str = ValueSource.HUMAN,
    fields: int | None = None,
    min_fields: int = MIN_FIELDS,
) -> SourceEstimate:
    """Fields settled by people: mean posterior, and the Poisson-binomial 95% interval.

    `fields` is how many fields came from `source` (default: one per posterior); those
    settled before posteriors were kept are named in the evidence and not counted.
    """
    if any(not 0.0 <= p <= 1.0 for p in posteriors):
        raise BadInputError("every posterior must be between 0 and 1")
    n = len(posteriors)
    total = n if fields is None else fields
    unknown = total - n
    without = (
        f"; {_fields_word(unknown)} settled without a posterior not counted" if unknown else ""
    )
    if n == 0 and unknown:
        return SourceEstimate(
            source,
            total,
            None,
            None,
            None,
            f"{NOT_ENOUGH}: none of the {_fields_word(total)} has a model posterior "
            "(settled before posteriors were kept)",
        )
    if n < min_fields:
        return SourceEstimate(
            source,
            total,
            None,
            None,
            None,
            f"{NOT_ENOUGH}: {_fields_word(n)} with a model posterior, {min_fields} needed{without}",
        )
    mean = sum(posteriors) / n
    # Each field is right with its own posterior p: the count right is Poisson-binomial,
    # with variance sum p(1-p); the share right has that over n squared.
    spread = Z95 * math.sqrt(sum(p * (1.0 - p) for p in posteriors)) / n
    return SourceEstimate(
        source,
        total,
        mean,
        max(0.0, mean - spread),
        min(1.0, mean + spread),
        f"model estimate from {n} fields' votes{without}",
    )


def arbitrated_estimate(
    posteriors: Sequence[float], *, fields: int | None = None, min_fields: int = MIN_FIELDS
) -> SourceEstimate:
    """Fields a trusted worker decided: the same model estimate as people_estimate."""
    return people_estimate(
        posteriors, source=ValueSource.ARBITRATED, fields=fields, min_fields=min_fields
    )


def staff_estimate(fields: int) -> SourceEstimate:
    """Gold fields, keyed twice by staff who agreed: taken as right, so no estimate is made."""
    # Two blind staff keyings that agree are the strongest evidence the engine has; nothing
    # independent checks them, so the report states what they are instead of a number.
    return SourceEstimate(
        ValueSource.GOLD,
        fields,
        None,
        None,
        None,
        "keyed twice by staff, both keyings agreed: taken as right, not measured",
    )


def _scope(batch_id: str | None, page_ids: Sequence[int] | None) -> list[Any]:
    if batch_id is None and page_ids is None:
        raise BadInputError("give a batch_id or page_ids to say whose fields to estimate")
    p = schema.pages
    where: list[Any] = []
    if batch_id is not None:
        where.append(p.c.batch_id == batch_id)
    if page_ids is not None:
        where.append(p.c.id.in_([int(i) for i in page_ids]))
    return where


def _same(kind: str, value: str | None, ocr_text: str, field_type: str) -> bool:
    """A settled text value (or an answer) equals the OCR's guess, as consensus compares them."""
    return value is not None and answer_key(kind, value, field_type) == answer_key(
        AnswerKind.VALUE, ocr_text, field_type
    )


def source_estimates(
    db: Engine, *, batch_id: str | None = None, page_ids: Sequence[int] | None = None
) -> list[SourceEstimate]:
    """Each source's estimated accuracy over the fields of a batch (or of those pages)."""
    f, p = schema.fields, schema.pages
    where = _scope(batch_id, page_ids)
    with db.connect() as conn:
        rows = conn.execute(
            select(f.c.source, f.c.posterior, p.c.template)
            .join(p, p.c.id == f.c.page_id)
            .where(
                *where,
                f.c.source.is_not(None),
                f.c.status.in_([FieldStatus.AUTO_ACCEPTED, FieldStatus.SETTLED, FieldStatus.GOLD]),
            )
        ).all()
        # The auto-accept rule is per template: its audits in every batch measure it.
        templates = sorted(
            conn.execute(select(p.c.template).where(*where).distinct()).scalars().all()
        )
        audited = conn.execute(
            select(f.c.kind, f.c.ocr_text, f.c.value, f.c.value_kind)
            .join(p, p.c.id == f.c.page_id)
            .where(
                p.c.template.in_(templates),
                f.c.audit.is_(True),
                f.c.status == FieldStatus.SETTLED,
            )
        ).all()
    count = {s: 0 for s in ValueSource}
    posteriors: dict[str, list[float]] = {ValueSource.HUMAN: [], ValueSource.ARBITRATED: []}
    for row in rows:
        source = ValueSource(row.source)
        count[source] += 1
        if source in posteriors and row.posterior is not None:
            posteriors[source].append(float(row.posterior))
    right = sum(
        a.value_kind == ValueKind.TEXT and _same(AnswerKind.VALUE, a.value, a.ocr_text, a.kind)
        for a in audited
    )
    return [
        ocr_estimate(right, len(audited), fields=count[ValueSource.OCR], templates=templates),
        people_estimate(posteriors[ValueSource.HUMAN], fields=count[ValueSource.HUMAN]),
        arbitrated_estimate(
            posteriors[ValueSource.ARBITRATED], fields=count[ValueSource.ARBITRATED]
        ),
        staff_estimate(count[ValueSource.GOLD]),
    ]


def prefilled_confirmations(
    db: Engine, *, batch_id: str | None = None, page_ids: Sequence[int] | None = None
) -> int:
    """Fields settled by people whose winning answers include a confirmation of the OCR guess.

    A confirmation is an answer given with the guess pre-filled (answers.blind false, or
    NULL for answers from before blind leases were recorded) that equals the guess.
    """
    f, p, t, a = schema.fields, schema.pages, schema.tasks, schema.answers
    where = _scope(batch_id, page_ids)
    with db.connect() as conn:
        rows = conn.execute(
            select(f.c.id, f.c.kind, f.c.ocr_text, f.c.value, a.c.value.label("answer"))
            .join(p, p.c.id == f.c.page_id)
            .join(t, t.c.field_id == f.c.id)
            .join(a, a.c.task_id == t.c.id)
            .where(
                *where,
                f.c.status == FieldStatus.SETTLED,
                # Staff gold settles on the staff's keyings, whatever workers answered.
                f.c.source.in_([ValueSource.HUMAN, ValueSource.ARBITRATED]),
                f.c.value_kind == ValueKind.TEXT,
                a.c.kind == AnswerKind.VALUE,
                or_(a.c.blind.is_(None), a.c.blind.is_(False)),
            )
        ).all()
    # The settled value equals the guess, and so does the pre-filled answer: then that
    # answer is one of the winning votes.
    return len(
        {
            r.id
            for r in rows
            if _same(AnswerKind.VALUE, r.value, r.ocr_text, r.kind)
            and _same(AnswerKind.VALUE, r.answer, r.ocr_text, r.kind)
        }
    )
