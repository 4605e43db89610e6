"""Calibration from the crowd's own work: refit each template's auto-accept rule.

A real agency brings no ground truth, so the fields people settled are the truth the rule
is fitted on, but only where that truth does not lean on the OCR's guess: a field counts
(`crowd_samples`) when people settled it (source human or arbitrated) and at least one
answer that agrees with the settled value was keyed blind, or when it was an audit (an
auto-accepted field sent to people blind anyway, `fields.audit`), or when staff keyed it
blind twice (staff gold). A field settled only by confirmations of the pre-filled guess is
no evidence that the guess was right, and truth gold is never used: it is the demo's and
the benchmarks' stand-in, not the agency's documents.

`refit_calibration` fits `ocr.calibration.fit_calibration` on them and stores each refit
in `calibrations` with a line saying what changed; `current_calibration` is what routing
uses: the latest refit, else the bundled or folder calibration, else none. A group's
auto-accept turns on once its Wilson bound passes the target, and off again when audited
fields come back wrong: they are samples with `correct=False` in their group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, func, insert, or_, select

from kerani.core.vocabulary import AnswerKind, FieldStatus, GoldOrigin, ValueKind, ValueSource
from kerani.forms.validators import validate
from kerani.microtasks.consensus import answer_key
from kerani.ocr.calibration import (
    POOLED,
    Calibration,
    GroupRule,
    Sample,
    fit_calibration,
    load_calibration,
)
from kerani.storage import schema
from kerani.storage.database import as_utc, utcnow

__all__ = [
    "Refit",
    "StoredRefit",
    "calibration_history",
    "crowd_samples",
    "current_calibration",
    "refit_all",
    "refit_calibration",
    "templates_with_pages",
]

PEOPLE = (ValueSource.HUMAN, ValueSource.ARBITRATED)


@dataclass(frozen=True)
class Refit:
    """One refit's outcome: whether a rule was stored, from how many fields, what changed."""

    template: str
    refitted: bool  # False: nothing new since the last refit (or no samples yet)
    fields: int  # the samples the stored rule was fitted on
    changes: str
    calibration: Calibration | None  # the template's latest refit (None: never refitted)
    fitted_at: datetime | None


@dataclass(frozen=True)
class StoredRefit:
    """One row of the `calibrations` table, its rule parsed."""

    id: int
    template: str
    fitted_at: datetime
    fields: int
    changes: str
    calibration: Calibration


@dataclass(frozen=True)
class _Observed:
    """A sample with what the change text and the newness check need besides."""

    sample: Sample
    audited: bool
    at: datetime | None  # when it settled (its task), or when staff keyed it


# ---- the samples ----------------------------------------------------------------------------


def _people_settled() -> Any:
    f = schema.fields
    return and_(f.c.status == FieldStatus.SETTLED, f.c.source.in_(PEOPLE))


def _staff_gold() -> Any:
    f = schema.fields
    return and_(
        f.c.source == ValueSource.GOLD,
        f.c.gold_origin == GoldOrigin.STAFF,
        f.c.status.in_([FieldStatus.SETTLED, FieldStatus.GOLD]),
    )


def _settled_key(kind: str, value_kind: str, value: str) -> str:
    """The answer key of a settled value (value_kind text | unreadable | blank)."""
    if value_kind == ValueKind.TEXT:
        return answer_key(AnswerKind.VALUE, value, kind)
    return answer_key(value_kind, "", kind)


def _guess_right(kind: str, guess: str, value_kind: str, value: str) -> bool:
    if value_kind != ValueKind.TEXT:
        # The field holds nothing legible: only a guess of nothing was right.
        return not guess.strip()
    return answer_key(AnswerKind.VALUE, guess, kind) == _settled_key(kind, value_kind, value)


def _observe(conn: Connection, template: str) -> list[_Observed]:
    f, p, g, t, a = (
        schema.fields,
        schema.pages,
        schema.ocr_readings,
        schema.tasks,
        schema.answers,
    )
    gk = schema.gold_keyings
    keyed = (
        select(gk.c.field_id, func.max(gk.c.created_at).label("keyed_at"))
        .group_by(gk.c.field_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            f.c.id,
            f.c.kind,
            f.c.value,
            f.c.value_kind,
            f.c.source,
            f.c.audit,
            f.c.gold_value,
            f.c.ocr_text,
            f.c.ocr_confidence,
            g.c.text.label("guess_text"),
            g.c.confidence.label("guess_confidence"),
            g.c.evidence,
            t.c.settled_at,
            keyed.c.keyed_at,
        )
        .join(p, p.c.id == f.c.page_id)
        .outerjoin(g, and_(g.c.field_id == f.c.id, g.c.is_guess))
        .outerjoin(t, t.c.field_id == f.c.id)
        .outerjoin(keyed, keyed.c.field_id == f.c.id)
        .where(p.c.template == template, or_(_people_settled(), _staff_gold()))
        .order_by(f.c.id)
    ).all()
    # The blind answers of those fields; whether one agrees with the settled value is a
    # comparison of normalised keys, made here rather than in SQL.
    blind: dict[int, list[tuple[str, str]]] = {}
    for field_id, kind, value in conn.execute(
        select(t.c.field_id, a.c.kind, a.c.value)
        .join(t, t.c.id == a.c.task_id)
        .join(f, f.c.id == t.c.field_id)
        .join(p, p.c.id == f.c.page_id)
        .where(
            p.c.template == template,
            _people_settled(),
            a.c.blind.is_(True),
            a.c.kind != AnswerKind.SKIP,
        )
    ).all():
        blind.setdefault(int(field_id), []).append((str(kind), str(value)))
    observed = []
    for r in rows:
        if r.source == ValueSource.GOLD:
            value_kind = str(r.value_kind or ValueKind.TEXT)
            value = str(r.value if r.value is not None else r.gold_value or "")
        else:
            value_kind, value = str(r.value_kind), str(r.value or "")
            settled = _settled_key(r.kind, value_kind, value)
            keyed_blind = any(
                answer_key(k, v, r.kind) == settled for k, v in blind.get(int(r.id), [])
            )
            if not (keyed_blind or r.audit):
                continue
        guess = str(r.guess_text if r.guess_text is not None else r.ocr_text)
        confidence = float(
            r.guess_confidence if r.guess_confidence is not None else r.ocr_confidence
        )
        sample = Sample(
            kind=str(r.kind),
            evidence=str(r.evidence or "page"),
            confidence=confidence,
            valid=validate(r.kind, guess) is None,
            correct=_guess_right(r.kind, guess, value_kind, value),
        )
        times = [as_utc(x) for x in (r.settled_at, r.keyed_at) if x is not None]
        observed.append(_Observed(sample, bool(r.audit), max(times) if times else None))
    return observed


def crowd_samples(db: Engine, template: str) -> list[Sample]:
    """The calibration samples people's blind work gives for one template's fields."""
    with db.connect() as conn:
        return [o.sample for o in _observe(conn, template)]


def _new_since(conn: Connection, template: str, since: datetime) -> bool:
    """Whether any field that could be a sample settled (or was keyed) after `since`."""
    f, p, t, gk = schema.fields, schema.pages, schema.tasks, schema.gold_keyings
    settled_after = exists().where(t.c.field_id == f.c.id, t.c.settled_at > since)
    keyed_after = exists().where(gk.c.field_id == f.c.id, gk.c.created_at > since)
    found = conn.execute(
        select(f.c.id)
        .join(p, p.c.id == f.c.page_id)
        .where(
            p.c.template == template,
            or_(and_(_people_settled(), settled_after), and_(_staff_gold(), keyed_after)),
        )
        .limit(1)
    ).first()
    return found is not None


# ---- what changed ---------------------------------------------------------------------------


def _floor(x: float) -> str:
    return f"{x:.4g}"


def _off_reason(
    key: str, floor: float, observed: Sequence[_Observed], min_samples: int | None
) -> str:
    kind, evidence = key.split("|", 1)
    above = [
        o
        for o in observed
        if o.sample.evidence == evidence
        and (kind == POOLED or o.sample.kind == kind)
        and o.sample.valid
        and o.sample.confidence >= floor
    ]
    errors = sum(1 for o in above if not o.sample.correct)
    audited = [o for o in above if o.audited]
    text = f"{errors} errors in {len(above)} fields at or above {_floor(floor)}"
    if audited:
        wrong = sum(1 for o in audited if not o.sample.correct)
        text += f"; audits: {wrong} wrong of {len(audited)}"
    elif not errors and min_samples is not None and len(above) < min_samples:
        text += f": fewer than {min_samples}"
    return f"off ({text})"


def _describe_changes(
    before: Calibration | None,
    after: Calibration,
    observed: Sequence[_Observed],
    min_samples: int | None,
) -> str:
    """A short line of which groups turned on or off and which floors moved."""
    keys = sorted(set(after.rules) | set(before.rules if before else ()))
    parts = []
    for key in keys:
        kind, evidence = key.split("|", 1)
        old: GroupRule | None = before.rule_for(kind, evidence) if before else None
        new = after.rule_for(kind, evidence)
        old_floor = old.min_confidence if old else None
        new_floor = new.min_confidence if new else None
        if old_floor is None and new_floor is not None:
            parts.append(f"{key}: on at {_floor(new_floor)}")
        elif old_floor is not None and new_floor is None:
            parts.append(f"{key}: {_off_reason(key, old_floor, observed, min_samples)}")
        elif (
            old_floor is not None
            and new_floor is not None
            and _floor(old_floor) != _floor(new_floor)
        ):
            parts.append(f"{key}: floor {_floor(old_floor)} -> {_floor(new_floor)}")
    if parts:
        return "; ".join(parts)
    if not any(r.min_confidence is not None for r in after.rules.values()):
        return "no change: no group auto-accepts"
    return "no change"


# ---- refits ---------------------------------------------------------------------------------


def _stored(conn: Connection, template: str | None, limit: int | None) -> list[StoredRefit]:
    c = schema.calibrations
    query = select(c).order_by(c.c.fitted_at.desc(), c.c.id.desc()).limit(limit)
    if template is not None:
        query = query.where(c.c.template == template)
    return [
        StoredRefit(
            id=int(r.id),
            template=str(r.template),
            fitted_at=as_utc(r.fitted_at),
            fields=int(r.fields),
            changes=str(r.changes),
            calibration=Calibration.model_validate_json(r.rules),
        )
        for r in conn.execute(query).all()
    ]


def _last_refit(conn: Connection, template: str) -> StoredRefit | None:
    found = _stored(conn, template, 1)
    return found[0] if found else None


def refit_calibration(
    db: Engine,
    template: str,
    *,
    target: float,
    z: float = 1.64,
    min_samples: int = 40,
    folder: Path | None = None,
) -> Refit:
    """Refit a template's rule on crowd_samples and store it, when there is something new.

    Cheap when nothing changed: one EXISTS query finds no field settled since the last
    refit. The change text compares with the last refit, else with the calibration that
    was in use before (bundled, or from `folder`).
    """
    # Taken before the samples are read: a field settling meanwhile counts as new next time.
    started = utcnow()
    with db.connect() as conn:
        last = _last_refit(conn, template)
        same_rule = last is not None and (last.calibration.target, last.calibration.z) == (
            target,
            z,
        )
        if last is not None and same_rule and not _new_since(conn, template, last.fitted_at):
            return _unchanged(template, last, "nothing new since the last refit")
        observed = _observe(conn, template)
    if not observed and last is None:
        return Refit(template, False, 0, "no samples yet", None, None)
    if last is not None and same_rule:
        newer = any(o.at is not None and o.at > last.fitted_at for o in observed)
        if not newer and len(observed) == last.fields:
            return _unchanged(template, last, "no new samples since the last refit")
    calibration = fit_calibration(
        (o.sample for o in observed),
        template,
        target=target,
        z=z,
        min_samples=min_samples,
        case_sensitive=True,  # people key what the page says, case and all
        fitted_on=f"crowd: {len(observed)} fields settled by people keying blind, "
        "audits and staff gold",
    )
    before = last.calibration if last is not None else load_calibration(template, folder)
    calibration = carry_over(before, calibration, [o.sample for o in observed], min_samples)
    changes = _describe_changes(before, calibration, observed, min_samples)
    with db.begin() as conn:
        conn.execute(
            insert(schema.calibrations).values(
                template=template,
                fitted_at=started,
                fields=len(observed),
                rules=calibration.model_dump_json(),
                changes=changes,
            )
        )
    return Refit(template, True, len(observed), changes, calibration, started)


def carry_over(
    before: Calibration | None,
    fitted: Calibration,
    samples: Sequence[Sample],
    min_samples: int,
) -> Calibration:
    """Keep the rules of `before` (bundled, or the last refit) for groups the crowd has
    too little evidence on to judge, unless an audited or settled field of the group at or
    above its floor came back wrong.

    Fields a rule accepts reach people only as audits (2-10%): without this a young
    deployment's first refit would turn off every group a measured calibration accepted.
    """
    if before is None:
        return fitted
    rules = dict(fitted.rules)
    for key, rule in before.rules.items():
        new = rules.get(key)
        if rule.min_confidence is None or (new is not None and new.samples >= min_samples):
            continue  # the crowd's fit stands: it had the evidence to judge
        if new is not None and new.min_confidence is not None:
            continue
        kind, evidence = key.split("|", 1)
        floor = rule.min_confidence
        wrong = any(
            s.evidence == evidence
            and (kind == POOLED or s.kind == kind)
            and s.valid
            and s.confidence >= floor
            and not s.correct
            for s in samples
        )
        if not wrong:  # otherwise the crowd's fit (or the pooled rule under it) decides
            rules[key] = rule
    return fitted.model_copy(update={"rules": rules})


def _unchanged(template: str, last: StoredRefit, why: str) -> Refit:
    return Refit(template, False, last.fields, why, last.calibration, last.fitted_at)


def templates_with_pages(db: Engine) -> list[str]:
    """Every template some page was read with, sorted."""
    p = schema.pages
    with db.connect() as conn:
        found = conn.execute(select(p.c.template).distinct()).scalars().all()
    return sorted(str(t) for t in found)


def refit_all(
    db: Engine,
    *,
    target: float,
    z: float = 1.64,
    min_samples: int = 40,
    folder: Path | None = None,
    template: str | None = None,
) -> list[Refit]:
    """Refit every template with pages (or just `template`); one Refit each."""
    templates = [template] if template is not None else templates_with_pages(db)
    return [
        refit_calibration(db, t, target=target, z=z, min_samples=min_samples, folder=folder)
        for t in templates
    ]


def current_calibration(
    db: Engine, template: str, folder: Path | None = None
) -> Calibration | None:
    """The rule routing uses: the latest refit, else the folder or bundled one, else None."""
    with db.connect() as conn:
        last = _last_refit(conn, template)
    if last is not None:
        return last.calibration
    return load_calibration(template, folder)


def calibration_history(
    db: Engine, template: str | None = None, limit: int | None = None
) -> list[StoredRefit]:
    """The stored refits (of one template, or all), newest first; at most `limit`."""
    with db.connect() as conn:
        return _stored(conn, template, limit)
